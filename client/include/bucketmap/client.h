// The bucketmap client library: an in-process copy of the team -> bucket
// mapping for producers and consumers (SPEC §6).
//
// A Client holds the newest MappingView it has been given and answers
// Route(team_id) from it without locks and without allocating. Views come
// from a full v1::MappingSnapshot, from v1::MappingDelta frames applied on
// top of the current view, or from the last-known-good cache file.
//
// Ownership.
//   A Client owns the published view and its routing index. A caller that
//   needs strings (topic names, bucket and pool names) takes a
//   std::shared_ptr<const MappingView> from Current(); the view stays valid
//   for as long as the caller holds it, however many versions are published
//   meanwhile. Pointers and references obtained from a view are valid for
//   the view's lifetime.
//
// Thread safety.
//   Every Client method may be called from any thread without external
//   synchronization. Route(), Owns(), GetBucketState(), Current() and
//   version() never block and never wait for a writer. The Apply*() and
//   LoadCache() calls are serialized among themselves by an internal mutex;
//   they never wait for readers. A MappingView is immutable: any number of
//   threads may use one concurrently.
//   The first read on a thread (Route() or Current(), say) registers the
//   thread with the client's epoch-based reclamation once; that first call
//   takes a registry lock and may allocate. Every later call on the thread
//   is wait-free. The thread's record is given back when it exits.
//
// Memory-ordering contract.
//   - A new view is fully built, then published by a release exchange of
//     one pointer. Readers load that pointer with acquire ordering, so
//     everything written while building the view happens-before any read
//     through it.
//   - A RouteResult is computed from exactly one view: its bucket, state
//     and source all belong to its version(), never to a mix of two
//     versions.
//   - The pointer is published before version() advances, and both happen
//     before the Apply*() call returns and before OnChange listeners run.
//     So a Route() that starts after version() returned v, after
//     WaitForVersion(v) returned true, or after Apply*() returned with v,
//     answers from version v or newer (or from another cluster after a
//     reset).
//   - Reads run inside an epoch read-side section: the thread stores the
//     global epoch into its own record before loading the pointer, and 0
//     after its last read through it. A replaced view is retired with a new
//     epoch and freed only once every thread's record is 0 or at least that
//     epoch, checked after a membarrier() that orders every reader's entry
//     store before its pointer load (so readers pay no fence). The check
//     runs on the publishing thread after each publication, and on
//     ConfirmCurrent(); it frees what it can and never waits, so
//     publishing never waits for readers, and readers never wait for
//     publishing. A replaced view can thus outlive its replacement until
//     the next publication or confirmation (~Client frees it at the
//     latest).
//
// Feeding the client (the transport seam).
//   WatchConnection (bucketmap/watch.h, target bucketmap_client_watch) opens
//   the gRPC watch stream and drives a Client; it is the only part of the
//   library that links gRPC. Any transport drives a Client through exactly
//   these calls, and needs no other access:
//     subscribe with   version() and cluster_id();
//     Push.snapshot -> ApplySnapshot(); Push.deltas -> ApplyDeltas();
//                      ACK version() on OK, NACK with the Status otherwise;
//     Sync/Heartbeat -> ConfirmCurrent(server_version);
//     start-up without a server -> LoadCache(); after applying -> WriteCache().
//   ClientOptions carries what the transport needs (addresses, client_id,
//   role, bearer token).
#ifndef BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_CLIENT_H_
#define BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/attributes.h"
#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "bucketmap/event_route.h"
#include "bucketmap/handoff.h"
#include "bucketmap/internal/read_path.h"
#include "bucketmap/route_result.h"
#include "bucketmap/v1/mapping.pb.h"
#include "bucketmap/v1/types.pb.h"
#include "domain/model.h"
#include "domain/snapshot.h"

namespace bucketmap {

namespace client_internal {
class EventRules;
class HandoffSet;
class RouteIndex;
class StickySet;
class TeamLimiter;
struct PublishedView;
}  // namespace client_internal

// The whole mapping at one version, with its routing index. Immutable.
// Obtained from Client::Current(); keep the shared_ptr for as long as the
// strings or pointers it hands out are used.
class MappingView {
 public:
  ~MappingView();
  MappingView(const MappingView&) = delete;
  MappingView& operator=(const MappingView&) = delete;

  int64_t version() const { return snapshot_->version(); }
  const std::string& cluster_id() const { return snapshot_->cluster_id(); }

  // Returns the route of `team_id` in this view. Allocation-free.
  RouteResult Route(int64_t team_id) const;

  // Every bucket, RETIRED ones included, ascending by id.
  const std::vector<Bucket>& buckets() const { return snapshot_->buckets(); }
  // Returns the bucket with `id`, or nullptr.
  const Bucket* FindBucket(int32_t id) const { return snapshot_->FindBucket(id); }
  // Returns the topic of `role` of bucket `bucket_id`, or nullptr when the
  // bucket does not exist or has no such role.
  const std::string* Topic(int32_t bucket_id, std::string_view role) const;
  // The pool table; RouteResult::pool_index() indexes it.
  const std::vector<std::string>& pools() const { return snapshot_->pools(); }
  // Returns pools()[index], or an empty view for an index out of range
  // (such as -1).
  std::string_view PoolName(int32_t index) const;

  // Returns, ascending, the teams with an override (a pin, or a pool
  // assignment) whose route at this version is `bucket_id`. Teams placed by
  // default are not listed: there is no list of them; use Owns(). O(number
  // of overrides).
  std::vector<int64_t> TeamsInBucket(int32_t bucket_id) const;
  // True when `team_id`'s route at this version is `bucket_id`, whether by
  // pin, pool assignment or default placement.
  bool Owns(int32_t bucket_id, int64_t team_id) const;

  // Number of overrides (pins and pool assignments).
  size_t assignment_count() const { return snapshot_->assignment_count(); }

  // Returns the open handoffs involving `team_id` at this version (SPEC §5;
  // see bucketmap/handoff.h for when a team is involved). Allocates only
  // when a handoff is open.
  HandoffStatus HandoffState(int64_t team_id) const;
  // The open handoffs (SWITCHING or DRAINING) at this version, ascending by
  // id, as the server sent them.
  std::vector<const v1::Handoff*> OpenHandoffs() const;
  // The domain snapshot, for callers that need the packed columns.
  const Snapshot& snapshot() const { return *snapshot_; }

  // RouteEvent()
  //
  // Routes one event of `team_id` at `now`, applying the team's rules at
  // this version (docs/rules.md): the route, the topic to produce to (the
  // bucket's ClientOptions::event_role topic, or its `overflow` topic) and
  // the flags (dropped, overflowed, skip person processing). `key` is what
  // overflow sticks to within the team (a person's distinct id, say): once
  // an event of (team, key) overflowed because of a rate limit, its events
  // keep going to overflow for ClientOptions::overflow_sticky_window, so
  // one key never alternates between the two topics inside the window.
  // For a team without rules it is Route() plus one load of the topic:
  // wait-free and allocation-free. For a rate-limited team it takes a token
  // from this producer's token bucket (lock-free) and may mark the key in
  // the sticky set (bounded; see the .cc). `now` drives those two only.
  ABSL_ATTRIBUTE_ALWAYS_INLINE EventRoute RouteEvent(int64_t team_id, std::string_view key,
                                                     absl::Time now) const;

  // Pool objects (state, priority) at this version, ascending by name;
  // PoolOf() answers for any pool (ACTIVE with the default priority when it
  // has no object).
  const std::vector<Pool>& pool_objects() const { return snapshot_->pool_objects(); }
  Pool PoolOf(std::string_view pool) const { return snapshot_->PoolOf(pool); }
  // Team rules at this version, ascending by (team_id, kind).
  const std::vector<TeamRule>& team_rules() const { return snapshot_->team_rules(); }
  absl::Span<const TeamRule> RulesOf(int64_t team_id) const { return snapshot_->RulesOf(team_id); }

 private:
  friend class Client;
  MappingView(std::shared_ptr<const Snapshot> snapshot,
              std::shared_ptr<const client_internal::HandoffSet> handoffs,
              std::unique_ptr<const client_internal::RouteIndex> index,
              std::shared_ptr<const client_internal::EventRules> event_rules,
              const std::string& event_role);

  // RouteEvent() for a team whose route has the rules bit.
  EventRoute RouteEventWithRules(RouteResult route, int64_t team_id, std::string_view key,
                                 absl::Time now) const;

  std::shared_ptr<const Snapshot> snapshot_;
  // The open handoffs at this version; never null.
  std::shared_ptr<const client_internal::HandoffSet> handoffs_;
  std::unique_ptr<const client_internal::RouteIndex> index_;
  // What the index's Lookup() reads (index_->table()).
  const client_internal::RouteTable* table_;
  // By bucket id (index 0: no bucket): the event role's topic and the
  // overflow topic; nullptr when the bucket has no such role.
  std::vector<const std::string*> event_topics_;
  std::vector<const std::string*> overflow_topics_;
  // Instead of the tables above when the snapshot's ids are too sparse for
  // them (see the constructor): ascending by id.
  struct SparseTopics {
    int32_t id;
    const std::string* event;
    const std::string* overflow;
  };
  std::vector<SparseTopics> sparse_topics_;
  // The topic of `bucket` in sparse_topics_; nullptr if it has none.
  const std::string* SparseTopic(size_t bucket, bool overflow) const;
  // The team rules as RouteEvent() applies them; never null.
  std::shared_ptr<const client_internal::EventRules> event_rules_;
};

// Passed to OnBucketState listeners.
struct BucketStateChange {
  int32_t bucket_id = 0;
  // nullopt: no mapping, or no such bucket at `version`.
  std::optional<BucketState> state;
  int64_t version = 0;
  // The consumers of the bucket stop consuming while this holds.
  bool paused() const { return state == BucketState::kPaused; }
};

// Passed to OnChange listeners after each publication.
struct ChangeEvent {
  // 0 when nothing was loaded before.
  int64_t old_version = 0;
  int64_t new_version = 0;
  // True when the cluster_id changed: all earlier state was dropped.
  bool reset = false;
  // The view just published; valid during the call. Take Current() to keep
  // it longer.
  const MappingView* view = nullptr;
};

struct ClientOptions {
  // Server addresses ("host:port"), tried in turn by the watch transport.
  std::vector<std::string> addresses;
  // Identifies this process in ListClients; should be unique and stable
  // across restarts.
  std::string client_id;
  v1::ClientRole role = v1::PRODUCER;
  // The last-known-good cache file; empty disables LoadCache()/WriteCache()
  // without a path.
  std::string cache_path;
  // Sent as "authorization: Bearer <token>" once auth exists; empty sends
  // nothing.
  std::string bearer_token;
  // The clock behind Staleness() and the cache file's confirmation time.
  // Defaults to absl::Now. Waits (WaitForVersion) use real time regardless.
  std::function<absl::Time()> clock;

  // Event routing (MappingView::RouteEvent(); docs/rules.md).
  // The role whose topic an event goes to when no rule overflows it.
  std::string event_role = "ingestion";
  // This producer's share of each RATE_LIMIT rule: its token bucket holds
  // share x burst tokens and refills at share x events_per_second. Token
  // buckets are per producer, so with the default 1.0 each of N producers
  // of a team allows the whole limit (up to N times it in all); N producers
  // that see even traffic set 1/N to allow about the limit together.
  double rate_limit_share = 1.0;
  // How long a (team, key) that overflowed on a rate limit keeps going to
  // overflow (rounded up to 10 ms).
  absl::Duration overflow_sticky_window = absl::Minutes(5);
  // Most (team, key) pairs remembered as overflowed, 8 bytes each,
  // allocated with the first rate limit. When a key finds no room, its
  // whole team overflows for one window (docs/rules.md).
  size_t overflow_sticky_capacity = 65536;
};

class Client {
 public:
  using ListenerId = uint64_t;

  explicit Client(ClientOptions options);
  // Requires that no other thread is still calling into this Client. Waits
  // for the reclamation of every view this Client retired.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // ---- Reads. Lock-free; none of them allocates except where noted. ----

  // Route()
  //
  // Returns the route of `team_id` at the current version: a pin, a pool
  // assignment or default placement, computed bit-identically with the
  // server (domain/placement.h). Without a mapping, status is kNoMapping;
  // a team of a pool with no placeable bucket gets kNoPlaceableBucket, never
  // a guess. Wait-free and allocation-free (after the thread's first call).
  // Always inlined (below): in a producer's loop, consecutive lookups then
  // overlap their cache misses, which a call per lookup prevents.
  ABSL_ATTRIBUTE_ALWAYS_INLINE RouteResult Route(int64_t team_id) const;

  // Current()
  //
  // Returns the current view, or nullptr before any mapping was loaded.
  // Costs one atomic reference-count increment; does not allocate.
  std::shared_ptr<const MappingView> Current() const;

  // The current version; 0 before any mapping was loaded.
  int64_t version() const { return version_.load(std::memory_order_acquire); }
  // The cluster_id of the current mapping; empty before any was loaded.
  // Allocates (returns a copy).
  std::string cluster_id() const;

  // Returns the state of bucket `bucket_id` (PAUSED tells its consumers to
  // stop), or nullopt when there is no mapping or no such bucket.
  std::optional<BucketState> GetBucketState(int32_t bucket_id) const;
  // See MappingView::Owns(); answered from the current view.
  bool Owns(int32_t bucket_id, int64_t team_id) const;
  // See MappingView::TeamsInBucket(); allocates the result.
  std::vector<int64_t> TeamsInBucket(int32_t bucket_id) const;

  // HandoffState()
  //
  // Returns the open handoffs involving `team_id` at the current version:
  // open() while any is open (SPEC §5 rule 7). Route(team).handoff() is the
  // same test without the details, and is what to call per event.
  HandoffStatus HandoffState(int64_t team_id) const;

  // OnHandoffDone()
  //
  // Registers `done`, called once, when the last open handoff involving
  // `team_id` has ended (COMPLETED, FORCED or CANCELLED; see HandoffEnd),
  // on the publishing thread, after the OnChange listeners. Returns 0 and
  // registers nothing when no open handoff involves the team now. The same
  // rules as for OnChange listeners apply to what `done` may call.
  ListenerId OnHandoffDone(int64_t team_id, std::function<void(const HandoffEnd&)> done);
  // Unregisters a completion callback that has not run yet.
  void RemoveHandoffCallback(ListenerId id);

  // OnBucketState()
  //
  // Registers `listener` for the state of bucket `bucket_id` (PAUSED tells
  // its consumers to stop consuming; SPEC §2): called at once, on the
  // calling thread, with the current state when a mapping is loaded, then
  // after each publication that changes it (the state, or the bucket's
  // existence), on the publishing thread, after the OnChange listeners.
  // The same rules as for OnChange listeners apply to what it may call.
  // GetBucketState() is the same answer by polling.
  ListenerId OnBucketState(int32_t bucket_id,
                           std::function<void(const BucketStateChange&)> listener);
  // Unregisters a bucket-state listener.
  void RemoveBucketStateListener(ListenerId id);

  // Staleness()
  //
  // Returns the time since the mapping was last known to be current: the
  // last ApplySnapshot()/ApplyDeltas(), or ConfirmCurrent() with a server
  // version not above ours, or, after LoadCache(), the time recorded in the
  // cache file. absl::InfiniteDuration() before any mapping was loaded.
  absl::Duration Staleness() const;

  // WaitForVersion()
  //
  // Blocks until version() >= `version` or `timeout` passes; returns
  // whether the version was reached. Must not be called from an OnChange
  // listener for a version that listener's publication has not reached.
  bool WaitForVersion(int64_t version, absl::Duration timeout) const;

  // OnChange()
  //
  // Registers `listener`, called after each publication (every
  // successful ApplySnapshot(), ApplyDeltas() with at least one delta, and
  // LoadCache() that loads). Listeners run on the thread that published,
  // one publication at a time, in registration order. They may call any
  // read method, but not ApplySnapshot(), ApplyDeltas() or LoadCache()
  // (they would deadlock).
  ListenerId OnChange(std::function<void(const ChangeEvent&)> listener);
  // Unregisters a listener. A publication already under way on another
  // thread may still call it once.
  void RemoveListener(ListenerId id);

  // ---- Updates: the watch transport's seam (see the file comment). ----

  // ApplySnapshot()
  //
  // Replaces the mapping with `snapshot`. A snapshot of another cluster_id
  // resets the client (all state dropped, listeners told reset = true). A
  // snapshot at the current version replaces the mapping too: it is how the
  // server answers a NACK.
  // Errors:
  //   InvalidArgument: the snapshot is malformed (the message names the
  //     field); nothing changes.
  //   FailedPrecondition: same cluster but older than version(); nothing
  //     changes (the server never sends one; a replica behind us could).
  absl::Status ApplySnapshot(const v1::MappingSnapshot& snapshot);

  // ApplyDeltas()
  //
  // Applies consecutive deltas (from_version = previous to_version, each
  // one version) on top of the current mapping, and publishes the result
  // once. All or nothing. An empty span is a no-op.
  // Errors:
  //   FailedPrecondition: no mapping yet, or deltas[0].from_version !=
  //     version() (a gap or a replay): resync with a snapshot.
  //   InvalidArgument: a delta is malformed or not contiguous.
  absl::Status ApplyDeltas(absl::Span<const v1::MappingDelta> deltas);
  // The same, for WatchResponse.Push.deltas().
  absl::Status ApplyDeltas(const google::protobuf::RepeatedPtrField<v1::MappingDelta>& deltas);

  // ConfirmCurrent()
  //
  // Reports the server's current version (from SYNC or a heartbeat). When
  // it is not above version(), the mapping is current: Staleness() restarts
  // from zero.
  void ConfirmCurrent(int64_t server_version);

  // LoadCache()
  //
  // Seeds the mapping from the last-known-good file (`path`, or
  // options.cache_path), for a start without a server. Staleness() then
  // reflects the file's confirmation time. A file that is missing, corrupt,
  // truncated or of another format version is ignored, with a warning, and
  // the mapping is unchanged.
  // Errors:
  //   InvalidArgument: no path.
  //   NotFound: no file.
  //   DataLoss: a corrupt or truncated file.
  //   FailedPrecondition: a file of an unknown format version, or of
  //     another cluster than an already loaded mapping.
  // A file no newer than the loaded mapping is not loaded; that is OK.
  absl::Status LoadCache();
  absl::Status LoadCache(const std::string& path);

  // WriteCache()
  //
  // Writes the current mapping to the cache file atomically: a temporary
  // file in the same directory, fsync, rename, fsync of the directory.
  // Errors: InvalidArgument (no path), FailedPrecondition (no mapping yet),
  // and the errno-derived status of a failed write (e.g. PermissionDenied).
  absl::Status WriteCache();
  absl::Status WriteCache(const std::string& path);

  const ClientOptions& options() const { return options_; }

 private:
  absl::Time Now() const;
  // Route() on a thread without a reader record: registers it first.
  RouteResult RouteSlow(int64_t team_id) const;
  // Publishes `view`: release-stores it, advances version(), retires the
  // previous view, reclaims what no reader can still hold and runs the
  // listeners.
  // `ended` lists the handoffs that reached a final phase in the deltas
  // applied.
  void Publish(std::shared_ptr<const MappingView> view, bool reset, absl::Time confirmed_at,
               const std::vector<v1::Handoff>& ended = {}) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  // Runs the completion callbacks whose team's last handoff ended.
  void RunHandoffCallbacks(const MappingView& view, const std::vector<v1::Handoff>& ended);
  // Calls the bucket-state listeners whose bucket's state changed.
  void RunBucketStateListeners(const MappingView& view);
  // A view of `snapshot`, with the event rules built for it (the token
  // buckets of unchanged rate limits carried over).
  std::shared_ptr<const MappingView> MakeView(
      std::shared_ptr<const Snapshot> snapshot,
      std::shared_ptr<const client_internal::HandoffSet> handoffs,
      std::unique_ptr<const client_internal::RouteIndex> index)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  absl::Status ApplyDeltaList(const std::vector<const v1::MappingDelta*>& deltas);
  // The current view, for the writer; nullptr before any.
  std::shared_ptr<const MappingView> CurrentForWriter() const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);

  const ClientOptions options_;

  // The published view's lookup table (the first part of a
  // client_internal::PublishedView, defined in client.cc). Written only
  // under apply_mu_ (release); read by anyone inside an epoch read-side
  // section (acquire).
  std::atomic<const client_internal::RouteTable*> current_{nullptr};
  std::atomic<int64_t> version_{0};
  // Unix nanoseconds of the last confirmation; kNever before any.
  std::atomic<int64_t> confirmed_at_ns_;

  // Serializes publications.
  absl::Mutex apply_mu_;
  // WaitForVersion() waits on version_cv_; Publish() advances version_
  // under version_mu_ and signals.
  mutable absl::Mutex version_mu_;
  mutable absl::CondVar version_cv_;
  // Serializes cache-file writes, so a file never goes back in version.
  absl::Mutex cache_mu_;

  absl::Mutex listeners_mu_;
  ListenerId next_listener_id_ ABSL_GUARDED_BY(listeners_mu_) = 1;
  std::vector<std::pair<ListenerId, std::shared_ptr<const std::function<void(const ChangeEvent&)>>>>
      listeners_ ABSL_GUARDED_BY(listeners_mu_);

  // Completion callbacks of OnHandoffDone().
  struct HandoffWaiter {
    ListenerId id;
    int64_t team_id;
    std::function<void(const HandoffEnd&)> done;
    // Every handoff seen open for the team since registration, and the
    // last final phase seen among them.
    std::vector<int64_t> handoff_ids;
    HandoffEnd last_end;
  };
  absl::Mutex handoff_mu_;
  std::vector<HandoffWaiter> handoff_waiters_ ABSL_GUARDED_BY(handoff_mu_);

  // OnBucketState() listeners, with the state each was last told.
  struct BucketListener {
    ListenerId id;
    int32_t bucket_id;
    std::shared_ptr<const std::function<void(const BucketStateChange&)>> listener;
    std::optional<BucketState> last;
    bool told = false;
  };
  absl::Mutex bucket_mu_;
  std::vector<BucketListener> bucket_listeners_ ABSL_GUARDED_BY(bucket_mu_);

  // The per-producer state of rate limits, carried from view to view
  // (client/src/event_rules.h).
  std::map<int64_t, std::shared_ptr<client_internal::TeamLimiter>> limiters_
      ABSL_GUARDED_BY(apply_mu_);
  std::shared_ptr<client_internal::StickySet> sticky_ ABSL_GUARDED_BY(apply_mu_);
};

ABSL_ATTRIBUTE_ALWAYS_INLINE inline EventRoute MappingView::RouteEvent(int64_t team_id,
                                                                       std::string_view key,
                                                                       absl::Time now) const {
  const RouteResult route = table_->Lookup(team_id);
  if (ABSL_PREDICT_FALSE(route.has_rules())) {
    return RouteEventWithRules(route, team_id, key, now);
  }
  // Bucket 0 (unroutable, or no mapping) has no topic.
  const size_t bucket = static_cast<uint32_t>(route.bucket_id());
  return EventRoute(
      route, bucket < event_topics_.size() ? event_topics_[bucket] : SparseTopic(bucket, false), 0);
}

ABSL_ATTRIBUTE_ALWAYS_INLINE inline RouteResult Client::Route(int64_t team_id) const {
  client_internal::EpochReader* const reader = client_internal::t_epoch_reader;
  if (ABSL_PREDICT_FALSE(reader == nullptr)) return RouteSlow(team_id);
  reader->Enter();
  const client_internal::RouteTable* table = current_.load(std::memory_order_acquire);
  const RouteResult result = table == nullptr ? RouteResult() : table->Lookup(team_id);
  reader->Exit();
  return result;
}

}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_CLIENT_H_
