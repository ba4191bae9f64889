// PgStore and handoffs: persisted with their version, loaded with the
// snapshot, listed, fenced by phase, and the move times of the cooldown.
#include <string>
#include <vector>

#include "domain/move_policy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/store/store_test_util.h"

namespace bucketmap {
namespace {

using store_test::Ctx;
using store_test::PgStoreFixture;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using testing_util::IsOk;
using testing_util::StatusIs;

// Pins `team` to `bucket` through the planner and the move policy.
PlanFn PolicyPin(int64_t team, int32_t bucket, absl::Time now, bool ordered = true) {
  return [=](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
    ASSIGN_OR_RETURN(Plan plan, PlanAssignments(before, {AssignmentOp{team, Target::Pin(bucket)}}));
    MovePolicy policy;
    policy.now = now;
    policy.ordered = ordered;
    RETURN_IF_ERROR(ApplyMovePolicy(before, policy, &plan));
    return PlannedWrite{std::move(plan), "pin"};
  };
}

class HandoffStoreTest : public PgStoreFixture {
 protected:
  // Two default buckets; returns a team default-placed on bucket 1.
  int64_t MakeBuckets() {
    MustWrite(Ctx("CreateBucket"), store_test::CreateBucketPlan("one"));
    MustWrite(Ctx("CreateBucket"), store_test::CreateBucketPlan("two"));
    auto s = store_->LoadSnapshot();
    EXPECT_TRUE(s.ok());
    for (int64_t t = 100;; ++t) {
      if ((*s)->RouteOf(t).bucket_id == 1) return t;
    }
  }
};

TEST_F(HandoffStoreTest, OpenedHandoffIsPersistedLoadedAndInTheDelta) {
  const int64_t team = MakeBuckets();
  const absl::Time now = absl::FromUnixMicros(absl::ToUnixMicros(absl::Now()));
  WriteResult w = MustWrite(Ctx("AssignTeam"), PolicyPin(team, 2, now));
  ASSERT_THAT(w.snapshot->handoffs(), SizeIs(1));

  auto loaded = store_->LoadSnapshot();
  ASSERT_THAT(loaded, IsOk());
  ASSERT_THAT((*loaded)->handoffs(), SizeIs(1));
  EXPECT_EQ((*loaded)->handoffs()[0], w.snapshot->handoffs()[0]);
  EXPECT_EQ((*loaded)->handoffs()[0].open_time, now);
  EXPECT_EQ((*loaded)->next_handoff_id(), 2);

  auto deltas = store_->LoadDeltas(w.version - 1, w.version);
  ASSERT_THAT(deltas, IsOk());
  ASSERT_THAT(*deltas, SizeIs(1));
  ASSERT_EQ((*deltas)[0].handoffs_size(), 1);
  EXPECT_EQ((*deltas)[0].handoffs(0).state(), v1::HANDOFF_SWITCHING);
  EXPECT_THAT((*deltas)[0].handoffs(0).team_ids(), ElementsAre(team));

  auto times = store_->LoadMoveTimes({team, team + 1});
  ASSERT_THAT(times, IsOk());
  ASSERT_EQ(times->teams.count(team), 1u);
  EXPECT_EQ(times->teams[team], now);
  EXPECT_EQ(times->teams.count(team + 1), 0u);
}

// The teams asked for that moved, and every pool that did, in one
// statement.
TEST_F(HandoffStoreTest, MoveTimesListTheAskedTeamsAndEveryPool) {
  ASSERT_TRUE(
      pg_->Psql("INSERT INTO team_moves VALUES (7, 'epoch'::timestamptz + interval '7 s', 2),"
                " (8, 'epoch'::timestamptz + interval '8 s', 3);"
                " INSERT INTO pool_moves VALUES ('default', 'epoch'::timestamptz"
                " + interval '1 s', 2), ('vip', 'epoch'::timestamptz + interval '2 s', 3)")
          .ok());
  auto times = store_->LoadMoveTimes({7, 9});
  ASSERT_THAT(times, IsOk());
  EXPECT_EQ(times->teams.size(), 1u);
  EXPECT_EQ(times->teams[7], absl::FromUnixSeconds(7));
  EXPECT_EQ(times->pools.size(), 2u);
  EXPECT_EQ(times->pools["default"], absl::FromUnixSeconds(1));
  EXPECT_EQ(times->pools["vip"], absl::FromUnixSeconds(2));
  times = store_->LoadMoveTimes({});
  ASSERT_THAT(times, IsOk());
  EXPECT_TRUE(times->teams.empty());
  EXPECT_EQ(times->pools.size(), 2u);
}

TEST_F(HandoffStoreTest, PhaseChangesAreVersionsAndEndedHandoffsLeaveTheOpenSet) {
  const int64_t team = MakeBuckets();
  WriteResult w = MustWrite(Ctx("AssignTeam"), PolicyPin(team, 2, absl::Now()));
  Handoff h = w.snapshot->handoffs()[0];
  h.state = HandoffPhase::kDraining;
  WriteResult drain =
      MustWrite(Ctx("Handoff"), [&](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
        ASSIGN_OR_RETURN(Plan plan, PlanHandoffUpdate(before, h, HandoffPhase::kSwitching));
        return PlannedWrite{std::move(plan), ""};
      });
  EXPECT_EQ(drain.version, w.version + 1);
  WriteResult cancel =
      MustWrite(Ctx("CancelHandoff"), [&](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
        ASSIGN_OR_RETURN(Plan plan, PlanCancelHandoff(before, h.id, "test", absl::Now()));
        return PlannedWrite{std::move(plan), ""};
      });
  EXPECT_EQ(cancel.version, w.version + 2);

  auto loaded = store_->LoadSnapshot();
  ASSERT_THAT(loaded, IsOk());
  EXPECT_THAT((*loaded)->handoffs(), IsEmpty());
  EXPECT_EQ((*loaded)->next_handoff_id(), 2);

  HandoffQuery open_only;
  auto listed = store_->ListHandoffs(open_only);
  ASSERT_THAT(listed, IsOk());
  EXPECT_THAT(*listed, IsEmpty());
  HandoffQuery all;
  all.include_ended = true;
  all.team_id = team;
  listed = store_->ListHandoffs(all);
  ASSERT_THAT(listed, IsOk());
  ASSERT_THAT(*listed, SizeIs(1));
  EXPECT_EQ((*listed)[0].state(), v1::HANDOFF_CANCELLED);
  EXPECT_EQ((*listed)[0].end_reason(), "test");
  all.team_id = team + 1;
  listed = store_->ListHandoffs(all);
  ASSERT_THAT(listed, IsOk());
  EXPECT_THAT(*listed, IsEmpty());

  // An ended handoff never changes again, even if a stale plan tries.
  h.state = HandoffPhase::kCompleted;
  auto stale = store_->Write(Ctx("Handoff"), nullptr,
                             [&](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
                               Plan plan;
                               plan.change.next_bucket_id = before.next_bucket_id();
                               plan.change.handoffs.push_back(h);
                               ASSIGN_OR_RETURN(plan.after, before.Apply(plan.change));
                               plan.effect.changed = true;
                               return PlannedWrite{std::move(plan), ""};
                             });
  EXPECT_THAT(stale, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("already ended")));
}

TEST_F(HandoffStoreTest, PhaseChangeOfAStaleLeaderEpochIsRefused) {
  const int64_t team = MakeBuckets();
  WriteResult w = MustWrite(Ctx("AssignTeam"), PolicyPin(team, 2, absl::Now()));
  Handoff h = w.snapshot->handoffs()[0];
  h.state = HandoffPhase::kDraining;
  WriteContext ctx = Ctx("Handoff");
  ctx.leader_epoch = 12345;  // never granted
  auto stale =
      store_->Write(ctx, nullptr, [&](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
        ASSIGN_OR_RETURN(Plan plan, PlanHandoffUpdate(before, h, HandoffPhase::kSwitching));
        return PlannedWrite{std::move(plan), ""};
      });
  EXPECT_THAT(stale, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not the leader")));
  auto loaded = store_->LoadSnapshot();
  ASSERT_THAT(loaded, IsOk());
  EXPECT_EQ((*loaded)->handoffs()[0].state, HandoffPhase::kSwitching);
}

TEST_F(HandoffStoreTest, UnorderedMoveIsStoredAsForcedAndNotLoadedAsOpen) {
  const int64_t team = MakeBuckets();
  MustWrite(Ctx("AssignTeam"), PolicyPin(team, 2, absl::Now(), /*ordered=*/false));
  auto loaded = store_->LoadSnapshot();
  ASSERT_THAT(loaded, IsOk());
  EXPECT_THAT((*loaded)->handoffs(), IsEmpty());
  HandoffQuery all;
  all.include_ended = true;
  auto listed = store_->ListHandoffs(all);
  ASSERT_THAT(listed, IsOk());
  ASSERT_THAT(*listed, SizeIs(1));
  EXPECT_EQ((*listed)[0].state(), v1::HANDOFF_FORCED);
  EXPECT_EQ((*listed)[0].end_reason(), "unordered");
}

}  // namespace
}  // namespace bucketmap
