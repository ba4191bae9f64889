// WritePath (server/state/write_path.h) over a MappingManager and a
// FakeStore: dry runs, forced writes, when the cooldown's move times are
// read, store failures and request_id replay. No PostgreSQL.
#include "server/state/write_path.h"

#include <memory>
#include <string>
#include <vector>

#include "domain/move_policy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/state/handoff_view.h"
#include "server/state/mapping_manager.h"
#include "tests/support/fake_clock.h"
#include "tests/support/fake_store.h"
#include "tests/unit/unit_test_util.h"

namespace bucketmap {
namespace unit_test {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

// The move policy of the flags, without the coordinator's Kafka caches:
// handoffs on, the cooldown as the test sets it, the time of the clock.
class FixedPolicyView final : public HandoffView {
 public:
  explicit FixedPolicyView(const Clock* clock) : clock_(clock) {}

  MovePolicy Policy(MoveScope scope, bool ordered, bool force) const override {
    MovePolicy p;
    p.open_handoffs = true;
    p.scope = scope;
    p.ordered = ordered;
    p.force = force;
    p.now = clock_->Now();
    p.cooldown = cooldown;
    return p;
  }
  void Decorate(v1::Handoff*) const override {}

  absl::Duration cooldown = absl::ZeroDuration();

 private:
  const Clock* const clock_;
};

class WritePathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_THAT(manager_.Init(), IsOk());
    manager_.AddListener([this](const MappingManager::Published&) { ++published_; });
  }

  // AssignTeam of `team` to bucket `to`; the response tells the mode, the
  // version and how many handoffs the write opens.
  static MoveWrite Move(int64_t team, int32_t to) {
    MoveWrite w;
    w.context = Ctx("AssignTeam");
    w.scope = MoveScope::kExplicit;
    w.teams = {team};
    w.plan = [team, to](const Snapshot& before) {
      return PlanAssignments(before, {AssignmentOp{team, Target::Pin(to)}});
    };
    w.respond = [](const Snapshot&, const Plan& plan, int64_t version, bool dry_run) {
      return absl::StrCat(dry_run ? "dry run" : "committed", " at ", version, ", ",
                          plan.effect.handoffs.size(), " handoff(s)");
    };
    return w;
  }

  void CancelHandoff(int64_t id) {
    PlanFn cancel = [this, id](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
      ASSIGN_OR_RETURN(Plan plan, PlanCancelHandoff(before, id, "test", clock_.Now()));
      return PlannedWrite{std::move(plan), ""};
    };
    ASSERT_THAT(manager_.Write(Ctx("CancelHandoff"), cancel), IsOk());
  }

  std::string LastKind() {
    std::vector<OutboxRow> log = store_.ChangeLog();
    return log.empty() ? "" : log.back().kind;
  }

  FakeClock clock_;
  // Buckets 1 and 2 of pool "other" (default-placed teams are unroutable,
  // so only pins move), team 7 pinned to 1, at version 1.
  FakeStore store_{SnapshotOf(1,
                              {RoleBucket(1, "a", "other", {{"ingestion", "in_a"}}),
                               RoleBucket(2, "b", "other", {{"ingestion", "in_b"}})},
                              {{7, 1}}),
                   &clock_};
  MappingManager manager_{&store_};
  FixedPolicyView view_{&clock_};
  WritePath path_{&manager_, &store_, &view_};
  int published_ = 0;
};

TEST_F(WritePathTest, DryRunCommitsNothingAndChecksExpectedVersion) {
  MoveWrite w = Move(7, 2);
  w.dry_run = true;
  w.context.request_id = "r1";
  w.context.fingerprint = "fp";
  absl::StatusOr<WriteOutcome> out = path_.Run(w);
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(out->response, "dry run at 1, 1 handoff(s)");
  EXPECT_EQ(store_.calls(FakeStore::kWrite), 0);
  EXPECT_EQ(store_.version(), 1);
  EXPECT_THAT(store_.ChangeLog(), IsEmpty());
  EXPECT_EQ(published_, 0);

  w.context.expected_version = 2;
  EXPECT_THAT(path_.Run(w), StatusIs(absl::StatusCode::kAborted, HasSubstr("expected_version 2")));
  w.context.expected_version = 1;
  EXPECT_THAT(path_.Run(w), IsOk());

  // The dry run's request_id was not remembered.
  w.dry_run = false;
  out = path_.Run(w);
  ASSERT_THAT(out, IsOk());
  EXPECT_FALSE(out->replayed);
  EXPECT_EQ(out->response, "committed at 2, 1 handoff(s)");
}

TEST_F(WritePathTest, ForcedWriteIsRecordedWithKindForce) {
  MoveWrite w = Move(7, 2);
  w.force = true;
  ASSERT_THAT(path_.Run(w), IsOk());
  EXPECT_EQ(LastKind(), "AssignTeam+force");
  HistoryQuery q;
  q.team_id = 7;
  EXPECT_EQ(store_.GetHistory(q)->records.back().kind(), "AssignTeam+force");

  ASSERT_THAT(path_.Run(Move(8, 2)), IsOk());
  EXPECT_EQ(LastKind(), "AssignTeam");
}

TEST_F(WritePathTest, MoveTimesAreReadOnlyWhenTheCooldownIsOn) {
  ASSERT_THAT(path_.Run(Move(7, 2)), IsOk());
  EXPECT_EQ(store_.calls(FakeStore::kLoadMoveTimes), 0);
  CancelHandoff(1);

  view_.cooldown = absl::Hours(1);
  MoveWrite exempt = Move(8, 2);
  exempt.exempt_cooldown = true;
  ASSERT_THAT(path_.Run(exempt), IsOk());
  EXPECT_EQ(store_.calls(FakeStore::kLoadMoveTimes), 0);

  WritePath no_handoffs(&manager_, &store_, nullptr);
  ASSERT_THAT(no_handoffs.Run(Move(9, 2)), IsOk());
  EXPECT_EQ(store_.calls(FakeStore::kLoadMoveTimes), 0);

  ASSERT_THAT(path_.Run(Move(10, 1)), IsOk());
  EXPECT_EQ(store_.calls(FakeStore::kLoadMoveTimes), 1);
}

TEST_F(WritePathTest, CooldownRefusesAMoveUntilItEndsUnlessForced) {
  view_.cooldown = absl::Hours(1);
  ASSERT_THAT(path_.Run(Move(7, 2)), IsOk());
  CancelHandoff(1);
  clock_.Advance(absl::Minutes(10));

  const int64_t version = store_.version();
  EXPECT_THAT(path_.Run(Move(7, 1)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("move_cooldown")));
  EXPECT_EQ(store_.version(), version);

  MoveWrite forced = Move(7, 1);
  forced.force = true;
  ASSERT_THAT(path_.Run(forced), IsOk());
  EXPECT_EQ(LastKind(), "AssignTeam+force");
  CancelHandoff(2);

  clock_.Advance(absl::Hours(1));
  EXPECT_THAT(path_.Run(Move(7, 2)), IsOk());
  EXPECT_EQ(store_.calls(FakeStore::kLoadMoveTimes), 4);
}

TEST_F(WritePathTest, StoreFailureIsReturnedAndNothingIsPublished) {
  store_.FailNext(FakeStore::kWrite, absl::UnavailableError("postgres down"));
  EXPECT_THAT(path_.Run(Move(7, 2)), StatusIs(absl::StatusCode::kUnavailable, "postgres down"));
  EXPECT_EQ(published_, 0);
  EXPECT_EQ(manager_.Current()->version(), 1);
  EXPECT_EQ(store_.version(), 1);
  EXPECT_THAT(store_.ChangeLog(), IsEmpty());

  ASSERT_THAT(path_.Run(Move(7, 2)), IsOk());
  EXPECT_EQ(published_, 1);
  EXPECT_EQ(manager_.Current()->version(), 2);
}

TEST_F(WritePathTest, RequestIdReplayReturnsTheStoredResponse) {
  MoveWrite w = Move(7, 2);
  w.context.request_id = "r1";
  w.context.fingerprint = "fp";
  absl::StatusOr<WriteOutcome> first = path_.Run(w);
  ASSERT_THAT(first, IsOk());
  EXPECT_FALSE(first->replayed);

  clock_.Advance(absl::Minutes(5));
  absl::StatusOr<WriteOutcome> again = path_.Run(w);
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(again->replayed);
  EXPECT_EQ(again->response, first->response);
  EXPECT_EQ(store_.version(), 2);
  EXPECT_EQ(published_, 1);

  w.context.fingerprint = "another body";
  EXPECT_THAT(path_.Run(w), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("r1")));
}

}  // namespace
}  // namespace unit_test
}  // namespace bucketmap
