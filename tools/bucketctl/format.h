// Human-readable output of bucketctl: aligned tables for lists, one-line
// summaries for writes (including what a dry run would do), and short
// reports for single objects.
//
// Pure functions of the responses; every returned string ends with a
// newline unless empty. Thread-compatible.
#ifndef BUCKETMAP_TOOLS_BUCKETCTL_FORMAT_H_
#define BUCKETMAP_TOOLS_BUCKETCTL_FORMAT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "bucketmap/v1/admin.pb.h"
#include "bucketmap/v1/mapping.pb.h"
#include "bucketmap/v1/types.pb.h"
#include "google/protobuf/map.h"
#include "google/protobuf/timestamp.pb.h"

namespace bucketmap::bucketctl {

// A text table. Columns are separated by two spaces; a column whose cells
// are all integers is right-aligned, the others left-aligned.
class Table {
 public:
  explicit Table(std::vector<std::string> headers);
  // Missing cells are empty; extra cells are dropped.
  void AddRow(std::vector<std::string> cells);
  size_t rows() const { return rows_.size(); }
  std::string Render() const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// "ACTIVE", ..., or the number for a value this build does not know.
std::string StateName(int state);
// "k1=v1,k2=v2" in key order; "-" when empty.
std::string JoinMap(const google::protobuf::Map<std::string, std::string>& map);
// "bucket 3 (pin)", or "unroutable (pool:free)" for bucket 0.
std::string RouteText(int32_t bucket_id, absl::string_view source);
// RFC 3339 in UTC, e.g. "2026-01-02T03:04:05Z"; "-" when unset.
std::string TimeText(const google::protobuf::Timestamp& time);

// What a write changed: pool shifts and the known teams that move (at most
// `max_moves` listed). Indented lines; empty when nothing moved.
std::string FormatEffect(const v1::WriteEffect& effect, size_t max_moves = 20);

std::string FormatCreateBucket(const v1::CreateBucketResponse& response);
// Names the fields of `request.update_mask` with their new values.
std::string FormatUpdateBucket(const v1::UpdateBucketRequest& request,
                               const v1::UpdateBucketResponse& response);
std::string FormatAssignTeam(const v1::AssignTeamRequest& request,
                             const v1::AssignTeamResponse& response);
std::string FormatUnassignTeam(const v1::UnassignTeamRequest& request,
                               const v1::UnassignTeamResponse& response);
std::string FormatBulkAssign(const v1::BulkAssignRequest& request,
                             const v1::BulkAssignResponse& response);

// `pinned` is parallel to `buckets` (may be shorter: missing counts show
// as "-").
std::string FormatBucketTable(const google::protobuf::RepeatedPtrField<v1::Bucket>& buckets,
                              const std::vector<int64_t>& pinned);
std::string FormatListBuckets(const v1::ListBucketsResponse& response);
std::string FormatListAssignments(const v1::ListAssignmentsResponse& response);
std::string FormatHistory(const v1::GetHistoryResponse& response, bool include_delta);
// Lines describing one delta, indented by `indent`.
std::string FormatDelta(const v1::MappingDelta& delta, absl::string_view indent,
                        size_t max_rows = 20);
// Version, cluster id, counts, and the bucket table with pinned teams
// counted from the assignment columns.
std::string FormatMapping(const v1::MappingSnapshot& snapshot);
std::string FormatTeam(const v1::TeamRoute& route);
std::string FormatClients(const v1::ListClientsResponse& response);
std::string FormatHandoffs(const v1::ListHandoffsResponse& response);
std::string FormatCancelHandoff(const v1::CancelHandoffRequest& request,
                                const v1::CancelHandoffResponse& response);

// Pools and team rules.
std::string FormatUpdatePool(const v1::UpdatePoolRequest& request,
                             const v1::UpdatePoolResponse& response);
std::string FormatListPools(const v1::ListPoolsResponse& response);
// "RATE_LIMIT 100/s burst 200", "DROP", ...
std::string RuleText(const v1::TeamRule& rule);
std::string FormatTeamRules(const v1::ListTeamRulesResponse& response);
std::string FormatSetTeamRule(const v1::SetTeamRuleRequest& request,
                              const v1::SetTeamRuleResponse& response);
std::string FormatClearTeamRule(const v1::ClearTeamRuleRequest& request,
                                const v1::ClearTeamRuleResponse& response);

}  // namespace bucketmap::bucketctl

#endif  // BUCKETMAP_TOOLS_BUCKETCTL_FORMAT_H_
