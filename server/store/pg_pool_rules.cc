// Pools as objects and team rules (migrations/0007_pools_and_rules.sql):
// loaded with every snapshot, written with the version that changes them.
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "codec/codec.h"
#include "server/store/pg_session.h"

namespace bucketmap {
namespace {

template <typename Message>
absl::StatusOr<Message> ParseSpec(const char* what, const pqxx::field& key,
                                  const pqxx::field& spec) {
  Message message;
  const pqxx::binarystring bytes(spec);
  if (!message.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InternalError(absl::StrCat("stored ", what, " ", key.c_str(), " is corrupt"));
  }
  return message;
}

}  // namespace

absl::Status ReadPoolsAndRules(pqxx::transaction_base& tx, MappingState* state) {
  for (const pqxx::row& row : tx.exec("SELECT name, spec FROM pools ORDER BY name")) {
    absl::StatusOr<v1::Pool> pool = ParseSpec<v1::Pool>("pool", row[0], row[1]);
    if (!pool.ok()) return pool.status();
    state->pool_objects.push_back(FromProto(*pool));
  }
  for (const pqxx::row& row :
       tx.exec("SELECT team_id, spec FROM team_rules ORDER BY team_id, kind")) {
    absl::StatusOr<v1::TeamRule> rule = ParseSpec<v1::TeamRule>("rule of team", row[0], row[1]);
    if (!rule.ok()) return rule.status();
    state->rules.push_back(FromProto(*rule));
  }
  return absl::OkStatus();
}

absl::Status PersistPoolsAndRules(pqxx::transaction_base& tx, const Change& change,
                                  int64_t version) {
  for (const Pool& pool : change.pool_objects) {
    v1::Pool proto;
    ToProto(pool, &proto);
    tx.exec_params(
        "INSERT INTO pools (name, state, priority, spec, updated_version)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state,"
        " priority = EXCLUDED.priority, spec = EXCLUDED.spec,"
        " updated_version = EXCLUDED.updated_version",
        pool.name, static_cast<int>(pool.state), pool.priority,
        pqxx::binarystring(proto.SerializeAsString()), version);
  }
  // History by team (GetHistory team_id) lists rule changes too; a team
  // whose override also changed at this version has its row already.
  std::set<int64_t> teams;
  for (const TeamRule& rule : change.rules) {
    v1::TeamRule proto;
    ToProto(rule, &proto);
    const std::optional<int64_t> expire =
        rule.expires() ? std::optional<int64_t>(absl::ToUnixMicros(rule.expire_time))
                       : std::nullopt;
    tx.exec_params(
        "INSERT INTO team_rules (team_id, kind, expire_time, spec, version)"
        " VALUES ($1, $2, timestamptz 'epoch' + $3::bigint * interval '1 microsecond', $4, $5)"
        " ON CONFLICT (team_id, kind) DO UPDATE SET expire_time = EXCLUDED.expire_time,"
        " spec = EXCLUDED.spec, version = EXCLUDED.version",
        rule.team_id, static_cast<int>(rule.kind), expire,
        pqxx::binarystring(proto.SerializeAsString()), version);
    teams.insert(rule.team_id);
  }
  for (const TeamRuleKey& key : change.cleared_rules) {
    tx.exec_params("DELETE FROM team_rules WHERE team_id = $1 AND kind = $2", key.team_id,
                   static_cast<int>(key.kind));
    teams.insert(key.team_id);
  }
  for (const auto& [team, target] : change.set) teams.erase(team);
  for (int64_t team : change.unset) teams.erase(team);
  for (int64_t team : teams) tx.exec_prepared0("insert_log_team", team, version);
  return absl::OkStatus();
}

}  // namespace bucketmap
