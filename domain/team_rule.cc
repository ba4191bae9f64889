#include "domain/team_rule.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace bucketmap {

const char* RuleKindName(RuleKind kind) {
  switch (kind) {
    case RuleKind::kRateLimit:
      return "RATE_LIMIT";
    case RuleKind::kForceOverflow:
      return "FORCE_OVERFLOW";
    case RuleKind::kDrop:
      return "DROP";
    case RuleKind::kSkipPersonProcessing:
      return "SKIP_PERSON_PROCESSING";
  }
  return "UNKNOWN";
}

bool TeamRule::SameEffect(const TeamRule& other) const {
  return team_id == other.team_id && kind == other.kind &&
         events_per_second == other.events_per_second && burst == other.burst &&
         expire_time == other.expire_time;
}

bool operator==(const TeamRule& a, const TeamRule& b) {
  return a.SameEffect(b) && a.reason == b.reason && a.actor == b.actor && a.version == b.version &&
         a.create_time == b.create_time;
}

int64_t EffectiveBurst(double events_per_second, int64_t burst) {
  if (burst > 0) return burst;
  const double rounded = std::ceil(std::min(events_per_second, kMaxEventsPerSecond));
  return std::max<int64_t>(1, static_cast<int64_t>(rounded));
}

absl::Status CheckTeamRule(const TeamRule& rule, const std::string& field) {
  if (rule.team_id < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".team_id: must be >= 1, got ", rule.team_id));
  }
  if (!ValidRuleKind(static_cast<int>(rule.kind))) {
    return absl::InvalidArgumentError(
        absl::StrCat(field,
                     ".kind: must be RATE_LIMIT, FORCE_OVERFLOW, DROP or "
                     "SKIP_PERSON_PROCESSING, got ",
                     static_cast<int>(rule.kind)));
  }
  if (rule.kind == RuleKind::kRateLimit) {
    // !(x > 0) also catches NaN.
    if (!(rule.events_per_second > 0) || !std::isfinite(rule.events_per_second) ||
        rule.events_per_second > kMaxEventsPerSecond) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".rate_limit.events_per_second: must be > 0 and at most 1e9, got ",
                       rule.events_per_second));
    }
    if (rule.burst < 1 || rule.burst > kMaxBurst) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".rate_limit.burst: must be 1..1e9, got ", rule.burst));
    }
  } else if (rule.events_per_second != 0 || rule.burst != 0) {
    return absl::InvalidArgumentError(absl::StrCat(field,
                                                   ".rate_limit: only a RATE_LIMIT rule has "
                                                   "one, this rule is ",
                                                   RuleKindName(rule.kind)));
  }
  return absl::OkStatus();
}

bool operator==(const Pool& a, const Pool& b) {
  return a.name == b.name && a.state == b.state && a.priority == b.priority &&
         a.paused_bucket_ids == b.paused_bucket_ids && a.reason == b.reason && a.actor == b.actor &&
         a.updated_version == b.updated_version;
}

absl::Status CheckPool(const Pool& pool, const std::string& field) {
  if (pool.name.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ".name: empty"));
  if (pool.state != BucketState::kActive && pool.state != BucketState::kPaused) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".state: pool \"", pool.name,
                                                   "\" must be ACTIVE or PAUSED, got ",
                                                   static_cast<int>(pool.state)));
  }
  if (pool.priority < 0 || pool.priority > kMaxPoolPriority) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".priority: must be 0..", kMaxPoolPriority, ", got ", pool.priority));
  }
  for (size_t i = 0; i < pool.paused_bucket_ids.size(); ++i) {
    if (pool.paused_bucket_ids[i] < 1 ||
        (i > 0 && pool.paused_bucket_ids[i - 1] >= pool.paused_bucket_ids[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".paused_bucket_ids: must be >= 1, ascending and unique"));
    }
  }
  return absl::OkStatus();
}

}  // namespace bucketmap
