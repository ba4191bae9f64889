// Rebalance: a plan that evens out the load of one pool's buckets by
// pinning a few teams, within a churn budget (issue 12; the algorithm, its
// guarantees and a worked example are in docs/rebalancing.md).
//
// PlanRebalance() is a pure function of a Snapshot and what the caller
// measured: per-team loads of one metric (events/s, processing µs/s: any
// unit, the same for every team), optionally each bucket's measured total,
// and the teams that may not move. It reads no clock and does no I/O; the
// same inputs give the same plan, bit for bit (every order is by id, no
// hash is iterated). The server is expected to:
//   * PlanRebalance RPC: call it on the served snapshot with the load
//     signals, the teams in cooldown as `frozen_team_ids`, and the request's
//     budget; answer the plan and the version it was computed at;
//   * ApplyRebalance RPC: turn the plan's moves into assignment ops with
//     RebalanceAssignments() at the plan's version (the write's
//     expected_version), then PlanAssignments() and ApplyMovePolicy() as
//     for any explicit move, so that guards and handoffs are those of
//     BulkAssign.
//
// What the planner may do. Every move is a pin (or the removal of one, see
// RebalanceMove::target): default placement is a hash of slots and cannot
// be steered per team. Only ACTIVE buckets of the pool give or take teams,
// and each team moves at most once per plan. Never moved:
//   * teams in `frozen_team_ids` (cooldown), and teams in an open handoff
//     of the snapshot (Snapshot::HandoffsOf, checked here as well, so that
//     a plan never proposes what ApplyMovePolicy would refuse);
//   * giants: a team that no ACTIVE bucket can take within its weighted
//     share, even with every team that may move moved out of it (with
//     nothing frozen and no small teams, a team whose load exceeds the
//     largest share). Reported as needing a bucket of its own;
//   * teams whose load is below `min_move_share` of the pool's, or whose
//     move alone would exceed the load budget.
// What cannot leave a bucket (giants, frozen teams, teams below the
// minimum move, background) is its floor. The ideal loads share the ACTIVE
// buckets' load by weight, except that a bucket whose floor exceeds its
// part should hold its floor alone ("floored": it takes no team, and sheds
// whatever can leave it), the others sharing the rest (water filling).
// Teams too heavy for the load budget are not excused: the moves balance
// the other buckets around them, and a plan that leaves their bucket over
// its target lists them as `anchored`. Without giants or floors the ideal
// load is the weighted share, and the imbalance is the max load /
// weighted share.
//
// PAUSED buckets are in placement, but their consumers are stopped: a team
// moved into one would stop being processed, and a handoff out of one
// could not drain. The planner neither moves teams into nor out of them,
// and leaves them out of the balance. DRAINING buckets are neither sources
// nor targets: moving their remaining pins off is the operator's drain.
//
// Thread safety: plain functions over const inputs; call them from any
// thread.
#ifndef BUCKETMAP_DOMAIN_REBALANCE_H_
#define BUCKETMAP_DOMAIN_REBALANCE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "domain/load.h"
#include "domain/model.h"
#include "domain/planner.h"
#include "domain/snapshot.h"

namespace bucketmap {

// The budget's defaults, defined here once (the RPCs and bucketctl take
// them from these). 5% of the load and a 1.05 target are the figures the
// issue asks of three rounds; bench/rebalance_bench measures them.
inline constexpr double kDefaultMaxLoadShare = 0.05;
inline constexpr int64_t kDefaultMaxTeams = 1000;
inline constexpr double kDefaultTargetImbalance = 1.05;
inline constexpr double kDefaultMinMoveShare = 0.0001;

struct RebalanceBudget {
  // Largest share of the pool's load (every bucket of the pool, whatever
  // its state) that the moves may carry, in [0, 1].
  double max_load_share = kDefaultMaxLoadShare;
  // Most teams that may move, >= 0. 0 plans nothing and only reports the
  // loads, the imbalance and the giants.
  int64_t max_teams = kDefaultMaxTeams;
  // The planner stops once every ACTIVE bucket's load is at most this
  // times its ideal load (see BucketLoad::ideal), >= 1.
  double target_imbalance = kDefaultTargetImbalance;
  // Teams whose load is below this share of the pool's load never move,
  // in [0, 1]. A move costs a team a handoff, a pin and a cooldown
  // whatever its load, and a team this small cannot change a bucket's
  // balance by much; in a heavy-tailed pool most teams are this small, so
  // this also bounds the planner's work. 0 lets every team with load move.
  double min_move_share = kDefaultMinMoveShare;
};

struct TeamLoad {
  int64_t team_id = 0;
  double load = 0;  // finite, >= 0
};

struct RebalanceRequest {
  // The pool to balance; must be in Snapshot::pools().
  std::string pool;
  // Per-team loads of one metric, any order, team ids unique and >= 1.
  // Teams of other pools, and unroutable teams, are ignored. A team not
  // listed counts as 0: load reports list only each client's top teams,
  // and the rest is in the bucket totals below.
  std::vector<TeamLoad> team_loads;
  // Optional measured total of each bucket (bucket id -> load), e.g. the
  // per-bucket rates, which include the teams no report lists. What a
  // bucket's total exceeds the sum of its listed teams by is its
  // background: load that stays where it is (no team to move carries it).
  // Buckets of other pools are ignored; a bucket without a total has no
  // background.
  std::map<int32_t, double> bucket_totals;
  // Teams that may not move (in cooldown, or held by the operator), any
  // order; duplicates are harmless.
  std::vector<int64_t> frozen_team_ids;
  RebalanceBudget budget;
};

struct RebalanceMove {
  int64_t team_id = 0;
  int32_t from_bucket_id = 0;
  int32_t to_bucket_id = 0;
  double load = 0;
  // The override that routes the team to to_bucket_id: a pin, except for
  // a pinned team whose pool placement already routes it there, which goes
  // back to placement instead (Target::Pool(pool), or no override at all,
  // nullopt, in the default pool), so that pins do not pile up.
  std::optional<Target> target;
};

struct BucketLoad {
  int32_t bucket_id = 0;
  BucketState state = BucketState::kActive;
  int32_t weight = 0;
  double before = 0;
  double after = 0;
  // The part of `before` that no listed team carries (see bucket_totals).
  double background = 0;
  // Only ACTIVE buckets are balanced; the fields below are 0 for the rest,
  // whose load the plan leaves as it is.
  //
  // The bucket's weighted share of the ACTIVE buckets' load.
  double share = 0;
  // What cannot leave it: giants, frozen teams, teams below the minimum
  // move, background.
  double floor = 0;
  // What it should hold: its floor when that exceeds its part ("floored":
  // it takes no team, and should shed whatever can leave it), else its
  // weighted part of what the floored buckets leave. The target applies
  // to this figure.
  double ideal = 0;
  bool floored = false;
};

// A team the plan cannot move although its bucket is above its share:
// a giant (reported in `giants`: `limit` is the most any bucket could
// give it, its share less its floor), or a team whose move alone would
// exceed the load budget, in a bucket left over its target (`anchored`:
// `limit` is the load budget; a plan with a larger max_load_share could
// move it). At most kMaxListedHeavy of each are listed.
inline constexpr size_t kMaxListedHeavy = 100;

struct HeavyTeam {
  int64_t team_id = 0;
  int32_t bucket_id = 0;
  double load = 0;
  double limit = 0;
};

// Why the planner stopped.
enum class RebalanceStop {
  kTargetReached,   // every ACTIVE bucket within target (or nothing to balance)
  kTeamBudget,      // max_teams moves made
  kLoadBudget,      // a useful move was left out because it would exceed max_load_share
  kNoUsefulMove,    // no allowed move lowers the most loaded bucket that is
                    // over its target (frozen teams, teams too coarse for the
                    // room left)
  kNoActiveBucket,  // the pool has no ACTIVE bucket
};

// Returns "target_reached", "team_budget", "load_budget", "no_useful_move"
// or "no_active_bucket".
const char* RebalanceStopName(RebalanceStop stop);

struct RebalancePlan {
  std::string pool;
  int64_t version = 0;  // the snapshot's: ApplyRebalance's expected_version
  RebalanceBudget budget;
  // Load of every bucket of the pool, whatever its state.
  double pool_load = 0;
  // Ascending by team id.
  std::vector<RebalanceMove> moves;
  double load_moved = 0;
  double share_moved = 0;  // load_moved / pool_load; 0 for an idle pool
  // Every non-RETIRED bucket of the pool, ascending by id.
  std::vector<BucketLoad> buckets;
  // Descending by load, then ascending by team id.
  std::vector<HeavyTeam> giants;
  std::vector<HeavyTeam> anchored;
  // Max over ACTIVE buckets of load / ideal. 1 for a pool without load.
  double imbalance_before = 1;
  double imbalance_after = 1;
  // Max over ACTIVE buckets of load / share: the same without excusing
  // floored buckets (what a dashboard of max/mean shows).
  double share_imbalance_before = 1;
  double share_imbalance_after = 1;
  // Every ACTIVE bucket holds at most target_imbalance times its ideal
  // load, a floored one at most its ideal load (whatever can leave it
  // should).
  bool target_reached = false;
  RebalanceStop stop = RebalanceStop::kTargetReached;
  // Teams with load on the pool's buckets; of those, how many were frozen
  // (in `frozen_team_ids`) or below the minimum move, and how many the
  // planner chose but skipped because they are in an open handoff.
  int64_t teams_with_load = 0;
  int64_t teams_frozen = 0;
  int64_t teams_below_min_move = 0;
  int64_t teams_skipped_in_handoff = 0;
};

// PlanRebalance()
//
// Plans moves that bring the ACTIVE buckets of `request.pool` within
// `budget.target_imbalance` of their ideal loads, moving at most
// `budget.max_teams` teams and `budget.max_load_share` of the pool's load
// (docs/rebalancing.md: greedy, most loaded bucket first, best fit by
// load). Cost: O(n log n) for n listed teams, plus O((B + log n)) per move
// or skipped team for B buckets in the pool, plus one HandoffsOf() per
// chosen team while handoffs are open.
//
// Returns InvalidArgument for a budget out of range, a duplicate, < 1
// team id, or a load or bucket total that is negative or not finite
// (naming the field); NotFound when the pool is not in the snapshot.
absl::StatusOr<RebalancePlan> PlanRebalance(const Snapshot& snapshot,
                                            const RebalanceRequest& request);

// RebalanceAssignments()
//
// The assignment ops that make `moves` (a plan's, or an edited list of
// its moves) at `snapshot`, ascending by team id, ready for
// PlanAssignments(): each move's target as RebalanceMove::target
// describes, recomputed here rather than trusted. Requires each move to
// start where the team routes at `snapshot` and to end on another ACTIVE
// bucket of `pool`.
//
// Returns InvalidArgument for a duplicate or < 1 team id, or a
// to_bucket_id outside `pool` or equal to from_bucket_id; NotFound for a
// missing bucket; FailedPrecondition when a team does not route to
// from_bucket_id (the plan was made at another version), or the target
// bucket is not ACTIVE. Messages name moves[i] and the field.
absl::StatusOr<std::vector<AssignmentOp>> RebalanceAssignments(
    const Snapshot& snapshot, std::string_view pool, const std::vector<RebalanceMove>& moves);

// What a rebalance evens out: events/s or processing seconds per second,
// as the load reports measure them (LoadRate).
enum class LoadMetric {
  kEventRate,
  kProcessingTime,
};

// FillRebalanceLoads()
//
// Fills `request->team_loads` (ascending by team id) with the `metric`
// rate of every team with load that routes to a bucket of
// `request->pool` at `snapshot`, and `request->bucket_totals` with each of
// the pool's buckets' total as BucketLoads() sums it (its teams and the
// teams no report listed), both from the merged `rates`.
void FillRebalanceLoads(const Snapshot& snapshot, const LoadRates& rates, LoadMetric metric,
                        RebalanceRequest* request);

}  // namespace bucketmap

#endif  // BUCKETMAP_DOMAIN_REBALANCE_H_
