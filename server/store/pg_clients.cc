#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include "bucketmap/v1/mapping.pb.h"
#include "domain/status_macros.h"
#include "server/store/pg_session.h"

namespace bucketmap {

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

const Statement kClientStatements[] = {
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
    // A sequential scan that stops at the first leased producer: the table
    // has no index on lease_expires (see 0002_watch_clients.sql).
    {"producer_leased",
     "SELECT EXISTS (SELECT 1 FROM watch_clients WHERE role = $1"
     " AND lease_expires > timestamptz 'epoch' + $2::bigint * interval '1 microsecond')"},
};
const size_t kClientStatementCount = sizeof(kClientStatements) / sizeof(Statement);

namespace {

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

}  // namespace

#undef BUCKETMAP_CLIENT_UPSERT_GUARD

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

absl::StatusOr<bool> TransactionReads::ProducerLeased() {
  if (!producer_leased_.has_value()) {
    try {
      producer_leased_ = tx_.exec_prepared1("producer_leased", static_cast<int>(v1::PRODUCER),
                                            absl::ToUnixMicros(clock_->Now()))[0]
                             .as<bool>();
    } catch (...) {
      producer_leased_ = StatusFromCurrentException("read producer leases");
    }
  }
  return *producer_leased_;
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

}  // namespace bucketmap
