// What the PgStore source files share (internal to bucketmap_store): the
// prepared-statement tables, the pooled connection and its lease, the retry
// of a call on a connection found dead, statement timeouts, the time and
// array encodings of the schema, and leader fencing. Functions taking a
// transaction may throw libpqxx exceptions; RunWithRetry converts them.
//
// The store's files, by responsibility:
//   pg_store.cc         opening, the connection pool, loading the snapshot,
//                       the write transaction
//   pg_mapping_rows.cc  reading and writing the mapping's rows (COPY)
//   pg_change_log.cc    history, deltas, pruning, the outbox
//   pg_clients.cc       watch clients' states (watch_clients)
//   pg_handoff_store.cc handoffs and move times
//   pg_signals.cc       lag readings and load averages (SPEC §9)
//   pg_pool_rules.cc    pools as objects and team rules
#ifndef BUCKETMAP_SERVER_STORE_PG_SESSION_H_
#define BUCKETMAP_SERVER_STORE_PG_SESSION_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "domain/change.h"
#include "domain/snapshot.h"
#include "server/store/pg_store.h"
#include "server/store/pg_util.h"
#include "spdlog/spdlog.h"

namespace bucketmap {

// Timeouts below this would fire before a healthy round trip completes.
constexpr absl::Duration kMinStatementTimeout = absl::Milliseconds(5);

// A prepared statement. Every table below is registered on every new
// connection (libpqxx prepares each on first use).
struct Statement {
  const char* name;
  const char* sql;
};

// The statements of pg_store.cc, pg_change_log.cc and pg_clients.cc.
extern const Statement kWriteStatements[];
extern const size_t kWriteStatementCount;
extern const Statement kChangeLogStatements[];
extern const size_t kChangeLogStatementCount;
extern const Statement kClientStatements[];
extern const size_t kClientStatementCount;

// A ClientState time as stored: NULL (nullopt) for "never".
inline std::optional<int64_t> ToDbMicros(absl::Time t) {
  if (t == absl::InfinitePast()) return std::nullopt;
  return absl::ToUnixMicros(t);
}

inline absl::Time FromDbMicros(const pqxx::field& field) {
  return field.is_null() ? absl::InfinitePast() : absl::FromUnixMicros(field.as<int64_t>());
}

inline std::string TimeoutSetting(absl::Duration timeout) {
  return absl::StrCat(absl::ToInt64Milliseconds(std::max(timeout, kMinStatementTimeout)));
}

// Bounds every statement of the current transaction by `timeout`, so a
// stuck lock or server turns into Unavailable rather than a hang.
inline void SetTimeouts(pqxx::transaction_base& tx, absl::Duration timeout) {
  tx.exec_prepared("set_timeouts", TimeoutSetting(timeout));
}

inline std::string IntArrayLiteral(const std::vector<int32_t>& values) {
  return absl::StrCat("{", absl::StrJoin(values, ","), "}");
}

inline std::vector<int32_t> ParseIntArray(absl::string_view text) {
  std::vector<int32_t> values;
  text = absl::StripPrefix(absl::StripSuffix(text, "}"), "{");
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int32_t value = 0;
    if (absl::SimpleAtoi(part, &value)) values.push_back(value);
  }
  return values;
}

// Fails unless `epoch` is the current leader epoch; the shared row lock
// it takes holds until the transaction ends (see 0004_leader.sql).
inline absl::Status CheckLeaderEpoch(pqxx::transaction_base& tx, int64_t epoch) {
  const int64_t current = tx.exec_prepared1("lock_leader")[0].as<int64_t>();
  if (current != epoch) {
    return absl::FailedPreconditionError(
        absl::StrCat("not the leader: leader epoch ", epoch, " was superseded by epoch ", current));
  }
  return absl::OkStatus();
}

struct PgStore::Connection {
  explicit Connection(const std::string& conninfo) : conn(conninfo) {}
  pqxx::connection conn;
  // bm_stage_clients exists in this session (set once its creation committed).
  bool has_client_stage = false;
};

// A pooled connection, returned to the pool when the lease ends.
class PgStore::Lease {
 public:
  Lease(PgStore* store, std::unique_ptr<Connection> conn, bool reused)
      : store_(store), conn_(std::move(conn)), reused_(reused) {}
  Lease(Lease&& other) noexcept
      : store_(other.store_),
        conn_(std::move(other.conn_)),
        reused_(other.reused_),
        healthy_(other.healthy_) {}
  Lease& operator=(Lease&&) = delete;
  ~Lease() {
    if (conn_ != nullptr) store_->Release(std::move(conn_), healthy_);
  }

  Connection& conn() { return *conn_; }
  // True when the connection was idle in the pool: it may have died
  // unnoticed (a PostgreSQL restart), so a failure is worth one retry.
  bool reused() const { return reused_; }
  void MarkBroken() { healthy_ = false; }

 private:
  PgStore* store_;
  std::unique_ptr<Connection> conn_;
  bool reused_;
  bool healthy_ = true;
};

// Runs `fn(conn)` on a pooled connection, converting exceptions. A failure
// caused by a stale pooled connection is retried once on a fresh one if
// `fn` left *retryable true.
template <typename T, typename Acquirer, typename Fn>
absl::StatusOr<T> RunWithRetry(Acquirer acquire, absl::string_view what, Fn fn) {
  for (int attempt = 0;; ++attempt) {
    auto lease = acquire();
    if (!lease.ok()) return lease.status();
    bool retryable = true;
    absl::StatusOr<T> result = absl::InternalError("unset");
    try {
      result = fn(lease->conn(), &retryable);
    } catch (...) {
      result = StatusFromCurrentException(what);
    }
    if (result.ok()) return result;
    if (IsConnectionLoss(result.status())) {
      lease->MarkBroken();
      if (attempt == 0 && retryable && lease->reused()) {
        spdlog::info("{}: retrying on a new connection after: {}", std::string(what),
                     std::string(result.status().message()));
        continue;
      }
    } else if (result.status().code() == absl::StatusCode::kUnavailable ||
               result.status().code() == absl::StatusCode::kInternal) {
      // A statement timeout or an unknown failure can leave the connection
      // mid-protocol; a new one is cheap.
      lease->MarkBroken();
    }
    return result;
  }
}

// The WriteReads of a write transaction: each read is a statement of `tx`,
// made at most once. Never throws: a failed read is a Status (and leaves
// `tx` aborted, so the write fails with it).
class TransactionReads final : public WriteReads {
 public:
  TransactionReads(pqxx::transaction_base& tx, const Clock* clock) : tx_(tx), clock_(clock) {}

  absl::StatusOr<bool> ProducerLeased() override;

  // Whether a read failed, which leaves the transaction aborted.
  bool failed() const { return producer_leased_.has_value() && !producer_leased_->ok(); }

 private:
  pqxx::transaction_base& tx_;
  const Clock* const clock_;
  std::optional<absl::StatusOr<bool>> producer_leased_;
};

// Reads the whole mapping inside `tx`, at the version of `meta` (the
// bm_meta row the caller read, and a write has locked).
absl::StatusOr<MappingState> ReadState(pqxx::transaction_base& tx, const pqxx::row& meta);

// Writes the assignment rows of `change` at `version`, with their
// change_log_teams rows; `before` (the mapping at version - 1) tells new
// overrides from changed ones. Rows beyond `copy_threshold` go by COPY.
absl::Status PersistAssignments(pqxx::transaction_base& tx, const Snapshot& before,
                                const Change& change, int64_t version, int copy_threshold);

// Adds the pool objects and the team rules to `state`. Internal when a
// stored spec cannot be parsed.
absl::Status ReadPoolsAndRules(pqxx::transaction_base& tx, MappingState* state);

// Writes the pool objects and team rules `change` sets or clears at
// `version`, and the change_log_teams rows of the rules' teams.
absl::Status PersistPoolsAndRules(pqxx::transaction_base& tx, const Change& change,
                                  int64_t version);

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_STORE_PG_SESSION_H_
