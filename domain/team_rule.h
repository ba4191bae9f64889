// Per-team rules and pools as objects: the domain forms of
// bucketmap.v1.TeamRule and bucketmap.v1.Pool (SPEC §9; docs/rules.md).
//
// A team rule tells every producer what to do with a team's events: send
// the excess over a token bucket (RATE_LIMIT) or everything
// (FORCE_OVERFLOW) to the `overflow` role of the team's bucket, DROP them,
// or flag them so that consumers SKIP_PERSON_PROCESSING. Rules live in the
// mapping, so every producer and consumer applies the same rules at the
// same version; an expiry is applied by the leader as a version of its own.
//
// A pool is the set of buckets carrying its name; its object records what
// belongs to the pool itself: its state (ACTIVE, or PAUSED: every bucket
// of it paused, in one version) and its priority. A pool without an object
// is ACTIVE with kDefaultPoolPriority.
//
// Plain value types: no locks. Share them between threads only as const.
#ifndef BUCKETMAP_DOMAIN_TEAM_RULE_H_
#define BUCKETMAP_DOMAIN_TEAM_RULE_H_

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "domain/model.h"

namespace bucketmap {

// The role of a bucket's topics that overflowed events go to.
inline constexpr char kOverflowRole[] = "overflow";

// Numeric values match bucketmap.v1.TeamRuleKind.
enum class RuleKind : int {
  kRateLimit = 1,
  kForceOverflow = 2,
  kDrop = 3,
  kSkipPersonProcessing = 4,
};
inline constexpr int kMinRuleKind = 1;
inline constexpr int kMaxRuleKind = 4;

inline bool ValidRuleKind(int raw) { return raw >= kMinRuleKind && raw <= kMaxRuleKind; }

// Returns "RATE_LIMIT", "FORCE_OVERFLOW", "DROP", "SKIP_PERSON_PROCESSING"
// or "UNKNOWN".
const char* RuleKindName(RuleKind kind);

// Whether a rule of `kind` sends events to the bucket's overflow topic, so
// that the team's bucket must have one.
inline bool NeedsOverflow(RuleKind kind) {
  return kind == RuleKind::kRateLimit || kind == RuleKind::kForceOverflow;
}

// Bounds of a rate limit.
inline constexpr double kMaxEventsPerSecond = 1e9;
inline constexpr int64_t kMaxBurst = 1000000000;

struct TeamRule {
  int64_t team_id = 0;
  RuleKind kind = RuleKind::kDrop;
  // kRateLimit only: the token bucket's refill rate and size.
  double events_per_second = 0;
  int64_t burst = 0;
  // InfiniteFuture(): never expires.
  absl::Time expire_time = absl::InfiniteFuture();
  std::string reason;
  std::string actor;
  // The version that set the rule, and when.
  int64_t version = 0;
  absl::Time create_time = absl::InfinitePast();

  bool expires() const { return expire_time != absl::InfiniteFuture(); }
  // Whether `other` has the same kind, parameters and expiry (what a
  // producer applies), whatever its reason, actor and version.
  bool SameEffect(const TeamRule& other) const;

  friend bool operator==(const TeamRule& a, const TeamRule& b);
  friend bool operator!=(const TeamRule& a, const TeamRule& b) { return !(a == b); }
};

// A rule's identity: a team has at most one rule of each kind.
struct TeamRuleKey {
  int64_t team_id = 0;
  RuleKind kind = RuleKind::kDrop;

  friend bool operator==(const TeamRuleKey& a, const TeamRuleKey& b) {
    return a.team_id == b.team_id && a.kind == b.kind;
  }
  friend bool operator<(const TeamRuleKey& a, const TeamRuleKey& b) {
    return std::make_tuple(a.team_id, static_cast<int>(a.kind)) <
           std::make_tuple(b.team_id, static_cast<int>(b.kind));
  }
};

inline TeamRuleKey KeyOf(const TeamRule& rule) { return TeamRuleKey{rule.team_id, rule.kind}; }

// The burst a rate limit uses: `burst`, or when 0, max(1, ceil(rate)).
int64_t EffectiveBurst(double events_per_second, int64_t burst);

// CheckTeamRule()
//
// InvalidArgument, naming `field`, unless: team_id >= 1; a valid kind;
// for kRateLimit, 0 < events_per_second <= kMaxEventsPerSecond (finite)
// and 1 <= burst <= kMaxBurst; for other kinds, no rate parameters.
absl::Status CheckTeamRule(const TeamRule& rule, const std::string& field);

// Pools as objects.
inline constexpr int32_t kDefaultPoolPriority = 100;
inline constexpr int32_t kMaxPoolPriority = 1000;

struct Pool {
  std::string name;
  // kActive or kPaused.
  BucketState state = BucketState::kActive;
  int32_t priority = kDefaultPoolPriority;
  // The buckets the pool's pause paused, ascending: resuming the pool
  // resumes these (those still PAUSED and in the pool), not the buckets
  // that were paused one by one.
  std::vector<int32_t> paused_bucket_ids;
  // Who last changed the pool's state or priority, why, and at which
  // version.
  std::string reason;
  std::string actor;
  int64_t updated_version = 0;

  bool paused() const { return state == BucketState::kPaused; }

  friend bool operator==(const Pool& a, const Pool& b);
  friend bool operator!=(const Pool& a, const Pool& b) { return !(a == b); }
};

// CheckPool()
//
// InvalidArgument, naming `field`, unless the name is non-empty, the
// state ACTIVE or PAUSED, the priority in 0..kMaxPoolPriority and the
// paused bucket ids ascending, unique and >= 1.
absl::Status CheckPool(const Pool& pool, const std::string& field);

}  // namespace bucketmap

#endif  // BUCKETMAP_DOMAIN_TEAM_RULE_H_
