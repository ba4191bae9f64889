// PgStore: the Store on PostgreSQL, through libpqxx.
//
// Schema: migrations/ (0001_init.sql: the mapping and change log;
// 0002_watch_clients.sql: watch client state; 0003_outbox.sql: the
// change log's published_at, which makes it the outbox; 0004_leader.sql:
// the leader epoch that fences leader-only writes; 0007_pools_and_rules.sql:
// pool objects and team rules). The single bm_meta row holds the
// global version, the cluster id and the next bucket id; each write locks
// it (SELECT ... FOR UPDATE), so writes are serialised across every
// replica and versions are gapless and visible in commit order.
//
// Connections: a small pool, created lazily. A connection that breaks is
// dropped and a new one is made on next use, so the store recovers by
// itself when PostgreSQL comes back. Every transaction is bounded: its
// statements by the deadline (statement_timeout, lock_timeout), the time
// between them by idle_in_transaction_timeout, so the write of a frozen
// process cannot hold the version row for long. No libpqxx exception
// leaves this class: every failure is an absl::Status (see
// server/pg_util.h for the mapping).
//
// Thread safety: all methods may be called concurrently; each call uses
// its own pooled connection. Every method blocks on I/O.
#ifndef BUCKETMAP_SERVER_STORE_PG_STORE_H_
#define BUCKETMAP_SERVER_STORE_PG_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/base/clock.h"
#include "server/store/store.h"

namespace bucketmap {

// Every committed version is announced with pg_notify on this channel, the
// payload being "<version> <cluster_id>", the version in decimal (see
// server/pg_listener.h).
inline constexpr char kVersionChannel[] = "bucketmap_versions";

struct PgStoreOptions {
  // libpq connection string: a postgresql:// URI or key=value pairs.
  // connect_timeout is added unless present.
  std::string url;
#ifdef BUCKETMAP_MIGRATIONS_DIR
  std::string migrations_dir = BUCKETMAP_MIGRATIONS_DIR;
#else
  std::string migrations_dir;
#endif
  // Apply pending migrations in Open(). Off only for tools that must not
  // change the schema.
  bool run_migrations = true;
  // Maximum open connections. Writes serialise on the version row, so more
  // than a few only helps concurrent reads.
  int pool_size = 4;
  // libpq connect_timeout (whole seconds, at least 1).
  absl::Duration connect_timeout = absl::Seconds(2);
  // Deadline of the reads, which take none, and the longest any write
  // may run whatever its WriteContext::deadline.
  absl::Duration read_timeout = absl::Seconds(30);
  // PostgreSQL's idle_in_transaction_session_timeout on every pooled
  // connection: a transaction that runs no statement for this long is
  // ended by the server, its session closed and its locks released. A
  // write holds the version row from its first statement to COMMIT, so a
  // replica frozen mid-write (SIGSTOP, swap, a stuck thread; its socket
  // stays open) would otherwise stop every replica's writes for as long as
  // it is frozen. A healthy write is idle too while it plans in C++ under
  // the lock (about 0.2 s for a 100k-team BulkAssign over 1M assignments,
  // see bench/write_idle_bench.cc): keep this well above that. Zero leaves
  // the server's setting (off by default). At most 24 days.
  absl::Duration idle_in_transaction_timeout = absl::Seconds(2);
  // Writes changing more assignment rows than this, and SaveClients calls
  // with more states, go through COPY into a temporary table; smaller ones
  // use prepared statements.
  int copy_threshold = 64;
  // Where the store reads the time: deadlines, lease ends. Never null.
  const Clock* clock = Clock::Real();

  // Test only: called inside every write transaction that is about to
  // commit (a change, or a no-op that remembers its request_id), after its
  // last statement and just before the final deadline check and COMMIT,
  // with the write's effective deadline. The transaction holds the version
  // row meanwhile. Tests sleep in it past the deadline, or to freeze a
  // write while it holds the lock. Called from the writing thread.
  std::function<void(const WriteContext& ctx, absl::Time deadline)> TEST_before_commit;
};

class PgStore final : public Store {
 public:
  // Connects, applies pending migrations (options.migrations_dir) and
  // checks that the schema is usable.
  // Unavailable when PostgreSQL cannot be reached; FailedPrecondition when a
  // migration was edited or failed; InvalidArgument for a bad option (an
  // empty url, pool_size below 1, idle_in_transaction_timeout negative or
  // over 24 days).
  static absl::StatusOr<std::unique_ptr<PgStore>> Open(const PgStoreOptions& options);

  ~PgStore() override;
  PgStore(const PgStore&) = delete;
  PgStore& operator=(const PgStore&) = delete;

  absl::StatusOr<std::shared_ptr<const Snapshot>> LoadSnapshot() override;
  absl::StatusOr<int64_t> CurrentVersion() override;
  absl::StatusOr<std::pair<int64_t, std::string>> CurrentVersionAndCluster() override;
  // Handoffs and move times (server/pg_handoff_store.h).
  absl::StatusOr<std::vector<v1::Handoff>> ListHandoffs(const HandoffQuery& query) override;
  absl::StatusOr<MoveTimes> LoadMoveTimes(const std::vector<int64_t>& team_ids) override;
  // Signals (pg_signals.cc; migrations/0006_lag_and_load.sql).
  absl::Status SaveLagReadings(const std::vector<LagReading>& readings) override;
  absl::StatusOr<double> LoadRebalanceChurn(const std::string& pool, int64_t day) override;
  absl::Status AddRebalanceChurn(const std::string& pool, int64_t day, double share) override;
  absl::StatusOr<std::vector<LagReading>> LoadLagReadings() override;
  absl::Status AddLoad(const LoadConfig& config, const LoadSlots& slots, int64_t fold_through,
                       double min_rate) override;
  absl::StatusOr<LoadTable> LoadLoadTable() override;
  using Store::Write;
  absl::StatusOr<WriteResult> Write(const WriteContext& ctx, std::shared_ptr<const Snapshot> cached,
                                    const ReadingPlanFn& plan) override;
  // One transaction for the group (see Store::WriteGroup).
  std::vector<absl::StatusOr<WriteResult>> WriteGroup(
      const std::vector<GroupedWrite>& writes, std::shared_ptr<const Snapshot> cached) override;
  absl::StatusOr<HistoryPage> GetHistory(const HistoryQuery& query) override;
  // InvalidArgument for a negative after_version.
  absl::StatusOr<std::vector<v1::MappingDelta>> LoadDeltas(int64_t after_version,
                                                           int64_t up_to) override;
  // InvalidArgument for an empty client_id, an infinite lease_until or an
  // InfiniteFuture() time. Times are kept to the microsecond. A client_id
  // listed twice keeps its last state.
  absl::Status SaveClients(const std::vector<ClientState>& states, absl::Time lease_until) override;
  absl::StatusOr<std::vector<ClientState>> ListClients(absl::Time now) override;
  absl::StatusOr<int64_t> Prune(absl::Time now, absl::Duration history_retention,
                                absl::Duration request_id_retention) override;
  absl::StatusOr<std::vector<OutboxRow>> LoadUnpublished(int64_t after_version, int limit) override;
  using Store::MarkPublished;
  absl::Status MarkPublished(int64_t up_to_version, int64_t leader_epoch) override;
  absl::StatusOr<OutboxStats> GetOutboxStats() override;

  // Largest page GetHistory returns, whatever the query asks for.
  static constexpr int32_t kMaxHistoryPageSize = 1000;

 private:
  class Lease;
  struct Connection;  // wraps a pqxx::connection, keeping libpqxx out of this header

  PgStore(PgStoreOptions options, std::string conninfo);

  // Returns a connection (idle, or new if the pool has room), waiting until
  // `deadline` for one to be released. Unavailable on timeout or when
  // connecting fails.
  absl::StatusOr<Lease> Acquire(absl::Time deadline);
  // Gives a connection back; a broken one (`healthy` false) is closed.
  void Release(std::unique_ptr<Connection> conn, bool healthy);

  // One transaction of `writes` on `conn` (Write() runs a group of one);
  // may throw libpqxx exceptions. Fills *results with one result per write
  // run so far, sets *plan_called before calling a plan and *committing
  // before sending COMMIT. OK when the transaction committed (or had
  // nothing to commit); otherwise it was rolled back, unless *committing.
  absl::Status WriteGroupOnce(Connection& conn, const std::vector<GroupedWrite>& writes,
                              absl::Time deadline, const std::shared_ptr<const Snapshot>& cached,
                              std::vector<absl::StatusOr<WriteResult>>* results, bool* plan_called,
                              bool* committing);

  const PgStoreOptions options_;
  const std::string conninfo_;

  absl::Mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;  // idle plus leased
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_STORE_PG_STORE_H_
