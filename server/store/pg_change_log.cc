#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "bucketmap/v1/types.pb.h"
#include "domain/status_macros.h"
#include "server/store/pg_session.h"

namespace bucketmap {

const Statement kChangeLogStatements[] = {
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
};
const size_t kChangeLogStatementCount = sizeof(kChangeLogStatements) / sizeof(Statement);

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

}  // namespace bucketmap
