// Planner: the rules of every write, as pure functions of a Snapshot.
//
// Each Plan* function checks a request against the current snapshot (the
// state transitions, immutable fields and pool invariants of SPEC §2),
// and returns the Change to commit, what it does to routes, and the
// snapshot after it. It neither reads clocks nor does I/O; storage commits
// plan.change atomically with a new version.
//
// Shape validation (formats, sizes) lives in validation.h and runs first;
// the planner re-checks only what depends on state.
//
// Two rules hold for every plan (Finish checks them on the snapshot after):
//   * a PAUSED pool keeps every bucket of it PAUSED: a bucket created in it,
//     or moved into it, ACTIVE is PAUSED by the pool (and resumed with it),
//     and resuming one bucket of it alone is refused;
//   * a team with a RATE_LIMIT or FORCE_OVERFLOW rule routes to a bucket
//     with an `overflow` topic: a write that would move it to a bucket
//     without one, or remove its bucket's overflow topic, is refused.
//
// Errors: NotFound (missing bucket), AlreadyExists (bucket name taken),
// FailedPrecondition (state forbids it; the message names the pool or
// bucket and why), InvalidArgument (a value that is illegal in this state,
// naming the field).
#ifndef BUCKETMAP_DOMAIN_PLANNER_H_
#define BUCKETMAP_DOMAIN_PLANNER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "domain/change.h"
#include "domain/model.h"
#include "domain/snapshot.h"
#include "domain/team_rule.h"

namespace bucketmap {

struct TeamMove {
  int64_t team_id;
  int32_t from_bucket_id;  // 0: was unroutable
  int32_t to_bucket_id;    // 0: becomes unroutable
};

struct PoolShift {
  std::string pool;
  double share_moved;  // of the pool's slots, in [0, 1]
};

// At most this many moved teams are listed in an Effect; moved_team_count
// counts them all.
inline constexpr size_t kMaxListedMoves = 10000;

struct Effect {
  // False for a no-op: nothing to commit, no new version.
  bool changed = false;
  std::vector<TeamMove> moved_teams;  // known teams (with overrides) only
  int64_t moved_team_count = 0;
  std::vector<PoolShift> pool_shifts;  // pools whose placement changes
  int64_t assignments_changed = 0;
  // Handoffs the write opens (domain/move_policy.h fills them in).
  std::vector<Handoff> handoffs;
};

struct Plan {
  Change change;
  Effect effect;
  // The snapshot at before.version() + 1 with `change` applied; null when
  // !effect.changed.
  std::shared_ptr<const Snapshot> after;
};

// Plans the creation of `bucket` (already shape-validated; id 0). Assigns
// the id, fills defaults (weight 100, pool "default", state ACTIVE) and
// the created/updated versions.
absl::StatusOr<Plan> PlanCreateBucket(const Snapshot& before, Bucket bucket);

// A field-mask update of one bucket.
struct BucketUpdate {
  int32_t id = 0;  // the bucket, or 0 to look it up by `name`
  std::string name;
  Bucket values;  // new values of the masked fields
  // Mask paths; each one of: state, weight, pool, topics, consumer_groups,
  // drain_order, labels. "id" and "name" are rejected as immutable.
  std::vector<std::string> paths;
};

absl::StatusOr<Plan> PlanUpdateBucket(const Snapshot& before, const BucketUpdate& update);

// One override change: a target to set, or nullopt to remove the override.
struct AssignmentOp {
  int64_t team_id;
  std::optional<Target> target;
};

// Plans AssignTeam, UnassignTeam and BulkAssign: all ops in one version.
// Team ids must be unique across `ops`. Removing a missing override is
// NotFound when `ops` has one entry and a no-op otherwise. Setting the
// override a team already has is a no-op.
absl::StatusOr<Plan> PlanAssignments(const Snapshot& before, std::vector<AssignmentOp> ops);

// A change of one pool's object (UpdatePool).
struct PoolUpdate {
  std::string name;
  // kActive or kPaused; nullopt: unchanged.
  std::optional<BucketState> state;
  // 0..kMaxPoolPriority; nullopt: unchanged.
  std::optional<int32_t> priority;
  // Recorded in the pool object.
  std::string reason;
  std::string actor;
};

// PlanUpdatePool()
//
// Sets a pool's state and priority in one version. Pausing pauses every
// ACTIVE bucket of the pool in that version and records them in the
// pool's paused_bucket_ids; resuming resumes those still PAUSED in the
// pool, and leaves the buckets paused one by one PAUSED. The pool need not
// have buckets. Setting the state and priority it already has is a no-op.
// InvalidArgument for a state other than ACTIVE or PAUSED, or a priority
// out of range.
absl::StatusOr<Plan> PlanUpdatePool(const Snapshot& before, const PoolUpdate& update);

// PlanSetTeamRule()
//
// Sets (or replaces) `rule` for its team and kind, at `now`. A rate
// limit's burst 0 becomes EffectiveBurst(). Setting a rule with the same
// effect (kind, parameters, expiry) as the current one is a no-op.
// Errors: InvalidArgument for a malformed rule or an expire_time not after
// `now`; FailedPrecondition for a RATE_LIMIT or FORCE_OVERFLOW rule of a
// team that is unroutable, or whose bucket has no `overflow` topic (the
// message names the bucket).
absl::StatusOr<Plan> PlanSetTeamRule(const Snapshot& before, TeamRule rule, absl::Time now);

// PlanClearTeamRules()
//
// Removes the rule of `team_id` of `kind`, or every rule of the team when
// `kind` is nullopt. Removing a rule the team does not have is a no-op.
// InvalidArgument for team_id < 1.
absl::StatusOr<Plan> PlanClearTeamRules(const Snapshot& before, int64_t team_id,
                                        std::optional<RuleKind> kind);

// PlanExpireTeamRules()
//
// Removes, in one version, every rule whose expire_time is at or before
// `now` (the leader's expiry task). A no-op when none is due.
absl::StatusOr<Plan> PlanExpireTeamRules(const Snapshot& before, absl::Time now);

}  // namespace bucketmap

#endif  // BUCKETMAP_DOMAIN_PLANNER_H_
