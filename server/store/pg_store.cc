#include "server/store/pg_store.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "bucketmap/v1/types.pb.h"
#include "codec/codec.h"
#include "domain/status_macros.h"
#include "server/store/bucket_json.h"
#include "server/store/migrator.h"
#include "server/store/pg_handoff_store.h"
#include "server/store/pg_util.h"
#include "spdlog/spdlog.h"

namespace bucketmap {
namespace {

// Timeouts below this would fire before a healthy round trip completes.
constexpr absl::Duration kMinStatementTimeout = absl::Milliseconds(5);

// Prepared statements, registered on every new connection (libpqxx prepares
// them on first use).
struct Statement {
  const char* name;
  const char* sql;
};

// The tail of both watch_clients upserts. Several replicas save the same
// client: the one it left may still hold an older state in its batch.
// Versions never go back (GREATEST), and a disconnect reported by a replica
// other than the one the client is connected to, under a live lease, is
// dropped: the client has moved on.
#define BUCKETMAP_CLIENT_UPSERT_GUARD                                                     \
  "applied_version = GREATEST(watch_clients.applied_version, EXCLUDED.applied_version),"  \
  " drained_version = GREATEST(watch_clients.drained_version, EXCLUDED.drained_version)," \
  " connected_at = EXCLUDED.connected_at, last_ack = EXCLUDED.last_ack,"                  \
  " last_nack = EXCLUDED.last_nack, last_nack_error = EXCLUDED.last_nack_error,"          \
  " nacks = EXCLUDED.nacks, connected = EXCLUDED.connected,"                              \
  " lease_expires = EXCLUDED.lease_expires"                                               \
  " WHERE EXCLUDED.connected OR NOT watch_clients.connected"                              \
  " OR watch_clients.replica = EXCLUDED.replica OR watch_clients.lease_expires < now()"

constexpr Statement kStatements[] = {
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
    // Delivered to the listening replicas at commit, in commit order.
    {"notify_version", "SELECT pg_notify($1, $2)"},
    {"bump_meta", "UPDATE bm_meta SET version = $1, next_bucket_id = GREATEST(next_bucket_id, $2)"},
    {"history_range",
     "SELECT version, kind, actor, reason, COALESCE(request_id, ''),"
     " (EXTRACT(EPOCH FROM created_at) * 1000000)::bigint, assignments_changed,"
     " bucket_ids::text, CASE WHEN $4 THEN delta END"
     " FROM change_log WHERE version >= $1 AND version <= $2 ORDER BY version LIMIT $3"},
    {"history_team",
     "SELECT c.version, c.kind, c.actor, c.reason, COALESCE(c.request_id, ''),"
     " (EXTRACT(EPOCH FROM c.created_at) * 1000000)::bigint, c.assignments_changed,"
     " c.bucket_ids::text, CASE WHEN $4 THEN c.delta END"
     " FROM change_log_teams t JOIN change_log c ON c.version = t.version"
     " WHERE t.team_id = $5 AND t.version >= $1 AND t.version <= $2"
     " ORDER BY t.version LIMIT $3"},
    // Prune deletes from the oldest version up, so a resume whose first
    // delta is gone reads no rows at all rather than every later delta.
    {"load_deltas",
     "SELECT version, delta FROM change_log WHERE version > $1::bigint AND version <= $2::bigint"
     " AND EXISTS (SELECT 1 FROM change_log WHERE version = $1::bigint + 1) ORDER BY version"},
    // Times travel as microseconds since the Unix epoch (exact both ways);
    // NULL stays NULL.
    {"upsert_client",
     "INSERT INTO watch_clients (client_id, role, replica, peer, applied_version,"
     " drained_version, connected_at, last_ack, last_nack, last_nack_error, nacks, connected,"
     " lease_expires) VALUES ($1, $2, $3, $4, $5, $6,"
     " timestamptz 'epoch' + $7::bigint * interval '1 microsecond',"
     " timestamptz 'epoch' + $8::bigint * interval '1 microsecond',"
     " timestamptz 'epoch' + $9::bigint * interval '1 microsecond', $10, $11, $12,"
     " timestamptz 'epoch' + $13::bigint * interval '1 microsecond')"
     " ON CONFLICT (client_id) DO UPDATE SET role = EXCLUDED.role, replica = EXCLUDED.replica,"
     " peer = EXCLUDED.peer, " BUCKETMAP_CLIENT_UPSERT_GUARD},
    // The outbox (0003_outbox.sql): the partial index on unpublished
    // versions serves these three.
    {"load_unpublished",
     "SELECT version, kind, actor, reason, COALESCE(request_id, ''),"
     " (EXTRACT(EPOCH FROM created_at) * 1000000)::bigint, delta"
     " FROM change_log WHERE published_at IS NULL AND version > $1::bigint"
     " ORDER BY version LIMIT $2::bigint"},
    {"mark_published",
     "UPDATE change_log SET published_at = now()"
     " WHERE published_at IS NULL AND version <= $1::bigint"},
    // The oldest unpublished row is the lowest version (versions commit
    // in order), found through the index rather than by reading the
    // whole backlog, which grows for as long as Kafka is down.
    {"outbox_backlog",
     "SELECT count(*), COALESCE((SELECT (EXTRACT(EPOCH FROM clock_timestamp() - created_at)"
     " * 1000000)::bigint FROM change_log WHERE published_at IS NULL ORDER BY version LIMIT 1), 0)"
     " FROM change_log WHERE published_at IS NULL"},
    // Walks the primary key down from the newest version, past the
    // backlog, to the first published row.
    {"last_published",
     "SELECT COALESCE(max(version), 0) FROM change_log WHERE published_at IS NOT NULL"},
    // Byte order (COLLATE "C"), whatever the database's collation, so the
    // order matches std::string's.
    {"list_clients",
     "SELECT client_id, role, replica, peer, applied_version, drained_version,"
     " (EXTRACT(EPOCH FROM connected_at) * 1000000)::bigint,"
     " (EXTRACT(EPOCH FROM last_ack) * 1000000)::bigint,"
     " (EXTRACT(EPOCH FROM last_nack) * 1000000)::bigint, last_nack_error, nacks, connected,"
     " (EXTRACT(EPOCH FROM lease_expires) * 1000000)::bigint"
     " FROM watch_clients"
     " WHERE lease_expires > COALESCE(timestamptz 'epoch' + $1::bigint * interval '1 microsecond',"
     " '-infinity') ORDER BY client_id COLLATE \"C\""},
};

// Bulk path. New overrides are COPYed straight into `assignments` and
// every touched team into `change_log_teams` (COPY inserts rows in batches;
// ON CONFLICT would double the cost). Changed and removed overrides are
// COPYed into this staging table, then applied with one UPDATE and one
// DELETE. A removal has bucket_id 0 and pool ''.
constexpr char kCreateStage[] =
    "CREATE TEMP TABLE bm_stage_assignments (team_id bigint NOT NULL,"
    " bucket_id integer NOT NULL, pool text NOT NULL) ON COMMIT DROP";
constexpr char kStageUpdate[] =
    "UPDATE assignments a SET bucket_id = NULLIF(s.bucket_id, 0), pool = NULLIF(s.pool, ''),"
    " version = $1 FROM bm_stage_assignments s"
    " WHERE a.team_id = s.team_id AND (s.bucket_id <> 0 OR s.pool <> '')";
constexpr char kStageDelete[] =
    "DELETE FROM assignments a USING bm_stage_assignments s"
    " WHERE a.team_id = s.team_id AND s.bucket_id = 0 AND s.pool = ''";

// SaveClients' bulk path: states are COPYed into this per-session staging
// table, then upserted with one statement. Created once per connection
// rather than per call (ON COMMIT DROP) because SaveClients runs every
// second: it spares the catalog a table created and dropped each time.
constexpr char kCreateClientStage[] =
    "CREATE TEMP TABLE bm_stage_clients (client_id text NOT NULL, role smallint NOT NULL,"
    " replica text NOT NULL, peer text NOT NULL, applied_version bigint NOT NULL,"
    " drained_version bigint NOT NULL, connected_at bigint, last_ack bigint, last_nack bigint,"
    " last_nack_error text NOT NULL, nacks bigint NOT NULL, connected boolean NOT NULL)"
    " ON COMMIT DELETE ROWS";
// Rows are upserted in client_id byte order, as the small path does, so two
// replicas saving overlapping clients lock rows in the same order and
// cannot deadlock.
constexpr char kClientStageUpsert[] =
    "INSERT INTO watch_clients (client_id, role, replica, peer, applied_version,"
    " drained_version, connected_at, last_ack, last_nack, last_nack_error, nacks, connected,"
    " lease_expires)"
    " SELECT client_id, role, replica, peer, applied_version, drained_version,"
    " timestamptz 'epoch' + connected_at * interval '1 microsecond',"
    " timestamptz 'epoch' + last_ack * interval '1 microsecond',"
    " timestamptz 'epoch' + last_nack * interval '1 microsecond', last_nack_error, nacks,"
    " connected, timestamptz 'epoch' + $1::bigint * interval '1 microsecond'"
    " FROM bm_stage_clients ORDER BY client_id COLLATE \"C\""
    " ON CONFLICT (client_id) DO UPDATE SET role = EXCLUDED.role, replica = EXCLUDED.replica,"
    " peer = EXCLUDED.peer, " BUCKETMAP_CLIENT_UPSERT_GUARD;
#undef BUCKETMAP_CLIENT_UPSERT_GUARD

// A ClientState time as stored: NULL (nullopt) for "never".
std::optional<int64_t> ToDbMicros(absl::Time t) {
  if (t == absl::InfinitePast()) return std::nullopt;
  return absl::ToUnixMicros(t);
}

absl::Time FromDbMicros(const pqxx::field& field) {
  return field.is_null() ? absl::InfinitePast() : absl::FromUnixMicros(field.as<int64_t>());
}

std::string TimeoutSetting(absl::Duration timeout) {
  return absl::StrCat(absl::ToInt64Milliseconds(std::max(timeout, kMinStatementTimeout)));
}

// Bounds every statement of the current transaction by `timeout`, so a
// stuck lock or server turns into Unavailable rather than a hang.
void SetTimeouts(pqxx::transaction_base& tx, absl::Duration timeout) {
  tx.exec_prepared("set_timeouts", TimeoutSetting(timeout));
}

// Decodes one field of COPY's text format into *out; false for NULL (\N).
bool DecodeCopyField(absl::string_view raw, std::string* out) {
  if (raw == "\\N") return false;
  out->clear();
  out->reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c != '\\' || i + 1 == raw.size()) {
      out->push_back(c);
      continue;
    }
    char e = raw[++i];
    switch (e) {
      case 'b':
        out->push_back('\b');
        break;
      case 'f':
        out->push_back('\f');
        break;
      case 'n':
        out->push_back('\n');
        break;
      case 'r':
        out->push_back('\r');
        break;
      case 't':
        out->push_back('\t');
        break;
      case 'v':
        out->push_back('\v');
        break;
      default:
        if (e >= '0' && e <= '7') {
          int value = e - '0';
          for (int k = 0; k < 2 && i + 1 < raw.size() && raw[i + 1] >= '0' && raw[i + 1] <= '7';
               ++k) {
            value = value * 8 + (raw[++i] - '0');
          }
          out->push_back(static_cast<char>(value));
        } else if (e == 'x' && i + 1 < raw.size() && absl::ascii_isxdigit(raw[i + 1])) {
          int value = 0;
          for (int k = 0; k < 2 && i + 1 < raw.size() && absl::ascii_isxdigit(raw[i + 1]); ++k) {
            char h = raw[++i];
            value =
                value * 16 + (absl::ascii_isdigit(h) ? h - '0' : absl::ascii_tolower(h) - 'a' + 10);
          }
          out->push_back(static_cast<char>(value));
        } else {
          out->push_back(e);
        }
    }
  }
  return true;
}

// Reads the whole mapping inside `tx`. The meta row is passed in because a
// write has already read (and locked) it.
absl::StatusOr<MappingState> ReadState(pqxx::transaction_base& tx, const pqxx::row& meta) {
  MappingState state;
  state.version = meta[0].as<int64_t>();
  state.cluster_id = meta[1].as<std::string>();
  state.next_bucket_id = meta[2].as<int32_t>();

  for (const pqxx::row& row : tx.exec_prepared("read_buckets")) {
    absl::StatusOr<Bucket> parsed = BucketFromJson(row[5].as<std::string>());
    if (!parsed.ok()) {
      return absl::InternalError(absl::StrCat("stored spec of bucket ", row[0].c_str(),
                                              " is corrupt: ", parsed.status().message()));
    }
    Bucket bucket = *std::move(parsed);
    // The columns are authoritative for what SQL filters on.
    bucket.id = row[0].as<int32_t>();
    bucket.name = row[1].as<std::string>();
    bucket.state = static_cast<BucketState>(row[2].as<int>());
    bucket.weight = row[3].as<int32_t>();
    bucket.pool = row[4].as<std::string>();
    bucket.created_version = row[6].as<int64_t>();
    bucket.updated_version = row[7].as<int64_t>();
    state.buckets.push_back(std::move(bucket));
  }

  // COPY is several times faster than a SELECT for a million rows; rows
  // come in heap order, so sort unless they already are.
  pqxx::stream_from copy(tx, "assignments",
                         std::vector<std::string>{"team_id", "bucket_id", "pool"});
  std::string line;
  std::string field;
  bool sorted = true;
  while (copy.get_raw_line(line)) {
    absl::string_view rest(line);
    if (!rest.empty() && rest.back() == '\n') rest.remove_suffix(1);
    const size_t tab1 = rest.find('\t');
    const size_t tab2 = tab1 == absl::string_view::npos ? tab1 : rest.find('\t', tab1 + 1);
    if (tab2 == absl::string_view::npos) {
      return absl::InternalError(absl::StrCat("load assignments: malformed COPY row: ", line));
    }
    int64_t team_id = 0;
    int32_t bucket_id = 0;
    if (!absl::SimpleAtoi(rest.substr(0, tab1), &team_id)) {
      return absl::InternalError(absl::StrCat("load assignments: bad team_id in: ", line));
    }
    Target target;
    absl::string_view bucket_field = rest.substr(tab1 + 1, tab2 - tab1 - 1);
    if (bucket_field != "\\N") {
      if (!absl::SimpleAtoi(bucket_field, &bucket_id)) {
        return absl::InternalError(absl::StrCat("load assignments: bad bucket_id in: ", line));
      }
      target.bucket_id = bucket_id;
    } else if (DecodeCopyField(rest.substr(tab2 + 1), &field)) {
      target.pool = field;
    }
    if (!state.assignments.empty() && state.assignments.back().first >= team_id) sorted = false;
    state.assignments.emplace_back(team_id, std::move(target));
  }
  copy.complete();
  if (!sorted) {
    std::sort(state.assignments.begin(), state.assignments.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
  }
  RETURN_IF_ERROR(ReadHandoffState(tx, &state));
  return state;
}

std::string IntArrayLiteral(const std::vector<int32_t>& values) {
  return absl::StrCat("{", absl::StrJoin(values, ","), "}");
}

std::vector<int32_t> ParseIntArray(absl::string_view text) {
  std::vector<int32_t> values;
  text = absl::StripPrefix(absl::StripSuffix(text, "}"), "{");
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int32_t value = 0;
    if (absl::SimpleAtoi(part, &value)) values.push_back(value);
  }
  return values;
}

// Writes the assignment rows of `change` at `version`, with their
// change_log_teams rows. `before` is the mapping at version - 1: it tells
// new overrides from changed ones.
absl::Status PersistAssignments(pqxx::transaction_base& tx, const Snapshot& before,
                                const Change& change, int64_t version, int copy_threshold) {
  const size_t rows = change.set.size() + change.unset.size();
  if (rows == 0) return absl::OkStatus();
  if (rows <= static_cast<size_t>(copy_threshold)) {
    for (const auto& [team_id, target] : change.set) {
      tx.exec_prepared0("upsert_assignment", team_id, target.bucket_id, target.pool, version);
      tx.exec_prepared0("insert_log_team", team_id, version);
    }
    for (int64_t team_id : change.unset) {
      tx.exec_prepared0("delete_assignment", team_id);
      tx.exec_prepared0("insert_log_team", team_id, version);
    }
    return absl::OkStatus();
  }

  size_t staged = 0;
  {
    pqxx::stream_to copy(tx, "assignments",
                         std::vector<std::string>{"team_id", "bucket_id", "pool", "version"});
    std::string bucket_text;
    for (const auto& [team_id, target] : change.set) {
      if (before.FindAssignment(team_id).has_value()) {
        ++staged;
        continue;
      }
      // const char* null pointers are written as NULL.
      bucket_text = absl::StrCat(target.bucket_id);
      copy << std::make_tuple(team_id, target.is_pin() ? bucket_text.c_str() : nullptr,
                              target.is_pin() ? nullptr : target.pool.c_str(), version);
    }
    copy.complete();
  }
  staged += change.unset.size();
  if (staged > 0) {
    tx.exec0(kCreateStage);
    pqxx::stream_to copy(tx, "bm_stage_assignments",
                         std::vector<std::string>{"team_id", "bucket_id", "pool"});
    size_t updates = 0;
    for (const auto& [team_id, target] : change.set) {
      if (!before.FindAssignment(team_id).has_value()) continue;
      copy << std::make_tuple(team_id, target.bucket_id, target.pool);
      ++updates;
    }
    const std::string none;
    for (int64_t team_id : change.unset) copy << std::make_tuple(team_id, int32_t{0}, none);
    copy.complete();
    if (updates > 0) {
      const pqxx::result updated = tx.exec_params0(kStageUpdate, version);
      if (updated.affected_rows() != updates) {
        return absl::InternalError(
            absl::StrCat("updated ", updated.affected_rows(), " assignments, expected ", updates));
      }
    }
    if (!change.unset.empty()) tx.exec0(kStageDelete);
  }
  {
    pqxx::stream_to copy(tx, "change_log_teams", std::vector<std::string>{"team_id", "version"});
    for (const auto& entry : change.set) copy << std::make_tuple(entry.first, version);
    for (int64_t team_id : change.unset) copy << std::make_tuple(team_id, version);
    copy.complete();
  }
  return absl::OkStatus();
}

// Commits `tx` unless `deadline` has passed. The caller of a write whose
// deadline passed has its error (or is about to get it), so the write must
// not take effect after all: it is rolled back (when `tx` is destroyed)
// and Unavailable returned, with nothing written. This is the last check
// that can be made: a deadline that passes during the COMMIT round trip
// itself still commits (the caller's request_id tells it so on a replay).
absl::Status CommitBeforeDeadline(pqxx::transaction_base& tx, const PgStoreOptions& options,
                                  const WriteContext& ctx, absl::Time deadline) {
  if (options.TEST_before_commit) options.TEST_before_commit(ctx, deadline);
  if (options.clock->Now() >= deadline) {
    return absl::UnavailableError(
        absl::StrCat(ctx.kind.empty() ? "write" : ctx.kind,
                     ": deadline passed before COMMIT; rolled back, nothing was written"));
  }
  tx.commit();
  return absl::OkStatus();
}

// Fails unless `epoch` is the current leader epoch; the shared row lock
// it takes holds until the transaction ends (see 0004_leader.sql).
absl::Status CheckLeaderEpoch(pqxx::transaction_base& tx, int64_t epoch) {
  const int64_t current = tx.exec_prepared1("lock_leader")[0].as<int64_t>();
  if (current != epoch) {
    return absl::FailedPreconditionError(
        absl::StrCat("not the leader: leader epoch ", epoch, " was superseded by epoch ", current));
  }
  return absl::OkStatus();
}

}  // namespace

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
    for (const Statement& s : kStatements) conn->conn.prepare(s.name, s.sql);
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

namespace {

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

}  // namespace

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
                                           const PlanFn& plan) {
  const std::string what = ctx.kind.empty() ? "write" : ctx.kind;
  const absl::Time deadline = std::min(ctx.deadline, options_.clock->Now() + options_.read_timeout);
  if (ctx.deadline <= options_.clock->Now()) {
    return absl::UnavailableError(absl::StrCat(what, ": deadline passed before the write"));
  }
  return RunWithRetry<WriteResult>(
      [&] { return Acquire(deadline); }, what,
      [&](Connection& conn, bool* retryable) -> absl::StatusOr<WriteResult> {
        bool plan_called = false;
        absl::StatusOr<WriteResult> result;
        try {
          result = WriteOnce(conn, ctx, deadline, cached, plan, &plan_called);
        } catch (...) {
          result = StatusFromCurrentException(what);
        }
        // plan() may have side effects the caller counts on happening once.
        *retryable = !plan_called;
        return result;
      });
}

absl::StatusOr<WriteResult> PgStore::WriteOnce(Connection& conn, const WriteContext& ctx,
                                               absl::Time deadline,
                                               const std::shared_ptr<const Snapshot>& cached,
                                               const PlanFn& plan, bool* plan_called) {
  pqxx::work tx(conn.conn);
  SetTimeouts(tx, deadline - options_.clock->Now());
  // The global write order: every writer queues on this row lock.
  const pqxx::row meta = tx.exec_prepared1("lock_meta");
  const int64_t current = meta[0].as<int64_t>();
  const std::string cluster_id = meta[1].as<std::string>();
  if (ctx.leader_epoch != 0) RETURN_IF_ERROR(CheckLeaderEpoch(tx, ctx.leader_epoch));

  if (!ctx.request_id.empty()) {
    const pqxx::result seen = tx.exec_prepared("find_request", ctx.request_id);
    if (!seen.empty()) {
      const pqxx::binarystring fingerprint(seen[0][0]);
      if (fingerprint.str() != ctx.fingerprint) {
        return absl::InvalidArgumentError(
            absl::StrCat("request_id: \"", ctx.request_id,
                         "\" was already used for a different request; use a new request_id"));
      }
      WriteResult replay;
      replay.replayed = true;
      replay.response = pqxx::binarystring(seen[0][1]).str();
      replay.version = seen[0][2].as<int64_t>();
      return replay;  // the transaction rolls back: it wrote nothing
    }
  }

  if (ctx.expected_version != 0 && ctx.expected_version != current) {
    return absl::AbortedError(absl::StrCat("expected_version ", ctx.expected_version,
                                           " does not match current version ", current));
  }

  std::shared_ptr<const Snapshot> before;
  if (cached != nullptr && cached->version() == current && cached->cluster_id() == cluster_id) {
    before = cached;
  } else {
    ASSIGN_OR_RETURN(MappingState state, ReadState(tx, meta));
    absl::StatusOr<std::shared_ptr<const Snapshot>> built = Snapshot::Build(std::move(state));
    if (!built.ok()) {
      return absl::InternalError(
          absl::StrCat("stored mapping is inconsistent: ", built.status().message()));
    }
    before = *std::move(built);
  }

  *plan_called = true;
  ASSIGN_OR_RETURN(PlannedWrite planned, plan(*before));

  WriteResult result;
  result.response = planned.response;
  result.effect = planned.plan.effect;
  if (!planned.plan.effect.changed) {
    if (!ctx.request_id.empty()) {
      tx.exec_prepared0("remember_request", ctx.request_id, pqxx::binarystring(ctx.fingerprint),
                        pqxx::binarystring(planned.response), current);
      RETURN_IF_ERROR(CommitBeforeDeadline(tx, options_, ctx, deadline));
    } else {
      tx.commit();  // it wrote nothing; ends the transaction and the lock
    }
    result.version = current;
    result.snapshot = before;
    return result;
  }

  const int64_t version = current + 1;
  const Change& change = planned.plan.change;
  if (planned.plan.after == nullptr || planned.plan.after->version() != version) {
    return absl::InternalError(
        absl::StrCat(ctx.kind, ": plan produced no snapshot at version ", version));
  }

  std::vector<int32_t> bucket_ids;
  for (const Bucket& bucket : change.buckets) {
    tx.exec_prepared0("upsert_bucket", bucket.id, bucket.name, static_cast<int>(bucket.state),
                      bucket.weight, bucket.pool, BucketToJson(bucket), bucket.created_version,
                      bucket.updated_version);
    bucket_ids.push_back(bucket.id);
  }
  RETURN_IF_ERROR(PersistAssignments(tx, *before, change, version, options_.copy_threshold));
  RETURN_IF_ERROR(PersistHandoffs(tx, change, version, ctx.leader_epoch));

  v1::MappingDelta delta;
  ToProto(change, version, &delta);
  tx.exec_prepared0("insert_log", version, ctx.kind, ctx.actor, ctx.reason, ctx.request_id,
                    static_cast<int64_t>(change.set.size() + change.unset.size()),
                    IntArrayLiteral(bucket_ids), pqxx::binarystring(delta.SerializeAsString()));
  tx.exec_prepared0("bump_meta", version, change.next_bucket_id);
  tx.exec_prepared1("notify_version", kVersionChannel, absl::StrCat(version, " ", cluster_id));
  if (!ctx.request_id.empty()) {
    tx.exec_prepared0("remember_request", ctx.request_id, pqxx::binarystring(ctx.fingerprint),
                      pqxx::binarystring(planned.response), version);
  }
  RETURN_IF_ERROR(CommitBeforeDeadline(tx, options_, ctx, deadline));

  result.version = version;
  result.snapshot = planned.plan.after;
  return result;
}

absl::StatusOr<HistoryPage> PgStore::GetHistory(const HistoryQuery& query) {
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  const int32_t page_size =
      query.page_size <= 0 ? 100 : std::min(query.page_size, kMaxHistoryPageSize);
  const int64_t from = std::max<int64_t>(query.from_version, 0);
  const int64_t to = query.to_version <= 0 ? std::numeric_limits<int64_t>::max() : query.to_version;
  return RunWithRetry<HistoryPage>(
      [&] { return Acquire(deadline); }, "get history",
      [&](Connection& conn, bool*) -> absl::StatusOr<HistoryPage> {
        pqxx::read_transaction tx(conn.conn);
        SetTimeouts(tx, deadline - options_.clock->Now());
        // One row more than the page tells whether another page follows.
        const int64_t limit = int64_t{page_size} + 1;
        const pqxx::result rows =
            query.team_id != 0
                ? tx.exec_prepared("history_team", from, to, limit, query.include_delta,
                                   query.team_id)
                : tx.exec_prepared("history_range", from, to, limit, query.include_delta);
        tx.commit();
        HistoryPage page;
        for (const pqxx::row& row : rows) {
          if (page.records.size() == static_cast<size_t>(page_size)) {
            page.next_from_version = row[0].as<int64_t>();
            break;
          }
          v1::ChangeRecord& record = page.records.emplace_back();
          record.set_version(row[0].as<int64_t>());
          record.set_kind(row[1].as<std::string>());
          record.set_actor(row[2].as<std::string>());
          record.set_reason(row[3].as<std::string>());
          record.set_request_id(row[4].as<std::string>());
          const int64_t micros = row[5].as<int64_t>();
          record.mutable_create_time()->set_seconds(micros / 1000000);
          record.mutable_create_time()->set_nanos(static_cast<int32_t>(micros % 1000000) * 1000);
          record.set_assignments_changed(row[6].as<int64_t>());
          for (int32_t id : ParseIntArray(row[7].as<std::string>())) record.add_bucket_ids(id);
          if (!row[8].is_null()) {
            const pqxx::binarystring delta(row[8]);
            if (!record.mutable_delta()->ParseFromArray(delta.data(),
                                                        static_cast<int>(delta.size()))) {
              return absl::InternalError(
                  absl::StrCat("get history: corrupt delta at version ", record.version()));
            }
          }
        }
        return page;
      });
}

absl::StatusOr<std::vector<v1::MappingDelta>> PgStore::LoadDeltas(int64_t after_version,
                                                                  int64_t up_to) {
  if (after_version < 0) return absl::InvalidArgumentError("after_version: must not be negative");
  if (up_to <= after_version) return std::vector<v1::MappingDelta>{};
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  return RunWithRetry<std::vector<v1::MappingDelta>>(
      [&] { return Acquire(deadline); }, "load deltas",
      [&](Connection& conn, bool*) -> absl::StatusOr<std::vector<v1::MappingDelta>> {
        pqxx::read_transaction tx(conn.conn);
        SetTimeouts(tx, deadline - options_.clock->Now());
        const pqxx::result rows = tx.exec_prepared("load_deltas", after_version, up_to);
        tx.commit();
        // Versions are gapless and the range is bounded, so any missing
        // row shows in the count.
        if (static_cast<int64_t>(rows.size()) != up_to - after_version) {
          return absl::NotFoundError(absl::StrCat("load deltas: versions ", after_version + 1, "..",
                                                  up_to, " are not all in the change log (",
                                                  rows.size(), " kept): pruned or not written"));
        }
        std::vector<v1::MappingDelta> deltas(rows.size());
        for (size_t i = 0; i < rows.size(); ++i) {
          const int64_t version = rows[i][0].as<int64_t>();
          const pqxx::binarystring bytes(rows[i][1]);
          if (!deltas[i].ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) ||
              deltas[i].to_version() != version) {
            return absl::InternalError(
                absl::StrCat("load deltas: corrupt delta at version ", version));
          }
        }
        return deltas;
      });
}

absl::Status PgStore::SaveClients(const std::vector<ClientState>& states, absl::Time lease_until) {
  if (lease_until == absl::InfinitePast() || lease_until == absl::InfiniteFuture()) {
    return absl::InvalidArgumentError("lease_until: must be finite");
  }
  for (size_t i = 0; i < states.size(); ++i) {
    const ClientState& s = states[i];
    if (s.client_id.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("states[", i, "].client_id: must not be empty"));
    }
    const char* infinite = s.connected_at == absl::InfiniteFuture() ? "connected_at"
                           : s.last_ack == absl::InfiniteFuture()   ? "last_ack"
                           : s.last_nack == absl::InfiniteFuture()  ? "last_nack"
                                                                    : nullptr;
    if (infinite != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "states[", i, "].", infinite, ": must be finite, or InfinitePast() for never"));
    }
  }
  if (states.empty()) return absl::OkStatus();

  // In client_id byte order (see kClientStageUpsert), the last state of a
  // client_id listed twice winning; ON CONFLICT cannot touch a row twice.
  std::vector<const ClientState*> sorted;
  sorted.reserve(states.size());
  for (const ClientState& s : states) sorted.push_back(&s);
  std::stable_sort(sorted.begin(), sorted.end(), [](const ClientState* a, const ClientState* b) {
    return a->client_id < b->client_id;
  });
  std::vector<const ClientState*> rows;
  rows.reserve(sorted.size());
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (i + 1 < sorted.size() && sorted[i + 1]->client_id == sorted[i]->client_id) continue;
    rows.push_back(sorted[i]);
  }

  const int64_t lease_micros = absl::ToUnixMicros(lease_until);
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  absl::StatusOr<bool> saved = RunWithRetry<bool>(
      [&] { return Acquire(deadline); }, "save clients",
      [&](Connection& conn, bool*) -> absl::StatusOr<bool> {
        pqxx::work tx(conn.conn);
        SetTimeouts(tx, deadline - options_.clock->Now());
        bool created_stage = false;
        if (rows.size() <= static_cast<size_t>(options_.copy_threshold)) {
          for (const ClientState* s : rows) {
            tx.exec_prepared0("upsert_client", s->client_id, s->role, s->replica, s->peer,
                              s->applied_version, s->drained_version, ToDbMicros(s->connected_at),
                              ToDbMicros(s->last_ack), ToDbMicros(s->last_nack), s->last_nack_error,
                              s->nacks, s->connected, lease_micros);
          }
        } else {
          if (!conn.has_client_stage) {
            tx.exec0(kCreateClientStage);
            created_stage = true;
          }
          pqxx::stream_to copy(
              tx, "bm_stage_clients",
              std::vector<std::string>{"client_id", "role", "replica", "peer", "applied_version",
                                       "drained_version", "connected_at", "last_ack", "last_nack",
                                       "last_nack_error", "nacks", "connected"});
          for (const ClientState* s : rows) {
            copy << std::make_tuple(s->client_id, s->role, s->replica, s->peer, s->applied_version,
                                    s->drained_version, ToDbMicros(s->connected_at),
                                    ToDbMicros(s->last_ack), ToDbMicros(s->last_nack),
                                    s->last_nack_error, s->nacks, s->connected);
          }
          copy.complete();
          tx.exec_params0(kClientStageUpsert, lease_micros);
        }
        tx.commit();
        // Only now: a rolled-back CREATE leaves no table behind.
        if (created_stage) conn.has_client_stage = true;
        return true;
      });
  return saved.status();
}

absl::StatusOr<std::vector<ClientState>> PgStore::ListClients(absl::Time now) {
  if (now == absl::InfiniteFuture()) return std::vector<ClientState>{};
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  return RunWithRetry<std::vector<ClientState>>(
      [&] { return Acquire(deadline); }, "list clients",
      [&](Connection& conn, bool*) -> absl::StatusOr<std::vector<ClientState>> {
        pqxx::read_transaction tx(conn.conn);
        SetTimeouts(tx, deadline - options_.clock->Now());
        const pqxx::result rows = tx.exec_prepared("list_clients", ToDbMicros(now));
        tx.commit();
        std::vector<ClientState> clients(rows.size());
        for (size_t i = 0; i < rows.size(); ++i) {
          const pqxx::row& row = rows[i];
          ClientState& c = clients[i];
          c.client_id = row[0].as<std::string>();
          c.role = row[1].as<int>();
          c.replica = row[2].as<std::string>();
          c.peer = row[3].as<std::string>();
          c.applied_version = row[4].as<int64_t>();
          c.drained_version = row[5].as<int64_t>();
          c.connected_at = FromDbMicros(row[6]);
          c.last_ack = FromDbMicros(row[7]);
          c.last_nack = FromDbMicros(row[8]);
          c.last_nack_error = row[9].as<std::string>();
          c.nacks = row[10].as<int64_t>();
          c.connected = row[11].as<bool>();
          c.lease_expires = FromDbMicros(row[12]);
        }
        return clients;
      });
}

absl::StatusOr<int64_t> PgStore::Prune(absl::Time now, absl::Duration history_retention,
                                       absl::Duration request_id_retention) {
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  const int64_t history_cutoff = absl::ToUnixMicros(now - history_retention);
  const int64_t request_cutoff = absl::ToUnixMicros(now - request_id_retention);
  return RunWithRetry<int64_t>(
      [&] { return Acquire(deadline); }, "prune",
      [&](Connection& conn, bool*) -> absl::StatusOr<int64_t> {
        pqxx::work tx(conn.conn);
        SetTimeouts(tx, deadline - options_.clock->Now());
        // Rows not yet published to Kafka are the outbox: never pruned.
        // The relay publishes in version order, so what is kept is still
        // a suffix of the versions, as LoadDeltas expects.
        //
        // change_log_teams has no index on version: the join scans it once,
        // which is fine for a job that runs rarely.
        constexpr char kCutoff[] = "(timestamptz 'epoch' + $1 * interval '1 microsecond')";
        const pqxx::row log = tx.exec_params1(
            absl::StrCat("WITH gone AS (DELETE FROM change_log WHERE created_at < ", kCutoff,
                         " AND published_at IS NOT NULL RETURNING version),"
                         " teams AS (DELETE FROM change_log_teams t USING gone"
                         " WHERE t.version = gone.version)"
                         " SELECT count(*) FROM gone"),
            history_cutoff);
        const pqxx::result requests = tx.exec_params0(
            absl::StrCat("DELETE FROM request_ids WHERE created_at < ", kCutoff), request_cutoff);
        tx.commit();
        return log[0].as<int64_t>() + static_cast<int64_t>(requests.affected_rows());
      });
}

absl::StatusOr<std::vector<OutboxRow>> PgStore::LoadUnpublished(int64_t after_version, int limit) {
  if (limit < 1) return absl::InvalidArgumentError("limit: must be at least 1");
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  return RunWithRetry<std::vector<OutboxRow>>(
      [&] { return Acquire(deadline); }, "load unpublished",
      [&](Connection& conn, bool*) -> absl::StatusOr<std::vector<OutboxRow>> {
        pqxx::read_transaction tx(conn.conn);
        SetTimeouts(tx, deadline - options_.clock->Now());
        const pqxx::result rows =
            tx.exec_prepared("load_unpublished", after_version, static_cast<int64_t>(limit));
        tx.commit();
        std::vector<OutboxRow> out(rows.size());
        for (size_t i = 0; i < rows.size(); ++i) {
          const pqxx::row& row = rows[i];
          OutboxRow& r = out[i];
          r.version = row[0].as<int64_t>();
          r.kind = row[1].as<std::string>();
          r.actor = row[2].as<std::string>();
          r.reason = row[3].as<std::string>();
          r.request_id = row[4].as<std::string>();
          r.created_at = absl::FromUnixMicros(row[5].as<int64_t>());
          r.delta = pqxx::binarystring(row[6]).str();
        }
        return out;
      });
}

absl::Status PgStore::MarkPublished(int64_t up_to_version, int64_t leader_epoch) {
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  absl::StatusOr<bool> marked =
      RunWithRetry<bool>([&] { return Acquire(deadline); }, "mark published",
                         [&](Connection& conn, bool*) -> absl::StatusOr<bool> {
                           pqxx::work tx(conn.conn);
                           SetTimeouts(tx, deadline - options_.clock->Now());
                           if (leader_epoch != 0)
                             RETURN_IF_ERROR(CheckLeaderEpoch(tx, leader_epoch));
                           tx.exec_prepared0("mark_published", up_to_version);
                           tx.commit();
                           return true;
                         });
  return marked.status();
}

absl::StatusOr<OutboxStats> PgStore::GetOutboxStats() {
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  return RunWithRetry<OutboxStats>(
      [&] { return Acquire(deadline); }, "outbox stats",
      [&](Connection& conn, bool*) -> absl::StatusOr<OutboxStats> {
        pqxx::read_transaction tx(conn.conn);
        SetTimeouts(tx, deadline - options_.clock->Now());
        const pqxx::row backlog = tx.exec_prepared1("outbox_backlog");
        const pqxx::row last = tx.exec_prepared1("last_published");
        tx.commit();
        OutboxStats stats;
        stats.backlog = backlog[0].as<int64_t>();
        stats.oldest_age = absl::Microseconds(std::max<int64_t>(0, backlog[1].as<int64_t>()));
        stats.last_published_version = last[0].as<int64_t>();
        return stats;
      });
}

absl::StatusOr<std::vector<v1::Handoff>> PgStore::ListHandoffs(const HandoffQuery& query) {
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  return RunWithRetry<std::vector<v1::Handoff>>(
      [&] { return Acquire(deadline); }, "list handoffs",
      [&](Connection& conn, bool*) -> absl::StatusOr<std::vector<v1::Handoff>> {
        pqxx::read_transaction tx(conn.conn);
        SetTimeouts(tx, deadline - options_.clock->Now());
        ASSIGN_OR_RETURN(std::vector<v1::Handoff> out, QueryHandoffs(tx, query));
        tx.commit();
        return out;
      });
}

absl::StatusOr<MoveTimes> PgStore::LoadMoveTimes(const std::vector<int64_t>& team_ids) {
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  return RunWithRetry<MoveTimes>([&] { return Acquire(deadline); }, "load move times",
                                 [&](Connection& conn, bool*) -> absl::StatusOr<MoveTimes> {
                                   pqxx::read_transaction tx(conn.conn);
                                   SetTimeouts(tx, deadline - options_.clock->Now());
                                   ASSIGN_OR_RETURN(MoveTimes out, QueryMoveTimes(tx, team_ids));
                                   tx.commit();
                                   return out;
                                 });
}

}  // namespace bucketmap
