#include "server/rebalance/rebalancer.h"

#include <utility>

#include "domain/move_policy.h"
#include "domain/planner.h"
#include "domain/status_macros.h"

namespace bucketmap {

absl::StatusOr<RebalanceOutcome> Rebalancer::PlanPool(const std::string& pool, LoadMetric metric,
                                                      const RebalanceBudget& budget) const {
  ASSIGN_OR_RETURN(std::shared_ptr<const LoadRates> rates, signals_->Rates());
  std::shared_ptr<const ServedSnapshot> current = manager_->Current();
  const Snapshot& snapshot = current->snapshot();
  RebalanceRequest request;
  request.pool = pool;
  request.budget = budget;
  FillRebalanceLoads(snapshot, *rates, metric, &request);

  RebalanceOutcome outcome;
  outcome.load_windows = rates->windows;
  // The cooldown as an explicit move would meet it (WritePath::Run).
  if (handoffs_ != nullptr && !request.team_loads.empty()) {
    const MovePolicy policy = handoffs_->Policy(MoveScope::kExplicit, /*ordered=*/true,
                                                /*force=*/false);
    if (policy.open_handoffs && policy.cooldown > absl::ZeroDuration()) {
      std::vector<int64_t> teams;
      teams.reserve(request.team_loads.size());
      for (const TeamLoad& t : request.team_loads) teams.push_back(t.team_id);
      ASSIGN_OR_RETURN(MoveTimes times, store_->LoadMoveTimes(teams));
      for (const auto& [team_id, moved_at] : times.teams) {
        if (policy.now - moved_at < policy.cooldown) outcome.frozen_team_ids.push_back(team_id);
      }
    }
  }
  request.frozen_team_ids = outcome.frozen_team_ids;
  ASSIGN_OR_RETURN(outcome.plan, PlanRebalance(snapshot, request));
  return outcome;
}

MoveWrite Rebalancer::ApplyWrite(const std::string& pool, std::vector<RebalanceMove> moves) {
  MoveWrite write;
  write.context.kind = "ApplyRebalance";
  write.teams.reserve(moves.size());
  for (const RebalanceMove& m : moves) write.teams.push_back(m.team_id);
  write.plan = [pool, moves = std::move(moves)](const Snapshot& before) -> absl::StatusOr<Plan> {
    ASSIGN_OR_RETURN(std::vector<AssignmentOp> ops, RebalanceAssignments(before, pool, moves));
    return PlanAssignments(before, std::move(ops));
  };
  return write;
}

}  // namespace bucketmap
