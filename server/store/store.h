// Store: durable state of the mapping (an interface; PgStore implements it
// on PostgreSQL).
//
// A Store serialises writes: Write() locks the single version row, so
// versions are gapless and become visible in commit order. Every method
// blocks on I/O: call them from worker threads, never from a gRPC reactor.
// Implementations are thread-safe.
//
// The change log is also the outbox of change events (SPEC §4): a row is
// "unpublished" until MarkPublished covers its version, and unpublished
// rows are never pruned.
#ifndef BUCKETMAP_SERVER_STORE_STORE_H_
#define BUCKETMAP_SERVER_STORE_STORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bucketmap/v1/types.pb.h"
#include "domain/load.h"
#include "domain/planner.h"
#include "domain/snapshot.h"

namespace bucketmap {

// Who writes, why, and under which conditions.
struct WriteContext {
  std::string kind;  // RPC name, e.g. "AssignTeam"; stored in the log
  std::string actor;
  std::string reason;
  std::string request_id;  // empty: not idempotent
  // Digest of the request body without request_id; a replay must match.
  std::string fingerprint;
  int64_t expected_version = 0;  // 0: no check
  absl::Time deadline = absl::InfiniteFuture();
  // Fencing (SPEC §5.8): nonzero for writes of a leader-only worker (the
  // handoff coordinator), set to LeaderElection::epoch(). The write then
  // commits only while this is still the current leader epoch, and fails
  // with FailedPrecondition "not the leader" otherwise. 0: not fenced.
  int64_t leader_epoch = 0;
};

// What the planner callback returns: the plan, and the serialized response
// to remember under request_id.
struct PlannedWrite {
  Plan plan;
  std::string response;
};

// What a plan may read inside its write's transaction besides the mapping,
// after the version row is locked: the answers hold for the version the
// write plans against, up to what other writers of those tables commit
// meanwhile (they do not take the version row). Valid only during the
// plan() call that receives it, on the writing thread.
class WriteReads {
 public:
  virtual ~WriteReads() = default;

  // ProducerLeased()
  //
  // Whether some PRODUCER watch session, of any replica, holds a lease that
  // has not expired at the store's clock (the sessions ListClients lists,
  // restricted to producers). Read on the first call, then remembered for
  // the transaction. Unavailable when the database cannot be read; the
  // write then fails with it.
  virtual absl::StatusOr<bool> ProducerLeased() = 0;
};

// Plans the write against the snapshot at the locked database version.
using PlanFn = std::function<absl::StatusOr<PlannedWrite>(const Snapshot& current)>;
// The same, for a plan that also reads inside the transaction.
using ReadingPlanFn =
    std::function<absl::StatusOr<PlannedWrite>(const Snapshot& current, WriteReads& reads)>;

struct WriteResult {
  // The committed version; for a no-op, the current version.
  int64_t version = 0;
  // True when request_id matched an earlier write: nothing was written and
  // `response` is the first write's response.
  bool replayed = false;
  std::string response;
  // The snapshot after the write at `version` (plan.after, or the reloaded
  // state); null when replayed.
  std::shared_ptr<const Snapshot> snapshot;
  Effect effect;
  // The version's MappingDelta as written to the change log, serialized
  // once here and shared with the watch streams; null for a no-op or a
  // replay (and from stores that do not encode it).
  std::shared_ptr<const std::string> encoded_delta;
};

// One write of a group (Store::WriteGroup): what Write() takes, by
// reference; both must outlive the call.
struct GroupedWrite {
  const WriteContext* ctx = nullptr;
  const ReadingPlanFn* plan = nullptr;
};

struct HistoryQuery {
  int64_t team_id = 0;       // 0: any
  int64_t from_version = 0;  // inclusive; 0: unbounded
  int64_t to_version = 0;    // inclusive; 0: unbounded
  int32_t page_size = 100;
  bool include_delta = false;
};

struct HistoryPage {
  std::vector<v1::ChangeRecord> records;  // ascending by version
  int64_t next_from_version = 0;          // 0: last page
};

// How long a watch client's recorded state outlives its last renewal
// (--client_lease).
inline constexpr absl::Duration kDefaultClientLease = absl::Seconds(30);

// A watch client's state, as recorded for ListClients and (later) the
// handoff barrier. Times are absl::InfinitePast() when never set.
struct ClientState {
  std::string client_id;
  int role = 0;  // bucketmap.v1.ClientRole
  std::string replica;
  std::string peer;
  int64_t applied_version = 0;
  int64_t drained_version = 0;
  absl::Time connected_at = absl::InfinitePast();
  absl::Time last_ack = absl::InfinitePast();
  absl::Time last_nack = absl::InfinitePast();
  std::string last_nack_error;
  int64_t nacks = 0;
  bool connected = false;
  // Set by ListClients: when the lease ends unless renewed.
  absl::Time lease_expires = absl::InfinitePast();
};

// One change-log row as the outbox relay reads it.
struct OutboxRow {
  int64_t version = 0;
  std::string kind;
  std::string actor;
  std::string reason;
  std::string request_id;  // empty when the write had none
  absl::Time created_at = absl::InfinitePast();
  std::string delta;  // a serialized bucketmap.v1.MappingDelta
};

// The outbox as a whole, for the relay's start point and its metrics.
struct OutboxStats {
  // Unpublished rows.
  int64_t backlog = 0;
  // Age of the oldest unpublished row (at the database's clock); zero when
  // the backlog is empty.
  absl::Duration oldest_age = absl::ZeroDuration();
  // The highest published version; 0 when none is.
  int64_t last_published_version = 0;
};

// ListHandoffs() query (AdminService.ListHandoffs).
struct HandoffQuery {
  bool include_ended = false;
  int64_t team_id = 0;  // 0: any
  int32_t page_size = 100;
};

// Last move times, for the move cooldown (SPEC §5.7).
struct MoveTimes {
  std::map<int64_t, absl::Time> teams;                   // the asked teams that moved
  std::map<std::string, absl::Time, std::less<>> pools;  // every pool that moved
};

// One lag reading of a bucket's role (SPEC §9), as the leader's lag
// exporter took it. When !up, messages and seconds are meaningless (the
// store keeps them NULL) and `error` says what could not be read.
struct LagReading {
  int32_t bucket_id = 0;
  std::string role;
  std::string consumer_group;
  bool up = false;
  int64_t messages = 0;
  double seconds = 0;
  std::string error;
  absl::Time read_at = absl::InfinitePast();
};

// Rates added to load windows, by window (slot) and key (domain/load.h).
using LoadSlots = std::map<int64_t, std::map<LoadKey, LoadRate>>;

class Store {
 public:
  virtual ~Store() = default;

  // Loads the whole mapping at the current version.
  // Unavailable when the database cannot be reached.
  virtual absl::StatusOr<std::shared_ptr<const Snapshot>> LoadSnapshot() = 0;

  // Returns the committed version. Unavailable when unreachable.
  virtual absl::StatusOr<int64_t> CurrentVersion() = 0;

  // Returns the committed version and the database's cluster id, which
  // tells a restored or replaced database (whose versions start over) from
  // the one a snapshot came from. The default knows no cluster id ("").
  virtual absl::StatusOr<std::pair<int64_t, std::string>> CurrentVersionAndCluster() {
    absl::StatusOr<int64_t> version = CurrentVersion();
    if (!version.ok()) return version.status();
    return std::make_pair(*version, std::string());
  }

  // Runs one write in one transaction:
  //   1. locks the version row (the global write order);
  //   2. ctx.leader_epoch != 0 and not the current leader epoch ->
  //      FailedPrecondition ("not the leader"), even for a replay; the epoch
  //      row stays locked (shared) until commit, so a new leader's epoch
  //      bump waits for it;
  //   3. if ctx.request_id was seen: same fingerprint -> returns the stored
  //      response with replayed=true; other fingerprint -> InvalidArgument;
  //      ctx.expected_version != 0 and != current -> Aborted;
  //   4. calls plan() with `cached` if it is at the current version, else
  //      with a snapshot reloaded inside the transaction;
  //   5. if the plan changes something: writes it, bumps the version and
  //      appends the change-log row (kind, actor, reason, request_id,
  //      time, delta); remembers request_id with the response;
  //   6. notifies the other replicas (LISTEN/NOTIFY, delivered at commit);
  //   7. checks ctx.deadline once more, then commits.
  // Errors from plan() are returned unchanged and nothing is written.
  // Unavailable when the database is unreachable or the deadline passes.
  // A write whose deadline has passed when COMMIT is about to be sent is
  // rolled back: nothing is written and request_id is not remembered. An
  // error leaves the outcome unknown only if the connection broke during
  // COMMIT; and a deadline that passes during the COMMIT round trip itself
  // does not stop the commit, so a caller may see its deadline expire for
  // a write that committed. In both cases a replay with the same request_id
  // tells. `plan` may read inside the transaction through its WriteReads;
  // its reads add statements, never a second transaction.
  virtual absl::StatusOr<WriteResult> Write(const WriteContext& ctx,
                                            std::shared_ptr<const Snapshot> cached,
                                            const ReadingPlanFn& plan) = 0;
  // The same, for a plan that reads nothing but the mapping.
  absl::StatusOr<WriteResult> Write(const WriteContext& ctx, std::shared_ptr<const Snapshot> cached,
                                    const PlanFn& plan) {
    return Write(
        ctx, std::move(cached),
        ReadingPlanFn([&plan](const Snapshot& current, WriteReads&) { return plan(current); }));
  }

  // WriteGroup()
  //
  // Runs `writes` in order, each as Write() would run it alone: each is
  // planned against the mapping the ones before it left, gets its own
  // version (or its own error: its plan's, its request_id's, its
  // expected_version's, its deadline's, its leader epoch's), and writes
  // nothing when it fails. Returns one result per write, in order; each
  // successful result's snapshot is the mapping after that write.
  //
  // A store may commit them together (group commit): one transaction, the
  // version row locked once, one COMMIT and one notification for the
  // group, so concurrent writers share the round trips. If that
  // transaction fails before COMMIT (a statement fails, or some write's
  // deadline passes before COMMIT), nothing of it was written and each
  // write is run again alone, through Write(). If COMMIT itself fails, the
  // outcome is unknown for every write that was in it, as for Write(). So
  // a plan may be called more than once, each time against the mapping it
  // is then planned on: it must compute its write from its arguments.
  //
  // This default runs the writes one by one through Write().
  virtual std::vector<absl::StatusOr<WriteResult>> WriteGroup(
      const std::vector<GroupedWrite>& writes, std::shared_ptr<const Snapshot> cached) {
    std::vector<absl::StatusOr<WriteResult>> results;
    for (const GroupedWrite& write : writes) {
      results.push_back(Write(*write.ctx, cached, *write.plan));
      if (results.back().ok() && results.back()->snapshot != nullptr) {
        cached = results.back()->snapshot;
      }
    }
    return results;
  }

  // Returns change-log records matching `query`, ascending by version.
  virtual absl::StatusOr<HistoryPage> GetHistory(const HistoryQuery& query) = 0;

  // Returns the deltas of versions after_version + 1 .. up_to, ascending,
  // from the change log. NotFound if any of them is no longer kept
  // (pruned), so the caller serves a snapshot instead.
  virtual absl::StatusOr<std::vector<v1::MappingDelta>> LoadDeltas(int64_t after_version,
                                                                   int64_t up_to) = 0;

  // Upserts the states of watch clients (one statement or COPY for all),
  // each leased until `lease_until`.
  virtual absl::Status SaveClients(const std::vector<ClientState>& states,
                                   absl::Time lease_until) = 0;

  // Returns the clients whose lease has not expired at `now`, by client_id.
  virtual absl::StatusOr<std::vector<ClientState>> ListClients(absl::Time now) = 0;

  // Deletes change-log rows older than `history_retention` and remembered
  // request ids older than `request_id_retention`. Returns rows deleted.
  // Change-log rows not yet published (see MarkPublished) and their
  // change_log_teams rows are kept whatever their age.
  virtual absl::StatusOr<int64_t> Prune(absl::Time now, absl::Duration history_retention,
                                        absl::Duration request_id_retention) = 0;

  // LoadUnpublished()
  //
  // Returns up to `limit` unpublished change-log rows with version >
  // after_version, ascending by version. InvalidArgument for limit < 1;
  // Unavailable when the database is unreachable.
  virtual absl::StatusOr<std::vector<OutboxRow>> LoadUnpublished(int64_t after_version,
                                                                 int limit) = 0;

  // MarkPublished()
  //
  // Marks every unpublished row with version <= up_to_version as
  // published now. Call it only once Kafka has acknowledged every one of
  // those versions. Idempotent. Unavailable when unreachable.
  // With a nonzero `leader_epoch` (the relay of a leader) it is fenced like
  // a Write: FailedPrecondition "not the leader" once that epoch is stale.
  virtual absl::Status MarkPublished(int64_t up_to_version, int64_t leader_epoch) = 0;
  absl::Status MarkPublished(int64_t up_to_version) { return MarkPublished(up_to_version, 0); }

  // GetOutboxStats()
  //
  // Returns the backlog, the age of its oldest row and the last published
  // version. Unavailable when unreachable.
  virtual absl::StatusOr<OutboxStats> GetOutboxStats() = 0;

  // ListHandoffs()
  //
  // Returns handoffs as persisted: the open ones ascending by id, then
  // (include_ended) the ended ones, newest first; at most page_size in
  // all. With team_id, only those that list the team, or whose pool_before
  // placed it on the source. Unavailable when unreachable; Unimplemented
  // by stores without handoffs.
  virtual absl::StatusOr<std::vector<v1::Handoff>> ListHandoffs(const HandoffQuery& query) {
    return absl::UnimplementedError("ListHandoffs");
  }

  // LoadMoveTimes()
  //
  // Returns when each of `team_ids` last moved (teams that never moved are
  // absent) and when each pool's placement last moved. Move times are
  // written by Write() for every handoff it opens. Unavailable when
  // unreachable.
  virtual absl::StatusOr<MoveTimes> LoadMoveTimes(const std::vector<int64_t>& team_ids) {
    return MoveTimes{};
  }

  // LoadRebalanceChurn()
  //
  // Returns the share of `pool`'s load that automatic rebalancing moved on
  // UTC day `day` (days since 1970-01-01), 0 when none. Unavailable when
  // unreachable; Unimplemented by stores without it.
  virtual absl::StatusOr<double> LoadRebalanceChurn(const std::string& pool, int64_t day) {
    return absl::UnimplementedError("LoadRebalanceChurn");
  }

  // AddRebalanceChurn()
  //
  // Adds `share` to `pool`'s churn of UTC day `day`. Unavailable when
  // unreachable (a retried call may count twice: the budget errs on the
  // side of moving less).
  virtual absl::Status AddRebalanceChurn(const std::string& pool, int64_t day, double share) {
    return absl::UnimplementedError("AddRebalanceChurn");
  }

  // SaveLagReadings()
  //
  // Replaces every stored lag reading with `readings` (at most one per
  // bucket and role), in one transaction. Unavailable when unreachable;
  // Unimplemented by stores without signals.
  virtual absl::Status SaveLagReadings(const std::vector<LagReading>& readings) {
    return absl::UnimplementedError("SaveLagReadings");
  }

  // LoadLagReadings()
  //
  // Returns the stored lag readings, ascending by bucket id and role.
  virtual absl::StatusOr<std::vector<LagReading>> LoadLagReadings() {
    return absl::UnimplementedError("LoadLagReadings");
  }

  // AddLoad()
  //
  // In one transaction, under the load_meta row lock (so replicas
  // serialise here):
  //   1. if the stored window or half-life differs from `config`, drops
  //      every load row and adopts `config` (all replicas must run the
  //      same --load_window and --load_half_life);
  //   2. adds `slots` into the stored windows; a window already folded
  //      (a late report, a replica's clock behind) is added to the first
  //      window not yet folded instead;
  //   3. folds every window up to `fold_through`, in order, into the
  //      averages (domain/load.h), and deletes averages whose rates have
  //      decayed below `min_rate` (events and processing both).
  // Unavailable when unreachable; Unimplemented by stores without signals.
  virtual absl::Status AddLoad(const LoadConfig& config, const LoadSlots& slots,
                               int64_t fold_through, double min_rate) {
    return absl::UnimplementedError("AddLoad");
  }

  // LoadLoadTable()
  //
  // Returns the stored averages with the configuration and windows they
  // were folded with.
  virtual absl::StatusOr<LoadTable> LoadLoadTable() {
    return absl::UnimplementedError("LoadLoadTable");
  }
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_STORE_STORE_H_
