// FakeStore: the whole Store interface (server/store/store.h) in memory,
// for unit tests of the logic above the store (the write path, the
// handoff coordinator, the outbox relay, the watch hub) without
// PostgreSQL. Integration tests keep PgStore and a real database.
//
// It keeps the contract of store.h, and where store.h leaves something
// open, does what PgStore does:
//   * writes are serialised (one at a time, plan() included) and versions
//     are gapless; Write() follows the order of store.h: the leader-epoch
//     fence (FailedPrecondition "not the leader"), request_id replay (same
//     fingerprint: the stored response, replayed=true; another:
//     InvalidArgument), expected_version (Aborted), then plan(), whose
//     errors are returned unchanged with nothing written;
//   * a no-op writes no version, but remembers its request_id;
//   * every version has a change-log row (kind, actor, reason, request_id,
//     the clock's time, its MappingDelta from codec/codec.h), which is the
//     outbox until MarkPublished covers it; Prune never drops an
//     unpublished row, and LoadDeltas is NotFound for pruned versions;
//   * a write whose ctx.deadline has passed (by the fake's clock) before it
//     starts, or before it commits, is Unavailable and writes nothing;
//   * lag readings are replaced whole, as PgStore's; load windows are
//     recorded, not folded: AddLoad sums what it is given per window
//     (load_added()) and keeps the last fold_through; LoadLoadTable is
//     Unimplemented;
//   * handoffs: the open ones are in the snapshot; ListHandoffs lists them
//     and the ended ones; an ended handoff never changes again
//     (FailedPrecondition); LoadMoveTimes has the open_time of every
//     handoff a write opened, per listed team and per source pool;
//   * times kept (change log, clients) are truncated to the microsecond,
//     as PostgreSQL's timestamptz.
// The mapping is kept as a Snapshot: each version is the previous one with
// the plan's Change applied (Snapshot::Apply), which is what PgStore's rows
// reload as. A plan whose `after` is not at the next version is Internal.
//
// Test controls: FailNext() makes the next call(s) of one method, or of any
// method, return a given status with no other effect (a failed Write never
// calls plan()); calls() counts the calls of each method, failed ones
// included; SetLeaderEpoch() is the current leader epoch of the fence
// (0 at start, as in a fresh database); the clock is the one given to the
// constructor, or set_clock().
//
// Ownership: a test may hand the store over (std::unique_ptr) and keep a
// raw pointer to it for its controls. The clock is borrowed and must
// outlive the store.
//
// Thread safety: all methods are thread-safe. Writes hold a write lock
// across plan(), like the version row lock, but no lock the reads need, so
// plan() may read the store; it must not write to it (that deadlocks, as it
// would wait for the version row forever in PostgreSQL).
#ifndef BUCKETMAP_TESTS_SUPPORT_FAKE_STORE_H_
#define BUCKETMAP_TESTS_SUPPORT_FAKE_STORE_H_

#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "bucketmap/v1/types.pb.h"
#include "domain/handoff.h"
#include "domain/snapshot.h"
#include "server/base/clock.h"
#include "server/store/store.h"
#include "tests/support/fake_calls.h"

namespace bucketmap {

class FakeStore final : public Store {
 public:
  // The methods of Store, for FailNext() and calls().
  enum Method {
    kLoadSnapshot,
    kCurrentVersion,
    kCurrentVersionAndCluster,
    kWrite,
    kGetHistory,
    kLoadDeltas,
    kSaveClients,
    kListClients,
    kPrune,
    kLoadUnpublished,
    kMarkPublished,
    kGetOutboxStats,
    kListHandoffs,
    kLoadMoveTimes,
    kSaveLagReadings,
    kLoadLagReadings,
    kAddLoad,
  };

  // The cluster id of a FakeStore whose initial snapshot has none.
  static constexpr char kClusterId[] = "fake-cluster";
  // GetHistory's largest page, as PgStore's.
  static constexpr int32_t kMaxHistoryPageSize = 1000;

  // An empty mapping at version 0, as a freshly migrated database.
  explicit FakeStore(const Clock* clock = Clock::Real());
  // Starts at `initial` (its version, buckets, assignments and open
  // handoffs; cluster id kClusterId when it has none), with no change log
  // before it, as if every earlier version had been pruned. Null: empty.
  explicit FakeStore(std::shared_ptr<const Snapshot> initial, const Clock* clock = Clock::Real());
  FakeStore(const FakeStore&) = delete;
  FakeStore& operator=(const FakeStore&) = delete;

  // Store. See store.h; the notes say where PgStore's behaviour is copied.
  absl::StatusOr<std::shared_ptr<const Snapshot>> LoadSnapshot() override;
  absl::StatusOr<int64_t> CurrentVersion() override;
  absl::StatusOr<std::pair<int64_t, std::string>> CurrentVersionAndCluster() override;
  using Store::Write;
  // The plan's WriteReads answer from the fake's own tables, at its clock.
  absl::StatusOr<WriteResult> Write(const WriteContext& ctx, std::shared_ptr<const Snapshot> cached,
                                    const ReadingPlanFn& plan) override;
  // Store's default (the writes one by one through Write()), after
  // recording the group's size and calling the hook of
  // set_on_write_group(), if any.
  std::vector<absl::StatusOr<WriteResult>> WriteGroup(
      const std::vector<GroupedWrite>& writes, std::shared_ptr<const Snapshot> cached) override;
  // Page size <= 0 means 100; at most kMaxHistoryPageSize.
  absl::StatusOr<HistoryPage> GetHistory(const HistoryQuery& query) override;
  // InvalidArgument for a negative after_version; NotFound when a version
  // of the range is not kept (pruned, before the initial snapshot, or not
  // written yet).
  absl::StatusOr<std::vector<v1::MappingDelta>> LoadDeltas(int64_t after_version,
                                                           int64_t up_to) override;
  // InvalidArgument for an empty client_id, an infinite lease_until or an
  // InfiniteFuture() time. A client_id listed twice keeps its last state.
  // Versions never go back, and a disconnect saved by a replica other than
  // the client's, under a live lease, is dropped (as PgStore's upsert).
  absl::Status SaveClients(const std::vector<ClientState>& states, absl::Time lease_until) override;
  // Ascending by client_id (byte order).
  absl::StatusOr<std::vector<ClientState>> ListClients(absl::Time now) override;
  absl::StatusOr<int64_t> Prune(absl::Time now, absl::Duration history_retention,
                                absl::Duration request_id_retention) override;
  absl::StatusOr<std::vector<OutboxRow>> LoadUnpublished(int64_t after_version, int limit) override;
  using Store::MarkPublished;
  absl::Status MarkPublished(int64_t up_to_version, int64_t leader_epoch) override;
  // last_published_version is the highest published version still kept
  // (0 once Prune dropped them all), as PgStore's query.
  absl::StatusOr<OutboxStats> GetOutboxStats() override;
  absl::StatusOr<std::vector<v1::Handoff>> ListHandoffs(const HandoffQuery& query) override;
  absl::StatusOr<MoveTimes> LoadMoveTimes(const std::vector<int64_t>& team_ids) override;
  // Kept as given (one per bucket and role, the first of duplicates),
  // read back ascending by bucket id and role. The load windows
  // are recorded by AddLoad (load_added(), last_fold_through()), not
  // folded: the folding is PostgreSQL's (tests/store/signals_store_test.cc).
  absl::Status SaveLagReadings(const std::vector<LagReading>& readings) override;
  absl::StatusOr<std::vector<LagReading>> LoadLagReadings() override;
  absl::Status AddLoad(const LoadConfig& config, const LoadSlots& slots, int64_t fold_through,
                       double min_rate) override;

  // FailNext()
  //
  // The next `times` calls of any method (or of `method`) return `status`
  // (not OK) and do nothing else. Failures queued for a method are used
  // before those queued for any method.
  void FailNext(absl::Status status, int times = 1) { calls_.FailNext(std::move(status), times); }
  void FailNext(Method method, absl::Status status, int times = 1) {
    calls_.FailNext(method, std::move(status), times);
  }
  void ClearFailures() { calls_.ClearFailures(); }

  // Calls of `method` (or of every method) so far, failed ones included.
  int64_t calls(Method method) const { return calls_.calls(method); }
  int64_t total_calls() const { return calls_.total_calls(); }
  void ResetCounters() { calls_.ResetCounters(); }

  // SetLeaderEpoch()
  //
  // The leader epoch fenced writes and MarkPublished must carry from now
  // on (a new leader's bump). Like the bump in PostgreSQL, it waits for the
  // write in progress, if any.
  void SetLeaderEpoch(int64_t epoch);
  int64_t leader_epoch() const;

  // Where the store reads the time from now on. Not null; borrowed.
  void set_clock(const Clock* clock);

  // Called at the start of every WriteGroup() with the group's size,
  // before it runs; a test may block in it (writers then queue). Set it
  // before writing.
  void set_on_write_group(std::function<void(size_t)> hook) { on_write_group_ = std::move(hook); }
  // The size of every WriteGroup() call so far, in order.
  std::vector<size_t> write_groups() const;

  // Inspection, without counting as calls: the committed version and
  // snapshot, and the kept change-log rows (ascending by version).
  int64_t version() const;
  std::shared_ptr<const Snapshot> snapshot() const;
  std::vector<OutboxRow> ChangeLog() const;
  // Every rate AddLoad was given, summed per window and key, and the
  // fold_through of its last call (INT64_MIN before any).
  LoadSlots load_added() const;
  int64_t last_fold_through() const;

 private:
  struct LogRow {
    OutboxRow row;  // version, kind, actor, reason, request_id, created_at, delta
    int64_t assignments_changed = 0;
    std::vector<int32_t> bucket_ids;
    std::vector<int64_t> team_ids;  // set or unset at this version, ascending
    std::optional<absl::Time> published_at;
  };
  struct RememberedRequest {
    std::string fingerprint;
    std::string response;
    int64_t version = 0;
    absl::Time created_at;
  };

  absl::Time Now() const ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status CheckEpoch(int64_t epoch) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The part of Write() after the request_id, fence and expected_version
  // checks, holding write_mu_ only (plan() runs unlocked).
  absl::StatusOr<WriteResult> PlanAndCommit(const WriteContext& ctx,
                                            std::shared_ptr<const Snapshot> before,
                                            const ReadingPlanFn& plan)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  FakeCalls<Method> calls_;

  // Held across a whole write (the version row lock) and by
  // SetLeaderEpoch (the epoch bump waits for in-flight fenced writes).
  absl::Mutex write_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  const Clock* clock_ ABSL_GUARDED_BY(mu_);
  int64_t leader_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<const Snapshot> current_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, LogRow> log_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, RememberedRequest> requests_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, ClientState> clients_ ABSL_GUARDED_BY(mu_);
  // Every handoff ever written, by id, in its latest state.
  std::map<int64_t, Handoff> handoffs_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, absl::Time> team_moves_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Time, std::less<>> pool_moves_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<int32_t, std::string>, LagReading> lag_ ABSL_GUARDED_BY(mu_);
  std::function<void(size_t)> on_write_group_;
  std::vector<size_t> write_groups_ ABSL_GUARDED_BY(mu_);
  LoadSlots load_added_ ABSL_GUARDED_BY(mu_);
  int64_t last_fold_through_ ABSL_GUARDED_BY(mu_) = std::numeric_limits<int64_t>::min();
};

}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_SUPPORT_FAKE_STORE_H_
