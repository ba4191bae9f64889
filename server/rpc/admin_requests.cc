#include "server/rpc/admin_requests.h"

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "codec/codec.h"
#include "domain/validation.h"
#include "google/protobuf/util/time_util.h"

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

using google::protobuf::util::TimeUtil;

// The longest ttl a rule takes: a rule meant for longer has no expiry.
constexpr absl::Duration kMaxRuleTtl = absl::Hours(24 * 366);

// protobuf 3.21's TimeUtil has no validity checks of its own.
bool ValidTimestamp(const google::protobuf::Timestamp& t) {
  return t.seconds() >= TimeUtil::kTimestampMinSeconds &&
         t.seconds() <= TimeUtil::kTimestampMaxSeconds && t.nanos() >= 0 && t.nanos() < 1000000000;
}

bool ValidDuration(const google::protobuf::Duration& d) {
  return d.seconds() >= TimeUtil::kDurationMinSeconds &&
         d.seconds() <= TimeUtil::kDurationMaxSeconds && d.nanos() > -1000000000 &&
         d.nanos() < 1000000000 && !(d.seconds() > 0 && d.nanos() < 0) &&
         !(d.seconds() < 0 && d.nanos() > 0);
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
    return absl::InvalidArgumentError(absl::StrCat("assignments: ", request.assignments_size(),
                                                   " entries exceed the limit of ", max_assignments,
                                                   " per call; split the load into batches"));
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

absl::Status ValidateUpdatePoolRequest(const v1::UpdatePoolRequest& request) {
  if (absl::Status s = ValidatePoolName(request.name(), "name"); !s.ok()) return s;
  if (!request.has_state() && !request.has_priority()) {
    return absl::InvalidArgumentError("state: give the pool's state, its priority, or both");
  }
  if (request.has_state() && request.state() != v1::ACTIVE && request.state() != v1::PAUSED) {
    return absl::InvalidArgumentError(absl::StrCat("state: a pool is ACTIVE or PAUSED, got ",
                                                   v1::BucketState_Name(request.state())));
  }
  if (request.has_priority() && (request.priority() < 0 || request.priority() > kMaxPoolPriority)) {
    return absl::InvalidArgumentError(
        absl::StrCat("priority: must be 0..", kMaxPoolPriority, ", got ", request.priority()));
  }
  return absl::OkStatus();
}

absl::StatusOr<Plan> PlanUpdatePoolRequest(const Snapshot& before,
                                           const v1::UpdatePoolRequest& request,
                                           const std::string& actor) {
  PoolUpdate update;
  update.name = request.name();
  if (request.has_state()) update.state = static_cast<BucketState>(request.state());
  if (request.has_priority()) update.priority = request.priority();
  update.reason = request.reason();
  update.actor = actor;
  return PlanUpdatePool(before, update);
}

absl::Status ValidateSetTeamRuleRequest(const v1::SetTeamRuleRequest& request) {
  if (absl::Status s = ValidateTeamId(request.team_id(), "team_id"); !s.ok()) return s;
  if (!ValidRuleKind(request.kind())) {
    return absl::InvalidArgumentError(
        "kind: required: RATE_LIMIT, FORCE_OVERFLOW, DROP or SKIP_PERSON_PROCESSING");
  }
  if (request.kind() == v1::RATE_LIMIT) {
    if (!request.has_rate_limit()) {
      return absl::InvalidArgumentError("rate_limit: required for a RATE_LIMIT rule");
    }
    const double eps = request.rate_limit().events_per_second();
    if (!(eps > 0) || !std::isfinite(eps) || eps > kMaxEventsPerSecond) {
      return absl::InvalidArgumentError(
          absl::StrCat("rate_limit.events_per_second: must be > 0 and at most 1e9, got ", eps));
    }
    const int64_t burst = request.rate_limit().burst();
    if (burst < 0 || burst > kMaxBurst) {
      return absl::InvalidArgumentError(
          absl::StrCat("rate_limit.burst: must be 0 (one second's worth) to 1e9, got ", burst));
    }
  } else if (request.has_rate_limit()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rate_limit: only a RATE_LIMIT rule takes one, not ",
                     v1::TeamRuleKind_Name(request.kind())));
  }
  if (request.has_expire_time() && request.has_ttl()) {
    return absl::InvalidArgumentError("ttl: give at most one of expire_time and ttl");
  }
  if (request.has_expire_time() && !ValidTimestamp(request.expire_time())) {
    return absl::InvalidArgumentError("expire_time: not a valid timestamp");
  }
  if (request.has_ttl()) {
    if (!ValidDuration(request.ttl())) {
      return absl::InvalidArgumentError("ttl: not a valid duration");
    }
    const absl::Duration ttl = absl::Nanoseconds(TimeUtil::DurationToNanoseconds(request.ttl()));
    if (ttl <= absl::ZeroDuration() || ttl > kMaxRuleTtl) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ttl: must be positive and at most 366 days, got ", absl::FormatDuration(ttl)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Plan> PlanSetTeamRuleRequest(const Snapshot& before,
                                            const v1::SetTeamRuleRequest& request,
                                            const std::string& actor, absl::Time now) {
  TeamRule rule;
  rule.team_id = request.team_id();
  rule.kind = static_cast<RuleKind>(request.kind());
  if (rule.kind == RuleKind::kRateLimit) {
    rule.events_per_second = request.rate_limit().events_per_second();
    rule.burst = request.rate_limit().burst();
  }
  if (request.has_expire_time()) {
    rule.expire_time =
        absl::FromUnixMicros(TimeUtil::TimestampToMicroseconds(request.expire_time()));
  } else if (request.has_ttl()) {
    rule.expire_time = now + absl::Nanoseconds(TimeUtil::DurationToNanoseconds(request.ttl()));
  }
  rule.reason = request.reason();
  rule.actor = actor;
  return PlanSetTeamRule(before, std::move(rule), now);
}

absl::Status ValidateClearTeamRuleRequest(const v1::ClearTeamRuleRequest& request) {
  if (absl::Status s = ValidateTeamId(request.team_id(), "team_id"); !s.ok()) return s;
  if (request.kind() != v1::TEAM_RULE_KIND_UNSPECIFIED && !ValidRuleKind(request.kind())) {
    return absl::InvalidArgumentError(
        absl::StrCat("kind: unknown kind ", static_cast<int>(request.kind())));
  }
  return absl::OkStatus();
}

absl::StatusOr<Plan> PlanClearTeamRuleRequest(const Snapshot& before,
                                              const v1::ClearTeamRuleRequest& request) {
  std::optional<RuleKind> kind;
  if (request.kind() != v1::TEAM_RULE_KIND_UNSPECIFIED) {
    kind = static_cast<RuleKind>(request.kind());
  }
  return PlanClearTeamRules(before, request.team_id(), kind);
}

}  // namespace bucketmap
