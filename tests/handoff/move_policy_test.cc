// Domain tests of handoffs: which handoffs a write opens, the guards, the
// snapshot's open set, and phase updates.
#include "domain/move_policy.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "domain/planner.h"
#include "domain/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/domain/domain_test_util.h"

namespace bucketmap {
namespace {

using ::bucketmap::testing_util::IsOk;
using ::bucketmap::testing_util::MakeBucket;
using ::bucketmap::testing_util::MustBuild;
using ::bucketmap::testing_util::StatusIs;
using ::testing::_;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

using Code = absl::StatusCode;

const absl::Time kNow = absl::FromUnixSeconds(1700000000);

// Buckets 1, 2 (default; bucket 1 with two roles and groups), 3 (paid);
// team 7 in pool paid, team 5 pinned to 3.
std::shared_ptr<const Snapshot> Base() {
  MappingState s;
  s.version = 10;
  s.next_bucket_id = 4;
  Bucket b1 = MakeBucket(1);
  b1.topics = {{"ingestion", "in_1"}, {"processed", "out_1"}};
  b1.consumer_groups = {{"ingestion", "g_in_1"}, {"processed", "g_out_1"}};
  b1.drain_order = {"ingestion", "processed"};
  s.buckets = {b1, MakeBucket(2), MakeBucket(3, "paid")};
  s.assignments = {{5, Target::Pin(3)}, {7, Target::Pool("paid")}};
  return MustBuild(std::move(s));
}

MovePolicy Policy(MoveScope scope = MoveScope::kExplicit) {
  MovePolicy p;
  p.scope = scope;
  p.now = kNow;
  p.grace = absl::Seconds(30);
  p.max_hold = absl::Minutes(10);
  p.partition_count = [](const std::string& topic) { return topic == "in_1" ? 4 : 2; };
  return p;
}

// A team placed on `bucket` by the default pool of `s`.
int64_t DefaultTeamOn(const Snapshot& s, int32_t bucket, int64_t from = 1000) {
  for (int64_t t = from;; ++t) {
    if (!s.FindAssignment(t).has_value() && s.RouteOf(t).bucket_id == bucket) return t;
  }
}

absl::StatusOr<Plan> Pin(const Snapshot& before, int64_t team, int32_t bucket,
                         const MovePolicy& policy) {
  ASSIGN_OR_RETURN(Plan plan, PlanAssignments(before, {AssignmentOp{team, Target::Pin(bucket)}}));
  RETURN_IF_ERROR(ApplyMovePolicy(before, policy, &plan));
  return plan;
}

TEST(MovePolicyTest, PinOpensOneHandoffFromTheSourceWithItsRolesInDrainOrder) {
  auto before = Base();
  const int64_t team = DefaultTeamOn(*before, 1);
  absl::StatusOr<Plan> plan = Pin(*before, team, 2, Policy());
  ASSERT_THAT(plan, IsOk());
  ASSERT_THAT(plan->change.handoffs, SizeIs(1));
  const Handoff& h = plan->change.handoffs[0];
  EXPECT_EQ(h.id, 1);
  EXPECT_EQ(h.opened_version, 11);
  EXPECT_EQ(h.source_bucket_id, 1);
  EXPECT_EQ(h.state, HandoffPhase::kSwitching);
  EXPECT_THAT(h.target_bucket_ids, ElementsAre(2));
  EXPECT_THAT(h.team_ids, ElementsAre(team));
  EXPECT_THAT(h.to_bucket_ids, ElementsAre(2));
  EXPECT_TRUE(h.pool_before.empty());  // no placement change
  EXPECT_EQ(h.grace_deadline, kNow + absl::Seconds(30));
  EXPECT_EQ(h.hold_deadline, kNow + absl::Minutes(10));
  ASSERT_THAT(h.drains, SizeIs(2));
  EXPECT_EQ(h.drains[0].role, "ingestion");
  EXPECT_EQ(h.drains[0].consumer_group, "g_in_1");
  EXPECT_EQ(h.drains[0].partition_count, 4);
  EXPECT_EQ(h.drains[1].role, "processed");
  EXPECT_EQ(h.drains[1].partition_count, 2);
  // The snapshot after the write carries it in its open set.
  ASSERT_THAT(plan->after->handoffs(), SizeIs(1));
  EXPECT_EQ(plan->after->next_handoff_id(), 2);
  EXPECT_THAT(plan->after->HandoffsOf(team), SizeIs(1));
  EXPECT_THAT(plan->effect.handoffs, SizeIs(1));
}

TEST(MovePolicyTest, PinToTheSameBucketOpensNothing) {
  auto before = Base();
  const int64_t team = DefaultTeamOn(*before, 2);
  absl::StatusOr<Plan> plan = Pin(*before, team, 2, Policy());
  ASSERT_THAT(plan, IsOk());
  EXPECT_THAT(plan->change.handoffs, IsEmpty());
}

TEST(MovePolicyTest, SecondExplicitMoveWhileOpenIsRefusedNamingTeamAndHandoff) {
  auto before = Base();
  const int64_t team = DefaultTeamOn(*before, 1);
  absl::StatusOr<Plan> first = Pin(*before, team, 2, Policy());
  ASSERT_THAT(first, IsOk());
  absl::StatusOr<Plan> again = Pin(*first->after, team, 3, Policy());
  EXPECT_THAT(again,
              StatusIs(Code::kFailedPrecondition,
                       AllOf(HasSubstr(absl::StrCat("team ", team)), HasSubstr("handoff 1"))));
  // Force does not override the open-handoff guard.
  MovePolicy forced = Policy();
  forced.force = true;
  EXPECT_THAT(Pin(*first->after, team, 3, forced), StatusIs(Code::kFailedPrecondition, _));
  // Another team moves freely.
  EXPECT_THAT(Pin(*first->after, DefaultTeamOn(*before, 1, team + 1), 2, Policy()), IsOk());
}

TEST(MovePolicyTest, DefaultPlacedTeamUnderPoolHandoffCannotMoveExplicitly) {
  auto before = Base();
  // Draining bucket 2 moves its default-placed teams to bucket 1.
  BucketUpdate update;
  update.id = 2;
  update.values.state = BucketState::kDraining;
  update.paths = {"state"};
  absl::StatusOr<Plan> drain = PlanUpdateBucket(*before, update);
  ASSERT_THAT(drain, IsOk());
  ASSERT_THAT(ApplyMovePolicy(*before, Policy(MoveScope::kPoolWide), &*drain), IsOk());
  ASSERT_THAT(drain->change.handoffs, SizeIs(1));
  const Handoff& h = drain->change.handoffs[0];
  EXPECT_EQ(h.source_bucket_id, 2);
  EXPECT_EQ(h.source_pool, "default");
  ASSERT_THAT(h.pool_before, SizeIs(2));
  EXPECT_THAT(h.target_bucket_ids, ElementsAre(1));
  EXPECT_THAT(h.team_ids, IsEmpty());

  const Snapshot& after = *drain->after;
  const int64_t moved = DefaultTeamOn(*before, 2);
  EXPECT_THAT(after.HandoffsOf(moved), SizeIs(1));
  const int64_t stayed = DefaultTeamOn(*before, 1);
  EXPECT_THAT(after.HandoffsOf(stayed), IsEmpty());
  EXPECT_THAT(Pin(after, moved, 3, Policy()),
              StatusIs(Code::kFailedPrecondition, HasSubstr("handoff 1")));
  EXPECT_THAT(Pin(after, stayed, 3, Policy()), IsOk());

  // RETIRED is refused while the handoff from bucket 2 is open.
  update.values.state = BucketState::kRetired;
  absl::StatusOr<Plan> retire = PlanUpdateBucket(after, update);
  ASSERT_THAT(retire, IsOk());
  EXPECT_THAT(ApplyMovePolicy(after, Policy(MoveScope::kPoolWide), &*retire),
              StatusIs(Code::kFailedPrecondition, HasSubstr("source of open handoff 1")));
}

TEST(MovePolicyTest, PoolAssignedTeamsMovingWithTheirPoolAreListed) {
  MappingState s;
  s.version = 3;
  s.buckets = {MakeBucket(1), MakeBucket(3, "paid"), MakeBucket(4, "paid")};
  for (int64_t t = 1; t <= 40; ++t) s.assignments.emplace_back(t, Target::Pool("paid"));
  auto before = MustBuild(std::move(s));
  BucketUpdate update;
  update.id = 4;
  update.values.state = BucketState::kDraining;
  update.paths = {"state"};
  absl::StatusOr<Plan> plan = PlanUpdateBucket(*before, update);
  ASSERT_THAT(plan, IsOk());
  ASSERT_THAT(ApplyMovePolicy(*before, Policy(MoveScope::kPoolWide), &*plan), IsOk());
  ASSERT_THAT(plan->change.handoffs, SizeIs(1));
  const Handoff& h = plan->change.handoffs[0];
  EXPECT_EQ(h.source_bucket_id, 4);
  EXPECT_EQ(h.source_pool, "paid");
  std::vector<int64_t> expected;
  for (int64_t t = 1; t <= 40; ++t) {
    if (before->RouteOf(t).bucket_id == 4) expected.push_back(t);
  }
  ASSERT_FALSE(expected.empty());
  EXPECT_EQ(h.team_ids, expected);
  EXPECT_EQ(h.to_bucket_ids, std::vector<int32_t>(expected.size(), 3));
}

TEST(MovePolicyTest, AddingABucketOpensOneHandoffPerSourceBucket) {
  auto before = Base();
  Bucket b;
  b.name = "new";
  b.topics = {{"ingestion", "in_new"}};
  absl::StatusOr<Plan> plan = PlanCreateBucket(*before, b);
  ASSERT_THAT(plan, IsOk());
  ASSERT_THAT(ApplyMovePolicy(*before, Policy(MoveScope::kPoolWide), &*plan), IsOk());
  ASSERT_THAT(plan->change.handoffs, SizeIs(2));
  EXPECT_EQ(plan->change.handoffs[0].source_bucket_id, 1);
  EXPECT_EQ(plan->change.handoffs[1].source_bucket_id, 2);
  for (const Handoff& h : plan->change.handoffs) {
    EXPECT_THAT(h.target_bucket_ids, ElementsAre(4));
    EXPECT_EQ(h.source_pool, "default");
  }
  EXPECT_EQ(plan->change.handoffs[1].id, plan->change.handoffs[0].id + 1);
}

TEST(MovePolicyTest, UnorderedMoveIsRecordedAlreadyForcedAndHoldsNothing) {
  auto before = Base();
  const int64_t team = DefaultTeamOn(*before, 1);
  MovePolicy p = Policy();
  p.ordered = false;
  absl::StatusOr<Plan> plan = Pin(*before, team, 2, p);
  ASSERT_THAT(plan, IsOk());
  ASSERT_THAT(plan->change.handoffs, SizeIs(1));
  EXPECT_EQ(plan->change.handoffs[0].state, HandoffPhase::kForced);
  EXPECT_EQ(plan->change.handoffs[0].end_reason, "unordered");
  EXPECT_FALSE(plan->change.handoffs[0].ordered);
  EXPECT_THAT(plan->after->handoffs(), IsEmpty());
  EXPECT_THAT(plan->after->HandoffsOf(team), IsEmpty());
  // The id is used: the next handoff gets the next one.
  EXPECT_EQ(plan->after->next_handoff_id(), 2);
}

TEST(MovePolicyTest, CooldownRefusesUnlessForced) {
  auto before = Base();
  const int64_t team = DefaultTeamOn(*before, 1);
  MovePolicy p = Policy();
  p.cooldown = absl::Hours(1);
  p.team_moved_at[team] = kNow - absl::Minutes(10);
  EXPECT_THAT(Pin(*before, team, 2, p),
              StatusIs(Code::kFailedPrecondition,
                       AllOf(HasSubstr(absl::StrCat("team ", team)), HasSubstr("move_cooldown"))));
  p.force = true;
  EXPECT_THAT(Pin(*before, team, 2, p), IsOk());
  p.force = false;
  p.team_moved_at[team] = kNow - absl::Minutes(61);
  EXPECT_THAT(Pin(*before, team, 2, p), IsOk());

  // Pool cooldown for pool-wide changes.
  MovePolicy pool = Policy(MoveScope::kPoolWide);
  pool.cooldown = absl::Hours(1);
  pool.pool_moved_at["default"] = kNow - absl::Minutes(1);
  BucketUpdate update;
  update.id = 2;
  update.values.weight = 300;
  update.paths = {"weight"};
  absl::StatusOr<Plan> plan = PlanUpdateBucket(*before, update);
  ASSERT_THAT(plan, IsOk());
  EXPECT_THAT(ApplyMovePolicy(*before, pool, &*plan),
              StatusIs(Code::kFailedPrecondition, HasSubstr("pool \"default\"")));
  pool.force = true;
  EXPECT_THAT(ApplyMovePolicy(*before, pool, &*plan), IsOk());
}

TEST(MovePolicyTest, LagAboveTheBoundRefusesUnlessForced) {
  auto before = Base();
  const int64_t team = DefaultTeamOn(*before, 1);
  MovePolicy p = Policy();
  p.max_move_lag = 100;
  p.source_lag = [](int32_t bucket) -> int64_t { return bucket == 1 ? 500 : -1; };
  EXPECT_THAT(Pin(*before, team, 2, p), StatusIs(Code::kFailedPrecondition, HasSubstr("bucket 1")));
  // Unknown lag (bucket 2) never refuses.
  EXPECT_THAT(Pin(*before, DefaultTeamOn(*before, 2), 1, p), IsOk());
  p.force = true;
  EXPECT_THAT(Pin(*before, team, 2, p), IsOk());
}

TEST(MovePolicyTest, DisabledOpensNothing) {
  auto before = Base();
  MovePolicy p = Policy();
  p.open_handoffs = false;
  absl::StatusOr<Plan> plan = Pin(*before, DefaultTeamOn(*before, 1), 2, p);
  ASSERT_THAT(plan, IsOk());
  EXPECT_THAT(plan->change.handoffs, IsEmpty());
}

TEST(MovePolicyTest, PhaseUpdatesAreFencedByPhaseAndEndTheHandoff) {
  auto before = Base();
  const int64_t team = DefaultTeamOn(*before, 1);
  absl::StatusOr<Plan> open = Pin(*before, team, 2, Policy());
  ASSERT_THAT(open, IsOk());
  const Snapshot& s1 = *open->after;
  Handoff h = s1.handoffs()[0];
  h.state = HandoffPhase::kDraining;
  absl::StatusOr<Plan> draining = PlanHandoffUpdate(s1, h, HandoffPhase::kSwitching);
  ASSERT_THAT(draining, IsOk());
  EXPECT_EQ(draining->after->version(), s1.version() + 1);
  EXPECT_EQ(draining->after->handoffs()[0].phase_version, s1.version() + 1);
  // A stale expectation (another coordinator moved it on) is refused.
  EXPECT_THAT(PlanHandoffUpdate(*draining->after, h, HandoffPhase::kSwitching),
              StatusIs(Code::kFailedPrecondition, HasSubstr("DRAINING")));
  absl::StatusOr<Plan> cancelled =
      PlanCancelHandoff(*draining->after, h.id, "operator gave up", kNow);
  ASSERT_THAT(cancelled, IsOk());
  EXPECT_THAT(cancelled->after->handoffs(), IsEmpty());
  EXPECT_EQ(cancelled->change.handoffs[0].state, HandoffPhase::kCancelled);
  EXPECT_EQ(cancelled->change.handoffs[0].end_reason, "operator gave up");
  EXPECT_THAT(PlanCancelHandoff(*cancelled->after, h.id, "again", kNow),
              StatusIs(Code::kNotFound, _));
  // After it ended, the team may move again.
  EXPECT_THAT(Pin(*cancelled->after, team, 3, Policy()), IsOk());
}

TEST(MovePolicyTest, SnapshotBuildLoadsOpenHandoffsAndApplyCarriesThem) {
  auto before = Base();
  absl::StatusOr<Plan> open = Pin(*before, DefaultTeamOn(*before, 1), 2, Policy());
  ASSERT_THAT(open, IsOk());
  MappingState state = open->after->ToState();
  ASSERT_THAT(state.handoffs, SizeIs(1));
  auto rebuilt = MustBuild(state);
  ASSERT_THAT(rebuilt->handoffs(), SizeIs(1));
  EXPECT_EQ(rebuilt->handoffs()[0], open->after->handoffs()[0]);
  EXPECT_EQ(rebuilt->next_handoff_id(), 2);
  // An unrelated change keeps the open set.
  absl::StatusOr<Plan> other = PlanAssignments(*rebuilt, {AssignmentOp{5, Target::Pin(2)}});
  ASSERT_THAT(other, IsOk());
  EXPECT_THAT(other->after->handoffs(), SizeIs(1));
}

}  // namespace
}  // namespace bucketmap
