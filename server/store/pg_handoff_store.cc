#include "server/store/pg_handoff_store.h"

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "codec/codec.h"
#include "domain/handoff.h"
#include "domain/placement.h"
#include "domain/status_macros.h"
#include "server/store/pg_session.h"

namespace bucketmap {
namespace {

constexpr char kOpenStates[] = "(1, 2)";

template <typename T>
std::string ArrayLiteral(const std::vector<T>& values) {
  return absl::StrCat("{", absl::StrJoin(values, ","), "}");
}

absl::StatusOr<v1::Handoff> ParseSpec(const pqxx::field& id, const pqxx::field& spec) {
  v1::Handoff h;
  const pqxx::binarystring bytes(spec);
  if (!h.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InternalError(absl::StrCat("stored handoff ", id.c_str(), " is corrupt"));
  }
  return h;
}

// Whether the handoff's pool_before placed `team_id` on its source. The
// team's override is not known here (ended handoffs outlive it): this is
// the "may involve" test of ListHandoffs.
bool PlacedOnSource(const v1::Handoff& h, int64_t team_id,
                    std::map<std::string, std::unique_ptr<PlacementTable>>* tables) {
  if (h.pool_before_size() == 0) return false;
  std::vector<PlacementMember> members;
  std::string key;
  for (const v1::PlacementMember& m : h.pool_before()) {
    members.push_back(PlacementMember{m.bucket_id(), m.weight()});
    absl::StrAppend(&key, m.bucket_id(), ":", m.weight(), ",");
  }
  auto& table = (*tables)[key];
  if (table == nullptr) {
    table = std::make_unique<PlacementTable>(PlacementTable::Build(std::move(members)));
  }
  return table->BucketForTeam(team_id) == h.source_bucket_id();
}

bool Involves(const v1::Handoff& h, int64_t team_id,
              std::map<std::string, std::unique_ptr<PlacementTable>>* tables) {
  if (std::binary_search(h.team_ids().begin(), h.team_ids().end(), team_id)) return true;
  return PlacedOnSource(h, team_id, tables);
}

}  // namespace

absl::Status ReadHandoffState(pqxx::transaction_base& tx, MappingState* state) {
  for (const pqxx::row& row : tx.exec(absl::StrCat("SELECT id, spec FROM handoffs WHERE state IN ",
                                                   kOpenStates, " ORDER BY id"))) {
    absl::StatusOr<v1::Handoff> h = ParseSpec(row[0], row[1]);
    if (!h.ok()) return h.status();
    state->handoffs.push_back(FromProto(*h));
  }
  state->next_handoff_id =
      tx.exec1("SELECT COALESCE(max(id), 0) + 1 FROM handoffs")[0].as<int64_t>();
  return absl::OkStatus();
}

absl::Status PersistHandoffs(pqxx::transaction_base& tx, const Change& change, int64_t version,
                             int64_t leader_epoch) {
  for (const Handoff& h : change.handoffs) {
    v1::Handoff proto;
    ToProto(h, &proto);
    const pqxx::result r = tx.exec_params(
        "INSERT INTO handoffs (id, opened_version, source_bucket_id, state, phase_version,"
        " leader_epoch, team_ids, spec) VALUES ($1, $2, $3, $4, $5, $6, $7::bigint[], $8)"
        " ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state,"
        " phase_version = EXCLUDED.phase_version, leader_epoch = EXCLUDED.leader_epoch,"
        " spec = EXCLUDED.spec, updated_at = now()"
        " WHERE handoffs.state IN (1, 2) RETURNING id",
        h.id, h.opened_version, h.source_bucket_id, static_cast<int>(h.state), version,
        leader_epoch, ArrayLiteral(h.team_ids), pqxx::binarystring(proto.SerializeAsString()));
    if (r.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("handoff ", h.id, " has already ended; it cannot change again"));
    }
    if (h.opened_version != version) continue;
    const int64_t moved_at = absl::ToUnixMicros(h.open_time);
    if (!h.team_ids.empty()) {
      tx.exec_params(
          "INSERT INTO team_moves (team_id, moved_at, version)"
          " SELECT t, timestamptz 'epoch' + $2::bigint * interval '1 microsecond', $3"
          " FROM unnest($1::bigint[]) AS t"
          " ON CONFLICT (team_id) DO UPDATE SET moved_at = EXCLUDED.moved_at,"
          " version = EXCLUDED.version",
          ArrayLiteral(h.team_ids), moved_at, version);
    }
    if (!h.pool_before.empty()) {
      tx.exec_params(
          "INSERT INTO pool_moves (pool, moved_at, version)"
          " VALUES ($1, timestamptz 'epoch' + $2::bigint * interval '1 microsecond', $3)"
          " ON CONFLICT (pool) DO UPDATE SET moved_at = EXCLUDED.moved_at,"
          " version = EXCLUDED.version",
          h.source_pool, moved_at, version);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Handoff>> QueryHandoffs(pqxx::transaction_base& tx,
                                                       const HandoffQuery& query) {
  const int32_t limit = query.page_size <= 0 ? 100 : std::min(query.page_size, 1000);
  std::vector<v1::Handoff> out;
  std::map<std::string, std::unique_ptr<PlacementTable>> tables;
  auto scan = [&](const std::string& sql) -> absl::Status {
    for (const pqxx::row& row : tx.exec(sql)) {
      if (static_cast<int32_t>(out.size()) >= limit) break;
      absl::StatusOr<v1::Handoff> h = ParseSpec(row[0], row[1]);
      if (!h.ok()) return h.status();
      if (query.team_id != 0 && !Involves(*h, query.team_id, &tables)) continue;
      out.push_back(*std::move(h));
    }
    return absl::OkStatus();
  };
  absl::Status s = scan(
      absl::StrCat("SELECT id, spec FROM handoffs WHERE state IN ", kOpenStates, " ORDER BY id"));
  if (!s.ok()) return s;
  if (query.include_ended && static_cast<int32_t>(out.size()) < limit) {
    // Without a team filter the page is the limit; with one, scan a bounded
    // recent window (the filter runs here, not in SQL).
    const int64_t window = query.team_id == 0 ? limit : 10000;
    s = scan(absl::StrCat("SELECT id, spec FROM handoffs WHERE state NOT IN ", kOpenStates,
                          " ORDER BY id DESC LIMIT ", window));
    if (!s.ok()) return s;
  }
  return out;
}

absl::StatusOr<MoveTimes> QueryMoveTimes(pqxx::transaction_base& tx,
                                         const std::vector<int64_t>& team_ids) {
  MoveTimes times;
  for (const pqxx::row& row : tx.exec_prepared("move_times", ArrayLiteral(team_ids))) {
    const absl::Time at = absl::FromUnixMicros(row[2].as<int64_t>());
    if (row[1].is_null()) {
      times.teams[row[0].as<int64_t>()] = at;
    } else {
      times.pools[row[1].as<std::string>()] = at;
    }
  }
  return times;
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
