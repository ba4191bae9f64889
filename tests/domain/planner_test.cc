#include "domain/planner.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
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
using ::testing::Pair;
using ::testing::StartsWith;

using Code = absl::StatusCode;

// Buckets 1, 2 (default), 3 (paid), 4 (free, DRAINING); team 5 pinned to 3,
// team 7 in pool paid, teams 20..29 explicitly in pool default.
MappingState BaseState() {
  MappingState s;
  s.version = 10;
  s.next_bucket_id = 5;
  s.buckets = {MakeBucket(1), MakeBucket(2), MakeBucket(3, "paid"),
               MakeBucket(4, "free", BucketState::kDraining)};
  s.assignments = {{5, Target::Pin(3)}, {7, Target::Pool("paid")}};
  for (int64_t t = 20; t < 30; ++t) s.assignments.emplace_back(t, Target::Pool("default"));
  return s;
}

BucketUpdate Update(int32_t id, std::vector<std::string> paths, Bucket values = {}) {
  BucketUpdate u;
  u.id = id;
  u.paths = std::move(paths);
  u.values = std::move(values);
  return u;
}

Bucket WithState(BucketState s) {
  Bucket b;
  b.state = s;
  return b;
}

// ---------------------------------------------------------------------------
// CreateBucket

TEST(PlanCreateBucketTest, AssignsIdVersionsAndDefaults) {
  auto s = MustBuild(BaseState());
  Bucket b;
  b.name = "new";
  b.weight = 0;
  b.pool = "";
  auto plan = PlanCreateBucket(*s, b);
  ASSERT_THAT(plan, IsOk());
  ASSERT_EQ(plan->change.buckets.size(), 1u);
  const Bucket& made = plan->change.buckets[0];
  EXPECT_EQ(made.id, 5);
  EXPECT_EQ(made.weight, 100);
  EXPECT_EQ(made.pool, "default");
  EXPECT_EQ(made.state, BucketState::kActive);
  EXPECT_EQ(made.created_version, 11);
  EXPECT_EQ(made.updated_version, 11);
  EXPECT_EQ(plan->change.next_bucket_id, 6);
  EXPECT_TRUE(plan->effect.changed);
  ASSERT_NE(plan->after, nullptr);
  EXPECT_EQ(plan->after->version(), 11);
  EXPECT_EQ(plan->after->next_bucket_id(), 6);
  EXPECT_EQ(*plan->after->FindBucket(5), made);
  // The default pool gains a member: about a third of its slots move, and
  // only known teams in it may move, all to the new bucket.
  ASSERT_EQ(plan->effect.pool_shifts.size(), 1u);
  EXPECT_EQ(plan->effect.pool_shifts[0].pool, "default");
  EXPECT_NEAR(plan->effect.pool_shifts[0].share_moved, 1.0 / 3, 0.02);
  for (const TeamMove& m : plan->effect.moved_teams) {
    EXPECT_GE(m.team_id, 20);
    EXPECT_LT(m.team_id, 30);
    EXPECT_EQ(m.to_bucket_id, 5);
  }
  EXPECT_EQ(plan->effect.moved_team_count, static_cast<int64_t>(plan->effect.moved_teams.size()));
  EXPECT_EQ(plan->effect.assignments_changed, 0);
}

TEST(PlanCreateBucketTest, PausedAllowedOthersNot) {
  auto s = MustBuild(BaseState());
  Bucket b;
  b.name = "p";
  b.pool = "enterprise";
  b.state = BucketState::kPaused;
  auto plan = PlanCreateBucket(*s, b);
  ASSERT_THAT(plan, IsOk());
  EXPECT_EQ(plan->change.buckets[0].state, BucketState::kPaused);
  ASSERT_EQ(plan->effect.pool_shifts.size(), 1u);
  EXPECT_EQ(plan->effect.pool_shifts[0].pool, "enterprise");
  EXPECT_EQ(plan->effect.pool_shifts[0].share_moved, 1.0);

  b.state = BucketState::kDraining;
  EXPECT_THAT(
      PlanCreateBucket(*s, b),
      StatusIs(Code::kInvalidArgument, AllOf(StartsWith("bucket.state:"), HasSubstr("DRAINING"))));
  b.state = BucketState::kActive;
  b.id = 9;
  EXPECT_THAT(PlanCreateBucket(*s, b), StatusIs(Code::kInvalidArgument, StartsWith("bucket.id:")));
}

TEST(PlanCreateBucketTest, NameTaken) {
  auto s = MustBuild(BaseState());
  Bucket b;
  b.name = "b2";
  EXPECT_THAT(PlanCreateBucket(*s, b),
              StatusIs(Code::kAlreadyExists, AllOf(HasSubstr("\"b2\""), HasSubstr("id 2"))));
}

TEST(PlanCreateBucketTest, FirstBucketMakesDefaultRoutable) {
  MappingState st;
  st.assignments = {{3, Target::Pool("default")}};
  auto s = MustBuild(st);
  EXPECT_FALSE(s->RouteOf(3).routable());
  Bucket b;
  b.name = "first";
  auto plan = PlanCreateBucket(*s, b);
  ASSERT_THAT(plan, IsOk());
  EXPECT_EQ(plan->change.buckets[0].id, 1);
  EXPECT_EQ(plan->after->RouteOf(3).bucket_id, 1);
  EXPECT_EQ(plan->after->RouteOf(12345).bucket_id, 1);
  ASSERT_EQ(plan->effect.moved_teams.size(), 1u);
  EXPECT_EQ(plan->effect.moved_teams[0].team_id, 3);
  EXPECT_EQ(plan->effect.moved_teams[0].from_bucket_id, 0);
  EXPECT_EQ(plan->effect.moved_teams[0].to_bucket_id, 1);
  ASSERT_EQ(plan->effect.pool_shifts.size(), 1u);
  EXPECT_EQ(plan->effect.pool_shifts[0].share_moved, 1.0);
}

// ---------------------------------------------------------------------------
// UpdateBucket

TEST(PlanUpdateBucketTest, FindsByIdOrName) {
  auto s = MustBuild(BaseState());
  Bucket v;
  v.labels = {{"tier", "gold"}};
  EXPECT_THAT(PlanUpdateBucket(*s, Update(99, {"labels"}, v)),
              StatusIs(Code::kNotFound, HasSubstr("bucket 99 does not exist")));
  BucketUpdate by_name = Update(0, {"labels"}, v);
  by_name.name = "nope";
  EXPECT_THAT(PlanUpdateBucket(*s, by_name),
              StatusIs(Code::kNotFound, HasSubstr("\"nope\" does not exist")));
  by_name.name = "b2";
  auto plan = PlanUpdateBucket(*s, by_name);
  ASSERT_THAT(plan, IsOk());
  ASSERT_EQ(plan->change.buckets.size(), 1u);
  EXPECT_EQ(plan->change.buckets[0].id, 2);
  EXPECT_EQ(plan->change.buckets[0].labels.at("tier"), "gold");
  EXPECT_EQ(plan->change.buckets[0].updated_version, 11);
  EXPECT_EQ(plan->change.buckets[0].created_version, 1);
  EXPECT_TRUE(plan->effect.pool_shifts.empty());
  EXPECT_TRUE(plan->effect.moved_teams.empty());
  EXPECT_THAT(PlanUpdateBucket(*s, Update(0, {"labels"}, v)),
              StatusIs(Code::kInvalidArgument, StartsWith("bucket.id:")));
}

TEST(PlanUpdateBucketTest, RejectsBadMaskPaths) {
  auto s = MustBuild(BaseState());
  EXPECT_THAT(PlanUpdateBucket(*s, Update(1, {})),
              StatusIs(Code::kInvalidArgument, StartsWith("update_mask.paths:")));
  EXPECT_THAT(PlanUpdateBucket(*s, Update(1, {"labels", "name"})),
              StatusIs(Code::kInvalidArgument,
                       AllOf(StartsWith("update_mask.paths[1]:"), HasSubstr("immutable"))));
  EXPECT_THAT(PlanUpdateBucket(*s, Update(1, {"id"})),
              StatusIs(Code::kInvalidArgument, HasSubstr("immutable")));
  EXPECT_THAT(PlanUpdateBucket(*s, Update(1, {"colour"})),
              StatusIs(Code::kInvalidArgument,
                       AllOf(StartsWith("update_mask.paths[0]:"), HasSubstr("unknown"))));
}

TEST(PlanUpdateBucketTest, NoEffectiveChangeIsNoOp) {
  auto s = MustBuild(BaseState());
  Bucket v = *s->FindBucket(1);
  auto plan = PlanUpdateBucket(*s, Update(1, {"weight", "pool", "topics", "labels", "state"}, v));
  ASSERT_THAT(plan, IsOk());
  EXPECT_FALSE(plan->effect.changed);
  EXPECT_TRUE(plan->change.empty());
  EXPECT_EQ(plan->after, nullptr);
}

TEST(PlanUpdateBucketTest, WeightResetsToDefaultWhenUnset) {
  MappingState st = BaseState();
  st.buckets[0].weight = 300;
  auto s = MustBuild(st);
  Bucket v;
  v.weight = 0;
  auto plan = PlanUpdateBucket(*s, Update(1, {"weight"}, v));
  ASSERT_THAT(plan, IsOk());
  EXPECT_EQ(plan->change.buckets[0].weight, 100);
  ASSERT_EQ(plan->effect.pool_shifts.size(), 1u);
  EXPECT_EQ(plan->effect.pool_shifts[0].pool, "default");
  EXPECT_GT(plan->effect.pool_shifts[0].share_moved, 0.1);
}

struct TransitionCase {
  BucketState from;
  BucketState to;
  bool allowed;
};

class TransitionTest : public ::testing::TestWithParam<TransitionCase> {};

TEST_P(TransitionTest, FollowsStateMachine) {
  const TransitionCase& c = GetParam();
  MappingState st = BaseState();
  st.buckets.push_back(MakeBucket(8, "spare", c.from));
  auto s = MustBuild(st);
  auto plan = PlanUpdateBucket(*s, Update(8, {"state"}, WithState(c.to)));
  if (c.from == c.to) {
    ASSERT_THAT(plan, IsOk());
    EXPECT_FALSE(plan->effect.changed);
  } else if (c.allowed) {
    ASSERT_THAT(plan, IsOk());
    EXPECT_EQ(plan->after->FindBucket(8)->state, c.to);
  } else if (c.from == BucketState::kRetired) {
    EXPECT_THAT(plan, StatusIs(Code::kFailedPrecondition,
                               AllOf(HasSubstr("bucket 8 (b8)"), HasSubstr("RETIRED"))));
  } else {
    EXPECT_THAT(plan, StatusIs(Code::kFailedPrecondition,
                               AllOf(HasSubstr("bucket 8 (b8)"),
                                     HasSubstr(absl::StrCat("from ", BucketStateName(c.from),
                                                            " to ", BucketStateName(c.to))))));
  }
}

constexpr BucketState A = BucketState::kActive;
constexpr BucketState P = BucketState::kPaused;
constexpr BucketState D = BucketState::kDraining;
constexpr BucketState R = BucketState::kRetired;

INSTANTIATE_TEST_SUITE_P(All, TransitionTest,
                         ::testing::Values(TransitionCase{A, A, true}, TransitionCase{A, P, true},
                                           TransitionCase{A, D, true}, TransitionCase{A, R, false},
                                           TransitionCase{P, A, true}, TransitionCase{P, P, true},
                                           TransitionCase{P, D, true}, TransitionCase{P, R, false},
                                           TransitionCase{D, A, true}, TransitionCase{D, P, false},
                                           TransitionCase{D, D, true}, TransitionCase{D, R, true},
                                           TransitionCase{R, A, false}, TransitionCase{R, P, false},
                                           TransitionCase{R, D, false},
                                           TransitionCase{R, R, true}));

TEST(PlanUpdateBucketTest, RetireRequiresNoPins) {
  MappingState st = BaseState();
  st.assignments.insert(st.assignments.begin(), {{1, Target::Pin(4)}, {2, Target::Pin(4)}});
  auto s = MustBuild(st);
  EXPECT_THAT(
      PlanUpdateBucket(*s, Update(4, {"state"}, WithState(R))),
      StatusIs(Code::kFailedPrecondition, HasSubstr("bucket 4 (b4) still has 2 pinned teams")));
  auto unpinned = PlanAssignments(*s, {{1, std::nullopt}, {2, std::nullopt}});
  ASSERT_THAT(unpinned, IsOk());
  EXPECT_THAT(PlanUpdateBucket(*unpinned->after, Update(4, {"state"}, WithState(R))), IsOk());
}

TEST(PlanUpdateBucketTest, RetiredAllowsOnlyLabels) {
  MappingState st = BaseState();
  st.buckets.push_back(MakeBucket(8, "old", R));
  auto s = MustBuild(st);
  Bucket v;
  v.labels = {{"note", "gone"}};
  v.weight = 5;
  EXPECT_THAT(PlanUpdateBucket(*s, Update(8, {"labels"}, v)), IsOk());
  EXPECT_THAT(PlanUpdateBucket(*s, Update(8, {"labels", "weight"}, v)),
              StatusIs(Code::kFailedPrecondition,
                       AllOf(HasSubstr("bucket 8 (b8) is RETIRED"), HasSubstr("labels"))));
  v.pool = "x";
  EXPECT_THAT(PlanUpdateBucket(*s, Update(8, {"pool"}, v)),
              StatusIs(Code::kFailedPrecondition, HasSubstr("RETIRED")));
}

TEST(PlanUpdateBucketTest, TopicsImmutableWhileHoldingTeams) {
  MappingState st = BaseState();
  st.buckets.push_back(MakeBucket(8, "quiet"));       // pool without teams
  st.buckets.push_back(MakeBucket(9, "default", D));  // draining, no pins
  auto s = MustBuild(st);
  Bucket v;
  v.topics = {{"ingestion", "renamed"}};
  // Placeable in "default": holds every unassigned team.
  EXPECT_THAT(PlanUpdateBucket(*s, Update(1, {"topics"}, v)),
              StatusIs(Code::kFailedPrecondition,
                       AllOf(StartsWith("bucket.topics:"), HasSubstr("bucket 1 (b1) holds teams"),
                             HasSubstr("pool \"default\""))));
  // Pinned teams.
  EXPECT_THAT(PlanUpdateBucket(*s, Update(3, {"topics"}, v)),
              StatusIs(Code::kFailedPrecondition, HasSubstr("1 pinned")));
  v.consumer_groups = {{"ingestion", "g1"}};
  EXPECT_THAT(PlanUpdateBucket(*s, Update(1, {"consumer_groups"}, v)),
              StatusIs(Code::kFailedPrecondition, StartsWith("bucket.consumer_groups:")));
  // A placeable bucket of a pool with no teams, or a draining bucket with
  // no pins, holds none.
  EXPECT_THAT(PlanUpdateBucket(*s, Update(8, {"topics", "consumer_groups"}, v)), IsOk());
  EXPECT_THAT(PlanUpdateBucket(*s, Update(9, {"topics"}, v)), IsOk());
  // Labels and weight are not immutable.
  Bucket w;
  w.weight = 7;
  EXPECT_THAT(PlanUpdateBucket(*s, Update(1, {"weight"}, w)), IsOk());
}

TEST(PlanUpdateBucketTest, RolesMustHaveTopics) {
  MappingState st = BaseState();
  st.buckets.push_back(MakeBucket(8, "quiet"));
  st.buckets.back().consumer_groups = {{"ingestion", "g"}};
  st.buckets.back().drain_order = {"ingestion"};
  auto s = MustBuild(st);
  Bucket v;
  v.topics = {{"clickhouse", "ch"}};
  EXPECT_THAT(PlanUpdateBucket(*s, Update(8, {"topics"}, v)),
              StatusIs(Code::kInvalidArgument, StartsWith("bucket.consumer_groups[ingestion]:")));
  EXPECT_THAT(PlanUpdateBucket(*s, Update(8, {"topics", "consumer_groups"}, v)),
              StatusIs(Code::kInvalidArgument, StartsWith("bucket.drain_order[0]:")));
  Bucket d;
  d.drain_order = {"nope"};
  EXPECT_THAT(PlanUpdateBucket(*s, Update(8, {"drain_order"}, d)),
              StatusIs(Code::kInvalidArgument, StartsWith("bucket.drain_order[0]:")));
}

TEST(PlanUpdateBucketTest, DefaultPoolKeepsAPlaceableBucket) {
  auto s = MustBuild(BaseState());
  auto first = PlanUpdateBucket(*s, Update(1, {"state"}, WithState(D)));
  ASSERT_THAT(first, IsOk());
  const std::string msg =
      "pool \"default\" would have no ACTIVE or PAUSED bucket left; it holds every team without "
      "an override";
  EXPECT_THAT(PlanUpdateBucket(*first->after, Update(2, {"state"}, WithState(D))),
              StatusIs(Code::kFailedPrecondition, HasSubstr(msg)));
  Bucket moved;
  moved.pool = "paid";
  EXPECT_THAT(PlanUpdateBucket(*first->after, Update(2, {"pool"}, moved)),
              StatusIs(Code::kFailedPrecondition, HasSubstr(msg)));
  // Pausing keeps it placeable.
  EXPECT_THAT(PlanUpdateBucket(*first->after, Update(2, {"state"}, WithState(P))), IsOk());
}

TEST(PlanUpdateBucketTest, AssignedPoolKeepsAPlaceableBucket) {
  auto s = MustBuild(BaseState());
  EXPECT_THAT(PlanUpdateBucket(*s, Update(3, {"state"}, WithState(D))),
              StatusIs(Code::kFailedPrecondition,
                       AllOf(HasSubstr("pool \"paid\" would have no ACTIVE or PAUSED bucket left"),
                             HasSubstr("1 team is assigned to it"))));
  Bucket moved;
  moved.pool = "default";
  EXPECT_THAT(PlanUpdateBucket(*s, Update(3, {"pool"}, moved)),
              StatusIs(Code::kFailedPrecondition, HasSubstr("pool \"paid\"")));
  // Without assigned teams a pool may go empty.
  auto unassigned = PlanAssignments(*s, {{7, std::nullopt}});
  ASSERT_THAT(unassigned, IsOk());
  auto drained = PlanUpdateBucket(*unassigned->after, Update(3, {"state"}, WithState(D)));
  ASSERT_THAT(drained, IsOk());
  EXPECT_TRUE(drained->after->PoolTable("paid").empty());
}

TEST(PlanUpdateBucketTest, DrainReportsMovedTeams) {
  auto s = MustBuild(BaseState());
  auto plan = PlanUpdateBucket(*s, Update(1, {"state"}, WithState(D)));
  ASSERT_THAT(plan, IsOk());
  ASSERT_EQ(plan->effect.pool_shifts.size(), 1u);
  EXPECT_EQ(plan->effect.pool_shifts[0].pool, "default");
  EXPECT_GT(plan->effect.pool_shifts[0].share_moved, 0.3);
  int64_t on_one = 0;
  for (int64_t t = 20; t < 30; ++t) on_one += s->RouteOf(t).bucket_id == 1;
  EXPECT_GT(on_one, 0);
  EXPECT_EQ(plan->effect.moved_team_count, on_one);
  for (const TeamMove& m : plan->effect.moved_teams) {
    EXPECT_EQ(m.from_bucket_id, 1);
    EXPECT_EQ(m.to_bucket_id, 2);
  }
  EXPECT_EQ(plan->after->FindBucket(1)->updated_version, 11);
}

// ---------------------------------------------------------------------------
// Assignments

TEST(PlanAssignmentsTest, SetsAndUnsetsSorted) {
  auto s = MustBuild(BaseState());
  auto plan = PlanAssignments(
      *s,
      {{100, Target::Pin(2)}, {7, std::nullopt}, {50, Target::Pool("paid")}, {5, std::nullopt}});
  ASSERT_THAT(plan, IsOk());
  ASSERT_EQ(plan->change.set.size(), 2u);
  EXPECT_EQ(plan->change.set[0], std::make_pair(int64_t{50}, Target::Pool("paid")));
  EXPECT_EQ(plan->change.set[1], std::make_pair(int64_t{100}, Target::Pin(2)));
  EXPECT_THAT(plan->change.unset, ElementsAre(5, 7));
  EXPECT_EQ(plan->change.next_bucket_id, 5);
  EXPECT_EQ(plan->effect.assignments_changed, 4);
  EXPECT_TRUE(plan->effect.changed);
  EXPECT_TRUE(plan->effect.pool_shifts.empty());
  EXPECT_EQ(plan->after->version(), 11);
  EXPECT_EQ(plan->after->FindAssignment(100), Target::Pin(2));
  EXPECT_EQ(plan->after->RouteOf(50).bucket_id, 3);
  // Team 5 was pinned to 3 and now follows default placement.
  const int32_t default_of_5 = s->PoolTable("default").BucketForTeam(5);
  EXPECT_THAT(
      plan->effect.moved_teams,
      ::testing::Contains(AllOf(Field(&TeamMove::team_id, 5), Field(&TeamMove::from_bucket_id, 3),
                                Field(&TeamMove::to_bucket_id, default_of_5))));
}

TEST(PlanAssignmentsTest, IdenticalAndMissingAreSkipped) {
  auto s = MustBuild(BaseState());
  auto same = PlanAssignments(*s, {{5, Target::Pin(3)}});
  ASSERT_THAT(same, IsOk());
  EXPECT_FALSE(same->effect.changed);
  EXPECT_EQ(same->after, nullptr);
  EXPECT_TRUE(same->change.empty());

  // Unassigning a team without an override is a no-op, alone as in a batch.
  auto unset_missing = PlanAssignments(*s, {{6, std::nullopt}});
  ASSERT_THAT(unset_missing, IsOk());
  EXPECT_FALSE(unset_missing->effect.changed);
  auto bulk = PlanAssignments(*s, {{6, std::nullopt}, {5, Target::Pin(3)}, {7, std::nullopt}});
  ASSERT_THAT(bulk, IsOk());
  EXPECT_THAT(bulk->change.unset, ElementsAre(7));
  EXPECT_THAT(bulk->change.set, IsEmpty());
  EXPECT_EQ(bulk->effect.assignments_changed, 1);
}

TEST(PlanAssignmentsTest, FieldErrors) {
  auto s = MustBuild(BaseState());
  EXPECT_THAT(PlanAssignments(*s, {}), StatusIs(Code::kInvalidArgument, StartsWith("assignments")));
  EXPECT_THAT(PlanAssignments(*s, {{5, Target::Pin(1)}, {6, Target::Pin(1)}, {5, std::nullopt}}),
              StatusIs(Code::kInvalidArgument, "assignments[2].team_id: duplicate team 5"));
  EXPECT_THAT(PlanAssignments(*s, {{0, Target::Pin(1)}}),
              StatusIs(Code::kInvalidArgument, StartsWith("team_id:")));
  EXPECT_THAT(PlanAssignments(*s, {{1, Target::Pin(1)}, {0, Target::Pin(1)}}),
              StatusIs(Code::kInvalidArgument, StartsWith("assignments[1].team_id:")));
  EXPECT_THAT(PlanAssignments(*s, {{1, Target{}}}),
              StatusIs(Code::kInvalidArgument, StartsWith("bucket_id:")));
  EXPECT_THAT(PlanAssignments(*s, {{1, Target{2, "paid"}}}),
              StatusIs(Code::kInvalidArgument, StartsWith("bucket_id:")));
}

TEST(PlanAssignmentsTest, PinTargetMustExistAndBePlaceable) {
  MappingState st = BaseState();
  st.buckets.push_back(MakeBucket(8, "gone", R));
  auto s = MustBuild(st);
  EXPECT_THAT(PlanAssignments(*s, {{1, Target::Pin(9)}}),
              StatusIs(Code::kNotFound, "bucket_id: bucket 9 does not exist"));
  EXPECT_THAT(PlanAssignments(*s, {{1, Target::Pin(1)}, {2, Target::Pin(9)}}),
              StatusIs(Code::kNotFound, "assignments[1].bucket_id: bucket 9 does not exist"));
  EXPECT_THAT(PlanAssignments(*s, {{1, Target::Pin(4)}}),
              StatusIs(Code::kFailedPrecondition,
                       AllOf(StartsWith("bucket_id:"), HasSubstr("bucket 4 (b4) is DRAINING"))));
  EXPECT_THAT(PlanAssignments(*s, {{1, Target::Pin(8)}}),
              StatusIs(Code::kFailedPrecondition, HasSubstr("bucket 8 (b8) is RETIRED")));
  // A paused bucket takes pins.
  MappingState paused = BaseState();
  paused.buckets[1].state = P;
  EXPECT_THAT(PlanAssignments(*MustBuild(paused), {{1, Target::Pin(2)}}), IsOk());
}

TEST(PlanAssignmentsTest, PoolTargetNeedsPlaceableBucket) {
  auto s = MustBuild(BaseState());
  EXPECT_THAT(
      PlanAssignments(*s, {{1, Target::Pool("free")}}),
      StatusIs(Code::kFailedPrecondition,
               AllOf(StartsWith("pool:"), HasSubstr("pool \"free\" has no ACTIVE or PAUSED"))));
  EXPECT_THAT(PlanAssignments(*s, {{1, Target::Pool("paid")}, {2, Target::Pool("nowhere")}}),
              StatusIs(Code::kFailedPrecondition,
                       AllOf(StartsWith("assignments[1].pool:"), HasSubstr("\"nowhere\""))));
  EXPECT_THAT(PlanAssignments(*s, {{1, Target::Pool("default")}}), IsOk());
}

TEST(PlanAssignmentsTest, ListsAtMostMaxMovesButCountsAll) {
  MappingState st;
  for (int id = 1; id <= 3; ++id) st.buckets.push_back(MakeBucket(id));
  auto s = MustBuild(st);
  std::vector<AssignmentOp> ops;
  for (int64_t t = 1; t <= 20000; ++t) ops.push_back({t, Target::Pin(1)});
  auto plan = PlanAssignments(*s, ops);
  ASSERT_THAT(plan, IsOk());
  int64_t expected = 0;
  for (int64_t t = 1; t <= 20000; ++t) expected += s->RouteOf(t).bucket_id != 1;
  EXPECT_EQ(plan->effect.moved_team_count, expected);
  ASSERT_GT(expected, static_cast<int64_t>(kMaxListedMoves));
  EXPECT_EQ(plan->effect.moved_teams.size(), kMaxListedMoves);
  EXPECT_EQ(plan->effect.assignments_changed, 20000);
  EXPECT_EQ(plan->after->PinnedCount(1), 20000);
}

}  // namespace
}  // namespace bucketmap
