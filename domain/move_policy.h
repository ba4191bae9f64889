// Move policy: which handoffs a write opens, and the guards on moves
// (SPEC §5.1, §5.7). Pure functions of a snapshot and a MovePolicy; the
// server fills the policy (clock, flags, cooldown times read from storage,
// lag and partition counts cached by the handoff coordinator).
//
// ApplyMovePolicy runs after a Plan* function of planner.h: it looks at
// what the plan does to routes, refuses it when a guard forbids it, and
// otherwise adds one handoff per source bucket to plan.change (and to
// plan.after and plan.effect).
//
// What counts as a move:
//   * explicit moves (MoveScope::kExplicit: AssignTeam, UnassignTeam,
//     BulkAssign): the teams of the request whose route changes;
//   * pool-wide changes (MoveScope::kPoolWide: CreateBucket, UpdateBucket):
//     the slots of each pool whose bucket changes, and the teams assigned
//     to that pool by override that move with them.
// A team that was or becomes unroutable (bucket 0) opens no handoff: there
// is no source to drain, or no target to hold. It still counts as a move
// for the open-handoff guard.
//
// Guards (FailedPrecondition, naming the team, pool or bucket):
//   * open handoff, explicit moves: any change of the route of a team
//     involved in an open handoff (listed by id, or default-placed by its
//     pool_before: Snapshot::HandoffsOf) is refused, to or from unroutable
//     included;
//   * open handoff, pool-wide changes: they may move such a team on, so a
//     default-placed team may be in two handoffs (A->B still open, B->C
//     new). They chain safely, because B's consumers hold the team's
//     events, and so do not commit past them, until A->B completes, so
//     B->C's drain cannot complete before A->B's does. But a pool-wide
//     change that would make such a team unroutable, or move it back to
//     the source of an open handoff it is in (B->A while A->B is open: a
//     cycle of holds and drains that ends only FORCED at --max_hold), is
//     refused. Teams with an override are checked by id; default-placed
//     teams by slot, over the pool_before of each open handoff of the
//     default pool (kSlotCount slots per such handoff). The undo
//     (DRAINING -> ACTIVE) of a bucket whose handoff is open is such a
//     reverse move: cancel the handoff first, then undo. Neither
//     open-handoff guard yields to `force` or `ordered=false`;
//   * cooldown: an explicit move of a team that moved less than `cooldown`
//     ago, or a pool-wide change of a pool whose placement changed less
//     than `cooldown` ago, unless `force`;
//   * lag: a move out of a bucket whose consumer lag exceeds max_move_lag,
//     unless `force`;
//   * retiring a bucket that is the source of an open handoff (always).
//
// Born ended: a handoff the write records already in a final phase. It
// holds nothing, never enters the open set and blocks no later move, but it
// is recorded (for audit, for the cooldown, and so that clients see the
// move):
//   * ordered=false (an emergency move): FORCED with end_reason
//     "unordered";
//   * nothing to wait for: an ordered handoff whose source has no consumer
//     group to drain (NothingToDrain), opened while no producer session is
//     leased (MovePolicy::producer_leased false), is COMPLETED at once,
//     with end_reason "nothing to wait for: no producer session was leased
//     and bucket N has no consumer group". Its barrier would count no
//     producer and its drain would wait for no group: the coordinator
//     would complete it at its next poll, and meanwhile the teams would be
//     refused every explicit move.
#ifndef BUCKETMAP_DOMAIN_MOVE_POLICY_H_
#define BUCKETMAP_DOMAIN_MOVE_POLICY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "domain/handoff.h"
#include "domain/planner.h"
#include "domain/snapshot.h"

namespace bucketmap {

enum class MoveScope { kExplicit, kPoolWide };

// The defaults of the handoff flags (--handoff_grace, --max_hold,
// --move_cooldown), defined here once: the server's options and flags take
// them from these.
inline constexpr absl::Duration kDefaultHandoffGrace = absl::Seconds(30);
inline constexpr absl::Duration kDefaultMaxHold = absl::Minutes(30);
inline constexpr absl::Duration kDefaultMoveCooldown = absl::Hours(1);

struct MovePolicy {
  // False: record no handoff and check no guard but the RETIRED one.
  bool open_handoffs = true;
  MoveScope scope = MoveScope::kExplicit;
  bool ordered = true;
  // Overrides the cooldown and lag guards.
  bool force = false;
  absl::Time now = absl::UnixEpoch();
  absl::Duration grace = kDefaultHandoffGrace;     // --handoff_grace
  absl::Duration max_hold = kDefaultMaxHold;       // --max_hold
  absl::Duration cooldown = kDefaultMoveCooldown;  // --move_cooldown; 0: off
  // Last move time of the teams of the request, and of pools.
  std::map<int64_t, absl::Time> team_moved_at;
  std::map<std::string, absl::Time, std::less<>> pool_moved_at;
  // --max_move_lag; 0: off. source_lag returns -1 when unknown (an
  // unknown lag never refuses a move).
  int64_t max_move_lag = 0;
  std::function<int64_t(int32_t bucket_id)> source_lag;
  // Partition count of a topic, 0 when unknown (the coordinator fills it
  // in later). May be null.
  std::function<int32_t(const std::string& topic)> partition_count;
  // Whether some PRODUCER watch session (of any replica) is leased when
  // the write commits. False lets an ordered handoff whose source has
  // nothing to drain open COMPLETED (see "Born ended" above). Keep it true
  // when unknown: the handoff then opens SWITCHING and the coordinator
  // judges its barrier.
  bool producer_leased = true;
};

// NothingToDrain()
//
// Whether a handoff out of `source` has no consumer group to wait for: no
// role with a topic has a (non-empty) consumer group. A role without a
// group is drained at once by the coordinator, so such a handoff waits
// only for its switch barrier.
bool NothingToDrain(const Bucket& source);

// ApplyMovePolicy()
//
// Checks the guards for `plan` (made against `before`) and adds its
// handoffs. Requires plan->after to be non-null when plan->effect.changed.
// Returns FailedPrecondition when a guard refuses the move; `plan` is then
// unchanged. Cost of the open-handoff guards: a HandoffsOf() per known team
// whose route changes, plus one pass over kSlotCount slots per open handoff
// of the default pool when the plan changes that pool's placement.
absl::Status ApplyMovePolicy(const Snapshot& before, const MovePolicy& policy, Plan* plan);

// PlanHandoffUpdate()
//
// Plans a version that replaces open handoff `updated.id` with `updated`
// (a phase change, drain points, missing producers...). Fenced by phase:
// FailedPrecondition unless the handoff is open in `before` with phase
// `expected`; NotFound when it is not open at all. Sets phase_version to
// the new version.
absl::StatusOr<Plan> PlanHandoffUpdate(const Snapshot& before, Handoff updated,
                                       HandoffPhase expected);

// PlanCancelHandoff()
//
// Ends open handoff `id` as CANCELLED with `reason`. NotFound when no such
// handoff is open.
absl::StatusOr<Plan> PlanCancelHandoff(const Snapshot& before, int64_t id,
                                       const std::string& reason, absl::Time now);

}  // namespace bucketmap

#endif  // BUCKETMAP_DOMAIN_MOVE_POLICY_H_
