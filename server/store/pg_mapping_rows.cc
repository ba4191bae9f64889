#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/ascii.h"
#include "domain/status_macros.h"
#include "server/store/bucket_json.h"
#include "server/store/pg_handoff_store.h"
#include "server/store/pg_session.h"

namespace bucketmap {
namespace {

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

}  // namespace

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
  RETURN_IF_ERROR(ReadPoolsAndRules(tx, &state));
  return state;
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

}  // namespace bucketmap
