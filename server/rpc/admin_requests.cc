#include "server/rpc/admin_requests.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "domain/validation.h"
#include "codec/codec.h"

namespace bucketmap {
namespace {

// Maps the wire state of a CreateBucket request to the domain defaults.
Bucket NewBucketFromProto(const v1::Bucket& proto) {
  Bucket bucket = FromProto(proto);
  if (proto.state() == v1::BUCKET_STATE_UNSPECIFIED) bucket.state = BucketState::kActive;
  if (bucket.weight == 0) bucket.weight = 100;
  if (bucket.pool.empty()) bucket.pool = kDefaultPool;
  return bucket;
}

}  // namespace

absl::Status ValidateCreateBucketRequest(const v1::CreateBucketRequest& request) {
  if (!request.has_bucket()) return absl::InvalidArgumentError("bucket: required");
  return ValidateNewBucket(FromProto(request.bucket()), request.bucket().state());
}

absl::StatusOr<Plan> PlanCreateBucketRequest(const Snapshot& before,
                                             const v1::CreateBucketRequest& request) {
  return PlanCreateBucket(before, NewBucketFromProto(request.bucket()));
}

absl::Status ValidateUpdateBucketRequest(const v1::UpdateBucketRequest& request) {
  const v1::Bucket& bucket = request.bucket();
  if (bucket.id() < 0) return absl::InvalidArgumentError("bucket.id: must be positive");
  if (bucket.id() == 0) {
    if (bucket.name().empty()) {
      return absl::InvalidArgumentError(
          "bucket.id: identify the bucket by bucket.id or bucket.name");
    }
    if (absl::Status s = ValidateBucketName(bucket.name(), "bucket.name"); !s.ok()) return s;
  }
  std::vector<std::string> paths(request.update_mask().paths().begin(),
                                 request.update_mask().paths().end());
  return ValidateBucketUpdate(FromProto(bucket), bucket.state(), paths);
}

absl::StatusOr<Plan> PlanUpdateBucketRequest(const Snapshot& before,
                                             const v1::UpdateBucketRequest& request) {
  BucketUpdate update;
  update.id = request.bucket().id();
  update.name = request.bucket().name();
  update.values = FromProto(request.bucket());
  update.paths.assign(request.update_mask().paths().begin(), request.update_mask().paths().end());
  return PlanUpdateBucket(before, update);
}

absl::Status ValidateAssignTeamRequest(const v1::AssignTeamRequest& request) {
  if (absl::Status s = ValidateTeamId(request.team_id(), "team_id"); !s.ok()) return s;
  switch (request.target_case()) {
    case v1::AssignTeamRequest::kBucketId:
      return ValidateBucketId(request.bucket_id(), "bucket_id");
    case v1::AssignTeamRequest::kPool:
      return ValidatePoolName(request.pool(), "pool");
    default:
      return absl::InvalidArgumentError("target: set either bucket_id or pool");
  }
}

absl::StatusOr<Plan> PlanAssignTeamRequest(const Snapshot& before,
                                           const v1::AssignTeamRequest& request) {
  Target target = request.target_case() == v1::AssignTeamRequest::kBucketId
                      ? Target::Pin(request.bucket_id())
                      : Target::Pool(request.pool());
  std::vector<AssignmentOp> ops;
  ops.push_back(AssignmentOp{request.team_id(), std::move(target)});
  return PlanAssignments(before, std::move(ops));
}

absl::Status ValidateBulkAssignRequest(const v1::BulkAssignRequest& request,
                                       int64_t max_assignments) {
  if (request.assignments_size() == 0) {
    return absl::InvalidArgumentError("assignments: at least one is required");
  }
  if (request.assignments_size() > max_assignments) {
    return absl::InvalidArgumentError(absl::StrCat(
        "assignments: ", request.assignments_size(), " entries exceed the limit of ",
        max_assignments, " per call; split the load into batches"));
  }
  for (int i = 0; i < request.assignments_size(); ++i) {
    const v1::BulkAssignment& a = request.assignments(i);
    const std::string prefix = absl::StrCat("assignments[", i, "].");
    if (absl::Status s = ValidateTeamId(a.team_id(), prefix + "team_id"); !s.ok()) return s;
    absl::Status s;
    switch (a.target_case()) {
      case v1::BulkAssignment::kBucketId:
        s = ValidateBucketId(a.bucket_id(), prefix + "bucket_id");
        break;
      case v1::BulkAssignment::kPool:
        s = ValidatePoolName(a.pool(), prefix + "pool");
        break;
      case v1::BulkAssignment::kUnassign:
        if (!a.unassign()) s = absl::InvalidArgumentError(prefix + "unassign: must be true");
        break;
      default:
        s = absl::InvalidArgumentError(prefix + "target: set bucket_id, pool or unassign");
    }
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<Plan> PlanBulkAssignRequest(const Snapshot& before,
                                           const v1::BulkAssignRequest& request) {
  std::vector<AssignmentOp> ops;
  ops.reserve(request.assignments_size());
  for (const v1::BulkAssignment& a : request.assignments()) {
    switch (a.target_case()) {
      case v1::BulkAssignment::kBucketId:
        ops.push_back(AssignmentOp{a.team_id(), Target::Pin(a.bucket_id())});
        break;
      case v1::BulkAssignment::kPool:
        ops.push_back(AssignmentOp{a.team_id(), Target::Pool(a.pool())});
        break;
      default:
        ops.push_back(AssignmentOp{a.team_id(), std::nullopt});
    }
  }
  return PlanAssignments(before, std::move(ops));
}

}  // namespace bucketmap
