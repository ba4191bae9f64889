// Pools as objects and per-team rules in the domain: the snapshot keeps
// and applies them, the planner pauses and resumes pools in one version,
// keeps a PAUSED pool's buckets PAUSED, and guards the overflow topic that
// RATE_LIMIT and FORCE_OVERFLOW rules need.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "domain/planner.h"
#include "domain/snapshot.h"
#include "domain/team_rule.h"
#include "domain_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bucketmap {
namespace {

using ::bucketmap::testing_util::IsOk;
using ::bucketmap::testing_util::MakeBucket;
using ::bucketmap::testing_util::MustBuild;
using ::bucketmap::testing_util::StatusIs;
using ::testing::_;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

using Code = absl::StatusCode;

const absl::Time kNow = absl::FromUnixSeconds(1800000000);

Bucket WithOverflow(Bucket b) {
  b.topics[kOverflowRole] = absl::StrCat("overflow_", b.id);
  return b;
}

// Buckets 1 (default, with overflow), 2 (default, no overflow), 3 and 4
// (pool free; 4 PAUSED on its own), 5 (free, DRAINING), 6 (paid); team 42
// pinned to 1, team 43 pinned to 2, team 7 assigned to free.
MappingState BaseState() {
  MappingState s;
  s.version = 10;
  s.cluster_id = "c";
  s.next_bucket_id = 7;
  s.buckets = {WithOverflow(MakeBucket(1)),
               MakeBucket(2),
               MakeBucket(3, "free"),
               MakeBucket(4, "free", BucketState::kPaused),
               MakeBucket(5, "free", BucketState::kDraining),
               MakeBucket(6, "paid")};
  s.assignments = {{7, Target::Pool("free")}, {42, Target::Pin(1)}, {43, Target::Pin(2)}};
  return s;
}

TeamRule Rule(int64_t team, RuleKind kind, double eps = 0, int64_t burst = 0) {
  TeamRule r;
  r.team_id = team;
  r.kind = kind;
  r.events_per_second = eps;
  r.burst = burst;
  r.reason = "test";
  r.actor = "alice";
  return r;
}

PoolUpdate Pause(const std::string& pool) {
  PoolUpdate u;
  u.name = pool;
  u.state = BucketState::kPaused;
  u.reason = "things went bad";
  u.actor = "alice";
  return u;
}

PoolUpdate Resume(const std::string& pool) {
  PoolUpdate u = Pause(pool);
  u.state = BucketState::kActive;
  u.reason = "better now";
  return u;
}

// ---------------------------------------------------------------------------
// Snapshot

TEST(PoolsRulesSnapshotTest, BuildSortsAndChecksPoolObjectsAndRules) {
  MappingState state = BaseState();
  Pool free;
  free.name = "free";
  free.priority = 10;
  Pool enterprise;
  enterprise.name = "enterprise";
  enterprise.priority = 300;
  state.pool_objects = {free, enterprise};
  state.rules = {Rule(43, RuleKind::kDrop), Rule(42, RuleKind::kRateLimit, 100, 200),
                 Rule(42, RuleKind::kDrop)};
  auto s = MustBuild(state);
  ASSERT_NE(s, nullptr);
  ASSERT_EQ(s->pool_objects().size(), 2u);
  EXPECT_EQ(s->pool_objects()[0].name, "enterprise");
  EXPECT_EQ(s->PoolOf("free").priority, 10);
  EXPECT_EQ(s->PoolOf("paid").priority, kDefaultPoolPriority);
  EXPECT_EQ(s->PoolOf("paid").state, BucketState::kActive);
  EXPECT_EQ(s->FindPoolObject("paid"), nullptr);
  ASSERT_EQ(s->team_rules().size(), 3u);
  EXPECT_EQ(s->team_rules()[0].kind, RuleKind::kRateLimit);  // (42, 1) < (42, 3)
  EXPECT_EQ(s->RulesOf(42).size(), 2u);
  EXPECT_TRUE(s->HasRules(43));
  EXPECT_FALSE(s->HasRules(7));
  EXPECT_NE(s->FindRule(42, RuleKind::kDrop), nullptr);
  EXPECT_EQ(s->FindRule(43, RuleKind::kRateLimit), nullptr);
  EXPECT_EQ(s->NextRuleExpiry(), absl::InfiniteFuture());

  const MappingState back = s->ToState();
  EXPECT_EQ(back.rules, s->team_rules());
  EXPECT_EQ(back.pool_objects, s->pool_objects());

  state.rules.push_back(Rule(43, RuleKind::kDrop));
  EXPECT_THAT(Snapshot::Build(state), StatusIs(Code::kInvalidArgument, HasSubstr("two rules")));
  state.rules = {Rule(43, RuleKind::kRateLimit, 0, 1)};
  EXPECT_THAT(Snapshot::Build(state),
              StatusIs(Code::kInvalidArgument, HasSubstr("events_per_second")));
  state.rules = {Rule(43, RuleKind::kDrop, 5, 0)};
  EXPECT_THAT(Snapshot::Build(state), StatusIs(Code::kInvalidArgument, HasSubstr("rate_limit")));
  state.rules.clear();
  state.pool_objects = {free, free};
  EXPECT_THAT(Snapshot::Build(state), StatusIs(Code::kInvalidArgument, HasSubstr("duplicate")));
  Pool bad = free;
  bad.state = BucketState::kDraining;
  state.pool_objects = {bad};
  EXPECT_THAT(Snapshot::Build(state), StatusIs(Code::kInvalidArgument, HasSubstr("state")));
}

TEST(PoolsRulesSnapshotTest, ApplyMergesRulesAndPoolObjects) {
  MappingState state = BaseState();
  state.rules = {Rule(42, RuleKind::kDrop), Rule(43, RuleKind::kDrop)};
  auto s = MustBuild(state);
  Change change;
  TeamRule limited = Rule(42, RuleKind::kRateLimit, 10, 10);
  limited.expire_time = kNow;
  change.rules = {limited, Rule(50, RuleKind::kSkipPersonProcessing)};
  change.cleared_rules = {{43, RuleKind::kDrop}, {99, RuleKind::kDrop}};  // 99 has none
  Pool free;
  free.name = "free";
  free.priority = 5;
  change.pool_objects = {free};
  auto next = s->Apply(change);
  ASSERT_THAT(next, IsOk());
  std::vector<std::pair<int64_t, RuleKind>> keys;
  for (const TeamRule& r : (*next)->team_rules()) keys.emplace_back(r.team_id, r.kind);
  EXPECT_THAT(keys, ElementsAre(std::make_pair(42, RuleKind::kRateLimit),
                                std::make_pair(42, RuleKind::kDrop),
                                std::make_pair(50, RuleKind::kSkipPersonProcessing)));
  EXPECT_EQ((*next)->NextRuleExpiry(), kNow);
  EXPECT_EQ((*next)->PoolOf("free").priority, 5);
  // The predecessor is unchanged.
  EXPECT_EQ(s->team_rules().size(), 2u);

  Change both;
  both.rules = {Rule(42, RuleKind::kDrop)};
  both.cleared_rules = {{42, RuleKind::kDrop}};
  EXPECT_THAT(s->Apply(both), StatusIs(Code::kInvalidArgument, HasSubstr("both set and cleared")));
  Change unsorted;
  unsorted.rules = {Rule(50, RuleKind::kDrop), Rule(42, RuleKind::kDrop)};
  EXPECT_THAT(s->Apply(unsorted), StatusIs(Code::kInvalidArgument, HasSubstr("ascending")));
}

// ---------------------------------------------------------------------------
// Pools

TEST(PlanUpdatePoolTest, PausingPausesEveryActiveBucketOfThePoolInOneChange) {
  auto s = MustBuild(BaseState());
  auto plan = PlanUpdatePool(*s, Pause("free"));
  ASSERT_THAT(plan, IsOk());
  ASSERT_TRUE(plan->effect.changed);
  // Bucket 3 is paused; 4 was PAUSED on its own, 5 is DRAINING.
  ASSERT_EQ(plan->change.buckets.size(), 1u);
  EXPECT_EQ(plan->change.buckets[0].id, 3);
  EXPECT_EQ(plan->change.buckets[0].state, BucketState::kPaused);
  EXPECT_EQ(plan->change.buckets[0].updated_version, 11);
  ASSERT_EQ(plan->change.pool_objects.size(), 1u);
  const Pool& pool = plan->change.pool_objects[0];
  EXPECT_TRUE(pool.paused());
  EXPECT_THAT(pool.paused_bucket_ids, ElementsAre(3));
  EXPECT_EQ(pool.reason, "things went bad");
  EXPECT_EQ(pool.actor, "alice");
  EXPECT_EQ(pool.updated_version, 11);
  // Every bucket of the pool reports PAUSED (or stays out of placement),
  // and no team moves: PAUSED buckets stay in placement.
  const Snapshot& after = *plan->after;
  EXPECT_EQ(after.version(), 11);
  for (int32_t id : {3, 4}) EXPECT_EQ(after.FindBucket(id)->state, BucketState::kPaused) << id;
  EXPECT_EQ(after.FindBucket(5)->state, BucketState::kDraining);
  EXPECT_EQ(after.FindBucket(6)->state, BucketState::kActive);
  EXPECT_THAT(plan->effect.pool_shifts, IsEmpty());
  EXPECT_EQ(plan->effect.moved_team_count, 0);
  EXPECT_EQ(after.RouteOf(7).bucket_id, s->RouteOf(7).bucket_id);

  // Pausing again is a no-op.
  auto again = PlanUpdatePool(after, Pause("free"));
  ASSERT_THAT(again, IsOk());
  EXPECT_FALSE(again->effect.changed);
}

TEST(PlanUpdatePoolTest, ResumingKeepsBucketsPausedOneByOnePaused) {
  auto s = MustBuild(BaseState());
  auto paused = PlanUpdatePool(*s, Pause("free"));
  ASSERT_THAT(paused, IsOk());
  auto resumed = PlanUpdatePool(*paused->after, Resume("free"));
  ASSERT_THAT(resumed, IsOk());
  ASSERT_EQ(resumed->change.buckets.size(), 1u);
  EXPECT_EQ(resumed->change.buckets[0].id, 3);
  const Snapshot& after = *resumed->after;
  EXPECT_EQ(after.FindBucket(3)->state, BucketState::kActive);
  EXPECT_EQ(after.FindBucket(4)->state, BucketState::kPaused);  // the operator's own pause
  EXPECT_FALSE(after.PoolPaused("free"));
  EXPECT_THAT(after.PoolOf("free").paused_bucket_ids, IsEmpty());
}

TEST(PlanUpdatePoolTest, PriorityAloneChangesNoBucketAndAPoolNeedsNoBucket) {
  auto s = MustBuild(BaseState());
  PoolUpdate u;
  u.name = "enterprise";  // no bucket yet
  u.priority = 300;
  auto plan = PlanUpdatePool(*s, u);
  ASSERT_THAT(plan, IsOk());
  EXPECT_TRUE(plan->effect.changed);
  EXPECT_THAT(plan->change.buckets, IsEmpty());
  EXPECT_EQ(plan->after->PoolOf("enterprise").priority, 300);
  EXPECT_FALSE(plan->after->PoolPaused("enterprise"));

  u.priority = kMaxPoolPriority + 1;
  EXPECT_THAT(PlanUpdatePool(*s, u), StatusIs(Code::kInvalidArgument, HasSubstr("priority")));
  PoolUpdate draining = Pause("free");
  draining.state = BucketState::kDraining;
  EXPECT_THAT(PlanUpdatePool(*s, draining),
              StatusIs(Code::kInvalidArgument, HasSubstr("ACTIVE or PAUSED")));
}

TEST(PlanUpdatePoolTest, ABucketEnteringAPausedPoolIsPausedByThePoolAndResumedWithIt) {
  auto s = MustBuild(BaseState());
  auto paused = PlanUpdatePool(*s, Pause("free"));
  ASSERT_THAT(paused, IsOk());
  const Snapshot& p = *paused->after;

  // Created ACTIVE (the default) in the paused pool.
  Bucket created = MakeBucket(0, "free");
  created.created_version = created.updated_version = 0;
  auto create = PlanCreateBucket(p, created);
  ASSERT_THAT(create, IsOk());
  EXPECT_EQ(create->change.buckets[0].state, BucketState::kPaused);
  EXPECT_THAT(create->after->PoolOf("free").paused_bucket_ids, ElementsAre(3, 7));

  // Moved into it while ACTIVE.
  BucketUpdate move;
  move.id = 6;
  move.paths = {"pool"};
  move.values.pool = "free";
  auto moved = PlanUpdateBucket(*create->after, move);
  ASSERT_THAT(moved, IsOk());
  EXPECT_EQ(moved->after->FindBucket(6)->state, BucketState::kPaused);
  EXPECT_THAT(moved->after->PoolOf("free").paused_bucket_ids, ElementsAre(3, 6, 7));

  // Resuming one of its buckets alone is refused, naming the pool.
  BucketUpdate resume;
  resume.id = 3;
  resume.paths = {"state"};
  resume.values.state = BucketState::kActive;
  EXPECT_THAT(PlanUpdateBucket(*moved->after, resume),
              StatusIs(Code::kFailedPrecondition, HasSubstr("pool \"free\", which is PAUSED")));

  // Moving a bucket out keeps it PAUSED, now on its own.
  BucketUpdate out;
  out.id = 7;
  out.paths = {"pool"};
  out.values.pool = "paid";
  auto left = PlanUpdateBucket(*moved->after, out);
  ASSERT_THAT(left, IsOk());
  EXPECT_EQ(left->after->FindBucket(7)->state, BucketState::kPaused);
  EXPECT_THAT(left->after->PoolOf("free").paused_bucket_ids, ElementsAre(3, 6));

  // The pool's resume resumes what it paused, and only that.
  auto resumed = PlanUpdatePool(*left->after, Resume("free"));
  ASSERT_THAT(resumed, IsOk());
  const Snapshot& r = *resumed->after;
  EXPECT_EQ(r.FindBucket(3)->state, BucketState::kActive);
  EXPECT_EQ(r.FindBucket(6)->state, BucketState::kActive);
  EXPECT_EQ(r.FindBucket(4)->state, BucketState::kPaused);
  EXPECT_EQ(r.FindBucket(7)->state, BucketState::kPaused);
}

// ---------------------------------------------------------------------------
// Team rules

TEST(PlanSetTeamRuleTest, OverflowRulesNeedTheBucketsOverflowTopicNamingTheBucket) {
  auto s = MustBuild(BaseState());
  // Team 43 is pinned to bucket 2, which has no overflow topic.
  EXPECT_THAT(PlanSetTeamRule(*s, Rule(43, RuleKind::kRateLimit, 100, 0), kNow),
              StatusIs(Code::kFailedPrecondition,
                       HasSubstr("team 43's bucket 2 (b2) has no \"overflow\" topic")));
  EXPECT_THAT(PlanSetTeamRule(*s, Rule(43, RuleKind::kForceOverflow), kNow),
              StatusIs(Code::kFailedPrecondition, HasSubstr("bucket 2 (b2)")));
  // DROP and SKIP_PERSON_PROCESSING need no overflow topic.
  EXPECT_THAT(PlanSetTeamRule(*s, Rule(43, RuleKind::kDrop), kNow), IsOk());

  auto plan = PlanSetTeamRule(*s, Rule(42, RuleKind::kRateLimit, 100.5, 0), kNow);
  ASSERT_THAT(plan, IsOk());
  ASSERT_EQ(plan->change.rules.size(), 1u);
  const TeamRule& r = plan->change.rules[0];
  EXPECT_EQ(r.burst, 101);  // 0: one second's worth, rounded up
  EXPECT_EQ(r.version, 11);
  EXPECT_EQ(r.create_time, kNow);
  EXPECT_EQ(r.actor, "alice");
  EXPECT_NE(plan->after->FindRule(42, RuleKind::kRateLimit), nullptr);

  // The same effect again is a no-op; another rate replaces it.
  auto same = PlanSetTeamRule(*plan->after, Rule(42, RuleKind::kRateLimit, 100.5, 101), kNow);
  ASSERT_THAT(same, IsOk());
  EXPECT_FALSE(same->effect.changed);
  auto faster = PlanSetTeamRule(*plan->after, Rule(42, RuleKind::kRateLimit, 200, 0), kNow);
  ASSERT_THAT(faster, IsOk());
  EXPECT_EQ(faster->after->FindRule(42, RuleKind::kRateLimit)->events_per_second, 200);
  EXPECT_EQ(faster->after->RulesOf(42).size(), 1u);
}

TEST(PlanSetTeamRuleTest, RefusesPastExpiriesAndUnroutableTeams) {
  auto s = MustBuild(BaseState());
  TeamRule r = Rule(42, RuleKind::kDrop);
  r.expire_time = kNow;
  EXPECT_THAT(PlanSetTeamRule(*s, r, kNow),
              StatusIs(Code::kInvalidArgument, HasSubstr("expire_time")));
  r.expire_time = kNow + absl::Seconds(1);
  EXPECT_THAT(PlanSetTeamRule(*s, r, kNow), IsOk());

  // Pool "gold" has no bucket: its teams are unroutable.
  MappingState state = BaseState();
  state.assignments.emplace_back(100, Target::Pool("gold"));
  auto gold = MustBuild(state);
  EXPECT_THAT(PlanSetTeamRule(*gold, Rule(100, RuleKind::kForceOverflow), kNow),
              StatusIs(Code::kFailedPrecondition, HasSubstr("unroutable")));
}

TEST(PlanSetTeamRuleTest, ATeamWithAnOverflowRuleCannotMoveToABucketWithoutOne) {
  MappingState state = BaseState();
  state.rules = {Rule(42, RuleKind::kRateLimit, 100, 100)};
  auto s = MustBuild(state);
  std::vector<AssignmentOp> ops;
  ops.push_back({42, Target::Pin(2)});
  EXPECT_THAT(PlanAssignments(*s, ops),
              StatusIs(Code::kFailedPrecondition,
                       HasSubstr("would route it to bucket 2 (b2), which has no \"overflow\"")));
  // Elsewhere with an overflow topic is fine.
  MappingState two = BaseState();
  two.buckets.push_back(WithOverflow(MakeBucket(7)));
  two.next_bucket_id = 8;
  two.rules = state.rules;
  auto t = MustBuild(two);
  ops = {{42, Target::Pin(7)}};
  EXPECT_THAT(PlanAssignments(*t, ops), IsOk());
  // A team with only a DROP rule moves freely.
  MappingState drop = BaseState();
  drop.rules = {Rule(42, RuleKind::kDrop)};
  ops = {{42, Target::Pin(2)}};
  EXPECT_THAT(PlanAssignments(*MustBuild(drop), ops), IsOk());
}

TEST(PlanSetTeamRuleTest, ADefaultPlacedTeamCannotBeMovedByANewBucketWithoutOverflow) {
  // Only bucket 1 (with overflow) places the default pool; a new bucket
  // without one takes some of its slots.
  MappingState state;
  state.version = 3;
  state.cluster_id = "c";
  state.next_bucket_id = 2;
  state.buckets = {WithOverflow(MakeBucket(1))};
  auto s = MustBuild(state);
  Bucket b2 = MakeBucket(0);
  b2.name = "b2";
  b2.created_version = b2.updated_version = 0;
  auto probe = PlanCreateBucket(*s, b2);
  ASSERT_THAT(probe, IsOk());
  int64_t mover = 0;
  for (int64_t team = 1; team < 1000 && mover == 0; ++team) {
    if (probe->after->RouteOf(team).bucket_id == 2) mover = team;
  }
  ASSERT_GT(mover, 0);
  state.rules = {Rule(mover, RuleKind::kForceOverflow)};
  auto ruled = MustBuild(state);
  EXPECT_THAT(PlanCreateBucket(*ruled, b2),
              StatusIs(Code::kFailedPrecondition,
                       HasSubstr(absl::StrCat("team ", mover, " has a FORCE_OVERFLOW rule"))));
}

TEST(PlanSetTeamRuleTest, RemovingTheOverflowTopicOfABucketServingARuleIsRefused) {
  MappingState state = BaseState();
  // Bucket 6 (paid) holds no team; team 7 moves to it with a pool of its own.
  state.buckets[5] = WithOverflow(MakeBucket(6, "solo"));
  state.assignments = {{7, Target::Pool("solo")}};
  state.rules = {Rule(7, RuleKind::kRateLimit, 10, 10)};
  auto s = MustBuild(state);
  BucketUpdate u;
  u.id = 6;
  u.paths = {"topics"};
  u.values.topics = {{"ingestion", "events_plugin_ingestion_6"}};
  EXPECT_THAT(PlanUpdateBucket(*s, u),
              StatusIs(Code::kFailedPrecondition,
                       HasSubstr("bucket.topics: bucket 6 (b6) serves team 7, whose RATE_LIMIT")));
}

TEST(PlanClearTeamRulesTest, ClearsOneKindOrAllAndIsIdempotent) {
  MappingState state = BaseState();
  state.rules = {Rule(42, RuleKind::kRateLimit, 1, 1), Rule(42, RuleKind::kDrop),
                 Rule(43, RuleKind::kDrop)};
  auto s = MustBuild(state);
  auto one = PlanClearTeamRules(*s, 42, RuleKind::kDrop);
  ASSERT_THAT(one, IsOk());
  ASSERT_EQ(one->change.cleared_rules.size(), 1u);
  EXPECT_EQ(one->after->RulesOf(42).size(), 1u);
  auto all = PlanClearTeamRules(*s, 42, std::nullopt);
  ASSERT_THAT(all, IsOk());
  EXPECT_EQ(all->change.cleared_rules.size(), 2u);
  EXPECT_FALSE(all->after->HasRules(42));
  EXPECT_TRUE(all->after->HasRules(43));
  auto none = PlanClearTeamRules(*s, 7, std::nullopt);
  ASSERT_THAT(none, IsOk());
  EXPECT_FALSE(none->effect.changed);
  EXPECT_THAT(PlanClearTeamRules(*s, 0, std::nullopt), StatusIs(Code::kInvalidArgument, _));
}

TEST(PlanExpireTeamRulesTest, RemovesEveryDueRuleInOneChange) {
  MappingState state = BaseState();
  TeamRule a = Rule(42, RuleKind::kDrop);
  a.expire_time = kNow - absl::Seconds(5);
  TeamRule b = Rule(43, RuleKind::kDrop);
  b.expire_time = kNow;
  TeamRule c = Rule(50, RuleKind::kDrop);
  c.expire_time = kNow + absl::Seconds(1);
  state.rules = {a, b, c, Rule(51, RuleKind::kDrop)};
  auto s = MustBuild(state);
  EXPECT_EQ(s->NextRuleExpiry(), a.expire_time);
  auto plan = PlanExpireTeamRules(*s, kNow);
  ASSERT_THAT(plan, IsOk());
  ASSERT_TRUE(plan->effect.changed);
  EXPECT_EQ(plan->change.cleared_rules.size(), 2u);
  EXPECT_EQ(plan->after->version(), 11);
  EXPECT_EQ(plan->after->team_rules().size(), 2u);
  EXPECT_EQ(plan->after->NextRuleExpiry(), c.expire_time);
  auto nothing = PlanExpireTeamRules(*plan->after, kNow);
  ASSERT_THAT(nothing, IsOk());
  EXPECT_FALSE(nothing->effect.changed);
}

}  // namespace
}  // namespace bucketmap
