#include "domain/rebalance.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "domain/placement.h"
#include "domain/planner.h"
#include "domain_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bucketmap {
namespace {

using ::bucketmap::testing_util::IsOk;
using ::bucketmap::testing_util::MakeBucket;
using ::bucketmap::testing_util::MustBuild;
using ::bucketmap::testing_util::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Optional;
using ::testing::StartsWith;

using Code = absl::StatusCode;

// The worked example of docs/rebalancing.md. Buckets 1-3 ACTIVE and 4
// PAUSED, all weight 100, in the default pool; every team is
// default-placed (the ids were picked by their placement over buckets
// 1-4: 4, 6, 7, 9, 19 land on 1; 2, 10 on 2; 11, 13 on 3; 1 on 4).
MappingState ExampleState() {
  MappingState s;
  s.version = 42;
  s.buckets = {MakeBucket(1), MakeBucket(2), MakeBucket(3),
               MakeBucket(4, kDefaultPool, BucketState::kPaused)};
  return s;
}

RebalanceRequest ExampleRequest() {
  RebalanceRequest r;
  r.pool = kDefaultPool;
  r.team_loads = {{4, 300}, {6, 150}, {7, 100},  {9, 50},   {19, 40},
                  {2, 250}, {10, 90}, {11, 200}, {13, 120}, {1, 200}};
  r.frozen_team_ids = {13};  // moved less than --move_cooldown ago
  r.budget.max_load_share = 0.20;
  r.budget.max_teams = 10;
  r.budget.target_imbalance = 1.05;
  return r;
}

// Sum of the listed loads by the bucket each team routes to in `s`.
std::map<int32_t, double> LoadsByRoute(const Snapshot& s, const std::vector<TeamLoad>& loads) {
  std::map<int32_t, double> out;
  for (const TeamLoad& t : loads) out[s.RouteOf(t.team_id).bucket_id] += t.load;
  return out;
}

// Applies a plan as ApplyRebalance does: RebalanceAssignments, then
// PlanAssignments. Returns the snapshot after it.
std::shared_ptr<const Snapshot> Apply(const Snapshot& s, const RebalancePlan& plan) {
  if (plan.moves.empty()) return nullptr;
  auto ops = RebalanceAssignments(s, plan.pool, plan.moves);
  EXPECT_THAT(ops, IsOk());
  if (!ops.ok()) return nullptr;
  auto applied = PlanAssignments(s, *std::move(ops));
  EXPECT_THAT(applied, IsOk());
  return applied.ok() ? applied->after : nullptr;
}

const BucketLoad* FindLoad(const RebalancePlan& plan, int32_t bucket_id) {
  for (const BucketLoad& b : plan.buckets) {
    if (b.bucket_id == bucket_id) return &b;
  }
  return nullptr;
}

bool Moves(const RebalancePlan& plan, int64_t team_id) {
  return std::any_of(plan.moves.begin(), plan.moves.end(),
                     [&](const RebalanceMove& m) { return m.team_id == team_id; });
}

// A pool of `buckets` ACTIVE buckets (ids 1..buckets, weight 100) and
// `teams` default-placed teams with heavy-tailed loads (a seeded Zipf-like
// law), for the properties that must hold on any input.
struct Pool {
  std::shared_ptr<const Snapshot> snapshot;
  std::vector<TeamLoad> loads;
};

Pool MakePool(int buckets, int64_t teams, uint64_t seed, std::vector<int32_t> weights = {}) {
  MappingState s;
  s.version = 7;
  for (int32_t id = 1; id <= buckets; ++id) {
    const int32_t weight = weights.empty() ? 100 : weights[id - 1];
    s.buckets.push_back(MakeBucket(id, kDefaultPool, BucketState::kActive, weight));
  }
  Pool p;
  p.snapshot = MustBuild(std::move(s));
  for (int64_t t = 1; t <= teams; ++t) {
    // Rank from the hash of (seed, team): a permutation-free heavy tail.
    const uint64_t h = Mix64(seed * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(t));
    const double rank = 1.0 + static_cast<double>(h % static_cast<uint64_t>(teams));
    p.loads.push_back(TeamLoad{t, 1e6 * std::pow(rank, -1.1)});
  }
  return p;
}

RebalanceRequest RequestFor(const Pool& p, double max_load_share, int64_t max_teams,
                            double target) {
  RebalanceRequest r;
  r.pool = kDefaultPool;
  r.team_loads = p.loads;
  r.budget.max_load_share = max_load_share;
  r.budget.max_teams = max_teams;
  r.budget.target_imbalance = target;
  return r;
}

// ---------------------------------------------------------------------------
// The worked example

TEST(PlanRebalanceTest, WorkedExampleOfTheDocs) {
  auto s = MustBuild(ExampleState());
  for (const auto& [team, bucket] : std::vector<std::pair<int64_t, int32_t>>{
           {4, 1}, {6, 1}, {7, 1}, {9, 1}, {19, 1}, {2, 2}, {10, 2}, {11, 3}, {13, 3}, {1, 4}}) {
    ASSERT_EQ(s->RouteOf(team).bucket_id, bucket) << "team " << team;
  }
  auto plan = PlanRebalance(*s, ExampleRequest());
  ASSERT_THAT(plan, IsOk());

  EXPECT_EQ(plan->version, 42);
  EXPECT_DOUBLE_EQ(plan->pool_load, 1500);  // bucket 4 (PAUSED) included
  EXPECT_THAT(
      plan->moves,
      ElementsAre(
          AllOf(Field(&RebalanceMove::team_id, 7), Field(&RebalanceMove::from_bucket_id, 1),
                Field(&RebalanceMove::to_bucket_id, 3), Field(&RebalanceMove::load, 100),
                Field(&RebalanceMove::target, Optional(Target::Pin(3)))),
          AllOf(Field(&RebalanceMove::team_id, 9), Field(&RebalanceMove::to_bucket_id, 2)),
          AllOf(Field(&RebalanceMove::team_id, 19), Field(&RebalanceMove::to_bucket_id, 2))));
  EXPECT_DOUBLE_EQ(plan->load_moved, 190);
  EXPECT_NEAR(plan->share_moved, 190.0 / 1500, 1e-12);
  const double share = 1300.0 / 3;
  EXPECT_NEAR(plan->imbalance_before, 640 / share, 1e-12);
  EXPECT_NEAR(plan->imbalance_after, 450 / share, 1e-12);
  EXPECT_TRUE(plan->target_reached);
  EXPECT_EQ(plan->stop, RebalanceStop::kTargetReached);
  EXPECT_EQ(plan->teams_with_load, 10);
  EXPECT_EQ(plan->teams_frozen, 1);
  EXPECT_THAT(plan->giants, IsEmpty());

  ASSERT_EQ(plan->buckets.size(), 4u);
  const std::vector<std::pair<double, double>> before_after = {
      {640, 450}, {340, 430}, {320, 420}, {200, 200}};
  for (size_t i = 0; i < 4; ++i) {
    const BucketLoad& b = plan->buckets[i];
    EXPECT_EQ(b.bucket_id, static_cast<int32_t>(i + 1));
    EXPECT_DOUBLE_EQ(b.before, before_after[i].first) << "bucket " << b.bucket_id;
    EXPECT_DOUBLE_EQ(b.after, before_after[i].second) << "bucket " << b.bucket_id;
  }
  for (int32_t id : {1, 2, 3}) {
    EXPECT_NEAR(FindLoad(*plan, id)->share, share, 1e-9);
    EXPECT_NEAR(FindLoad(*plan, id)->ideal, share, 1e-9);
    EXPECT_FALSE(FindLoad(*plan, id)->floored);
  }
  EXPECT_DOUBLE_EQ(FindLoad(*plan, 3)->floor, 120);  // the frozen team
  // The PAUSED bucket is reported and left alone.
  EXPECT_EQ(FindLoad(*plan, 4)->state, BucketState::kPaused);
  EXPECT_EQ(FindLoad(*plan, 4)->share, 0);
  EXPECT_EQ(FindLoad(*plan, 4)->ideal, 0);

  // Applied, the moves give the loads the plan expects.
  auto after = Apply(*s, *plan);
  ASSERT_NE(after, nullptr);
  EXPECT_EQ(after->version(), 43);
  const std::map<int32_t, double> loads = LoadsByRoute(*after, ExampleRequest().team_loads);
  for (const BucketLoad& b : plan->buckets) EXPECT_DOUBLE_EQ(loads.at(b.bucket_id), b.after);
  EXPECT_EQ(after->FindAssignment(7), Target::Pin(3));
}

// ---------------------------------------------------------------------------
// Budgets and the target

TEST(PlanRebalanceTest, ReachesTheTargetOnFeasibleInputs) {
  for (uint64_t seed : {1u, 2u, 3u}) {
    SCOPED_TRACE(seed);
    const Pool p = MakePool(6, 3000, seed);
    auto plan = PlanRebalance(*p.snapshot, RequestFor(p, 1.0, 100000, 1.02));
    ASSERT_THAT(plan, IsOk());
    if (!plan->giants.empty()) continue;  // not feasible by definition
    EXPECT_TRUE(plan->target_reached) << RebalanceStopName(plan->stop);
    EXPECT_LE(plan->imbalance_after, 1.02 + 1e-9);
    EXPECT_GT(plan->imbalance_before, 1.02);
    EXPECT_FALSE(plan->moves.empty());
    auto after = Apply(*p.snapshot, *plan);
    ASSERT_NE(after, nullptr);
    const std::map<int32_t, double> loads = LoadsByRoute(*after, p.loads);
    for (const BucketLoad& b : plan->buckets) EXPECT_NEAR(loads.at(b.bucket_id), b.after, 1e-6);
  }
}

TEST(PlanRebalanceTest, KeepsTheLoadBudget) {
  const Pool p = MakePool(8, 5000, 11);
  double previous = 0;
  for (double share : {0.0, 0.01, 0.03, 0.05}) {
    SCOPED_TRACE(share);
    auto plan = PlanRebalance(*p.snapshot, RequestFor(p, share, 100000, 1.0));
    ASSERT_THAT(plan, IsOk());
    EXPECT_LE(plan->load_moved, share * plan->pool_load + 1e-9);
    EXPECT_LE(plan->share_moved, share + 1e-12);
    EXPECT_FALSE(plan->target_reached);  // 1.0 is out of reach
    EXPECT_EQ(plan->stop, RebalanceStop::kLoadBudget);
    // A larger budget buys a better balance.
    EXPECT_GE(plan->load_moved, previous);
    previous = plan->load_moved;
    double moved = 0;
    for (const RebalanceMove& m : plan->moves) moved += m.load;
    EXPECT_NEAR(moved, plan->load_moved, 1e-6);
  }
  EXPECT_GT(previous, 0);
}

TEST(PlanRebalanceTest, KeepsTheTeamBudget) {
  const Pool p = MakePool(8, 5000, 12);
  auto plan = PlanRebalance(*p.snapshot, RequestFor(p, 1.0, 3, 1.0));
  ASSERT_THAT(plan, IsOk());
  EXPECT_EQ(plan->moves.size(), 3u);
  EXPECT_EQ(plan->stop, RebalanceStop::kTeamBudget);
  EXPECT_FALSE(plan->target_reached);
  EXPECT_LT(plan->imbalance_after, plan->imbalance_before);
}

TEST(PlanRebalanceTest, NoTeamBudgetOnlyReports) {
  auto s = MustBuild(ExampleState());
  RebalanceRequest r = ExampleRequest();
  r.budget.max_teams = 0;
  auto plan = PlanRebalance(*s, r);
  ASSERT_THAT(plan, IsOk());
  EXPECT_THAT(plan->moves, IsEmpty());
  EXPECT_EQ(plan->stop, RebalanceStop::kTeamBudget);
  EXPECT_NEAR(plan->imbalance_before, 640 / (1300.0 / 3), 1e-12);
  EXPECT_EQ(plan->imbalance_after, plan->imbalance_before);
  for (const BucketLoad& b : plan->buckets) EXPECT_EQ(b.after, b.before);
}

TEST(PlanRebalanceTest, StopsAtTheTargetWithoutSpendingTheBudget) {
  // Already within 1.5: nothing moves.
  auto s = MustBuild(ExampleState());
  RebalanceRequest r = ExampleRequest();
  r.budget.target_imbalance = 1.5;
  auto plan = PlanRebalance(*s, r);
  ASSERT_THAT(plan, IsOk());
  EXPECT_THAT(plan->moves, IsEmpty());
  EXPECT_TRUE(plan->target_reached);
  EXPECT_EQ(plan->stop, RebalanceStop::kTargetReached);
}

TEST(PlanRebalanceTest, MovesTheTeamClosestToWhatTheBucketMustShed) {
  // Bucket 1 holds 200 + 60 + 45 + 20 against an ideal of 200 (cap 210):
  // it must shed 115, and 200 does not fit in bucket 2's room (135); of
  // the rest, 60 is the closest. Then 45 (closest to the 55 left), then 20
  // (the 10 left: above it, but no team is below).
  MappingState st;
  st.version = 3;
  st.buckets = {MakeBucket(1), MakeBucket(2)};
  st.assignments = {{101, Target::Pin(1)},
                    {102, Target::Pin(1)},
                    {103, Target::Pin(1)},
                    {104, Target::Pin(1)},
                    {201, Target::Pin(2)}};
  auto s = MustBuild(std::move(st));
  RebalanceRequest r;
  r.pool = kDefaultPool;
  r.team_loads = {{101, 200}, {102, 60}, {103, 45}, {104, 20}, {201, 75}};
  r.budget.max_load_share = 1;
  r.budget.max_teams = 100;
  r.budget.target_imbalance = 1.05;
  auto plan = PlanRebalance(*s, r);
  ASSERT_THAT(plan, IsOk());
  EXPECT_THAT(plan->moves,
              ElementsAre(Field(&RebalanceMove::team_id, 102), Field(&RebalanceMove::team_id, 103),
                          Field(&RebalanceMove::team_id, 104)));
  EXPECT_DOUBLE_EQ(FindLoad(*plan, 1)->after, 200);
  EXPECT_DOUBLE_EQ(FindLoad(*plan, 2)->after, 200);
  EXPECT_TRUE(plan->target_reached);
  EXPECT_DOUBLE_EQ(plan->load_moved, 125);
}

TEST(PlanRebalanceTest, LowersTheMaximumWhenTheTargetIsOutOfReach) {
  // {6, 5} against {5}: nothing fits under the 8.4 cap, but moving a 5
  // lowers the worst bucket from 11 to 10 ({6} and {5, 5}): the best there
  // is.
  MappingState st;
  st.version = 3;
  st.buckets = {MakeBucket(1), MakeBucket(2)};
  st.assignments = {{1, Target::Pin(1)}, {2, Target::Pin(1)}, {3, Target::Pin(2)}};
  auto s = MustBuild(std::move(st));
  RebalanceRequest r;
  r.pool = kDefaultPool;
  r.team_loads = {{1, 6}, {2, 5}, {3, 5}};
  r.budget.max_load_share = 1;
  r.budget.max_teams = 100;
  auto plan = PlanRebalance(*s, r);
  ASSERT_THAT(plan, IsOk());
  EXPECT_THAT(plan->moves, ElementsAre(AllOf(Field(&RebalanceMove::team_id, 2),
                                             Field(&RebalanceMove::to_bucket_id, 2))));
  EXPECT_NEAR(plan->imbalance_after, 10.0 / 8, 1e-12);
  EXPECT_FALSE(plan->target_reached);
  EXPECT_EQ(plan->stop, RebalanceStop::kNoUsefulMove);
}

// ---------------------------------------------------------------------------
// Teams that never move

TEST(PlanRebalanceTest, NeverMovesFrozenTeams) {
  auto s = MustBuild(ExampleState());
  RebalanceRequest r = ExampleRequest();
  r.frozen_team_ids = {13, 7, 7};  // 7 was the first choice; duplicates are harmless
  auto plan = PlanRebalance(*s, r);
  ASSERT_THAT(plan, IsOk());
  EXPECT_FALSE(Moves(*plan, 7));
  EXPECT_FALSE(Moves(*plan, 13));
  EXPECT_FALSE(plan->moves.empty());
  EXPECT_EQ(plan->teams_frozen, 2);
}

TEST(PlanRebalanceTest, NeverMovesTeamsInAnOpenHandoff) {
  MappingState st = ExampleState();
  // Team 7 is listed in an open handoff (it moved at version 40).
  Handoff h;
  h.id = 3;
  h.opened_version = 40;
  h.source_bucket_id = 3;
  h.state = HandoffPhase::kDraining;
  h.target_bucket_ids = {1};
  h.team_ids = {7};
  h.to_bucket_ids = {1};
  st.handoffs = {h};
  st.next_handoff_id = 4;
  st.assignments = {{7, Target::Pool(kDefaultPool)}};
  auto s = MustBuild(std::move(st));
  ASSERT_EQ(s->HandoffsOf(7).size(), 1u);
  auto plan = PlanRebalance(*s, ExampleRequest());
  ASSERT_THAT(plan, IsOk());
  EXPECT_FALSE(Moves(*plan, 7));
  EXPECT_FALSE(plan->moves.empty());
  EXPECT_EQ(plan->teams_skipped_in_handoff, 1);
  for (const RebalanceMove& m : plan->moves) EXPECT_THAT(s->HandoffsOf(m.team_id), IsEmpty());
}

TEST(PlanRebalanceTest, NeverMovesTeamsBelowTheMinimumMove) {
  auto s = MustBuild(ExampleState());
  RebalanceRequest r = ExampleRequest();
  // 50 / 1500 = 3.3%: teams 9 (50) and 19 (40) are too small to move.
  r.budget.min_move_share = 0.034;
  auto plan = PlanRebalance(*s, r);
  ASSERT_THAT(plan, IsOk());
  EXPECT_FALSE(Moves(*plan, 9));
  EXPECT_FALSE(Moves(*plan, 19));
  EXPECT_EQ(plan->teams_below_min_move, 2);
  EXPECT_DOUBLE_EQ(FindLoad(*plan, 1)->floor, 90);
}

TEST(PlanRebalanceTest, ReportsGiantsAndNeverMovesThem) {
  // Team 4 (1000 of 2000) alone exceeds any bucket's share (500).
  MappingState st;
  st.version = 5;
  st.buckets = {MakeBucket(1), MakeBucket(2), MakeBucket(3), MakeBucket(4)};
  st.assignments = {{4, Target::Pin(1)},  {5, Target::Pin(1)},  {6, Target::Pin(1)},
                    {20, Target::Pin(2)}, {21, Target::Pin(2)}, {30, Target::Pin(3)},
                    {40, Target::Pin(4)}};
  auto s = MustBuild(std::move(st));
  RebalanceRequest r;
  r.pool = kDefaultPool;
  r.team_loads = {{4, 1000}, {5, 150}, {6, 100}, {20, 300}, {21, 150}, {30, 200}, {40, 100}};
  r.budget.max_load_share = 1;
  r.budget.max_teams = 100;
  auto plan = PlanRebalance(*s, r);
  ASSERT_THAT(plan, IsOk());
  ASSERT_EQ(plan->giants.size(), 1u);
  EXPECT_EQ(plan->giants[0].team_id, 4);
  EXPECT_EQ(plan->giants[0].bucket_id, 1);
  EXPECT_DOUBLE_EQ(plan->giants[0].load, 1000);
  EXPECT_DOUBLE_EQ(plan->giants[0].limit, 500);  // share 500, nothing fixed
  EXPECT_FALSE(Moves(*plan, 4));
  // Its bucket should hold it alone; the other three share the other 1000.
  const BucketLoad* b1 = FindLoad(*plan, 1);
  EXPECT_TRUE(b1->floored);
  EXPECT_DOUBLE_EQ(b1->ideal, 1000);
  EXPECT_DOUBLE_EQ(b1->after, 1000);
  for (int32_t id : {2, 3, 4}) EXPECT_NEAR(FindLoad(*plan, id)->ideal, 1000.0 / 3, 1e-9);
  // Nothing moves into the giant's bucket.
  for (const RebalanceMove& m : plan->moves) EXPECT_NE(m.to_bucket_id, 1);
  EXPECT_TRUE(plan->target_reached);
  EXPECT_NEAR(plan->share_imbalance_after, 1000.0 / 500, 1e-12);
}

TEST(PlanRebalanceTest, ATeamThatFitsOnlyAnEmptiedBucketIsAGiantToo) {
  // Team 1 (400 of 1000) is below the share (500), but each bucket holds
  // 150 that cannot leave (frozen): no bucket has room for it.
  MappingState st;
  st.version = 5;
  st.buckets = {MakeBucket(1), MakeBucket(2)};
  st.assignments = {
      {1, Target::Pin(1)}, {2, Target::Pin(1)}, {3, Target::Pin(2)}, {4, Target::Pin(2)}};
  auto s = MustBuild(std::move(st));
  RebalanceRequest r;
  r.pool = kDefaultPool;
  r.team_loads = {{1, 400}, {2, 150}, {3, 150}, {4, 300}};
  r.frozen_team_ids = {2, 3};
  r.budget.max_load_share = 1;
  auto plan = PlanRebalance(*s, r);
  ASSERT_THAT(plan, IsOk());
  ASSERT_EQ(plan->giants.size(), 1u);
  EXPECT_EQ(plan->giants[0].team_id, 1);
  EXPECT_DOUBLE_EQ(plan->giants[0].limit, 350);
  EXPECT_FALSE(Moves(*plan, 1));
}

TEST(PlanRebalanceTest, ReportsTeamsTooHeavyForTheLoadBudget) {
  // Bucket 1 holds teams of 250 and 150 (400 of 850; ideal 283): under a
  // 10% budget (85) neither may move, so nothing can lower bucket 1 and the
  // other two balance around it.
  MappingState st;
  st.version = 5;
  st.buckets = {MakeBucket(1), MakeBucket(2), MakeBucket(3)};
  st.assignments = {{1, Target::Pin(1)}, {2, Target::Pin(1)}, {3, Target::Pin(2)},
                    {4, Target::Pin(3)}, {6, Target::Pin(2)}, {7, Target::Pin(2)},
                    {8, Target::Pin(3)}, {9, Target::Pin(3)}};
  auto s = MustBuild(std::move(st));
  RebalanceRequest r;
  r.pool = kDefaultPool;
  r.team_loads = {{1, 250}, {2, 150}, {3, 80}, {6, 80}, {7, 60}, {4, 80}, {8, 80}, {9, 70}};
  r.budget.max_load_share = 0.10;
  auto plan = PlanRebalance(*s, r);
  ASSERT_THAT(plan, IsOk());
  EXPECT_THAT(plan->giants, IsEmpty());
  ASSERT_EQ(plan->anchored.size(), 2u);
  EXPECT_EQ(plan->anchored[0].team_id, 1);
  EXPECT_EQ(plan->anchored[0].bucket_id, 1);
  EXPECT_DOUBLE_EQ(plan->anchored[0].limit, 85);
  EXPECT_EQ(plan->anchored[1].team_id, 2);
  EXPECT_THAT(plan->moves, IsEmpty());  // 220 and 230 are within 1.05 of 225
  EXPECT_FALSE(plan->target_reached);
  EXPECT_EQ(plan->stop, RebalanceStop::kLoadBudget);
  // The ideal load does not excuse them: a larger budget would do better.
  EXPECT_FALSE(FindLoad(*plan, 1)->floored);
  EXPECT_NEAR(FindLoad(*plan, 1)->ideal, 850.0 / 3, 1e-9);
  EXPECT_NEAR(plan->imbalance_after, 400 / (850.0 / 3), 1e-12);

  r.budget.max_load_share = 0.30;
  auto wider = PlanRebalance(*s, r);
  ASSERT_THAT(wider, IsOk());
  EXPECT_THAT(wider->anchored, IsEmpty());
  EXPECT_TRUE(Moves(*wider, 2));
  EXPECT_LT(wider->imbalance_after, plan->imbalance_after);
}

// ---------------------------------------------------------------------------
// Bucket states and weights

TEST(PlanRebalanceTest, NeverTouchesPausedOrDrainingBuckets) {
  MappingState st;
  st.version = 5;
  st.buckets = {MakeBucket(1), MakeBucket(2), MakeBucket(3, kDefaultPool, BucketState::kPaused),
                MakeBucket(4, kDefaultPool, BucketState::kDraining),
                MakeBucket(5, kDefaultPool, BucketState::kRetired)};
  // Bucket 3 (PAUSED) is the least loaded and bucket 4 (DRAINING, with a
  // pin left on it) the most: neither gives nor takes a team.
  st.assignments = {{1, Target::Pin(1)}, {2, Target::Pin(1)}, {3, Target::Pin(1)},
                    {4, Target::Pin(2)}, {5, Target::Pin(3)}, {6, Target::Pin(4)}};
  auto s = MustBuild(std::move(st));
  RebalanceRequest r;
  r.pool = kDefaultPool;
  r.team_loads = {{1, 300}, {2, 150}, {3, 50}, {4, 100}, {5, 10}, {6, 900}};
  r.budget.max_load_share = 1;
  auto plan = PlanRebalance(*s, r);
  ASSERT_THAT(plan, IsOk());
  ASSERT_FALSE(plan->moves.empty());
  for (const RebalanceMove& m : plan->moves) {
    EXPECT_THAT(m.from_bucket_id, ::testing::AnyOf(1, 2));
    EXPECT_THAT(m.to_bucket_id, ::testing::AnyOf(1, 2));
  }
  EXPECT_EQ(FindLoad(*plan, 3)->after, 10);
  EXPECT_EQ(FindLoad(*plan, 4)->after, 900);
  EXPECT_EQ(FindLoad(*plan, 5), nullptr);  // RETIRED
  // Only ACTIVE buckets are in the balance: 600 over two.
  EXPECT_DOUBLE_EQ(FindLoad(*plan, 1)->share, 300);
  EXPECT_EQ(FindLoad(*plan, 4)->share, 0);
  EXPECT_DOUBLE_EQ(plan->pool_load, 1510);
  EXPECT_TRUE(plan->target_reached);
  EXPECT_LE(plan->imbalance_after, 1.05);
}

TEST(PlanRebalanceTest, PoolWithoutActiveBucket) {
  MappingState st;
  st.version = 5;
  st.buckets = {MakeBucket(1, "free", BucketState::kPaused),
                MakeBucket(2, "free", BucketState::kDraining)};
  st.assignments = {{1, Target::Pool("free")}};
  auto s = MustBuild(std::move(st));
  RebalanceRequest r;
  r.pool = "free";
  r.team_loads = {{1, 50}};
  auto plan = PlanRebalance(*s, r);
  ASSERT_THAT(plan, IsOk());
  EXPECT_THAT(plan->moves, IsEmpty());
  EXPECT_EQ(plan->stop, RebalanceStop::kNoActiveBucket);
  EXPECT_EQ(plan->imbalance_before, 1);
  EXPECT_DOUBLE_EQ(plan->pool_load, 50);
}

TEST(PlanRebalanceTest, EmptyPool) {
  // The default pool of a fresh install: no bucket, no load.
  auto s = MustBuild(MappingState{});
  RebalanceRequest r;
  r.pool = kDefaultPool;
  auto plan = PlanRebalance(*s, r);
  ASSERT_THAT(plan, IsOk());
  EXPECT_THAT(plan->moves, IsEmpty());
  EXPECT_THAT(plan->buckets, IsEmpty());
  EXPECT_EQ(plan->stop, RebalanceStop::kNoActiveBucket);
  // Buckets but no reported load: balanced.
  auto idle = MustBuild(ExampleState());
  plan = PlanRebalance(*idle, r);
  ASSERT_THAT(plan, IsOk());
  EXPECT_THAT(plan->moves, IsEmpty());
  EXPECT_TRUE(plan->target_reached);
  EXPECT_EQ(plan->imbalance_before, 1);
  EXPECT_EQ(plan->share_moved, 0);
}

TEST(PlanRebalanceTest, WeightsSetTheShares) {
  const Pool p = MakePool(3, 3000, 5, {100, 200, 300});
  auto plan = PlanRebalance(*p.snapshot, RequestFor(p, 1.0, 100000, 1.03));
  ASSERT_THAT(plan, IsOk());
  ASSERT_THAT(plan->giants, IsEmpty());
  const double total = plan->pool_load;
  EXPECT_NEAR(FindLoad(*plan, 1)->share, total / 6, 1e-6);
  EXPECT_NEAR(FindLoad(*plan, 3)->share, total / 2, 1e-6);
  EXPECT_TRUE(plan->target_reached);
  for (const BucketLoad& b : plan->buckets) EXPECT_LE(b.after, 1.03 * b.share + 1e-6);
}

// ---------------------------------------------------------------------------
// Inputs

TEST(PlanRebalanceTest, IgnoresTeamsOfOtherPoolsAndUnroutableTeams) {
  MappingState st = ExampleState();
  st.buckets.push_back(MakeBucket(9, "paid"));
  st.assignments = {{50, Target::Pin(9)}, {51, Target::Pool("paid")}};
  auto s = MustBuild(std::move(st));
  RebalanceRequest r = ExampleRequest();
  r.team_loads.push_back({50, 5000});
  r.team_loads.push_back({51, 5000});
  auto plan = PlanRebalance(*s, r);
  ASSERT_THAT(plan, IsOk());
  EXPECT_DOUBLE_EQ(plan->pool_load, 1500);
  EXPECT_EQ(plan->teams_with_load, 10);
  EXPECT_EQ(plan->moves.size(), 3u);
}

TEST(PlanRebalanceTest, BucketTotalsAddABackgroundThatStays) {
  auto s = MustBuild(ExampleState());
  RebalanceRequest r = ExampleRequest();
  // Bucket 2 carries 90 more than its listed teams; bucket 3's total is
  // below its teams' (measured apart): no background; bucket 77 is not in
  // the pool.
  r.bucket_totals = {{2, 430}, {3, 100}, {77, 1e9}};
  auto plan = PlanRebalance(*s, r);
  ASSERT_THAT(plan, IsOk());
  EXPECT_DOUBLE_EQ(FindLoad(*plan, 2)->background, 90);
  EXPECT_DOUBLE_EQ(FindLoad(*plan, 2)->before, 430);
  EXPECT_DOUBLE_EQ(FindLoad(*plan, 2)->floor, 90);
  EXPECT_EQ(FindLoad(*plan, 3)->background, 0);
  EXPECT_DOUBLE_EQ(plan->pool_load, 1590);
  double after = 0;
  for (const BucketLoad& b : plan->buckets) after += b.after;
  EXPECT_DOUBLE_EQ(after, 1590);
}

TEST(PlanRebalanceTest, RefusesBadInputs) {
  auto s = MustBuild(ExampleState());
  auto with = [&](auto edit) {
    RebalanceRequest r = ExampleRequest();
    edit(r);
    return PlanRebalance(*s, r);
  };
  EXPECT_THAT(with([](RebalanceRequest& r) { r.pool = "nope"; }),
              StatusIs(Code::kNotFound, StartsWith("pool: ")));
  EXPECT_THAT(with([](RebalanceRequest& r) { r.budget.max_load_share = 1.5; }),
              StatusIs(Code::kInvalidArgument, StartsWith("budget.max_load_share: ")));
  EXPECT_THAT(with([](RebalanceRequest& r) { r.budget.max_load_share = std::nan(""); }),
              StatusIs(Code::kInvalidArgument, StartsWith("budget.max_load_share: ")));
  EXPECT_THAT(with([](RebalanceRequest& r) { r.budget.max_teams = -1; }),
              StatusIs(Code::kInvalidArgument, StartsWith("budget.max_teams: ")));
  EXPECT_THAT(with([](RebalanceRequest& r) { r.budget.target_imbalance = 0.9; }),
              StatusIs(Code::kInvalidArgument, StartsWith("budget.target_imbalance: ")));
  EXPECT_THAT(with([](RebalanceRequest& r) { r.budget.target_imbalance = INFINITY; }),
              StatusIs(Code::kInvalidArgument, StartsWith("budget.target_imbalance: ")));
  EXPECT_THAT(with([](RebalanceRequest& r) { r.budget.min_move_share = -0.1; }),
              StatusIs(Code::kInvalidArgument, StartsWith("budget.min_move_share: ")));
  EXPECT_THAT(with([](RebalanceRequest& r) {
                r.team_loads.push_back({4, 1});
              }),
              StatusIs(Code::kInvalidArgument, HasSubstr("team 4 is listed twice")));
  EXPECT_THAT(with([](RebalanceRequest& r) {
                r.team_loads.push_back({0, 1});
              }),
              StatusIs(Code::kInvalidArgument, StartsWith("team_loads: ")));
  EXPECT_THAT(with([](RebalanceRequest& r) { r.team_loads[3].load = -1; }),
              StatusIs(Code::kInvalidArgument, StartsWith("team_loads[team=9].load: ")));
  EXPECT_THAT(with([](RebalanceRequest& r) { r.team_loads[3].load = std::nan(""); }),
              StatusIs(Code::kInvalidArgument, StartsWith("team_loads[team=9].load: ")));
  EXPECT_THAT(with([](RebalanceRequest& r) { r.bucket_totals[2] = INFINITY; }),
              StatusIs(Code::kInvalidArgument, StartsWith("bucket_totals[2]: ")));
}

// ---------------------------------------------------------------------------
// Determinism

TEST(PlanRebalanceTest, SameInputsSamePlanWhateverTheirOrder) {
  const Pool p = MakePool(8, 4000, 21);
  RebalanceRequest a = RequestFor(p, 0.05, 1000, 1.05);
  a.frozen_team_ids = {5, 17, 300};
  RebalanceRequest b = a;
  std::reverse(b.team_loads.begin(), b.team_loads.end());
  std::rotate(b.team_loads.begin(), b.team_loads.begin() + 1234, b.team_loads.end());
  std::reverse(b.frozen_team_ids.begin(), b.frozen_team_ids.end());
  auto pa = PlanRebalance(*p.snapshot, a);
  auto pb = PlanRebalance(*p.snapshot, b);
  ASSERT_THAT(pa, IsOk());
  ASSERT_THAT(pb, IsOk());
  ASSERT_EQ(pa->moves.size(), pb->moves.size());
  ASSERT_FALSE(pa->moves.empty());
  for (size_t i = 0; i < pa->moves.size(); ++i) {
    EXPECT_EQ(pa->moves[i].team_id, pb->moves[i].team_id);
    EXPECT_EQ(pa->moves[i].to_bucket_id, pb->moves[i].to_bucket_id);
  }
  EXPECT_EQ(pa->load_moved, pb->load_moved);  // bit for bit
  EXPECT_EQ(pa->imbalance_after, pb->imbalance_after);
  for (size_t i = 0; i < pa->buckets.size(); ++i) {
    EXPECT_EQ(pa->buckets[i].after, pb->buckets[i].after);
  }
  // Moves are listed ascending by team id.
  EXPECT_TRUE(std::is_sorted(
      pa->moves.begin(), pa->moves.end(),
      [](const RebalanceMove& x, const RebalanceMove& y) { return x.team_id < y.team_id; }));
}

TEST(PlanRebalanceTest, TiesGoToTheLowerTeamAndBucketIds) {
  // Bucket 1 holds five teams of 100 against an ideal of 200 (cap 210):
  // equal loads, so the lowest ids move, and of two equally loaded
  // buckets the lower id takes first. The last move evens out bucket 2.
  MappingState st;
  st.version = 5;
  st.buckets = {MakeBucket(1), MakeBucket(2), MakeBucket(3)};
  st.assignments = {{11, Target::Pin(1)}, {12, Target::Pin(1)}, {13, Target::Pin(1)},
                    {14, Target::Pin(1)}, {15, Target::Pin(1)}, {20, Target::Pin(2)},
                    {30, Target::Pin(3)}};
  auto s = MustBuild(std::move(st));
  RebalanceRequest r;
  r.pool = kDefaultPool;
  r.team_loads = {{15, 100}, {14, 100}, {13, 100}, {12, 100}, {11, 100}, {20, 50}, {30, 50}};
  r.budget.max_load_share = 1;
  auto plan = PlanRebalance(*s, r);
  ASSERT_THAT(plan, IsOk());
  EXPECT_THAT(
      plan->moves,
      ElementsAre(
          AllOf(Field(&RebalanceMove::team_id, 11), Field(&RebalanceMove::to_bucket_id, 2)),
          AllOf(Field(&RebalanceMove::team_id, 12), Field(&RebalanceMove::to_bucket_id, 3)),
          AllOf(Field(&RebalanceMove::team_id, 13), Field(&RebalanceMove::to_bucket_id, 2)),
          AllOf(Field(&RebalanceMove::team_id, 20), Field(&RebalanceMove::to_bucket_id, 3))));
  EXPECT_TRUE(plan->target_reached);
}

TEST(PlanRebalanceTest, ScalesToAHundredThousandTeams) {
  const Pool p = MakePool(8, 100000, 99);
  auto plan = PlanRebalance(*p.snapshot, RequestFor(p, 0.05, kDefaultMaxTeams, 1.05));
  ASSERT_THAT(plan, IsOk());
  EXPECT_EQ(plan->teams_with_load, 100000);
  EXPECT_LE(plan->share_moved, 0.05 + 1e-12);
  EXPECT_LT(plan->imbalance_after, plan->imbalance_before);
  // Most teams are too small to be worth a move.
  EXPECT_GT(plan->teams_below_min_move, 90000);
}

// ---------------------------------------------------------------------------
// Targets of the moves, and RebalanceAssignments

TEST(PlanRebalanceTest, APinnedTeamMovedToItsPlacementIsUnpinned) {
  // Team 4's placement is bucket 1 (ExampleState); pinned to bucket 2, it
  // makes bucket 2 the heaviest, and bucket 1 is where it fits.
  MappingState st;
  st.version = 5;
  st.buckets = {MakeBucket(1), MakeBucket(2), MakeBucket(3), MakeBucket(4)};
  st.assignments = {{4, Target::Pin(2)}};
  auto s = MustBuild(std::move(st));
  ASSERT_EQ(s->PoolTable(kDefaultPool).BucketForTeam(4), 1);
  RebalanceRequest r;
  r.pool = kDefaultPool;
  // Team 2 lands on bucket 2 by placement; 6 on 1, 11 on 3, 1 on 4.
  // Bucket 2 (200 of 450) must shed; neither of its teams fits a room under
  // the target, and the move that evens out buckets 2 and 1 best is 75:
  // team 4 (80) is the closest.
  r.team_loads = {{4, 80}, {2, 120}, {6, 50}, {11, 100}, {1, 100}};
  r.budget.max_load_share = 1;
  auto plan = PlanRebalance(*s, r);
  ASSERT_THAT(plan, IsOk());
  ASSERT_EQ(plan->moves.size(), 1u);
  EXPECT_EQ(plan->moves[0].team_id, 4);
  EXPECT_EQ(plan->moves[0].to_bucket_id, 1);
  EXPECT_EQ(plan->moves[0].target, std::nullopt);  // back to placement
  auto after = Apply(*s, *plan);
  ASSERT_NE(after, nullptr);
  EXPECT_EQ(after->FindAssignment(4), std::nullopt);
  EXPECT_EQ(after->RouteOf(4).bucket_id, 1);
}

TEST(RebalanceAssignmentsTest, PinsOrReturnsToPlacement) {
  MappingState st;
  st.version = 5;
  st.buckets = {MakeBucket(1, "paid"), MakeBucket(2, "paid"), MakeBucket(3, "paid"),
                MakeBucket(4, "paid"), MakeBucket(5),         MakeBucket(6)};
  // 4 is pinned in paid (placement: bucket 1), 6 is assigned to paid.
  st.assignments = {{4, Target::Pin(2)}, {6, Target::Pool("paid")}};
  auto s = MustBuild(std::move(st));
  ASSERT_EQ(s->PoolTable("paid").BucketForTeam(4), 1);
  ASSERT_EQ(s->PoolTable("paid").BucketForTeam(6), 1);
  auto ops = RebalanceAssignments(
      *s, "paid",
      {RebalanceMove{6, 1, 3, 1, std::nullopt}, RebalanceMove{4, 2, 1, 1, std::nullopt}});
  ASSERT_THAT(ops, IsOk());
  ASSERT_EQ(ops->size(), 2u);
  EXPECT_EQ((*ops)[0].team_id, 4);
  EXPECT_EQ((*ops)[0].target, Target::Pool("paid"));  // back to its pool's placement
  EXPECT_EQ((*ops)[1].team_id, 6);
  EXPECT_EQ((*ops)[1].target, Target::Pin(3));

  // In the default pool, going back to placement removes the override.
  MappingState dt = ExampleState();
  dt.assignments = {{4, Target::Pin(2)}};
  auto d = MustBuild(std::move(dt));
  ops = RebalanceAssignments(*d, kDefaultPool, {RebalanceMove{4, 2, 1, 1, std::nullopt}});
  ASSERT_THAT(ops, IsOk());
  EXPECT_EQ((*ops)[0].target, std::nullopt);
}

TEST(RebalanceAssignmentsTest, RefusesMovesThatDoNotFit) {
  MappingState st = ExampleState();
  st.buckets.push_back(MakeBucket(5, kDefaultPool, BucketState::kDraining));
  st.buckets.push_back(MakeBucket(9, "paid"));
  auto s = MustBuild(std::move(st));
  auto one = [&](RebalanceMove m) {
    return RebalanceAssignments(*s, kDefaultPool, {RebalanceMove{9, 1, 2, 1, std::nullopt}, m});
  };
  // Team 4 routes to bucket 1 at version 42.
  EXPECT_THAT(one({4, 2, 3, 1, std::nullopt}),
              StatusIs(Code::kFailedPrecondition,
                       StartsWith("moves[1].from_bucket_id: team 4 routes to bucket 1 at "
                                  "version 42")));
  EXPECT_THAT(
      one({4, 1, 4, 1, std::nullopt}),
      StatusIs(Code::kFailedPrecondition, StartsWith("moves[1].to_bucket_id: bucket 4 is PAUSED")));
  EXPECT_THAT(one({4, 1, 5, 1, std::nullopt}),
              StatusIs(Code::kFailedPrecondition,
                       StartsWith("moves[1].to_bucket_id: bucket 5 is DRAINING")));
  EXPECT_THAT(one({4, 1, 9, 1, std::nullopt}),
              StatusIs(Code::kInvalidArgument, StartsWith("moves[1].to_bucket_id: bucket 9 is "
                                                          "in pool \"paid\"")));
  EXPECT_THAT(one({4, 1, 1, 1, std::nullopt}),
              StatusIs(Code::kInvalidArgument, StartsWith("moves[1].to_bucket_id: ")));
  EXPECT_THAT(one({4, 1, 8, 1, std::nullopt}),
              StatusIs(Code::kNotFound, StartsWith("moves[1].to_bucket_id: bucket 8 ")));
  EXPECT_THAT(one({4, 8, 2, 1, std::nullopt}),
              StatusIs(Code::kNotFound, StartsWith("moves[1].from_bucket_id: bucket 8 ")));
  EXPECT_THAT(one({0, 1, 2, 1, std::nullopt}),
              StatusIs(Code::kInvalidArgument, StartsWith("moves[1].team_id: ")));
  EXPECT_THAT(one({9, 1, 3, 1, std::nullopt}),
              StatusIs(Code::kInvalidArgument, HasSubstr("team 9 is listed twice")));
}

}  // namespace
}  // namespace bucketmap

namespace bucketmap {
namespace {

// The server's inputs from the merged load rates: the pool's teams (by
// where they route), the metric asked, and each of the pool's buckets'
// total as BucketLoads sums it (teams plus the load of unlisted teams).
TEST(FillRebalanceLoadsTest, ThePoolsTeamsAndBucketTotalsOfTheMetric) {
  MappingState st;
  st.version = 3;
  st.buckets = {testing_util::MakeBucket(1, "hot"), testing_util::MakeBucket(2, "hot"),
                testing_util::MakeBucket(3, "cold")};
  st.assignments = {{10, Target::Pin(1)}, {11, Target::Pin(2)}, {12, Target::Pin(3)}};
  const std::shared_ptr<const Snapshot> snapshot = testing_util::MustBuild(st);
  LoadRates rates;
  rates.windows = 4;
  rates.teams[10] = LoadRate{100, 0.5};
  rates.teams[11] = LoadRate{0, 0.25};  // no events: listed for processing only
  rates.teams[12] = LoadRate{300, 1};   // another pool
  rates.teams[13] = LoadRate{7, 0};     // unroutable: no default-pool bucket
  rates.bucket_other[1] = LoadRate{20, 0.1};

  RebalanceRequest events;
  events.pool = "hot";
  FillRebalanceLoads(*snapshot, rates, LoadMetric::kEventRate, &events);
  ASSERT_EQ(events.team_loads.size(), 1u);
  EXPECT_EQ(events.team_loads[0].team_id, 10);
  EXPECT_DOUBLE_EQ(events.team_loads[0].load, 100);
  EXPECT_EQ(events.bucket_totals, (std::map<int32_t, double>{{1, 120}, {2, 0}}));

  RebalanceRequest processing;
  processing.pool = "hot";
  FillRebalanceLoads(*snapshot, rates, LoadMetric::kProcessingTime, &processing);
  ASSERT_EQ(processing.team_loads.size(), 2u);
  EXPECT_EQ(processing.team_loads[1].team_id, 11);
  EXPECT_DOUBLE_EQ(processing.team_loads[1].load, 0.25);
  EXPECT_DOUBLE_EQ(processing.bucket_totals.at(1), 0.6);

  // The plan from them: bucket 1's background is the unlisted 20.
  absl::StatusOr<RebalancePlan> plan = PlanRebalance(*snapshot, events);
  ASSERT_THAT(plan.status(), testing_util::IsOk());
  EXPECT_DOUBLE_EQ(plan->pool_load, 120);
  EXPECT_DOUBLE_EQ(plan->buckets[0].background, 20);
}

}  // namespace
}  // namespace bucketmap
