#include "domain/rebalance.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "domain/status_macros.h"
#include "domain/validation.h"

namespace bucketmap {
namespace {

// A candidate team: ordered by load, then team id, so that every choice
// among equal loads falls to the lower team id.
using Candidate = std::pair<double, int64_t>;

// The ideal load of a bucket under one set of floors (what cannot leave
// each bucket): see WaterFill().
struct Level {
  double floor = 0;
  bool floored = false;  // its floor exceeds its part: it should hold it alone
  double ideal = 0;
  // The most it should hold: `target` times its ideal load, and its floor
  // alone when floored (it is above the others already: whatever can leave
  // it should).
  double cap(double target) const { return floored ? ideal : target * ideal; }
};

// One bucket of the pool while planning.
struct Member {
  const Bucket* bucket = nullptr;
  bool active = false;
  double load = 0;  // current, as moves are made
  double background = 0;
  double share = 0;  // weighted share of the ACTIVE buckets' load
  // What the bucket should hold, with its giants, background and the teams
  // that may never move in it as its floor: what the target applies to.
  Level goal;
  // What the moves aim at: the same, with teams whose move alone would
  // exceed the load budget added to the floor (no move of this plan can
  // take them out, so the other buckets balance around them).
  Level aim;
  // No allowed move lowers it any more (it may still receive).
  bool stuck = false;
  // Teams that may move out of it (ACTIVE buckets only).
  std::set<Candidate> movable;

  // Whether moves may end here: never to a bucket whose floor alone (a
  // giant, a team too heavy to move) is over its part.
  bool takes() const { return active && !aim.floored; }
};

// Water filling: shares the ACTIVE buckets' load by weight, except that a
// bucket whose floor exceeds its part holds its floor (`floored`) and the
// others share the rest. Flooring a bucket lowers the others' part, which
// may floor more: at most one pass per bucket.
void WaterFill(std::vector<Member>& members, Level Member::*level, double active_load,
               int64_t active_weight) {
  for (bool changed = true; changed;) {
    double floored_load = 0;
    int64_t floored_weight = 0;
    for (const Member& m : members) {
      if (m.active && (m.*level).floored) {
        floored_load += (m.*level).floor;
        floored_weight += m.bucket->weight;
      }
    }
    changed = false;
    for (Member& m : members) {
      if (!m.active) continue;
      Level& l = m.*level;
      if (floored_weight == active_weight) {
        // Every bucket is floored: what may move is shared by weight.
        l.ideal = l.floor + (active_load - floored_load) * m.bucket->weight /
                                static_cast<double>(active_weight);
        continue;
      }
      const double part = (active_load - floored_load) * m.bucket->weight /
                          static_cast<double>(active_weight - floored_weight);
      if (!l.floored && l.floor > part) {
        l.floored = true;
        changed = true;
      }
      l.ideal = l.floored ? l.floor : part;
    }
  }
}

// A choice of team and destination for the most loaded bucket.
struct Choice {
  Candidate team{0, 0};
  size_t to = 0;
  bool found = false;
};

// Returns the candidate of `set` with the load closest to `goal` among
// loads in (0, cap]; on equal distance the larger load (it finishes the
// job), on equal loads the lower team id. nullopt when none is <= cap.
std::optional<Candidate> ClosestTo(const std::set<Candidate>& set, double goal, double cap) {
  if (set.empty() || cap <= 0) return std::nullopt;
  constexpr int64_t kMinId = std::numeric_limits<int64_t>::min();
  constexpr int64_t kMaxId = std::numeric_limits<int64_t>::max();
  std::optional<Candidate> above;  // smallest load >= goal, if <= cap
  std::optional<Candidate> below;  // largest load <= min(goal, cap)
  if (goal <= cap) {
    auto it = set.lower_bound({goal, kMinId});
    if (it != set.end() && it->first <= cap) above = *it;
  }
  auto it = set.upper_bound({std::min(goal, cap), kMaxId});
  if (it != set.begin()) {
    // The lowest team id among the teams of that load.
    below = *set.lower_bound({std::prev(it)->first, kMinId});
  }
  if (above.has_value() && below.has_value()) {
    return above->first - goal <= goal - below->first ? above : below;
  }
  return above.has_value() ? above : below;
}

bool Finite(double v) { return std::isfinite(v); }

// Load over the ideal load the moves aim at; a bucket that should hold
// nothing is infinitely loaded by any load at all.
double Normalized(const Member& m) {
  if (m.aim.ideal > 0) return m.load / m.aim.ideal;
  return m.load > 0 ? std::numeric_limits<double>::infinity() : 0;
}

// How far a bucket is over the cap the moves aim at.
double Over(const Member& m, double target) {
  const double cap = m.aim.cap(target);
  if (cap > 0) return m.load / cap;
  return m.load > 0 ? std::numeric_limits<double>::infinity() : 0;
}

// Whether `a` is further over its cap than `b`; ties to the lower id.
bool MoreLoaded(const Member& a, const Member& b, double target) {
  const double oa = Over(a, target);
  const double ob = Over(b, target);
  if (oa != ob) return oa > ob;
  return a.bucket->id < b.bucket->id;
}

// Whether `a` is less loaded than `b`; ties to the lower id.
bool LessLoaded(const Member& a, const Member& b, double target) {
  const double oa = Over(a, target);
  const double ob = Over(b, target);
  if (oa != ob) return oa < ob;
  return a.bucket->id < b.bucket->id;
}

// What a team that moves to `to` (an ACTIVE bucket of `pool`) gets as its
// override; see RebalanceMove::target.
std::optional<Target> TargetFor(const Snapshot& snapshot, std::string_view pool, int64_t team_id,
                                int32_t to) {
  const std::optional<Target> current = snapshot.FindAssignment(team_id);
  if (current.has_value() && current->is_pin() &&
      snapshot.PoolTable(pool).BucketForTeam(team_id) == to) {
    if (pool == kDefaultPool) return std::nullopt;
    return Target::Pool(std::string(pool));
  }
  return Target::Pin(to);
}

absl::Status CheckBudget(const RebalanceBudget& budget) {
  if (!(budget.max_load_share >= 0 && budget.max_load_share <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("budget.max_load_share: must be in [0, 1], got %g", budget.max_load_share));
  }
  if (budget.max_teams < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("budget.max_teams: must be >= 0, got ", budget.max_teams));
  }
  if (!(budget.target_imbalance >= 1) || !Finite(budget.target_imbalance)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "budget.target_imbalance: must be a finite number >= 1, got %g", budget.target_imbalance));
  }
  if (!(budget.min_move_share >= 0 && budget.min_move_share <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("budget.min_move_share: must be in [0, 1], got %g", budget.min_move_share));
  }
  return absl::OkStatus();
}

}  // namespace

const char* RebalanceStopName(RebalanceStop stop) {
  switch (stop) {
    case RebalanceStop::kTargetReached:
      return "target_reached";
    case RebalanceStop::kTeamBudget:
      return "team_budget";
    case RebalanceStop::kLoadBudget:
      return "load_budget";
    case RebalanceStop::kNoUsefulMove:
      return "no_useful_move";
    case RebalanceStop::kNoActiveBucket:
      return "no_active_bucket";
  }
  return "unknown";
}

absl::StatusOr<RebalancePlan> PlanRebalance(const Snapshot& snapshot,
                                            const RebalanceRequest& request) {
  const RebalanceBudget& budget = request.budget;
  RETURN_IF_ERROR(CheckBudget(budget));
  const std::string& pool = request.pool;
  if (!std::binary_search(snapshot.pools().begin(), snapshot.pools().end(), pool)) {
    return absl::NotFoundError(
        absl::StrCat("pool: no bucket or assignment names pool ", QuoteUntrusted(pool)));
  }

  // The pool's buckets (RETIRED ones hold nothing), ascending by id.
  std::vector<Member> members;
  for (const Bucket& b : snapshot.buckets()) {
    if (b.pool != pool || b.state == BucketState::kRetired) continue;
    Member m;
    m.bucket = &b;
    m.active = b.state == BucketState::kActive;
    members.push_back(std::move(m));
  }
  auto member_of = [&](int32_t bucket_id) -> ptrdiff_t {
    auto it = std::lower_bound(members.begin(), members.end(), bucket_id,
                               [](const Member& m, int32_t id) { return m.bucket->id < id; });
    return it != members.end() && it->bucket->id == bucket_id ? it - members.begin() : -1;
  };

  // Listed teams, ascending by id, with the member they route to.
  struct Placed {
    int64_t team_id;
    double load;
    size_t member;
  };
  std::vector<TeamLoad> loads = request.team_loads;
  std::sort(loads.begin(), loads.end(),
            [](const TeamLoad& a, const TeamLoad& b) { return a.team_id < b.team_id; });
  std::vector<Placed> placed;
  for (size_t i = 0; i < loads.size(); ++i) {
    const TeamLoad& t = loads[i];
    if (t.team_id < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("team_loads: team ids must be >= 1, got ", t.team_id));
    }
    if (i > 0 && loads[i - 1].team_id == t.team_id) {
      return absl::InvalidArgumentError(
          absl::StrCat("team_loads: team ", t.team_id, " is listed twice"));
    }
    if (!(t.load >= 0) || !Finite(t.load)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "team_loads[team=%d].load: must be finite and >= 0, got %g", t.team_id, t.load));
    }
    const int32_t bucket_id = snapshot.RouteOf(t.team_id).bucket_id;
    if (bucket_id == 0) continue;
    const ptrdiff_t m = member_of(bucket_id);
    if (m < 0) continue;
    placed.push_back(Placed{t.team_id, t.load, static_cast<size_t>(m)});
  }
  for (const Placed& p : placed) members[p.member].load += p.load;
  for (const auto& [bucket_id, total] : request.bucket_totals) {
    if (!(total >= 0) || !Finite(total)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("bucket_totals[%d]: must be finite and >= 0, got %g", bucket_id, total));
    }
    const ptrdiff_t m = member_of(bucket_id);
    if (m < 0) continue;
    // Per-team and per-bucket rates are measured separately, so the sum
    // of a bucket's teams may exceed its total for a while: no background.
    members[m].background = std::max(0.0, total - members[m].load);
    members[m].load += members[m].background;
  }

  RebalancePlan plan;
  plan.pool = pool;
  plan.version = snapshot.version();
  plan.budget = budget;
  plan.teams_with_load = static_cast<int64_t>(placed.size());
  double active_load = 0;
  int64_t active_weight = 0;
  for (const Member& m : members) {
    plan.pool_load += m.load;
    if (!m.active) continue;
    active_load += m.load;
    active_weight += m.bucket->weight;
  }
  for (Member& m : members) {
    if (m.active) m.share = active_load * m.bucket->weight / static_cast<double>(active_weight);
  }

  // Which teams may move; what cannot leave each bucket.
  std::vector<int64_t> frozen = request.frozen_team_ids;
  std::sort(frozen.begin(), frozen.end());
  const double min_move = budget.min_move_share * plan.pool_load;
  std::vector<char> movable(placed.size(), 0);
  for (size_t i = 0; i < placed.size(); ++i) {
    const Placed& p = placed[i];
    Member& m = members[p.member];
    if (std::binary_search(frozen.begin(), frozen.end(), p.team_id)) {
      ++plan.teams_frozen;
    } else if (p.load > 0 && p.load < min_move) {
      ++plan.teams_below_min_move;
    } else if (p.load > 0) {
      movable[i] = 1;
    }
    if (!movable[i]) m.goal.floor += p.load;
  }
  for (Member& m : members) m.goal.floor += m.background;

  // Giants: teams that no ACTIVE bucket can take within its share, even
  // with everything that may move moved out of it (its room: its share
  // less what cannot leave it). Only a team above the largest room can be
  // one; the room of its own bucket does not count the team itself.
  double largest_room = -std::numeric_limits<double>::infinity();
  for (const Member& m : members) {
    if (m.active) largest_room = std::max(largest_room, m.share - m.goal.floor);
  }
  std::vector<char> giant(placed.size(), 0);
  for (size_t i = 0; i < placed.size(); ++i) {
    const Placed& p = placed[i];
    Member& own = members[p.member];
    if (!own.active || p.load <= 0 || p.load <= largest_room) continue;
    double room = largest_room;
    // What cannot leave its own bucket may include the team itself.
    if (!movable[i]) room = std::max(room, own.share - (own.goal.floor - p.load));
    if (p.load <= room) continue;
    giant[i] = 1;
    plan.giants.push_back(HeavyTeam{p.team_id, own.bucket->id, p.load, room});
    if (movable[i]) own.goal.floor += p.load;
  }
  const auto heaviest_first = [](const HeavyTeam& a, const HeavyTeam& b) {
    return a.load != b.load ? a.load > b.load : a.team_id < b.team_id;
  };
  std::sort(plan.giants.begin(), plan.giants.end(), heaviest_first);

  // Ideal loads: what each bucket should hold, and what this plan's moves
  // aim at (see Member).
  const double load_budget = budget.max_load_share * plan.pool_load;
  for (Member& m : members) m.aim.floor = m.goal.floor;
  for (size_t i = 0; i < placed.size(); ++i) {
    const Placed& p = placed[i];
    if (movable[i] && !giant[i] && p.load > load_budget) members[p.member].aim.floor += p.load;
  }
  WaterFill(members, &Member::goal, active_load, active_weight);
  WaterFill(members, &Member::aim, active_load, active_weight);

  for (size_t i = 0; i < placed.size(); ++i) {
    const Placed& p = placed[i];
    Member& m = members[p.member];
    if (m.active && movable[i] && !giant[i]) m.movable.insert({p.load, p.team_id});
  }

  // Max over ACTIVE buckets of load over ideal (`ideal`) or over share;
  // 1 when there is nothing to compare.
  auto imbalance = [&](bool ideal) {
    double worst = 0;
    bool any = false;
    for (const Member& m : members) {
      const double of = ideal ? m.goal.ideal : m.share;
      if (!m.active || of <= 0) continue;
      worst = std::max(worst, m.load / of);
      any = true;
    }
    return any ? worst : 1.0;
  };
  plan.imbalance_before = imbalance(true);
  plan.share_imbalance_before = imbalance(false);
  std::vector<double> before(members.size());
  for (size_t i = 0; i < members.size(); ++i) before[i] = members[i].load;

  // The greedy loop: repeatedly take the ACTIVE bucket furthest over its
  // cap that can still be lowered, and move one team out of it.
  const double target = budget.target_imbalance;
  // Loads within this of the target count as at it: float noise must not
  // buy moves.
  const double tolerance = 1e-9 * active_load;
  auto within = [&](const Member& m, const Level& l) {
    return m.load <= l.cap(target) + tolerance;
  };
  double budget_left = load_budget;
  bool team_budget_hit = false;
  bool load_budget_hit = false;
  while (active_weight > 0 && active_load > 0) {
    Member* s = nullptr;
    for (Member& m : members) {
      if (m.active && !m.stuck && (s == nullptr || MoreLoaded(m, *s, target))) s = &m;
    }
    if (s == nullptr || within(*s, s->aim)) break;
    if (static_cast<int64_t>(plan.moves.size()) >= budget.max_teams) {
      team_budget_hit = true;
      break;
    }
    const size_t si = static_cast<size_t>(s - members.data());

    // 1. A move within the target: the team closest to what s must shed,
    //    to a bucket with room for it under its own target.
    Choice choice;
    const double need = s->load - s->aim.cap(target);
    double max_room = 0;
    for (size_t d = 0; d < members.size(); ++d) {
      if (d == si || !members[d].takes()) continue;
      max_room = std::max(max_room, members[d].aim.cap(target) - members[d].load);
    }
    std::optional<Candidate> pick = ClosestTo(s->movable, need, std::min(max_room, budget_left));
    if (pick.has_value()) {
      // The fitting bucket it leaves least loaded, ties to the lower id.
      double best = 0;
      for (size_t d = 0; d < members.size(); ++d) {
        const Member& m = members[d];
        if (d == si || !m.takes() || m.aim.cap(target) - m.load < pick->first) continue;
        const double n = (m.load + pick->first) / m.aim.ideal;  // > 0: it had room
        if (!choice.found || n < best) {
          choice = Choice{*pick, d, true};
          best = n;
        }
      }
    } else if (ClosestTo(s->movable, need, max_room).has_value()) {
      load_budget_hit = true;
    }

    // 2. Otherwise (no team fits anywhere within the target), a move that
    //    still lowers the most loaded bucket: to the least loaded one,
    //    without lifting it to s's level, as close as possible to leaving
    //    both level.
    if (!choice.found && s->aim.ideal > 0) {
      const Member* low = nullptr;
      for (const Member& m : members) {
        if (&m == s || !m.takes() || m.aim.ideal <= 0) continue;
        if (low == nullptr || LessLoaded(m, *low, target)) low = &m;
      }
      const double gap = low != nullptr ? Normalized(*s) - Normalized(*low) : 0;
      if (gap > 0) {
        const double limit = std::nextafter(gap * low->aim.ideal, 0.0);
        const double level = gap * s->aim.ideal * low->aim.ideal / (s->aim.ideal + low->aim.ideal);
        pick = ClosestTo(s->movable, level, std::min(limit, budget_left));
        if (pick.has_value()) {
          choice = Choice{*pick, static_cast<size_t>(low - members.data()), true};
        } else if (ClosestTo(s->movable, level, limit).has_value()) {
          load_budget_hit = true;
        }
      }
    }

    if (!choice.found) {
      s->stuck = true;
      continue;
    }
    s->movable.erase(choice.team);
    const int64_t team_id = choice.team.second;
    if (!snapshot.handoffs().empty() && !snapshot.HandoffsOf(team_id).empty()) {
      ++plan.teams_skipped_in_handoff;
      continue;
    }
    const double x = choice.team.first;
    Member& d = members[choice.to];
    s->load -= x;
    d.load += x;
    budget_left -= x;
    plan.load_moved += x;
    plan.moves.push_back(RebalanceMove{team_id, s->bucket->id, d.bucket->id, x,
                                       TargetFor(snapshot, pool, team_id, d.bucket->id)});
  }

  std::sort(plan.moves.begin(), plan.moves.end(),
            [](const RebalanceMove& a, const RebalanceMove& b) { return a.team_id < b.team_id; });
  plan.share_moved = plan.pool_load > 0 ? plan.load_moved / plan.pool_load : 0;
  plan.imbalance_after = imbalance(true);
  plan.share_imbalance_after = imbalance(false);
  plan.target_reached = true;
  for (size_t i = 0; i < members.size(); ++i) {
    const Member& m = members[i];
    if (m.active && !within(m, m.goal)) plan.target_reached = false;
    BucketLoad b;
    b.bucket_id = m.bucket->id;
    b.state = m.bucket->state;
    b.weight = m.bucket->weight;
    b.before = before[i];
    b.after = m.load;
    b.background = m.background;
    if (m.active) {
      b.share = m.share;
      b.floor = m.goal.floor;
      b.ideal = m.goal.ideal;
      b.floored = m.goal.floored;
    }
    plan.buckets.push_back(b);
  }
  // The teams too heavy for the load budget that keep a bucket over its
  // target.
  for (size_t i = 0; i < placed.size() && !plan.target_reached; ++i) {
    const Placed& p = placed[i];
    const Member& m = members[p.member];
    if (m.active && !within(m, m.goal) && movable[i] && !giant[i] && p.load > load_budget) {
      plan.anchored.push_back(HeavyTeam{p.team_id, m.bucket->id, p.load, load_budget});
    }
  }
  std::sort(plan.anchored.begin(), plan.anchored.end(), heaviest_first);
  if (plan.anchored.size() > kMaxListedHeavy) plan.anchored.resize(kMaxListedHeavy);

  if (active_weight == 0) {
    plan.stop = RebalanceStop::kNoActiveBucket;
  } else if (plan.target_reached) {
    plan.stop = RebalanceStop::kTargetReached;
  } else if (team_budget_hit) {
    plan.stop = RebalanceStop::kTeamBudget;
  } else if (load_budget_hit || !plan.anchored.empty()) {
    plan.stop = RebalanceStop::kLoadBudget;
  } else {
    plan.stop = RebalanceStop::kNoUsefulMove;
  }
  return plan;
}

absl::StatusOr<std::vector<AssignmentOp>> RebalanceAssignments(
    const Snapshot& snapshot, std::string_view pool, const std::vector<RebalanceMove>& moves) {
  std::vector<AssignmentOp> ops;
  ops.reserve(moves.size());
  for (size_t i = 0; i < moves.size(); ++i) {
    const RebalanceMove& move = moves[i];
    const std::string field = absl::StrCat("moves[", i, "]");
    if (move.team_id < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".team_id: must be >= 1, got ", move.team_id));
    }
    const Bucket* from = snapshot.FindBucket(move.from_bucket_id);
    const Bucket* to = snapshot.FindBucket(move.to_bucket_id);
    if (from == nullptr || to == nullptr) {
      const bool source = from == nullptr;
      return absl::NotFoundError(
          absl::StrCat(field, source ? ".from_bucket_id" : ".to_bucket_id", ": bucket ",
                       source ? move.from_bucket_id : move.to_bucket_id, " does not exist"));
    }
    if (from->pool != pool || to->pool != pool) {
      const bool source = from->pool != pool;
      return absl::InvalidArgumentError(absl::StrCat(
          field, source ? ".from_bucket_id" : ".to_bucket_id", ": bucket ",
          source ? from->id : to->id, " is in pool ",
          QuoteUntrusted(source ? from->pool : to->pool), ", not ", QuoteUntrusted(pool)));
    }
    if (from->id == to->id) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".to_bucket_id: team ", move.team_id,
                                                     " is already in bucket ", to->id));
    }
    if (to->state != BucketState::kActive) {
      return absl::FailedPreconditionError(
          absl::StrCat(field, ".to_bucket_id: bucket ", to->id, " is ", BucketStateName(to->state),
                       "; a rebalance moves teams only to ACTIVE buckets"));
    }
    const int32_t route = snapshot.RouteOf(move.team_id).bucket_id;
    if (route != from->id) {
      return absl::FailedPreconditionError(
          absl::StrCat(field, ".from_bucket_id: team ", move.team_id, " routes to bucket ", route,
                       " at version ", snapshot.version(), ", not to bucket ", from->id));
    }
    ops.push_back(AssignmentOp{move.team_id, TargetFor(snapshot, pool, move.team_id, to->id)});
  }
  std::sort(ops.begin(), ops.end(),
            [](const AssignmentOp& a, const AssignmentOp& b) { return a.team_id < b.team_id; });
  for (size_t i = 1; i < ops.size(); ++i) {
    if (ops[i - 1].team_id == ops[i].team_id) {
      return absl::InvalidArgumentError(
          absl::StrCat("moves: team ", ops[i].team_id, " is listed twice"));
    }
  }
  return ops;
}

void FillRebalanceLoads(const Snapshot& snapshot, const LoadRates& rates, LoadMetric metric,
                        RebalanceRequest* request) {
  auto value = [metric](const LoadRate& rate) {
    return metric == LoadMetric::kEventRate ? rate.events : rate.processing;
  };
  auto in_pool = [&](int32_t bucket_id) {
    const Bucket* bucket = snapshot.FindBucket(bucket_id);
    return bucket != nullptr && bucket->pool == request->pool;
  };
  request->team_loads.clear();
  request->bucket_totals.clear();
  for (const auto& [team_id, rate] : rates.teams) {
    const Route route = snapshot.RouteOf(team_id);
    if (!route.routable() || !in_pool(route.bucket_id) || value(rate) <= 0) continue;
    request->team_loads.push_back(TeamLoad{team_id, value(rate)});
  }
  LoadRate unattributed;
  const std::vector<BucketLoadView> loads =
      BucketLoads(snapshot, rates, /*top_teams=*/0, &unattributed);
  for (const BucketLoadView& load : loads) {
    if (in_pool(load.bucket_id)) request->bucket_totals[load.bucket_id] = value(load.rate);
  }
}

}  // namespace bucketmap
