// The fakes' own contract: FakeStore keeps store.h's rules (gapless
// versions, request_id replay, expected_version, the leader-epoch fence,
// plan errors, no-ops, the change log and outbox, pruning, leases,
// handoffs), and FailNext/counters behave as documented. FakePublisher
// keeps the publisher's ordering rules.
#include "tests/support/fake_store.h"

#include <memory>
#include <string>
#include <vector>

#include "domain/move_policy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/fake_clock.h"
#include "tests/support/fake_publisher.h"
#include "tests/unit/unit_test_util.h"

namespace bucketmap {
namespace unit_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;

class FakeStoreTest : public ::testing::Test {
 protected:
  WriteResult MustWrite(const WriteContext& ctx, const PlanFn& plan) {
    absl::StatusOr<WriteResult> result = store_.Write(ctx, nullptr, plan);
    EXPECT_THAT(result, IsOk());
    return result.ok() ? *std::move(result) : WriteResult{};
  }

  FakeClock clock_;
  FakeStore store_{&clock_};
};

TEST_F(FakeStoreTest, VersionsAreGaplessAndEachHasItsDelta) {
  EXPECT_EQ(MustWrite(Ctx("CreateBucket"), CreateBucketPlan("a")).version, 1);
  EXPECT_EQ(MustWrite(Ctx("AssignTeam"), PinPlan(7, 1)).version, 2);
  EXPECT_EQ(MustWrite(Ctx("AssignTeam"), PinPlan(8, 1)).version, 3);
  EXPECT_EQ(*store_.CurrentVersion(), 3);
  EXPECT_EQ(store_.CurrentVersionAndCluster()->second, FakeStore::kClusterId);
  EXPECT_EQ((*store_.LoadSnapshot())->RouteOf(7).bucket_id, 1);

  absl::StatusOr<std::vector<v1::MappingDelta>> deltas = store_.LoadDeltas(1, 3);
  ASSERT_THAT(deltas, IsOk());
  ASSERT_EQ(deltas->size(), 2u);
  EXPECT_EQ((*deltas)[0].to_version(), 2);
  EXPECT_EQ((*deltas)[1].to_version(), 3);
  EXPECT_THAT(store_.LoadDeltas(2, 4), StatusIs(absl::StatusCode::kNotFound, HasSubstr("4")));

  HistoryQuery q;
  q.team_id = 8;
  q.include_delta = true;
  absl::StatusOr<HistoryPage> page = store_.GetHistory(q);
  ASSERT_THAT(page, IsOk());
  ASSERT_EQ(page->records.size(), 1u);
  EXPECT_EQ(page->records[0].version(), 3);
  EXPECT_EQ(page->records[0].kind(), "AssignTeam");
  EXPECT_EQ(page->records[0].assignments_changed(), 1);
  EXPECT_EQ(page->records[0].create_time().seconds(), FakeClock::kStartUnixSeconds);
  EXPECT_EQ(page->records[0].delta().to_version(), 3);
  q = HistoryQuery();
  q.page_size = 2;
  page = store_.GetHistory(q);
  ASSERT_THAT(page, IsOk());
  EXPECT_EQ(page->records.size(), 2u);
  EXPECT_EQ(page->next_from_version, 3);
}

TEST_F(FakeStoreTest, RequestIdReplaysTheStoredResponseOnlyForTheSameRequest) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("a"));
  WriteResult first = MustWrite(Ctx("AssignTeam", "r1", "fp1"), PinPlan(7, 1));
  EXPECT_FALSE(first.replayed);
  EXPECT_EQ(first.response, "pin 7 -> 1");

  int planned = 0;
  PlanFn counting = [&planned](const Snapshot& before) {
    ++planned;
    return PinPlan(9, 1)(before);
  };
  absl::StatusOr<WriteResult> replay =
      store_.Write(Ctx("AssignTeam", "r1", "fp1"), nullptr, counting);
  ASSERT_THAT(replay, IsOk());
  EXPECT_TRUE(replay->replayed);
  EXPECT_EQ(replay->response, "pin 7 -> 1");
  EXPECT_EQ(replay->version, 2);
  EXPECT_EQ(replay->snapshot, nullptr);
  EXPECT_EQ(planned, 0);
  EXPECT_EQ(store_.version(), 2);

  EXPECT_THAT(store_.Write(Ctx("AssignTeam", "r1", "other"), nullptr, counting),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("r1")));
  EXPECT_EQ(planned, 0);
}

TEST_F(FakeStoreTest, ExpectedVersionMismatchIsAbortedAndWritesNothing) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("a"));
  WriteContext ctx = Ctx("AssignTeam", "r1", "fp");
  ctx.expected_version = 5;
  EXPECT_THAT(store_.Write(ctx, nullptr, PinPlan(7, 1)), StatusIs(absl::StatusCode::kAborted));
  EXPECT_EQ(store_.version(), 1);
  ctx.expected_version = 1;  // and r1 was not remembered
  WriteResult ok = MustWrite(ctx, PinPlan(7, 1));
  EXPECT_FALSE(ok.replayed);
  EXPECT_EQ(ok.version, 2);
}

TEST_F(FakeStoreTest, PlanErrorsAreReturnedUnchangedWithNothingWritten) {
  PlanFn failing = [](const Snapshot&) -> absl::StatusOr<PlannedWrite> {
    return absl::FailedPreconditionError("guard says no");
  };
  EXPECT_THAT(store_.Write(Ctx("AssignTeam", "r1", "fp"), nullptr, failing),
              StatusIs(absl::StatusCode::kFailedPrecondition, "guard says no"));
  EXPECT_EQ(store_.version(), 0);
  EXPECT_THAT(store_.ChangeLog(), IsEmpty());
  // Not remembered: the retry plans again.
  EXPECT_FALSE(MustWrite(Ctx("CreateBucket", "r1", "fp"), CreateBucketPlan("a")).replayed);
}

TEST_F(FakeStoreTest, NoOpWritesNoVersionButRemembersItsRequestId) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("a"));
  MustWrite(Ctx("AssignTeam"), PinPlan(7, 1));
  WriteResult noop = MustWrite(Ctx("AssignTeam", "again", "fp"), PinPlan(7, 1));
  EXPECT_FALSE(noop.effect.changed);
  EXPECT_EQ(noop.version, 2);
  ASSERT_NE(noop.snapshot, nullptr);
  EXPECT_EQ(noop.snapshot->version(), 2);
  EXPECT_EQ(store_.ChangeLog().size(), 2u);
  EXPECT_TRUE(MustWrite(Ctx("AssignTeam", "again", "fp"), PinPlan(7, 1)).replayed);
}

TEST_F(FakeStoreTest, FencedCallsCommitOnlyAtTheCurrentLeaderEpoch) {
  store_.SetLeaderEpoch(3);
  WriteContext ctx = Ctx("Handoff");
  ctx.leader_epoch = 2;
  EXPECT_THAT(store_.Write(ctx, nullptr, CreateBucketPlan("a")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not the leader")));
  ctx.leader_epoch = 3;
  MustWrite(ctx, CreateBucketPlan("a"));
  EXPECT_THAT(store_.MarkPublished(1, 2),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not the leader")));
  EXPECT_EQ(store_.GetOutboxStats()->backlog, 1);
  EXPECT_THAT(store_.MarkPublished(1, 3), IsOk());
  EXPECT_EQ(store_.GetOutboxStats()->backlog, 0);
  ctx.leader_epoch = 0;  // unfenced writes ignore the epoch
  MustWrite(ctx, CreateBucketPlan("b"));
}

TEST_F(FakeStoreTest, DeadlinePassedIsUnavailable) {
  WriteContext ctx = Ctx("CreateBucket");
  ctx.deadline = clock_.Now();
  EXPECT_THAT(store_.Write(ctx, nullptr, CreateBucketPlan("a")),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("deadline")));
  // Passing while planning: rolled back.
  ctx.deadline = clock_.Now() + absl::Seconds(1);
  PlanFn slow = [this](const Snapshot& before) {
    clock_.Advance(absl::Seconds(2));
    return CreateBucketPlan("a")(before);
  };
  EXPECT_THAT(store_.Write(ctx, nullptr, slow),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("COMMIT")));
  EXPECT_EQ(store_.version(), 0);
}

TEST_F(FakeStoreTest, FailNextFailsOneCallAndCountersCountEveryCall) {
  store_.FailNext(FakeStore::kWrite, absl::UnavailableError("down"));
  EXPECT_THAT(store_.CurrentVersion(), IsOk());  // another method
  EXPECT_THAT(store_.Write(Ctx("CreateBucket"), nullptr, CreateBucketPlan("a")),
              StatusIs(absl::StatusCode::kUnavailable, "down"));
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("a"));
  EXPECT_EQ(store_.calls(FakeStore::kWrite), 2);
  EXPECT_EQ(store_.calls(FakeStore::kCurrentVersion), 1);

  store_.FailNext(absl::InternalError("any"), 2);
  EXPECT_THAT(store_.LoadSnapshot(), StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(store_.GetOutboxStats(), StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(store_.GetOutboxStats(), IsOk());
  EXPECT_EQ(store_.total_calls(), 6);
  EXPECT_EQ(store_.version(), 1);
}

TEST_F(FakeStoreTest, PruneKeepsUnpublishedRowsAndLoadDeltasThenIsNotFound) {
  for (const char* name : {"a", "b", "c"}) MustWrite(Ctx("CreateBucket"), CreateBucketPlan(name));
  ASSERT_THAT(store_.MarkPublished(2), IsOk());
  clock_.Advance(absl::Hours(2));
  OutboxStats stats = *store_.GetOutboxStats();
  EXPECT_EQ(stats.backlog, 1);
  EXPECT_EQ(stats.oldest_age, absl::Hours(2));
  EXPECT_EQ(stats.last_published_version, 2);

  EXPECT_EQ(*store_.Prune(clock_.Now(), absl::Hours(1), absl::Hours(24)), 2);
  EXPECT_THAT(store_.LoadDeltas(0, 3), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_.LoadDeltas(2, 3), IsOk());
  absl::StatusOr<std::vector<OutboxRow>> rows = store_.LoadUnpublished(0, 10);
  ASSERT_THAT(rows, IsOk());
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].version, 3);
  EXPECT_THAT(store_.LoadUnpublished(0, 0), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(FakeStoreTest, ClientsAreListedWhileLeasedAndVersionsNeverGoBack) {
  ClientState p;
  p.client_id = "p1";
  p.role = kProducer;
  p.replica = "r1";
  p.drained_version = 5;
  p.connected = true;
  ASSERT_THAT(store_.SaveClients({p}, clock_.Now() + absl::Seconds(30)), IsOk());
  p.drained_version = 3;  // an older state from a late batch
  ASSERT_THAT(store_.SaveClients({p}, clock_.Now() + absl::Seconds(30)), IsOk());
  std::vector<ClientState> listed = *store_.ListClients(clock_.Now());
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].drained_version, 5);
  EXPECT_EQ(listed[0].lease_expires, clock_.Now() + absl::Seconds(30));
  EXPECT_THAT(*store_.ListClients(clock_.Now() + absl::Seconds(30)), IsEmpty());
  p.client_id = "";
  EXPECT_THAT(store_.SaveClients({p}, clock_.Now()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("client_id")));
}

TEST_F(FakeStoreTest, HandoffsAreListedOpenThenEndedAndRecordMoveTimes) {
  FakeStore store(SnapshotOf(1,
                             {RoleBucket(1, "a", "other", {{"ingestion", "in_a"}}),
                              RoleBucket(2, "b", "other", {{"ingestion", "in_b"}})},
                             {{7, 1}}),
                  &clock_);
  MovePolicy policy;
  policy.now = clock_.Now();
  PlanFn move = [&policy](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
    ASSIGN_OR_RETURN(Plan plan, PlanAssignments(before, {{7, Target::Pin(2)}}));
    RETURN_IF_ERROR(ApplyMovePolicy(before, policy, &plan));
    return PlannedWrite{std::move(plan), ""};
  };
  ASSERT_THAT(store.Write(Ctx("AssignTeam"), nullptr, move), IsOk());
  HandoffQuery q;
  q.include_ended = true;
  std::vector<v1::Handoff> listed = *store.ListHandoffs(q);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].state(), v1::HANDOFF_SWITCHING);
  EXPECT_EQ(listed[0].opened_version(), 2);
  MoveTimes times = *store.LoadMoveTimes({7, 8});
  EXPECT_THAT(times.teams, ElementsAre(Pair(7, clock_.Now())));

  clock_.Advance(absl::Minutes(1));
  auto cancel = [this](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
    ASSIGN_OR_RETURN(Plan plan, PlanCancelHandoff(before, 1, "test", clock_.Now()));
    return PlannedWrite{std::move(plan), ""};
  };
  ASSERT_THAT(store.Write(Ctx("CancelHandoff"), nullptr, cancel), IsOk());
  EXPECT_THAT((*store.LoadSnapshot())->handoffs(), IsEmpty());
  listed = *store.ListHandoffs(q);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].state(), v1::HANDOFF_CANCELLED);
  q.include_ended = false;
  EXPECT_THAT(*store.ListHandoffs(q), IsEmpty());
  q.include_ended = true;
  q.team_id = 8;
  EXPECT_THAT(*store.ListHandoffs(q), IsEmpty());
}

TEST(FakePublisherTest, HoldsReportsInOrderAndDeliversNothingAfterAFailureUntilReset) {
  FakePublisher publisher;
  publisher.set_delivery(FakePublisher::Delivery::kHold);
  std::vector<std::string> reports;
  for (int64_t v = 1; v <= 4; ++v) {
    ASSERT_THAT(publisher.Publish(v, "k", "v", {},
                                  [&reports, v](const absl::Status& s) {
                                    reports.push_back(absl::StrCat(v, s.ok() ? " ok" : " failed"));
                                  }),
                IsOk());
  }
  EXPECT_THAT(reports, IsEmpty());
  publisher.FailDelivery(2, absl::UnavailableError("broker"));
  publisher.Deliver(1);
  EXPECT_THAT(reports, ElementsAre("1 ok"));
  publisher.Deliver();
  EXPECT_THAT(reports, ElementsAre("1 ok", "2 failed"));
  EXPECT_EQ(publisher.outstanding(), 2u);
  EXPECT_THAT(publisher.Flush(absl::Milliseconds(1)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  ASSERT_THAT(publisher.Reset(), IsOk());
  EXPECT_THAT(reports, ElementsAre("1 ok", "2 failed", "3 failed", "4 failed"));
  EXPECT_THAT(publisher.delivered(), ElementsAre(1));
  EXPECT_THAT(publisher.failed(), ElementsAre(2));

  publisher.FailNext(FakePublisher::kPublish, absl::ResourceExhaustedError("queue full"));
  EXPECT_THAT(publisher.Publish(5, "k", "v", {}, [](const absl::Status&) { FAIL(); }),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(publisher.calls(FakePublisher::kPublish), 5);
  EXPECT_EQ(publisher.records().size(), 4u);
}

}  // namespace
}  // namespace unit_test
}  // namespace bucketmap
