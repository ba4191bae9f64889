#include "domain/planner.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <map>
#include <string_view>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "domain/status_macros.h"

namespace bucketmap {
namespace {

std::string Describe(const Bucket& b) { return absl::StrFormat("bucket %d (%s)", b.id, b.name); }

// Ascending union of two ascending, duplicate-free lists.
std::vector<int64_t> UnionSorted(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  std::vector<int64_t> out;
  out.reserve(a.size() + b.size());
  std::set_union(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

// What `after` does to routes relative to `before`. Only teams with an
// override (before or after) are examined: they are the teams the service
// knows by id. Default-placed teams are covered by the pool shares.
Effect ComputeEffect(const Snapshot& before, const Snapshot& after, const Change& change) {
  Effect effect;
  effect.changed = true;
  effect.assignments_changed = static_cast<int64_t>(change.set.size() + change.unset.size());

  std::vector<std::string> pools;
  std::set_union(before.pools().begin(), before.pools().end(), after.pools().begin(),
                 after.pools().end(), std::back_inserter(pools));
  std::vector<char> shifted_in_after(after.pools().size(), 0);
  bool any_shift = false;
  for (const std::string& pool : pools) {
    const PlacementTable& old_table = before.PoolTable(pool);
    const PlacementTable& new_table = after.PoolTable(pool);
    // Unchanged members share one table object (Snapshot::Apply).
    if (&old_table == &new_table) continue;
    const double share = PlacementTable::ShareMoved(old_table, new_table);
    if (share <= 0) continue;
    effect.pool_shifts.push_back(PoolShift{pool, share});
    auto it = std::lower_bound(after.pools().begin(), after.pools().end(), pool);
    if (it != after.pools().end() && *it == pool) {
      shifted_in_after[it - after.pools().begin()] = 1;
      any_shift = true;
    }
  }

  std::vector<int64_t> changed_teams;
  changed_teams.reserve(change.set.size());
  for (const auto& [team, target] : change.set) changed_teams.push_back(team);
  std::vector<int64_t> candidates = UnionSorted(changed_teams, change.unset);
  if (any_shift) {
    // Teams assigned to a shifted pool whose override did not change are
    // in after's columns with the same pool.
    std::vector<int64_t> in_shifted;
    after.assignments().ForEach([&](int64_t team, int32_t target) {
      if (target < 0 && shifted_in_after[-target - 1]) in_shifted.push_back(team);
    });
    candidates = UnionSorted(candidates, in_shifted);
  }
  for (int64_t team : candidates) {
    const int32_t from = before.RouteOf(team).bucket_id;
    const int32_t to = after.RouteOf(team).bucket_id;
    if (from == to) continue;
    ++effect.moved_team_count;
    if (effect.moved_teams.size() < kMaxListedMoves) {
      effect.moved_teams.push_back(TeamMove{team, from, to});
    }
  }
  return effect;
}

// The bucket `team_id` routes to in `s` when it has no overflow topic;
// nullptr when it has one, or the team is unroutable.
const Bucket* BucketWithoutOverflow(const Snapshot& s, int64_t team_id) {
  const Route route = s.RouteOf(team_id);
  if (!route.routable()) return nullptr;
  const Bucket* b = s.FindBucket(route.bucket_id);
  return b != nullptr && b->topics.count(kOverflowRole) == 0 ? b : nullptr;
}

// Every team with a rule that needs an overflow topic routes, in `after`,
// to a bucket that has one, unless it already routed to that same bucket
// without one in `before` (not this write's doing). O(rules).
absl::Status CheckOverflowRoutes(const Snapshot& before, const Snapshot& after) {
  for (const TeamRule& rule : after.team_rules()) {
    if (!NeedsOverflow(rule.kind)) continue;
    const Bucket* now = BucketWithoutOverflow(after, rule.team_id);
    if (now == nullptr) continue;
    const Bucket* was = BucketWithoutOverflow(before, rule.team_id);
    if (was != nullptr && was->id == now->id) continue;
    return absl::FailedPreconditionError(absl::StrFormat(
        "team %d has a %s rule, which sends its events to its bucket's \"%s\" topic, but this "
        "write would route it to %s, which has no \"%s\" topic; clear the rule first, or route "
        "the team to a bucket with an overflow topic",
        rule.team_id, RuleKindName(rule.kind), kOverflowRole, Describe(*now), kOverflowRole));
  }
  return absl::OkStatus();
}

absl::StatusOr<Plan> Finish(const Snapshot& before, Change change) {
  Plan plan;
  plan.change = std::move(change);
  if (plan.change.empty()) return plan;
  ASSIGN_OR_RETURN(plan.after, before.Apply(plan.change));
  RETURN_IF_ERROR(CheckOverflowRoutes(before, *plan.after));
  plan.effect = ComputeEffect(before, *plan.after, plan.change);
  return plan;
}

// The pool objects whose paused_bucket_ids change when bucket `current`
// (nullptr for a new bucket) becomes `updated`: the bucket leaves its old
// pool's list when it leaves the pool or stops being PAUSED, and joins its
// new pool's list when that pool's pause paused it (`paused_by_pool`).
std::vector<Pool> PausedListChanges(const Snapshot& before, const Bucket* current,
                                    const Bucket& updated, bool paused_by_pool) {
  std::map<std::string, Pool> touched;
  auto pool = [&](const std::string& name) -> Pool& {
    auto it = touched.find(name);
    if (it == touched.end()) it = touched.emplace(name, before.PoolOf(name)).first;
    return it->second;
  };
  if (current != nullptr) {
    const Pool* old = before.FindPoolObject(current->pool);
    const bool stays = current->pool == updated.pool && updated.state == BucketState::kPaused;
    if (old != nullptr && !stays &&
        std::binary_search(old->paused_bucket_ids.begin(), old->paused_bucket_ids.end(),
                           current->id)) {
      std::vector<int32_t>& ids = pool(current->pool).paused_bucket_ids;
      ids.erase(std::find(ids.begin(), ids.end(), current->id));
    }
  }
  if (paused_by_pool) {
    std::vector<int32_t>& ids = pool(updated.pool).paused_bucket_ids;
    auto it = std::lower_bound(ids.begin(), ids.end(), updated.id);
    if (it == ids.end() || *it != updated.id) ids.insert(it, updated.id);
  }
  std::vector<Pool> out;
  for (auto& [name, p] : touched) out.push_back(std::move(p));
  return out;
}

int CountPlaceable(const std::vector<Bucket>& buckets, std::string_view pool,
                   const Bucket* replacement) {
  int n = 0;
  for (const Bucket& b : buckets) {
    const Bucket& x = replacement != nullptr && replacement->id == b.id ? *replacement : b;
    if (x.pool == pool && IsPlaceable(x.state)) ++n;
  }
  return n;
}

// The pool invariant of SPEC §2, for `pool` losing its placeable buckets.
absl::Status CheckPoolKeepsBucket(const Snapshot& before, const std::string& pool,
                                  const Bucket& updated) {
  if (CountPlaceable(before.buckets(), pool, nullptr) == 0) return absl::OkStatus();
  if (CountPlaceable(before.buckets(), pool, &updated) > 0) return absl::OkStatus();
  if (pool == kDefaultPool) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "pool \"%s\" would have no ACTIVE or PAUSED bucket left; it holds every team without an "
        "override",
        pool));
  }
  const int64_t assigned = before.PoolAssignedCount(pool);
  if (assigned > 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "pool \"%s\" would have no ACTIVE or PAUSED bucket left; %d team%s assigned to it", pool,
        assigned, assigned == 1 ? " is" : "s are"));
  }
  return absl::OkStatus();
}

bool TransitionAllowed(BucketState from, BucketState to) {
  switch (from) {
    case BucketState::kActive:
      return to == BucketState::kPaused || to == BucketState::kDraining;
    case BucketState::kPaused:
      return to == BucketState::kActive || to == BucketState::kDraining;
    case BucketState::kDraining:
      return to == BucketState::kActive || to == BucketState::kRetired;
    case BucketState::kRetired:
      return false;
  }
  return false;
}

std::string AllowedFrom(BucketState from) {
  std::vector<std::string> names;
  for (BucketState to : {BucketState::kActive, BucketState::kPaused, BucketState::kDraining,
                         BucketState::kRetired}) {
    if (TransitionAllowed(from, to)) names.push_back(BucketStateName(to));
  }
  return names.empty() ? "none (terminal)" : absl::StrJoin(names, ", ");
}

bool ValidState(BucketState s) {
  const int raw = static_cast<int>(s);
  return raw >= static_cast<int>(BucketState::kActive) &&
         raw <= static_cast<int>(BucketState::kRetired);
}

// consumer_groups and drain_order may name only roles that have a topic.
absl::Status CheckRolesHaveTopics(const Bucket& b) {
  for (const auto& [role, group] : b.consumer_groups) {
    if (b.topics.count(role) == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "bucket.consumer_groups[%s]: role \"%s\" has no topic in bucket.topics", role, role));
    }
  }
  for (size_t i = 0; i < b.drain_order.size(); ++i) {
    if (b.topics.count(b.drain_order[i]) == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("bucket.drain_order[%d]: role \"%s\" has no topic in bucket.topics", i,
                          b.drain_order[i]));
    }
  }
  return absl::OkStatus();
}

// Whether teams may currently route to `b`: through pins, or through
// placement in a pool that holds teams.
bool HoldsTeams(const Snapshot& s, const Bucket& b, std::string* why) {
  const int64_t pins = s.PinnedCount(b.id);
  std::vector<std::string> reasons;
  if (pins > 0) reasons.push_back(absl::StrCat(pins, " pinned"));
  if (IsPlaceable(b.state)) {
    if (b.pool == kDefaultPool) {
      reasons.push_back("in placement of pool \"default\"");
    } else if (const int64_t n = s.PoolAssignedCount(b.pool); n > 0) {
      reasons.push_back(absl::StrFormat("in placement of pool \"%s\" with %d assigned", b.pool, n));
    }
  }
  *why = absl::StrJoin(reasons, "; ");
  return !reasons.empty();
}

}  // namespace

absl::StatusOr<Plan> PlanCreateBucket(const Snapshot& before, Bucket bucket) {
  if (bucket.id != 0) {
    return absl::InvalidArgumentError("bucket.id: must not be set; the server assigns it");
  }
  if (const Bucket* taken = before.FindBucketByName(bucket.name); taken != nullptr) {
    return absl::AlreadyExistsError(absl::StrFormat(
        "bucket.name: a bucket named \"%s\" already exists (id %d)", bucket.name, taken->id));
  }
  if (bucket.state != BucketState::kActive && bucket.state != BucketState::kPaused) {
    return absl::InvalidArgumentError(
        absl::StrCat("bucket.state: a new bucket must be ACTIVE or PAUSED, got ",
                     ValidState(bucket.state) ? BucketStateName(bucket.state)
                                              : std::to_string(static_cast<int>(bucket.state))));
  }
  if (bucket.weight == 0) bucket.weight = 100;
  if (bucket.pool.empty()) bucket.pool = kDefaultPool;
  if (before.next_bucket_id() == INT32_MAX ||
      before.FindBucket(before.next_bucket_id()) != nullptr) {
    return absl::ResourceExhaustedError("bucket.id: every bucket id is taken");
  }
  bucket.id = before.next_bucket_id();
  bucket.created_version = before.version() + 1;
  bucket.updated_version = before.version() + 1;
  // A bucket created ACTIVE in a PAUSED pool is paused by the pool, and
  // resumed with it.
  const bool paused_by_pool =
      before.PoolPaused(bucket.pool) && bucket.state == BucketState::kActive;
  if (paused_by_pool) bucket.state = BucketState::kPaused;

  Change change;
  change.next_bucket_id = bucket.id + 1;
  change.pool_objects = PausedListChanges(before, nullptr, bucket, paused_by_pool);
  change.buckets.push_back(std::move(bucket));
  return Finish(before, std::move(change));
}

absl::StatusOr<Plan> PlanUpdateBucket(const Snapshot& before, const BucketUpdate& update) {
  const Bucket* current = nullptr;
  if (update.id > 0) {
    current = before.FindBucket(update.id);
    if (current == nullptr) {
      return absl::NotFoundError(absl::StrFormat("bucket.id: bucket %d does not exist", update.id));
    }
  } else if (!update.name.empty()) {
    current = before.FindBucketByName(update.name);
    if (current == nullptr) {
      return absl::NotFoundError(
          absl::StrFormat("bucket.name: bucket \"%s\" does not exist", update.name));
    }
  } else {
    return absl::InvalidArgumentError("bucket.id: the bucket's id or name is required");
  }
  if (update.paths.empty()) {
    return absl::InvalidArgumentError("update_mask.paths: at least one path is required");
  }

  Bucket updated = *current;
  const Bucket& v = update.values;
  for (size_t i = 0; i < update.paths.size(); ++i) {
    const std::string& path = update.paths[i];
    if (path == "state") {
      if (!ValidState(v.state)) {
        return absl::InvalidArgumentError(
            absl::StrCat("bucket.state: invalid state ", static_cast<int>(v.state)));
      }
      updated.state = v.state;
    } else if (path == "weight") {
      // A masked but unset weight resets it to the default, as field masks do.
      updated.weight = v.weight == 0 ? 100 : v.weight;
    } else if (path == "pool") {
      updated.pool = v.pool.empty() ? kDefaultPool : v.pool;
    } else if (path == "topics") {
      updated.topics = v.topics;
    } else if (path == "consumer_groups") {
      updated.consumer_groups = v.consumer_groups;
    } else if (path == "drain_order") {
      updated.drain_order = v.drain_order;
    } else if (path == "labels") {
      updated.labels = v.labels;
    } else if (path == "id" || path == "name" || path == "created_version" ||
               path == "updated_version") {
      return absl::InvalidArgumentError(
          absl::StrFormat("update_mask.paths[%d]: field \"%s\" is immutable", i, path));
    } else {
      return absl::InvalidArgumentError(
          absl::StrFormat("update_mask.paths[%d]: unknown field \"%s\"", i, path));
    }
  }
  if (updated.weight < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("bucket.weight: must be >= 1, got %d", updated.weight));
  }

  // A PAUSED pool keeps its buckets PAUSED: one that enters it ACTIVE is
  // paused by the pool; resuming one of its buckets alone is refused.
  bool paused_by_pool = false;
  if (before.PoolPaused(updated.pool) && updated.state == BucketState::kActive) {
    const bool state_asked =
        std::find(update.paths.begin(), update.paths.end(), "state") != update.paths.end();
    if (state_asked && current->state != BucketState::kActive) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "bucket.state: %s is in pool \"%s\", which is PAUSED; resume the pool (UpdatePool) to "
          "resume its buckets",
          Describe(*current), updated.pool));
    }
    updated.state = BucketState::kPaused;
    paused_by_pool = true;
  }

  Change change;
  change.next_bucket_id = before.next_bucket_id();
  if (updated == *current) return Finish(before, std::move(change));

  const std::string who = Describe(*current);
  if (current->state == BucketState::kRetired) {
    Bucket labels_only = *current;
    labels_only.labels = updated.labels;
    if (labels_only != updated) {
      return absl::FailedPreconditionError(
          absl::StrCat(who, " is RETIRED; only its labels can change"));
    }
  }
  RETURN_IF_ERROR(CheckRolesHaveTopics(updated));

  if (updated.state != current->state) {
    if (!TransitionAllowed(current->state, updated.state)) {
      return absl::FailedPreconditionError(
          absl::StrFormat("bucket.state: %s cannot go from %s to %s; allowed from %s: %s", who,
                          BucketStateName(current->state), BucketStateName(updated.state),
                          BucketStateName(current->state), AllowedFrom(current->state)));
    }
    if (updated.state == BucketState::kRetired) {
      if (const int64_t pins = before.PinnedCount(current->id); pins > 0) {
        return absl::FailedPreconditionError(
            absl::StrFormat("%s still has %d pinned team%s; move them before retiring it", who,
                            pins, pins == 1 ? "" : "s"));
      }
    }
  }

  const bool topics_change = updated.topics != current->topics;
  const bool groups_change = updated.consumer_groups != current->consumer_groups;
  if (topics_change && current->topics.count(kOverflowRole) > 0 &&
      updated.topics.count(kOverflowRole) == 0) {
    for (const TeamRule& rule : before.team_rules()) {
      if (NeedsOverflow(rule.kind) && before.RouteOf(rule.team_id).bucket_id == current->id) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "bucket.topics: %s serves team %d, whose %s rule sends events to its \"%s\" topic; "
            "clear the rule or move the team before removing the topic",
            who, rule.team_id, RuleKindName(rule.kind), kOverflowRole));
      }
    }
  }
  if (topics_change || groups_change) {
    std::string why;
    if (HoldsTeams(before, *current, &why)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "bucket.%s: %s holds teams (%s); its topics and consumer groups cannot change while it "
          "holds teams; create a new bucket and move the teams",
          topics_change ? "topics" : "consumer_groups", who, why));
    }
  }

  RETURN_IF_ERROR(CheckPoolKeepsBucket(before, current->pool, updated));

  updated.updated_version = before.version() + 1;
  change.pool_objects = PausedListChanges(before, current, updated, paused_by_pool);
  change.buckets.push_back(std::move(updated));
  return Finish(before, std::move(change));
}

absl::StatusOr<Plan> PlanAssignments(const Snapshot& before, std::vector<AssignmentOp> ops) {
  if (ops.empty()) {
    return absl::InvalidArgumentError("assignments: at least one assignment is required");
  }
  const bool single = ops.size() == 1;
  auto prefix = [&](size_t i) {
    return single ? std::string() : absl::StrCat("assignments[", i, "].");
  };

  absl::flat_hash_map<int64_t, size_t> seen;
  seen.reserve(ops.size());
  Change change;
  change.next_bucket_id = before.next_bucket_id();
  for (size_t i = 0; i < ops.size(); ++i) {
    const AssignmentOp& op = ops[i];
    if (op.team_id < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix(i), "team_id: must be >= 1, got ", op.team_id));
    }
    if (!seen.emplace(op.team_id, i).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix(i), "team_id: duplicate team ", op.team_id));
    }
    const std::optional<Target> current = before.FindAssignment(op.team_id);
    if (!op.target.has_value()) {
      // Removing an override the team does not have is a no-op, alone or
      // in a batch: an unassign is idempotent, so a retried one succeeds.
      if (!current.has_value()) continue;
      change.unset.push_back(op.team_id);
      continue;
    }

    const Target& target = *op.target;
    if (target.bucket_id < 0 || (target.bucket_id > 0 && !target.pool.empty())) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix(i), "bucket_id: set either a bucket id (>= 1) or a pool"));
    }
    if (target.bucket_id == 0 && target.pool.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix(i), "bucket_id: a target bucket_id or pool is required"));
    }
    if (current.has_value() && *current == target) continue;
    if (target.is_pin()) {
      const Bucket* b = before.FindBucket(target.bucket_id);
      if (b == nullptr) {
        return absl::NotFoundError(
            absl::StrCat(prefix(i), "bucket_id: bucket ", target.bucket_id, " does not exist"));
      }
      if (!IsPlaceable(b->state)) {
        return absl::FailedPreconditionError(
            absl::StrCat(prefix(i), "bucket_id: ", Describe(*b), " is ", BucketStateName(b->state),
                         "; new pins go only to ACTIVE or PAUSED buckets"));
      }
    } else if (before.PoolTable(target.pool).empty()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%spool: pool \"%s\" has no ACTIVE or PAUSED bucket; teams assigned to it would be "
          "unroutable",
          prefix(i), target.pool));
    }
    change.set.emplace_back(op.team_id, target);
  }
  std::sort(change.set.begin(), change.set.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::sort(change.unset.begin(), change.unset.end());
  return Finish(before, std::move(change));
}

absl::StatusOr<Plan> PlanUpdatePool(const Snapshot& before, const PoolUpdate& update) {
  if (update.name.empty()) return absl::InvalidArgumentError("name: required");
  if (update.state.has_value() && *update.state != BucketState::kActive &&
      *update.state != BucketState::kPaused) {
    return absl::InvalidArgumentError(
        absl::StrCat("state: a pool is ACTIVE or PAUSED, got ",
                     ValidState(*update.state) ? BucketStateName(*update.state)
                                               : std::to_string(static_cast<int>(*update.state))));
  }
  if (update.priority.has_value() &&
      (*update.priority < 0 || *update.priority > kMaxPoolPriority)) {
    return absl::InvalidArgumentError(
        absl::StrCat("priority: must be 0..", kMaxPoolPriority, ", got ", *update.priority));
  }
  const Pool current = before.PoolOf(update.name);
  Pool next = current;
  if (update.state.has_value()) next.state = *update.state;
  if (update.priority.has_value()) next.priority = *update.priority;

  Change change;
  change.next_bucket_id = before.next_bucket_id();
  if (next.state == current.state && next.priority == current.priority) {
    return Finish(before, std::move(change));
  }
  const int64_t version = before.version() + 1;
  if (next.state != current.state) {
    if (next.paused()) {
      // Every ACTIVE bucket of the pool, in this one version.
      for (const Bucket& b : before.buckets()) {
        if (b.pool != update.name || b.state != BucketState::kActive) continue;
        Bucket paused = b;
        paused.state = BucketState::kPaused;
        paused.updated_version = version;
        change.buckets.push_back(std::move(paused));
        next.paused_bucket_ids.push_back(b.id);
      }
      std::sort(next.paused_bucket_ids.begin(), next.paused_bucket_ids.end());
      next.paused_bucket_ids.erase(
          std::unique(next.paused_bucket_ids.begin(), next.paused_bucket_ids.end()),
          next.paused_bucket_ids.end());
    } else {
      // Only what the pool's pause paused: a bucket paused one by one
      // stays PAUSED.
      for (int32_t id : current.paused_bucket_ids) {
        const Bucket* b = before.FindBucket(id);
        if (b == nullptr || b->pool != update.name || b->state != BucketState::kPaused) continue;
        Bucket resumed = *b;
        resumed.state = BucketState::kActive;
        resumed.updated_version = version;
        change.buckets.push_back(std::move(resumed));
      }
      next.paused_bucket_ids.clear();
    }
  }
  next.reason = update.reason;
  next.actor = update.actor;
  next.updated_version = version;
  change.pool_objects.push_back(std::move(next));
  return Finish(before, std::move(change));
}

absl::StatusOr<Plan> PlanSetTeamRule(const Snapshot& before, TeamRule rule, absl::Time now) {
  if (rule.kind == RuleKind::kRateLimit) {
    rule.burst = EffectiveBurst(rule.events_per_second, rule.burst);
  }
  // Times are kept to the microsecond, as stored and sent.
  auto micros = [](absl::Time t) {
    return t == absl::InfiniteFuture() ? t : absl::FromUnixMicros(absl::ToUnixMicros(t));
  };
  rule.expire_time = micros(rule.expire_time);
  RETURN_IF_ERROR(CheckTeamRule(rule, "rule"));
  if (rule.expire_time <= now) {
    return absl::InvalidArgumentError(
        absl::StrCat("expire_time: ", absl::FormatTime(rule.expire_time),
                     " is not in the future (now ", absl::FormatTime(now), ")"));
  }
  if (NeedsOverflow(rule.kind)) {
    const Route route = before.RouteOf(rule.team_id);
    if (!route.routable()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "team_id: team %d is unroutable (pool \"%s\" has no ACTIVE or PAUSED bucket); a %s "
          "rule needs the team's bucket to have an \"%s\" topic",
          rule.team_id, std::string(route.pool), RuleKindName(rule.kind), kOverflowRole));
    }
    const Bucket* bucket = before.FindBucket(route.bucket_id);
    if (bucket->topics.count(kOverflowRole) == 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "team_id: team %d's %s has no \"%s\" topic, where a %s rule sends events; route the "
          "team to a bucket with an overflow topic first",
          rule.team_id, Describe(*bucket), kOverflowRole, RuleKindName(rule.kind)));
    }
  }
  Change change;
  change.next_bucket_id = before.next_bucket_id();
  const TeamRule* existing = before.FindRule(rule.team_id, rule.kind);
  if (existing != nullptr && existing->SameEffect(rule)) return Finish(before, std::move(change));
  rule.version = before.version() + 1;
  rule.create_time = micros(now);
  change.rules.push_back(std::move(rule));
  return Finish(before, std::move(change));
}

absl::StatusOr<Plan> PlanClearTeamRules(const Snapshot& before, int64_t team_id,
                                        std::optional<RuleKind> kind) {
  if (team_id < 1) {
    return absl::InvalidArgumentError(absl::StrCat("team_id: must be >= 1, got ", team_id));
  }
  Change change;
  change.next_bucket_id = before.next_bucket_id();
  for (const TeamRule& rule : before.RulesOf(team_id)) {
    if (!kind.has_value() || rule.kind == *kind) change.cleared_rules.push_back(KeyOf(rule));
  }
  return Finish(before, std::move(change));
}

absl::StatusOr<Plan> PlanExpireTeamRules(const Snapshot& before, absl::Time now) {
  Change change;
  change.next_bucket_id = before.next_bucket_id();
  for (const TeamRule& rule : before.team_rules()) {
    if (rule.expire_time <= now) change.cleared_rules.push_back(KeyOf(rule));
  }
  return Finish(before, std::move(change));
}

}  // namespace bucketmap
