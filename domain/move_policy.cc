#include "domain/move_policy.h"

#include <algorithm>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "domain/status_macros.h"

namespace bucketmap {
namespace {

struct PendingHandoff {
  std::vector<std::pair<int64_t, int32_t>> teams;  // team -> to bucket
  std::set<int32_t> targets;
  std::string pool;
  std::vector<PlacementMember> pool_before;
};

std::string TimeString(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

std::string DescribeHandoff(const Handoff& h) {
  return absl::StrFormat("handoff %d (%s, from bucket %d, opened at version %d)", h.id,
                         HandoffPhaseName(h.state), h.source_bucket_id, h.opened_version);
}

// The teams with an override whose route the plan may change.
std::vector<int64_t> KnownCandidates(const Plan& plan, const std::set<std::string>& shifted) {
  std::vector<int64_t> out;
  for (const auto& [team, target] : plan.change.set) out.push_back(team);
  out.insert(out.end(), plan.change.unset.begin(), plan.change.unset.end());
  if (!shifted.empty()) {
    const Snapshot& after = *plan.after;
    after.assignments().ForEach([&](int64_t team, int32_t target) {
      if (target < 0 && shifted.count(after.pools()[-target - 1]) > 0) out.push_back(team);
    });
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<RoleDrain> DrainsOf(const Bucket& source, const MovePolicy& policy) {
  std::vector<std::string> roles = source.drain_order;
  // Roles missing from drain_order drain after it, in name order: every
  // topic of the source is drained.
  for (const auto& [role, topic] : source.topics) {
    if (std::find(roles.begin(), roles.end(), role) == roles.end()) roles.push_back(role);
  }
  std::vector<RoleDrain> drains;
  for (const std::string& role : roles) {
    auto topic = source.topics.find(role);
    if (topic == source.topics.end()) continue;
    RoleDrain d;
    d.role = role;
    d.topic = topic->second;
    if (auto g = source.consumer_groups.find(role); g != source.consumer_groups.end()) {
      d.consumer_group = g->second;
    }
    if (policy.partition_count) d.partition_count = policy.partition_count(d.topic);
    drains.push_back(std::move(d));
  }
  return drains;
}

constexpr char kWaitOrCancel[] = "wait for the handoff to end, or cancel it (CancelHandoff) first";

// The open-handoff guard for a known team whose route changes to `to`
// (0: unroutable), whatever it was before (unroutable included).
//   * explicit moves: any route change is refused;
//   * pool-wide changes may chain (A->B open, B->C new), but must not make
//     the team unroutable, nor send it back to the source of a handoff it
//     is in: that reverse move makes a cycle of holds and drains that ends
//     only FORCED at --max_hold.
absl::Status CheckOpenHandoffs(const Snapshot& before, MoveScope scope, int64_t team, int32_t to) {
  const std::vector<const Handoff*> open = before.HandoffsOf(team);
  if (open.empty()) return absl::OkStatus();
  if (scope == MoveScope::kExplicit) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "team %d is in open %s; it cannot move again, to a bucket, a pool or unroutable, while "
        "the handoff is open; %s",
        team, DescribeHandoff(*open.back()), kWaitOrCancel));
  }
  for (const Handoff* h : open) {
    if (to == 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "team %d is in open %s; this change would make it unroutable, leaving the handoff "
          "nothing to hand off to; %s",
          team, DescribeHandoff(*h), kWaitOrCancel));
    }
    if (to == h->source_bucket_id) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "team %d is in open %s; this change would move it back to bucket %d, the handoff's "
          "source: a reverse move makes a cycle that ends only FORCED at --max_hold, without "
          "ordering; %s",
          team, DescribeHandoff(*h), h->source_bucket_id, kWaitOrCancel));
    }
  }
  return absl::OkStatus();
}

// The same rule for the default-placed teams of open handoffs of the
// default pool, which are known only by their slots: a slot that
// pool_before placed on the source and that is now on another bucket must
// not go back to the source, nor to unroutable. Teams with an override
// (including those assigned to a pool) are checked by id instead, so other
// pools need no slot check. One pass over kSlotCount slots per open
// handoff of the default pool, when the write changes its placement.
absl::Status CheckDefaultSlots(const Snapshot& before, const Snapshot& after) {
  const PlacementTable& now = before.PoolTable(kDefaultPool);
  const PlacementTable& next = after.PoolTable(kDefaultPool);
  if (&now == &next) return absl::OkStatus();  // placement unchanged
  for (const Handoff& h : before.handoffs()) {
    if (h.pool_before.empty() || h.source_pool != kDefaultPool) continue;
    const PlacementTable* placed = before.HandoffPlacement(h.id);
    if (placed == nullptr || placed->empty()) continue;
    int64_t back = 0;
    int64_t unroutable = 0;
    for (uint32_t slot = 0; slot < static_cast<uint32_t>(kSlotCount); ++slot) {
      if (placed->BucketForSlot(slot) != h.source_bucket_id) continue;
      if (now.BucketForSlot(slot) == h.source_bucket_id) continue;  // not in the handoff
      const int32_t to = next.BucketForSlot(slot);
      if (to == h.source_bucket_id) ++back;
      if (to == 0) ++unroutable;
    }
    if (unroutable > 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "pool \"%s\": this change would make the default-placed teams of %d slots in open %s "
          "unroutable, leaving the handoff nothing to hand off to; %s",
          h.source_pool, unroutable, DescribeHandoff(h), kWaitOrCancel));
    }
    if (back > 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "pool \"%s\": this change would move the default-placed teams of %d slots in open %s "
          "back to bucket %d, the handoff's source: a reverse move makes a cycle that ends only "
          "FORCED at --max_hold, without ordering; %s",
          h.source_pool, back, DescribeHandoff(h), h.source_bucket_id, kWaitOrCancel));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckCooldown(const MovePolicy& policy, absl::Time last, const std::string& who) {
  if (policy.force || policy.cooldown <= absl::ZeroDuration()) return absl::OkStatus();
  if (last + policy.cooldown <= policy.now) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrFormat(
      "%s moved at %s; --move_cooldown (%s) ends at %s; set force to override", who,
      TimeString(last), absl::FormatDuration(policy.cooldown), TimeString(last + policy.cooldown)));
}

}  // namespace

bool NothingToDrain(const Bucket& source) {
  for (const auto& [role, topic] : source.topics) {
    auto group = source.consumer_groups.find(role);
    if (group != source.consumer_groups.end() && !group->second.empty()) return false;
  }
  return true;
}

absl::Status ApplyMovePolicy(const Snapshot& before, const MovePolicy& policy, Plan* plan) {
  if (!plan->effect.changed || plan->after == nullptr) return absl::OkStatus();
  const Snapshot& after = *plan->after;
  Change& change = plan->change;

  for (const Bucket& b : change.buckets) {
    const Bucket* was = before.FindBucket(b.id);
    if (b.state != BucketState::kRetired || was == nullptr || was->state == b.state) continue;
    for (const Handoff& h : before.handoffs()) {
      if (h.source_bucket_id == b.id) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "bucket.state: bucket %d (%s) is the source of open %s; it can retire once the "
            "handoff ends (or is cancelled)",
            b.id, b.name, DescribeHandoff(h)));
      }
    }
  }
  if (!policy.open_handoffs) return absl::OkStatus();

  std::map<int32_t, PendingHandoff> by_source;
  std::set<std::string> shifted;
  for (const PoolShift& shift : plan->effect.pool_shifts) shifted.insert(shift.pool);

  // Known teams, listed by id.
  for (int64_t team : KnownCandidates(*plan, shifted)) {
    const int32_t from = before.RouteOf(team).bucket_id;
    const int32_t to = after.RouteOf(team).bucket_id;
    if (from == to) continue;
    // Before the unroutable check: a move to or from unroutable opens no
    // handoff, but it must not escape the guard (D9, issue 17).
    RETURN_IF_ERROR(CheckOpenHandoffs(before, policy.scope, team, to));
    if (from == 0 || to == 0) continue;
    if (policy.scope == MoveScope::kExplicit) {
      if (auto it = policy.team_moved_at.find(team); it != policy.team_moved_at.end()) {
        RETURN_IF_ERROR(CheckCooldown(policy, it->second, absl::StrCat("team ", team)));
      }
    }
    PendingHandoff& p = by_source[from];
    p.teams.emplace_back(team, to);
    p.targets.insert(to);
  }

  if (shifted.count(kDefaultPool) > 0) RETURN_IF_ERROR(CheckDefaultSlots(before, after));

  // Default placement: the slots of each shifted pool that change bucket.
  for (const std::string& pool : shifted) {
    const PlacementTable& old_table = before.PoolTable(pool);
    const PlacementTable& new_table = after.PoolTable(pool);
    if (old_table.empty() || new_table.empty()) continue;
    bool moved = false;
    for (uint32_t slot = 0; slot < static_cast<uint32_t>(kSlotCount); ++slot) {
      const int32_t from = old_table.BucketForSlot(slot);
      const int32_t to = new_table.BucketForSlot(slot);
      if (from == to) continue;
      moved = true;
      PendingHandoff& p = by_source[from];
      p.pool = pool;
      p.pool_before = old_table.members();
      p.targets.insert(to);
    }
    if (moved) {
      if (auto it = policy.pool_moved_at.find(pool); it != policy.pool_moved_at.end()) {
        RETURN_IF_ERROR(
            CheckCooldown(policy, it->second, absl::StrFormat("pool \"%s\"'s placement", pool)));
      }
    }
  }
  if (by_source.empty()) return absl::OkStatus();

  if (policy.max_move_lag > 0 && !policy.force && policy.source_lag) {
    for (const auto& [source, pending] : by_source) {
      const int64_t lag = policy.source_lag(source);
      if (lag > policy.max_move_lag) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "bucket %d: its consumers' lag is %d messages, above --max_move_lag %d; moving teams "
            "out of it now would hold their events that long; retry later or set force",
            source, lag, policy.max_move_lag));
      }
    }
  }

  const int64_t version = before.version() + 1;
  int64_t next_id = std::max(before.next_handoff_id(), change.next_handoff_id);
  std::vector<Handoff> opened;
  for (auto& [source, pending] : by_source) {
    Handoff h;
    h.id = next_id++;
    h.opened_version = version;
    h.source_bucket_id = source;
    h.target_bucket_ids.assign(pending.targets.begin(), pending.targets.end());
    std::sort(pending.teams.begin(), pending.teams.end());
    for (const auto& [team, to] : pending.teams) {
      h.team_ids.push_back(team);
      h.to_bucket_ids.push_back(to);
    }
    h.source_pool = pending.pool;
    h.pool_before = pending.pool_before;
    h.ordered = policy.ordered;
    h.open_time = policy.now;
    h.grace_deadline = policy.now + policy.grace;
    h.hold_deadline = policy.now + policy.max_hold;
    // The source as it was before v: a bucket that starts DRAINING keeps
    // its topics, and its consumers keep serving the moved teams.
    const Bucket* b = before.FindBucket(source);
    if (b != nullptr) h.drains = DrainsOf(*b, policy);
    h.phase_version = version;
    h.phase_time = policy.now;
    if (!policy.ordered) {
      h.state = HandoffPhase::kForced;
      h.end_reason = "unordered";
    } else if (!policy.producer_leased && (b == nullptr || NothingToDrain(*b))) {
      // Nothing can be behind: no producer to wait for at the barrier, no
      // group to wait for in the drain. Recorded as the coordinator would
      // end it, so that it never blocks the next write.
      h.state = HandoffPhase::kCompleted;
      for (RoleDrain& d : h.drains) d.drained = true;
      h.drain_index = static_cast<int32_t>(h.drains.size());
      h.end_reason = absl::StrFormat(
          "nothing to wait for: no producer session was leased and bucket %d has no consumer "
          "group",
          source);
    } else {
      h.state = HandoffPhase::kSwitching;
    }
    opened.push_back(std::move(h));
  }

  std::vector<Handoff> handoffs = change.handoffs;
  handoffs.insert(handoffs.end(), opened.begin(), opened.end());
  ASSIGN_OR_RETURN(std::shared_ptr<const Snapshot> with, after.WithHandoffs(handoffs, next_id));
  change.handoffs = std::move(handoffs);
  change.next_handoff_id = next_id;
  plan->after = std::move(with);
  plan->effect.handoffs = std::move(opened);
  return absl::OkStatus();
}

absl::StatusOr<Plan> PlanHandoffUpdate(const Snapshot& before, Handoff updated,
                                       HandoffPhase expected) {
  const Handoff* current = before.FindHandoff(updated.id);
  if (current == nullptr) {
    return absl::NotFoundError(absl::StrCat("handoff_id: handoff ", updated.id,
                                            " is not open at version ", before.version()));
  }
  if (current->state != expected) {
    return absl::FailedPreconditionError(
        absl::StrFormat("handoff %d is %s, not %s: another coordinator changed it", updated.id,
                        HandoffPhaseName(current->state), HandoffPhaseName(expected)));
  }
  Plan plan;
  plan.change.next_bucket_id = before.next_bucket_id();
  updated.phase_version = before.version() + 1;
  plan.change.handoffs.push_back(updated);
  ASSIGN_OR_RETURN(plan.after, before.Apply(plan.change));
  plan.effect.changed = true;
  plan.effect.handoffs.push_back(std::move(updated));
  return plan;
}

absl::StatusOr<Plan> PlanCancelHandoff(const Snapshot& before, int64_t id,
                                       const std::string& reason, absl::Time now) {
  const Handoff* current = before.FindHandoff(id);
  if (current == nullptr) {
    return absl::NotFoundError(absl::StrCat("handoff_id: handoff ", id,
                                            " is not open (it never existed or already ended)"));
  }
  Handoff updated = *current;
  updated.state = HandoffPhase::kCancelled;
  updated.end_reason = reason;
  updated.phase_time = now;
  return PlanHandoffUpdate(before, std::move(updated), current->state);
}

}  // namespace bucketmap
