// Rebalancer: the server's side of the rebalancing planner
// (domain/rebalance.h, docs/rebalancing.md). It gathers what the pure
// planner needs (the merged load rates of every replica, the served
// snapshot, and the teams still in their move cooldown), plans, and
// describes the write that applies a plan's moves, so that the
// PlanRebalance / ApplyRebalance RPCs and the leader's automatic
// rebalancing plan and apply alike.
//
// Thread safety: all methods are const and thread-safe. PlanPool() blocks on
// the store: call it from worker threads, never from a gRPC reactor.
#ifndef BUCKETMAP_SERVER_REBALANCE_REBALANCER_H_
#define BUCKETMAP_SERVER_REBALANCE_REBALANCER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "domain/rebalance.h"
#include "server/signals/load_signals.h"
#include "server/state/handoff_view.h"
#include "server/state/mapping_manager.h"
#include "server/state/write_path.h"
#include "server/store/store.h"

namespace bucketmap {

// A plan and what it was made from.
struct RebalanceOutcome {
  RebalancePlan plan;
  // The pool's teams with load that were frozen because they moved less
  // than the move cooldown ago, ascending.
  std::vector<int64_t> frozen_team_ids;
  // LoadRates::windows of the rates planned from (0: no load known).
  int64_t load_windows = 0;
};

class Rebalancer {
 public:
  // Every pointer must outlive the rebalancer; `handoffs` may be null (no
  // cooldown is known, so no team is frozen for it).
  Rebalancer(MappingManager* manager, Store* store, SignalsReader* signals,
             const HandoffView* handoffs)
      : manager_(manager), store_(store), signals_(signals), handoffs_(handoffs) {}

  // PlanPool()
  //
  // Plans `pool` at the served snapshot from the current load rates of
  // `metric`, freezing the teams in their move cooldown. Returns
  // PlanRebalance()'s errors (InvalidArgument naming budget.<field>,
  // NotFound for an unknown pool) and the store's (Unavailable).
  absl::StatusOr<RebalanceOutcome> PlanPool(const std::string& pool, LoadMetric metric,
                                            const RebalanceBudget& budget) const;

  // ApplyWrite()
  //
  // The write that makes `moves` in `pool` as one version: explicit moves
  // of the moved teams (their handoffs, cooldown and open-handoff guards
  // are those of BulkAssign), planned with RebalanceAssignments() against
  // the snapshot the write commits on. The caller fills the context
  // (expected_version: the plan's), dry_run and respond.
  static MoveWrite ApplyWrite(const std::string& pool, std::vector<RebalanceMove> moves);

 private:
  MappingManager* const manager_;
  Store* const store_;
  SignalsReader* const signals_;
  const HandoffView* const handoffs_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_REBALANCE_REBALANCER_H_
