#include "server/store/pg_store.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bucketmap/v1/types.pb.h"
#include "codec/codec.h"
#include "domain/status_macros.h"
#include "server/store/bucket_json.h"
#include "server/store/migrator.h"
#include "server/store/pg_handoff_store.h"
#include "server/store/pg_session.h"
#include "spdlog/spdlog.h"

namespace bucketmap {

const Statement kWriteStatements[] = {
    {"set_timeouts",
     "SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $1, true)"},
    {"read_meta", "SELECT version, cluster_id, next_bucket_id FROM bm_meta"},
    {"lock_meta", "SELECT version, cluster_id, next_bucket_id FROM bm_meta FOR UPDATE"},
    {"read_buckets",
     "SELECT id, name, state, weight, pool, spec::text, created_version, updated_version"
     " FROM buckets ORDER BY id"},
    {"find_request",
     "SELECT fingerprint, response, version FROM request_ids WHERE request_id = $1"},
    {"remember_request",
     "INSERT INTO request_ids (request_id, fingerprint, response, version)"
     " VALUES ($1, $2, $3, $4)"},
    {"upsert_bucket",
     "INSERT INTO buckets (id, name, state, weight, pool, spec, created_version, updated_version)"
     " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)"
     " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, state = EXCLUDED.state,"
     " weight = EXCLUDED.weight, pool = EXCLUDED.pool, spec = EXCLUDED.spec,"
     " created_version = EXCLUDED.created_version, updated_version = EXCLUDED.updated_version"},
    {"upsert_assignment",
     "INSERT INTO assignments (team_id, bucket_id, pool, version)"
     " VALUES ($1, NULLIF($2::integer, 0), NULLIF($3::text, ''), $4)"
     " ON CONFLICT (team_id) DO UPDATE SET bucket_id = EXCLUDED.bucket_id,"
     " pool = EXCLUDED.pool, version = EXCLUDED.version"},
    {"delete_assignment", "DELETE FROM assignments WHERE team_id = $1"},
    {"insert_log_team", "INSERT INTO change_log_teams (team_id, version) VALUES ($1, $2)"},
    {"insert_log",
     "INSERT INTO change_log (version, kind, actor, reason, request_id, assignments_changed,"
     " bucket_ids, delta) VALUES ($1, $2, $3, $4, NULLIF($5::text, ''), $6, $7::integer[], $8)"},
    // Fencing (SPEC §5.8): shared, so fenced writes do not queue on each
    // other, while the new leader's epoch bump waits for them.
    {"lock_leader", "SELECT epoch FROM bm_leader FOR SHARE"},
    // When the teams of $1 and every pool last moved (QueryMoveTimes):
    // the teams' rows (pool NULL), then the pools'.
    {"move_times",
     "SELECT team_id, NULL::text, (extract(epoch FROM moved_at) * 1000000)::bigint"
     " FROM team_moves WHERE team_id = ANY($1::bigint[])"
     " UNION ALL"
     " SELECT NULL::bigint, pool, (extract(epoch FROM moved_at) * 1000000)::bigint"
     " FROM pool_moves"},
    // The version row and the notification of its new version, in one
    // round trip. The notification is delivered to the listening replicas
    // at commit, in commit order.
    {"bump_meta",
     "WITH bumped AS (UPDATE bm_meta SET version = $1,"
     " next_bucket_id = GREATEST(next_bucket_id, $2) RETURNING 1)"
     " SELECT pg_notify($3, $4) FROM bumped"},
};
const size_t kWriteStatementCount = sizeof(kWriteStatements) / sizeof(Statement);

namespace {

// What the writes of one transaction share: the version row as the writes
// before have left it.
struct GroupState {
  const pqxx::row* meta = nullptr;  // bm_meta as locked
  int64_t version = 0;              // after the writes so far
  std::string cluster_id;
  // The mapping at `version`; null until a plan needs it.
  std::shared_ptr<const Snapshot> mapping;
  int32_t next_bucket_id = 0;  // the largest of the changes'
  bool changed = false;        // some write bumps the version
  // The request_ids to remember, written last, just before COMMIT.
  struct Request {
    const WriteContext* ctx;  // null for one committed before the group
    std::string response;
    int64_t version;
  };
  std::vector<Request> requests;
};

// One write inside its group's transaction `tx` (the steps of
// Store::Write, without the commit); may throw libpqxx exceptions. Sets
// *plan_called before calling plan(), and *wrote when it writes a row. A
// write that returns an error wrote nothing, unless it also sets *fatal:
// then `tx` holds part of it, or is aborted, and must be rolled back.
absl::StatusOr<WriteResult> WriteInTransaction(pqxx::work& tx, const PgStoreOptions& options,
                                               const WriteContext& ctx, const ReadingPlanFn& plan,
                                               GroupState* group, bool* plan_called, bool* wrote,
                                               bool* fatal) {
  const std::string what = ctx.kind.empty() ? "write" : ctx.kind;
  if (ctx.deadline <= options.clock->Now()) {
    return absl::UnavailableError(absl::StrCat(what, ": deadline passed before the write"));
  }
  if (ctx.leader_epoch != 0) RETURN_IF_ERROR(CheckLeaderEpoch(tx, ctx.leader_epoch));

  if (!ctx.request_id.empty()) {
    // Seen earlier in this group, or committed before it.
    std::optional<GroupState::Request> seen;
    std::string fingerprint;
    for (const GroupState::Request& request : group->requests) {
      if (request.ctx->request_id != ctx.request_id) continue;
      seen = request;
      fingerprint = request.ctx->fingerprint;
    }
    if (!seen.has_value()) {
      const pqxx::result rows = tx.exec_prepared("find_request", ctx.request_id);
      if (!rows.empty()) {
        seen = GroupState::Request{nullptr, pqxx::binarystring(rows[0][1]).str(),
                                   rows[0][2].as<int64_t>()};
        fingerprint = pqxx::binarystring(rows[0][0]).str();
      }
    }
    if (seen.has_value()) {
      if (fingerprint != ctx.fingerprint) {
        return absl::InvalidArgumentError(
            absl::StrCat("request_id: \"", ctx.request_id,
                         "\" was already used for a different request; use a new request_id"));
      }
      WriteResult replay;
      replay.replayed = true;
      replay.response = std::move(seen->response);
      replay.version = seen->version;
      return replay;  // it writes nothing
    }
  }

  if (ctx.expected_version != 0 && ctx.expected_version != group->version) {
    return absl::AbortedError(absl::StrCat("expected_version ", ctx.expected_version,
                                           " does not match current version ", group->version));
  }

  if (group->mapping == nullptr) {
    // No write of the group has changed the mapping yet: it is at the
    // locked version.
    ASSIGN_OR_RETURN(MappingState state, ReadState(tx, *group->meta));
    absl::StatusOr<std::shared_ptr<const Snapshot>> built = Snapshot::Build(std::move(state));
    if (!built.ok()) {
      return absl::InternalError(
          absl::StrCat("stored mapping is inconsistent: ", built.status().message()));
    }
    group->mapping = *std::move(built);
  }
  const Snapshot& before = *group->mapping;

  *plan_called = true;
  TransactionReads reads(tx, options.clock);
  absl::StatusOr<PlannedWrite> planned = plan(before, reads);
  if (reads.failed()) {
    *fatal = true;  // the failed read aborted `tx`
    return planned.ok() ? absl::InternalError(absl::StrCat(what, ": a read of its plan failed"))
                        : planned.status();
  }
  if (!planned.ok()) return planned.status();

  WriteResult result;
  result.response = planned->response;
  result.effect = planned->plan.effect;
  if (!planned->plan.effect.changed) {
    if (!ctx.request_id.empty()) {
      group->requests.push_back({&ctx, planned->response, group->version});
      *wrote = true;
    }
    result.version = group->version;
    result.snapshot = group->mapping;
    return result;
  }

  const int64_t version = group->version + 1;
  const Change& change = planned->plan.change;
  if (planned->plan.after == nullptr || planned->plan.after->version() != version) {
    return absl::InternalError(
        absl::StrCat(what, ": plan produced no snapshot at version ", version));
  }

  // From here on, an error leaves part of this write in `tx`.
  *fatal = true;
  std::vector<int32_t> bucket_ids;
  for (const Bucket& bucket : change.buckets) {
    tx.exec_prepared0("upsert_bucket", bucket.id, bucket.name, static_cast<int>(bucket.state),
                      bucket.weight, bucket.pool, BucketToJson(bucket), bucket.created_version,
                      bucket.updated_version);
    bucket_ids.push_back(bucket.id);
  }
  RETURN_IF_ERROR(PersistAssignments(tx, before, change, version, options.copy_threshold));
  RETURN_IF_ERROR(PersistHandoffs(tx, change, version, ctx.leader_epoch));
  RETURN_IF_ERROR(PersistPoolsAndRules(tx, change, version));

  v1::MappingDelta delta;
  ToProto(change, version, &delta);
  auto encoded = std::make_shared<const std::string>(delta.SerializeAsString());
  tx.exec_prepared0("insert_log", version, ctx.kind, ctx.actor, ctx.reason, ctx.request_id,
                    static_cast<int64_t>(change.set.size() + change.unset.size()),
                    IntArrayLiteral(bucket_ids), pqxx::binarystring(*encoded));
  if (!ctx.request_id.empty()) group->requests.push_back({&ctx, planned->response, version});
  *fatal = false;
  *wrote = true;
  group->version = version;
  group->mapping = planned->plan.after;
  group->next_bucket_id = std::max(group->next_bucket_id, change.next_bucket_id);
  group->changed = true;

  result.version = version;
  result.snapshot = planned->plan.after;
  result.encoded_delta = std::move(encoded);
  return result;
}

}  // namespace

PgStore::PgStore(PgStoreOptions options, std::string conninfo)
    : options_(std::move(options)), conninfo_(std::move(conninfo)) {}

PgStore::~PgStore() {
  absl::MutexLock lock(&mu_);
  idle_.clear();
}

absl::StatusOr<std::unique_ptr<PgStore>> PgStore::Open(const PgStoreOptions& options) {
  if (options.url.empty()) return absl::InvalidArgumentError("postgres_url: must not be empty");
  if (options.pool_size < 1) return absl::InvalidArgumentError("pool_size: must be at least 1");
  // PostgreSQL takes at most INT_MAX milliseconds (24.8 days).
  if (options.idle_in_transaction_timeout < absl::ZeroDuration() ||
      options.idle_in_transaction_timeout > absl::Milliseconds(INT32_MAX)) {
    return absl::InvalidArgumentError(
        "idle_in_transaction_timeout: must be between 0 (off) and 24 days");
  }
  const int connect_seconds = std::max<int64_t>(
      1, absl::ToInt64Seconds(absl::Ceil(options.connect_timeout, absl::Seconds(1))));
  std::string conninfo = WithConnectionDefaults(options.url, connect_seconds);
  if (options.run_migrations) {
    ASSIGN_OR_RETURN(MigrationReport report, RunMigrations(conninfo, options.migrations_dir));
    (void)report;
  }
  std::unique_ptr<PgStore> store(new PgStore(options, std::move(conninfo)));
  // Fails early on an unmigrated or unreachable database.
  ASSIGN_OR_RETURN(int64_t version, store->CurrentVersion());
  spdlog::info("PostgreSQL store open at version {}", version);
  return store;
}

absl::StatusOr<PgStore::Lease> PgStore::Acquire(absl::Time deadline) {
  std::unique_ptr<Connection> conn;
  {
    absl::MutexLock lock(&mu_);
    auto available = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !idle_.empty() || open_ < options_.pool_size;
    };
    if (!mu_.AwaitWithDeadline(absl::Condition(&available), deadline)) {
      return absl::UnavailableError("PostgreSQL connection pool exhausted until the deadline");
    }
    if (!idle_.empty()) {
      conn = std::move(idle_.back());
      idle_.pop_back();
    } else {
      ++open_;
    }
  }
  if (conn != nullptr) {
    // Notices a server that closed the connection while it was idle (a
    // restart) without a round trip: get_notifs() only reads what is
    // already on the socket.
    try {
      conn->conn.get_notifs();
      return Lease(this, std::move(conn), /*reused=*/true);
    } catch (...) {
      conn.reset();  // counted in open_ still; reconnect below
    }
  }
  try {
    conn = std::make_unique<Connection>(conninfo_);
    for (const auto& [table, count] :
         {std::make_pair(kWriteStatements, kWriteStatementCount),
          std::make_pair(kChangeLogStatements, kChangeLogStatementCount),
          std::make_pair(kClientStatements, kClientStatementCount)}) {
      for (size_t i = 0; i < count; ++i) conn->conn.prepare(table[i].name, table[i].sql);
    }
    if (options_.idle_in_transaction_timeout > absl::ZeroDuration()) {
      // set_variable, not a bare SET: libpqxx restores it if it ever
      // reconnects this connection by itself.
      const int64_t ms = absl::ToInt64Milliseconds(
          absl::Ceil(options_.idle_in_transaction_timeout, absl::Milliseconds(1)));
      conn->conn.set_variable("idle_in_transaction_session_timeout", absl::StrCat(ms));
    }
    return Lease(this, std::move(conn), /*reused=*/false);
  } catch (...) {
    absl::Status status = StatusFromCurrentException("connect to PostgreSQL");
    absl::MutexLock lock(&mu_);
    --open_;
    return status;
  }
}

void PgStore::Release(std::unique_ptr<Connection> conn, bool healthy) {
  absl::MutexLock lock(&mu_);
  if (healthy && conn->conn.is_open()) {
    idle_.push_back(std::move(conn));
  } else {
    conn.reset();
    --open_;
  }
}

absl::StatusOr<std::shared_ptr<const Snapshot>> PgStore::LoadSnapshot() {
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  return RunWithRetry<std::shared_ptr<const Snapshot>>(
      [&] { return Acquire(deadline); }, "load snapshot",
      [&](Connection& conn, bool*) -> absl::StatusOr<std::shared_ptr<const Snapshot>> {
        // One consistent snapshot of meta, buckets and assignments.
        pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx(conn.conn);
        SetTimeouts(tx, deadline - options_.clock->Now());
        pqxx::row meta = tx.exec_prepared1("read_meta");
        ASSIGN_OR_RETURN(MappingState state, ReadState(tx, meta));
        tx.commit();
        absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot =
            Snapshot::Build(std::move(state));
        if (!snapshot.ok()) {
          return absl::InternalError(absl::StrCat("load snapshot: stored mapping is inconsistent: ",
                                                  snapshot.status().message()));
        }
        return snapshot;
      });
}

absl::StatusOr<int64_t> PgStore::CurrentVersion() {
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  return RunWithRetry<int64_t>([&] { return Acquire(deadline); }, "read version",
                               [&](Connection& conn, bool*) -> absl::StatusOr<int64_t> {
                                 pqxx::read_transaction tx(conn.conn);
                                 SetTimeouts(tx, deadline - options_.clock->Now());
                                 int64_t version = tx.exec_prepared1("read_meta")[0].as<int64_t>();
                                 tx.commit();
                                 return version;
                               });
}

absl::StatusOr<std::pair<int64_t, std::string>> PgStore::CurrentVersionAndCluster() {
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  return RunWithRetry<std::pair<int64_t, std::string>>(
      [&] { return Acquire(deadline); }, "read version",
      [&](Connection& conn, bool*) -> absl::StatusOr<std::pair<int64_t, std::string>> {
        pqxx::read_transaction tx(conn.conn);
        SetTimeouts(tx, deadline - options_.clock->Now());
        const pqxx::row meta = tx.exec_prepared1("read_meta");
        tx.commit();
        return std::make_pair(meta[0].as<int64_t>(), meta[1].as<std::string>());
      });
}

absl::StatusOr<WriteResult> PgStore::Write(const WriteContext& ctx,
                                           std::shared_ptr<const Snapshot> cached,
                                           const ReadingPlanFn& plan) {
  const std::string what = ctx.kind.empty() ? "write" : ctx.kind;
  const absl::Time deadline = std::min(ctx.deadline, options_.clock->Now() + options_.read_timeout);
  if (ctx.deadline <= options_.clock->Now()) {
    return absl::UnavailableError(absl::StrCat(what, ": deadline passed before the write"));
  }
  const std::vector<GroupedWrite> one = {GroupedWrite{&ctx, &plan}};
  return RunWithRetry<WriteResult>(
      [&] { return Acquire(deadline); }, what,
      [&](Connection& conn, bool* retryable) -> absl::StatusOr<WriteResult> {
        std::vector<absl::StatusOr<WriteResult>> results;
        bool plan_called = false;
        bool committing = false;
        absl::Status s;
        try {
          s = WriteGroupOnce(conn, one, deadline, cached, &results, &plan_called, &committing);
        } catch (...) {
          s = StatusFromCurrentException(what);
        }
        // plan() is not called again on a stale connection's retry: a
        // write's single attempt ran it.
        *retryable = !plan_called;
        if (!s.ok()) return s;
        return std::move(results[0]);
      });
}

std::vector<absl::StatusOr<WriteResult>> PgStore::WriteGroup(
    const std::vector<GroupedWrite>& writes, std::shared_ptr<const Snapshot> cached) {
  if (writes.size() <= 1) return Store::WriteGroup(writes, std::move(cached));
  // Statements may run until the latest deadline; each write's own is
  // checked before it runs and before COMMIT.
  const absl::Time now = options_.clock->Now();
  absl::Time deadline = absl::InfinitePast();
  for (const GroupedWrite& write : writes) deadline = std::max(deadline, write.ctx->deadline);
  deadline = std::min(deadline, now + options_.read_timeout);
  std::vector<absl::StatusOr<WriteResult>> results;
  bool committing = false;
  absl::StatusOr<bool> group =
      RunWithRetry<bool>([&] { return Acquire(deadline); }, "write group",
                         [&](Connection& conn, bool* retryable) -> absl::StatusOr<bool> {
                           *retryable = false;  // a failed group is run again write by write
                           bool plan_called = false;
                           RETURN_IF_ERROR(WriteGroupOnce(conn, writes, deadline, cached, &results,
                                                          &plan_called, &committing));
                           return true;
                         });
  if (group.ok()) return results;
  if (committing) {
    // The outcome is unknown for every write that was to commit.
    for (absl::StatusOr<WriteResult>& result : results) {
      if (result.ok()) result = group.status();
    }
    return results;
  }
  spdlog::info("a group of {} writes was rolled back before COMMIT ({}); running them one by one",
               writes.size(), group.status().ToString());
  return Store::WriteGroup(writes, std::move(cached));
}

absl::Status PgStore::WriteGroupOnce(Connection& conn, const std::vector<GroupedWrite>& writes,
                                     absl::Time deadline,
                                     const std::shared_ptr<const Snapshot>& cached,
                                     std::vector<absl::StatusOr<WriteResult>>* results,
                                     bool* plan_called, bool* committing) {
  results->clear();
  pqxx::work tx(conn.conn);
  SetTimeouts(tx, deadline - options_.clock->Now());
  // The global write order: every writer queues on this row lock.
  const pqxx::row meta = tx.exec_prepared1("lock_meta");
  GroupState group;
  group.meta = &meta;
  group.version = meta[0].as<int64_t>();
  group.cluster_id = meta[1].as<std::string>();
  if (cached != nullptr && cached->version() == group.version &&
      cached->cluster_id() == group.cluster_id) {
    group.mapping = cached;
  }
  std::vector<const WriteContext*> to_commit;
  for (const GroupedWrite& write : writes) {
    bool wrote = false;
    bool fatal = false;
    results->push_back(WriteInTransaction(tx, options_, *write.ctx, *write.plan, &group,
                                          plan_called, &wrote, &fatal));
    if (fatal) return results->back().status();
    if (wrote) to_commit.push_back(write.ctx);
  }
  if (to_commit.empty()) {
    tx.commit();  // it wrote nothing; ends the transaction and the lock
    return absl::OkStatus();
  }
  if (group.changed) {
    tx.exec_prepared1("bump_meta", group.version, group.next_bucket_id, kVersionChannel,
                      absl::StrCat(group.version, " ", group.cluster_id));
  }
  for (const GroupState::Request& request : group.requests) {
    tx.exec_prepared0("remember_request", request.ctx->request_id,
                      pqxx::binarystring(request.ctx->fingerprint),
                      pqxx::binarystring(request.response), request.version);
  }
  // The caller of a write whose deadline passed has its error (or is about
  // to get it), so the write must not take effect after all: the
  // transaction is rolled back (when `tx` is destroyed) and Unavailable
  // returned, with nothing written. This is the last check that can be
  // made: a deadline that passes during the COMMIT round trip itself still
  // commits (the caller's request_id tells it so on a replay).
  for (const WriteContext* ctx : to_commit) {
    const absl::Time write_deadline = std::min(ctx->deadline, deadline);
    if (options_.TEST_before_commit) options_.TEST_before_commit(*ctx, write_deadline);
    if (options_.clock->Now() >= write_deadline) {
      return absl::UnavailableError(
          absl::StrCat(ctx->kind.empty() ? "write" : ctx->kind,
                       ": deadline passed before COMMIT; rolled back, nothing was written"));
    }
  }
  *committing = true;
  tx.commit();
  return absl::OkStatus();
}

}  // namespace bucketmap
