#include "server/rebalance/auto_rebalancer.h"

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "spdlog/spdlog.h"

namespace bucketmap {
namespace {

// The UTC day of `t`, counted since 1970-01-01.
int64_t UtcDay(absl::Time t) { return absl::ToUnixSeconds(t) / 86400; }

bool NotTheLeader(const absl::Status& s) {
  return s.code() == absl::StatusCode::kFailedPrecondition &&
         absl::StrContains(s.message(), "not the leader");
}

}  // namespace

AutoRebalancer::AutoRebalancer(const Rebalancer* rebalancer, const WritePath* write_path,
                               Store* store, MappingManager* manager, Metrics* metrics,
                               AutoRebalanceOptions options, const Clock* clock)
    : rebalancer_(rebalancer),
      write_path_(write_path),
      store_(store),
      manager_(manager),
      metrics_(metrics),
      options_(options),
      clock_(clock) {}

AutoRebalancer::~AutoRebalancer() { Stop(); }

void AutoRebalancer::Start(int64_t epoch) {
  Stop();
  if (options_.interval <= absl::ZeroDuration()) return;
  {
    absl::MutexLock lock(&mu_);
    stop_ = false;
  }
  spdlog::info("auto-rebalance: leading at epoch {}, a round every {}", epoch,
               absl::FormatDuration(options_.interval));
  thread_ = std::thread([this, epoch] { Loop(epoch); });
}

void AutoRebalancer::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void AutoRebalancer::Loop(int64_t epoch) {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto stop = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_; };
      mu_.AwaitWithTimeout(absl::Condition(&stop), options_.interval);
      if (stop_) return;
    }
    if (!RunOnce(epoch)) {
      spdlog::warn("auto-rebalance: no longer the leader (epoch {}); stopping", epoch);
      return;
    }
  }
}

bool AutoRebalancer::RunOnce(int64_t epoch) {
  const std::vector<std::string> pools = manager_->Current()->snapshot().pools();
  for (const std::string& pool : pools) {
    double share_moved = 0;
    const std::string outcome = RunPool(pool, epoch, &share_moved);
    if (outcome == "not_leader") return false;
    if (metrics_ != nullptr) metrics_->RecordAutoRebalance(pool, outcome, share_moved);
  }
  return true;
}

std::string AutoRebalancer::RunPool(const std::string& pool, int64_t epoch, double* share_moved) {
  const int64_t day = UtcDay(clock_->Now());
  absl::StatusOr<double> spent = store_->LoadRebalanceChurn(pool, day);
  if (!spent.ok()) {
    spdlog::warn("auto-rebalance: pool {}: churn not read: {}", pool, spent.status().ToString());
    return "failed";
  }
  const double left = options_.daily_load_share - *spent;
  if (left <= 0) return "budget_spent";
  RebalanceBudget budget;
  budget.max_load_share = std::min(budget.max_load_share, left);
  absl::StatusOr<RebalanceOutcome> outcome = rebalancer_->PlanPool(pool, options_.metric, budget);
  if (!outcome.ok()) {
    spdlog::warn("auto-rebalance: pool {}: not planned: {}", pool, outcome.status().ToString());
    return "failed";
  }
  const RebalancePlan& plan = outcome->plan;
  if (plan.imbalance_before <= budget.target_imbalance) return "within_target";
  if (plan.moves.empty()) {
    // What is left of the day's budget is too little for any useful move.
    const bool budget_bound = plan.stop == RebalanceStop::kLoadBudget || !plan.anchored.empty();
    return budget_bound ? "budget_spent" : "no_move";
  }

  MoveWrite write = Rebalancer::ApplyWrite(pool, plan.moves);
  write.context.actor = kAutoRebalanceActor;
  write.context.reason = absl::StrFormat(
      "automatic rebalance of pool %s: imbalance %.3f -> %.3f, %d teams, %.2f%% of its load "
      "(%s)",
      pool, plan.imbalance_before, plan.imbalance_after, plan.moves.size(), 100 * plan.share_moved,
      RebalanceStopName(plan.stop));
  write.context.expected_version = plan.version;
  write.context.leader_epoch = epoch;
  write.context.deadline = clock_->Now() + options_.write_timeout;
  write.respond = [](const Snapshot&, const Plan&, int64_t, bool) { return std::string(); };
  absl::StatusOr<WriteOutcome> written = write_path_->Run(write);
  if (!written.ok()) {
    if (NotTheLeader(written.status())) return "not_leader";
    // A version conflict or a guard (a team started a handoff meanwhile):
    // the next round plans again.
    spdlog::warn("auto-rebalance: pool {}: not applied: {}", pool, written.status().ToString());
    return "failed";
  }
  if (absl::Status s = store_->AddRebalanceChurn(pool, day, plan.share_moved); !s.ok()) {
    spdlog::warn("auto-rebalance: pool {}: churn not recorded: {}", pool, s.ToString());
  }
  *share_moved = plan.share_moved;
  spdlog::info("auto-rebalance: {}", write.context.reason);
  return "applied";
}

}  // namespace bucketmap
