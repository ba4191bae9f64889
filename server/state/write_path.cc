#include "server/state/write_path.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "domain/status_macros.h"

namespace bucketmap {

absl::StatusOr<WriteOutcome> WritePath::Run(const MoveWrite& write) const {
  MovePolicy policy;
  policy.open_handoffs = false;
  if (handoffs_ != nullptr) policy = handoffs_->Policy(write.scope, write.ordered, write.force);
  if (write.exempt_cooldown) policy.cooldown = absl::ZeroDuration();
  if (policy.open_handoffs && policy.cooldown > absl::ZeroDuration()) {
    ASSIGN_OR_RETURN(MoveTimes times, store_->LoadMoveTimes(write.teams));
    policy.team_moved_at = std::move(times.teams);
    policy.pool_moved_at = std::move(times.pools);
  }
  auto plan_moves = [&write, &policy](const Snapshot& before) -> absl::StatusOr<Plan> {
    ASSIGN_OR_RETURN(Plan plan, write.plan(before));
    RETURN_IF_ERROR(ApplyMovePolicy(before, policy, &plan));
    return plan;
  };

  if (write.dry_run) {
    // Planned against this replica's snapshot; it commits nothing and is
    // not remembered under its request_id.
    std::shared_ptr<const ServedSnapshot> current = manager_->Current();
    const Snapshot& before = current->snapshot();
    const int64_t expected = write.context.expected_version;
    if (expected != 0 && expected != before.version()) {
      return absl::AbortedError(absl::StrCat("expected_version ", expected,
                                             " does not match current version ", before.version()));
    }
    ASSIGN_OR_RETURN(Plan plan, plan_moves(before));
    return WriteOutcome{write.respond(before, plan, before.version(), /*dry_run=*/true), false};
  }

  WriteContext context = write.context;
  // A forced move is recorded as such in the change log (SPEC §5.7).
  if (write.force) context.kind = absl::StrCat(context.kind, "+force");
  PlanFn plan_fn = [&write, &plan_moves](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
    ASSIGN_OR_RETURN(Plan plan, plan_moves(before));
    const int64_t version = before.version() + (plan.effect.changed ? 1 : 0);
    std::string response = write.respond(before, plan, version, /*dry_run=*/false);
    return PlannedWrite{std::move(plan), std::move(response)};
  };
  ASSIGN_OR_RETURN(WriteResult result, manager_->Write(context, plan_fn));
  return WriteOutcome{std::move(result.response), result.replayed};
}

}  // namespace bucketmap
