// Fuzzes the admin write path without gRPC or PostgreSQL: the input's first
// byte picks CreateBucket, UpdateBucket, AssignTeam or BulkAssign, the rest
// is parsed as that request, and it goes through the same
// Validate*Request / Plan*Request functions AdminServiceImpl runs
// (server/admin_requests.h), against the base mapping of fuzz_util.h.
//
// Checks: validation answers OK or InvalidArgument with a message; the
// plan answers OK or one of the planner's documented codes; a changing
// plan's snapshot is the base with plan.change applied, one version on;
// the change survives the wire: the client applies its delta
// (ToProto(Change)) and then routes like the planned snapshot; and the
// created or updated buckets survive their JSON storage form.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "bucketmap/client.h"
#include "bucketmap/v1/admin.pb.h"
#include "codec/codec.h"
#include "domain/snapshot.h"
#include "fuzz/fuzz_util.h"
#include "server/rpc/admin_requests.h"
#include "server/store/bucket_json.h"

namespace {

using ::bucketmap::Plan;
using ::bucketmap::Snapshot;

constexpr int64_t kMaxBulkAssign = 1000;

bool PlannerCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kInvalidArgument:
      return true;
    default:
      return false;
  }
}

template <typename Request>
absl::StatusOr<Plan> ValidateAndPlan(const uint8_t* data, size_t size, const Snapshot& before,
                                     absl::Status (*validate)(const Request&),
                                     absl::StatusOr<Plan> (*plan)(const Snapshot&,
                                                                  const Request&)) {
  Request request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) {
    return absl::CancelledError("not a request");
  }
  const absl::Status valid = validate(request);
  if (!valid.ok()) {
    bucketmap::fuzz::Check(valid.code() == absl::StatusCode::kInvalidArgument,
                           "validation answered another code than InvalidArgument");
    bucketmap::fuzz::Check(!valid.message().empty(), "validation error without a message");
    return absl::CancelledError("invalid");
  }
  return plan(before, request);
}

absl::Status ValidateBulk(const bucketmap::v1::BulkAssignRequest& request) {
  return bucketmap::ValidateBulkAssignRequest(request, kMaxBulkAssign);
}

void CheckPlan(const Snapshot& before, const Plan& plan) {
  using bucketmap::fuzz::Check;
  if (!plan.effect.changed) {
    Check(plan.after == nullptr, "a no-op plan with a new snapshot");
    return;
  }
  Check(plan.after != nullptr, "a changing plan without a snapshot");
  Check(plan.after->version() == before.version() + 1, "the plan's version");
  auto applied = before.Apply(plan.change);
  Check(applied.ok(), "Snapshot::Apply refuses the planned change");
  Check((*applied)->ToState().assignments == plan.after->ToState().assignments,
        "the planned assignments differ from the applied change's");
  Check((*applied)->buckets() == plan.after->buckets(),
        "the planned buckets differ from the applied change's");

  for (const bucketmap::Bucket& bucket : plan.change.buckets) {
    auto round_trip = bucketmap::BucketFromJson(bucketmap::BucketToJson(bucket));
    Check(round_trip.ok(), "a planned bucket's JSON does not parse");
    Check(*round_trip == bucket, "a planned bucket changes through JSON");
  }

  // What the server would push, applied by a client at `before`.
  bucketmap::v1::MappingSnapshot base;
  bucketmap::ToProto(before, &base);
  bucketmap::v1::MappingDelta delta;
  bucketmap::ToProto(plan.change, plan.after->version(), &delta);
  bucketmap::Client client(bucketmap::ClientOptions{});
  Check(client.ApplySnapshot(base).ok(), "the client refuses the base snapshot");
  const absl::Status pushed = client.ApplyDeltas(absl::MakeConstSpan(&delta, 1));
  if (!pushed.ok()) {
    std::fprintf(stderr, "client refused the planned delta: %s\n", pushed.ToString().c_str());
  }
  Check(pushed.ok(), "the client refuses the delta of a planned change");
  bucketmap::fuzz::CheckSameRoutes(client, *plan.after);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace v1 = bucketmap::v1;
  if (size < 1) return 0;
  static const std::shared_ptr<const Snapshot> before = bucketmap::fuzz::BaseSnapshot();
  absl::StatusOr<Plan> plan;
  switch (data[0] % 4) {
    case 0:
      plan = ValidateAndPlan<v1::CreateBucketRequest>(data + 1, size - 1, *before,
                                                      bucketmap::ValidateCreateBucketRequest,
                                                      bucketmap::PlanCreateBucketRequest);
      break;
    case 1:
      plan = ValidateAndPlan<v1::UpdateBucketRequest>(data + 1, size - 1, *before,
                                                      bucketmap::ValidateUpdateBucketRequest,
                                                      bucketmap::PlanUpdateBucketRequest);
      break;
    case 2:
      plan = ValidateAndPlan<v1::AssignTeamRequest>(data + 1, size - 1, *before,
                                                    bucketmap::ValidateAssignTeamRequest,
                                                    bucketmap::PlanAssignTeamRequest);
      break;
    default:
      plan = ValidateAndPlan<v1::BulkAssignRequest>(data + 1, size - 1, *before, ValidateBulk,
                                                    bucketmap::PlanBulkAssignRequest);
  }
  if (!plan.ok()) {
    if (plan.status().code() == absl::StatusCode::kCancelled) return 0;
    bucketmap::fuzz::Check(PlannerCode(plan.status().code()),
                           "the planner answered an undocumented code");
    return 0;
  }
  CheckPlan(*before, *plan);
  return 0;
}
