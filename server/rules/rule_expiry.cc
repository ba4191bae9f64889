#include "server/rules/rule_expiry.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "domain/planner.h"
#include "domain/status_macros.h"
#include "domain/validation.h"
#include "spdlog/spdlog.h"

namespace bucketmap {
namespace {

constexpr char kActor[] = "rule-expiry";
// Rules named in a write's reason; the delta lists them all.
constexpr size_t kNamedInReason = 10;

}  // namespace

RuleExpiry::RuleExpiry(MappingManager* manager, Metrics* metrics, RuleExpiryOptions options,
                       const Clock* clock)
    : manager_(manager), metrics_(metrics), options_(options), clock_(clock) {}

RuleExpiry::~RuleExpiry() { Stop(); }

void RuleExpiry::Start(int64_t epoch) {
  Stop();
  {
    absl::MutexLock lock(&mu_);
    stop_ = false;
  }
  spdlog::info("rule expiry: leading at epoch {}", epoch);
  thread_ = std::thread([this, epoch] { Loop(epoch); });
}

void RuleExpiry::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void RuleExpiry::Loop(int64_t epoch) {
  for (;;) {
    if (!RunOnce(epoch)) {
      spdlog::warn("rule expiry: no longer the leader (epoch {}); stopping", epoch);
      return;
    }
    // After a failed write the rules are still due: wait a whole interval.
    const absl::Time next =
        failed_ ? absl::InfiniteFuture() : manager_->Current()->snapshot().NextRuleExpiry();
    const absl::Duration wait =
        std::clamp(next - clock_->Now(), absl::Milliseconds(1), options_.poll_interval);
    absl::MutexLock lock(&mu_);
    auto stop = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_; };
    mu_.AwaitWithTimeout(absl::Condition(&stop), wait);
    if (stop_) return;
  }
}

bool RuleExpiry::RunOnce(int64_t epoch) {
  failed_ = false;
  const absl::Time now = clock_->Now();
  std::shared_ptr<const ServedSnapshot> current = manager_->Current();
  if (current->snapshot().NextRuleExpiry() > now) return true;

  std::vector<std::string> named;
  size_t due = 0;
  for (const TeamRule& rule : current->snapshot().team_rules()) {
    if (rule.expire_time > now) continue;
    if (++due <= kNamedInReason) {
      named.push_back(absl::StrCat("team ", rule.team_id, " ", RuleKindName(rule.kind)));
    }
  }
  WriteContext ctx;
  ctx.kind = "ExpireTeamRules";
  ctx.actor = kActor;
  ctx.reason = std::string(TruncateUtf8(
      absl::StrCat("expired: ", absl::StrJoin(named, ", "),
                   due > named.size() ? absl::StrCat(" and ", due - named.size(), " more") : ""),
      kMaxReasonBytes));
  ctx.leader_epoch = epoch;
  ctx.deadline = now + options_.write_timeout;
  int64_t removed = 0;
  absl::StatusOr<WriteResult> result =
      manager_->Write(ctx, [&](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
        ASSIGN_OR_RETURN(Plan plan, PlanExpireTeamRules(before, now));
        removed = static_cast<int64_t>(plan.change.cleared_rules.size());
        return PlannedWrite{std::move(plan), ""};
      });
  if (result.ok()) {
    if (result->effect.changed) {
      spdlog::info("rule expiry: removed {} rule(s) at version {} ({})", removed, result->version,
                   ctx.reason);
      if (metrics_ != nullptr) metrics_->RecordRulesExpired(removed);
    }
    return true;
  }
  const absl::Status& s = result.status();
  if (s.code() == absl::StatusCode::kFailedPrecondition &&
      absl::StrContains(s.message(), "not the leader")) {
    return false;
  }
  // A transient failure (PostgreSQL away): the next look tries again.
  spdlog::warn("rule expiry: not committed: {}", s.ToString());
  failed_ = true;
  return true;
}

}  // namespace bucketmap
