// The gRPC-free half of AdminService's writes: shape validation of each
// request, then its plan against a snapshot. AdminServiceImpl validates
// with these before it touches storage and plans with them under the write
// lock; the request fuzzers (fuzz/) drive the same functions without a
// server, so what they check is what the service runs.
//
// Thread safety: pure functions of their arguments.
#ifndef BUCKETMAP_SERVER_RPC_ADMIN_REQUESTS_H_
#define BUCKETMAP_SERVER_RPC_ADMIN_REQUESTS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bucketmap/v1/admin.pb.h"
#include "domain/planner.h"
#include "domain/snapshot.h"

namespace bucketmap {

// Each Validate*Request returns OK or InvalidArgument naming the field
// (e.g. "assignments[3].pool: ..."). They check the request's shape only;
// the matching Plan*Request re-checks what depends on the mapping's state
// and returns the planner's codes (NotFound, AlreadyExists,
// FailedPrecondition, InvalidArgument). Plan*Request requires that the
// request passed its Validate*Request.
absl::Status ValidateCreateBucketRequest(const v1::CreateBucketRequest& request);
absl::StatusOr<Plan> PlanCreateBucketRequest(const Snapshot& before,
                                             const v1::CreateBucketRequest& request);

absl::Status ValidateUpdateBucketRequest(const v1::UpdateBucketRequest& request);
absl::StatusOr<Plan> PlanUpdateBucketRequest(const Snapshot& before,
                                             const v1::UpdateBucketRequest& request);

absl::Status ValidateAssignTeamRequest(const v1::AssignTeamRequest& request);
absl::StatusOr<Plan> PlanAssignTeamRequest(const Snapshot& before,
                                           const v1::AssignTeamRequest& request);

// `max_assignments` is the server's per-call cap (--max_bulk_assign).
absl::Status ValidateBulkAssignRequest(const v1::BulkAssignRequest& request,
                                       int64_t max_assignments);
absl::StatusOr<Plan> PlanBulkAssignRequest(const Snapshot& before,
                                           const v1::BulkAssignRequest& request);

// UpdatePool: `actor` is recorded in the pool object.
absl::Status ValidateUpdatePoolRequest(const v1::UpdatePoolRequest& request);
absl::StatusOr<Plan> PlanUpdatePoolRequest(const Snapshot& before,
                                           const v1::UpdatePoolRequest& request,
                                           const std::string& actor);

// SetTeamRule: `actor` is recorded in the rule; `now` (the server's clock)
// turns a ttl into an expire_time and must precede the expiry.
absl::Status ValidateSetTeamRuleRequest(const v1::SetTeamRuleRequest& request);
absl::StatusOr<Plan> PlanSetTeamRuleRequest(const Snapshot& before,
                                            const v1::SetTeamRuleRequest& request,
                                            const std::string& actor, absl::Time now);

absl::Status ValidateClearTeamRuleRequest(const v1::ClearTeamRuleRequest& request);
absl::StatusOr<Plan> PlanClearTeamRuleRequest(const Snapshot& before,
                                              const v1::ClearTeamRuleRequest& request);

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_RPC_ADMIN_REQUESTS_H_
