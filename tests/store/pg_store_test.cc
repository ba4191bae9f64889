// PgStore against a real PostgreSQL: write semantics (SPEC §3), gapless
// versions, restart, outage and recovery, bulk writes, history, pruning.
#include "server/store/pg_store.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bucketmap/v1/types.pb.h"
#include "tests/store/store_test_util.h"

namespace bucketmap {
namespace store_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

class PgStoreTest : public PgStoreFixture {};

TEST_F(PgStoreTest, FreshDatabaseIsAtVersionZeroWithClusterId) {
  auto version = store_->CurrentVersion();
  ASSERT_THAT(version, IsOk());
  EXPECT_EQ(*version, 0);
  auto snapshot = store_->LoadSnapshot();
  ASSERT_THAT(snapshot, IsOk());
  EXPECT_EQ((*snapshot)->version(), 0);
  EXPECT_THAT((*snapshot)->cluster_id(), SizeIs(36));  // a UUID
  EXPECT_TRUE((*snapshot)->buckets().empty());
  EXPECT_EQ((*snapshot)->assignment_count(), 0u);
}

TEST_F(PgStoreTest, EachWriteIsOneVersionWithItsChangeLogRow) {
  const absl::Time before = absl::Now();
  WriteResult created = MustWrite(Ctx("CreateBucket", "req-1", "fp-1"), CreateBucketPlan("alpha"));
  EXPECT_EQ(created.version, 1);
  EXPECT_FALSE(created.replayed);
  EXPECT_EQ(created.response, "bucket 1");
  ASSERT_NE(created.snapshot, nullptr);
  EXPECT_EQ(created.snapshot->version(), 1);
  EXPECT_TRUE(created.effect.changed);

  WriteResult pinned = MustWrite(Ctx("AssignTeam"), PinPlan(42, 1), created.snapshot);
  EXPECT_EQ(pinned.version, 2);
  EXPECT_EQ(*store_->CurrentVersion(), 2);

  EXPECT_EQ(pg_->Psql("SELECT version, kind, actor, reason, coalesce(request_id, '-') "
                      "FROM change_log ORDER BY version")
                .value_or(""),
            "1|CreateBucket|test-actor|integration test|req-1\n"
            "2|AssignTeam|test-actor|integration test|-");
  EXPECT_EQ(QueryInt("SELECT count(*) FROM change_log "
                     "WHERE created_at > now() - interval '5 minutes'"),
            2);

  auto history = store_->GetHistory(HistoryQuery{});
  ASSERT_THAT(history, IsOk());
  ASSERT_THAT(history->records, SizeIs(2));
  const v1::ChangeRecord& first = history->records[0];
  EXPECT_EQ(first.version(), 1);
  EXPECT_EQ(first.kind(), "CreateBucket");
  EXPECT_EQ(first.actor(), "test-actor");
  EXPECT_EQ(first.reason(), "integration test");
  EXPECT_EQ(first.request_id(), "req-1");
  EXPECT_THAT(first.bucket_ids(), ElementsAre(1));
  const absl::Time created_at = absl::FromUnixSeconds(first.create_time().seconds()) +
                                absl::Nanoseconds(first.create_time().nanos());
  EXPECT_GE(created_at, before - absl::Seconds(5));
  EXPECT_LE(created_at, absl::Now() + absl::Seconds(5));
  EXPECT_EQ(history->records[1].assignments_changed(), 1);
  EXPECT_EQ(history->next_from_version, 0);
}

TEST_F(PgStoreTest, LoadSnapshotReturnsWhatWasWritten) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("beta", "paid"));
  MustWrite(Ctx("BulkAssign"),
            AssignPlan({{7, Target::Pin(1)}, {3, Target::Pool("paid")}, {9, Target::Pin(2)}}));
  auto snapshot = store_->LoadSnapshot();
  ASSERT_THAT(snapshot, IsOk());
  const Snapshot& s = **snapshot;
  EXPECT_EQ(s.version(), 3);
  EXPECT_EQ(s.next_bucket_id(), 3);
  ASSERT_THAT(s.buckets(), SizeIs(2));
  Bucket expected = NewBucket("beta", "paid");
  expected.id = 2;
  expected.created_version = 2;
  expected.updated_version = 2;
  EXPECT_EQ(s.buckets()[1], expected);
  EXPECT_THAT(s.team_ids(), ElementsAre(3, 7, 9));
  EXPECT_EQ(s.FindAssignment(3), Target::Pool("paid"));
  EXPECT_EQ(s.FindAssignment(7), Target::Pin(1));
  EXPECT_EQ(s.FindAssignment(9), Target::Pin(2));
}

TEST_F(PgStoreTest, ExpectedVersionMismatchIsAbortedAndWritesNothing) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  WriteContext ctx = Ctx("AssignTeam", "req-cas", "fp");
  ctx.expected_version = 5;
  bool planned = false;
  auto result = store_->Write(ctx, nullptr, [&](const Snapshot& s) {
    planned = true;
    return PinPlan(1, 1)(s);
  });
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kAborted,
                               HasSubstr("expected_version 5 does not match current version 1")));
  EXPECT_FALSE(planned);
  EXPECT_EQ(*store_->CurrentVersion(), 1);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM change_log"), 1);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM request_ids"), 0);

  ctx.expected_version = 1;
  auto ok = store_->Write(ctx, nullptr, PinPlan(1, 1));
  ASSERT_THAT(ok, IsOk());
  EXPECT_EQ(ok->version, 2);
}

TEST_F(PgStoreTest, RequestIdReplayReturnsFirstResponseAndWritesNothing) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  WriteResult first = MustWrite(Ctx("AssignTeam", "req-1", "body-a"), PinPlan(5, 1));
  ASSERT_EQ(first.version, 2);

  // A later write moves the version on; the replay still answers with the
  // first version and does not plan.
  MustWrite(Ctx("AssignTeam"), PinPlan(6, 1));
  bool planned = false;
  WriteContext replay_ctx = Ctx("AssignTeam", "req-1", "body-a");
  replay_ctx.expected_version = 1;  // stale, but a replay is answered first
  auto replay = store_->Write(replay_ctx, nullptr, [&](const Snapshot& s) {
    planned = true;
    return PinPlan(5, 1)(s);
  });
  ASSERT_THAT(replay, IsOk());
  EXPECT_TRUE(replay->replayed);
  EXPECT_EQ(replay->version, 2);
  EXPECT_EQ(replay->response, first.response);
  EXPECT_EQ(replay->snapshot, nullptr);
  EXPECT_FALSE(planned);
  EXPECT_EQ(*store_->CurrentVersion(), 3);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM change_log"), 3);

  auto reuse = store_->Write(Ctx("AssignTeam", "req-1", "body-b"), nullptr, PinPlan(5, 1));
  EXPECT_THAT(reuse, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("request_id")));
  EXPECT_EQ(*store_->CurrentVersion(), 3);
}

TEST_F(PgStoreTest, FailedAttemptsAreNotRemembered) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  // The planner refuses a duplicate name: the request id stays unused.
  auto failed =
      store_->Write(Ctx("CreateBucket", "req-x", "fp-dup"), nullptr, CreateBucketPlan("alpha"));
  EXPECT_THAT(failed, StatusIs(absl::StatusCode::kAlreadyExists, ::testing::_));
  EXPECT_EQ(QueryInt("SELECT count(*) FROM request_ids"), 0);

  // A plan error is returned unchanged.
  auto custom = store_->Write(Ctx("AssignTeam", "req-x", "fp-err"), nullptr,
                              [](const Snapshot&) -> absl::StatusOr<PlannedWrite> {
                                return absl::FailedPreconditionError("pool \"free\" is paused");
                              });
  EXPECT_THAT(custom, StatusIs(absl::StatusCode::kFailedPrecondition, "pool \"free\" is paused"));

  WriteResult ok = MustWrite(Ctx("CreateBucket", "req-x", "fp-new"), CreateBucketPlan("beta"));
  EXPECT_FALSE(ok.replayed);
  EXPECT_EQ(ok.version, 2);
  EXPECT_EQ(*store_->CurrentVersion(), 2);
}

TEST_F(PgStoreTest, NoOpWriteCreatesNoVersionButRemembersRequestId) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  MustWrite(Ctx("AssignTeam"), PinPlan(11, 1));
  WriteResult noop = MustWrite(Ctx("AssignTeam", "req-noop", "fp"), PinPlan(11, 1));
  EXPECT_FALSE(noop.effect.changed);
  EXPECT_EQ(noop.version, 2);
  ASSERT_NE(noop.snapshot, nullptr);
  EXPECT_EQ(noop.snapshot->version(), 2);
  EXPECT_EQ(*store_->CurrentVersion(), 2);
  EXPECT_EQ(QueryInt("SELECT max(version) FROM change_log"), 2);

  auto replay = store_->Write(Ctx("AssignTeam", "req-noop", "fp"), nullptr, PinPlan(11, 1));
  ASSERT_THAT(replay, IsOk());
  EXPECT_TRUE(replay->replayed);
  EXPECT_EQ(replay->version, 2);
}

TEST_F(PgStoreTest, PlansAgainstCachedSnapshotOnlyWhenCurrent) {
  WriteResult v1 = MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  WriteResult v2 = MustWrite(Ctx("CreateBucket"), CreateBucketPlan("beta"), v1.snapshot);

  const Snapshot* seen = nullptr;
  int64_t seen_version = -1;
  auto spy = [&](const Snapshot& s) -> absl::StatusOr<PlannedWrite> {
    seen = &s;
    seen_version = s.version();
    return PinPlan(1, 2)(s);
  };
  // Stale cache (version 1): reloaded inside the transaction.
  WriteResult v3 = MustWrite(Ctx("AssignTeam"), spy, v1.snapshot);
  EXPECT_EQ(seen_version, 2);
  EXPECT_NE(seen, v1.snapshot.get());
  EXPECT_EQ(v3.version, 3);
  // Current cache: used as is.
  MustWrite(Ctx("AssignTeam"), spy, v3.snapshot);
  EXPECT_EQ(seen, v3.snapshot.get());
  (void)v2;
}

TEST_F(PgStoreTest, ConcurrentWritersGetGaplessVersionsInCommitOrder) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  constexpr int kThreads = 8;
  constexpr int kWritesPerThread = 25;
  absl::Mutex mu;
  std::vector<int64_t> versions;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::shared_ptr<const Snapshot> cached;
      for (int i = 0; i < kWritesPerThread; ++i) {
        const int64_t team = 1000 * (t + 1) + i;
        auto result = store_->Write(Ctx("AssignTeam", absl::StrCat("req-", team), "fp"), cached,
                                    PinPlan(team, 1));
        if (!result.ok()) {
          ADD_FAILURE() << result.status();
          ++failures;
          continue;
        }
        cached = result->snapshot;
        absl::MutexLock lock(&mu);
        versions.push_back(result->version);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  ASSERT_EQ(failures.load(), 0);
  std::sort(versions.begin(), versions.end());
  const int64_t last = 1 + kThreads * kWritesPerThread;
  ASSERT_THAT(versions, SizeIs(kThreads * kWritesPerThread));
  for (size_t i = 0; i < versions.size(); ++i) EXPECT_EQ(versions[i], static_cast<int64_t>(i) + 2);
  EXPECT_EQ(*store_->CurrentVersion(), last);
  EXPECT_EQ(QueryInt("SELECT count(DISTINCT version) FROM change_log"), last);
  EXPECT_EQ(QueryInt("SELECT min(version) FROM change_log"), 1);
  EXPECT_EQ(QueryInt("SELECT max(version) FROM change_log"), last);
  auto snapshot = store_->LoadSnapshot();
  ASSERT_THAT(snapshot, IsOk());
  EXPECT_EQ((*snapshot)->assignment_count(), static_cast<size_t>(kThreads * kWritesPerThread));
}

TEST_F(PgStoreTest, RestartKeepsDataVersionAndClusterId) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  MustWrite(Ctx("AssignTeam", "req-keep", "fp"), PinPlan(77, 1));
  auto before = store_->LoadSnapshot();
  ASSERT_THAT(before, IsOk());
  store_.reset();

  ASSERT_THAT(pg_->Restart(), IsOk());
  auto reopened = PgStore::Open(Options());
  ASSERT_THAT(reopened, IsOk());
  store_ = *std::move(reopened);
  auto after = store_->LoadSnapshot();
  ASSERT_THAT(after, IsOk());
  EXPECT_EQ((*after)->version(), 2);
  EXPECT_EQ((*after)->cluster_id(), (*before)->cluster_id());
  EXPECT_EQ((*after)->buckets(), (*before)->buckets());
  EXPECT_EQ((*after)->team_ids(), (*before)->team_ids());
  EXPECT_EQ((*after)->targets(), (*before)->targets());

  // Request ids survive too, and versions continue without a gap.
  auto replay = store_->Write(Ctx("AssignTeam", "req-keep", "fp"), nullptr, PinPlan(77, 1));
  ASSERT_THAT(replay, IsOk());
  EXPECT_TRUE(replay->replayed);
  EXPECT_EQ(MustWrite(Ctx("AssignTeam"), PinPlan(78, 1)).version, 3);
}

TEST_F(PgStoreTest, PostgresDownIsUnavailableWithinDeadlineThenRecovers) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  ASSERT_THAT(pg_->Stop(), IsOk());

  absl::Time start = absl::Now();
  WriteContext ctx = Ctx("AssignTeam", "req-down", "fp");
  ctx.deadline = absl::Now() + absl::Seconds(3);
  auto write = store_->Write(ctx, nullptr, PinPlan(1, 1));
  EXPECT_THAT(write, StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));

  start = absl::Now();
  EXPECT_THAT(store_->LoadSnapshot(), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT(store_->CurrentVersion(), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT(store_->GetHistory(HistoryQuery{}),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));

  ASSERT_THAT(pg_->StartAgain(), IsOk());
  // The same store object recovers: the failed write was not remembered.
  auto recovered = store_->Write(Ctx("AssignTeam", "req-down", "fp"), nullptr, PinPlan(1, 1));
  ASSERT_THAT(recovered, IsOk());
  EXPECT_FALSE(recovered->replayed);
  EXPECT_EQ(recovered->version, 2);
  auto snapshot = store_->LoadSnapshot();
  ASSERT_THAT(snapshot, IsOk());
  EXPECT_EQ((*snapshot)->version(), 2);
}

TEST_F(PgStoreTest, PoolConnectionsSurviveRestartWithoutFailedCalls) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  ASSERT_THAT(store_->LoadSnapshot(), IsOk());  // leaves idle pooled connections
  ASSERT_THAT(pg_->Restart(), IsOk());
  // Stale pooled connections are detected and replaced, not reported.
  EXPECT_THAT(store_->CurrentVersion(), IsOk());
  EXPECT_THAT(store_->Write(Ctx("AssignTeam"), nullptr, PinPlan(1, 1)), IsOk());
}

TEST_F(PgStoreTest, DeadlineAlreadyPassedIsUnavailable) {
  WriteContext ctx = Ctx("CreateBucket");
  ctx.deadline = absl::Now() - absl::Seconds(1);
  EXPECT_THAT(store_->Write(ctx, nullptr, CreateBucketPlan("alpha")),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("deadline")));
}

TEST_F(PgStoreTest, WriteBlockedOnVersionLockTimesOutAsUnavailable) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  // Another session holds the version row lock for longer than the deadline.
  std::thread holder([&] {
    auto out = pg_->Psql("BEGIN; SELECT 1 FROM bm_meta FOR UPDATE; SELECT pg_sleep(3); COMMIT;");
    EXPECT_TRUE(out.ok()) << out.status();
  });
  absl::SleepFor(absl::Milliseconds(500));
  WriteContext ctx = Ctx("AssignTeam");
  ctx.deadline = absl::Now() + absl::Milliseconds(500);
  const absl::Time start = absl::Now();
  EXPECT_THAT(store_->Write(ctx, nullptr, PinPlan(1, 1)),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  holder.join();
  EXPECT_EQ(MustWrite(Ctx("AssignTeam"), PinPlan(1, 1)).version, 2);
}

// A store whose TEST_before_commit hook sleeps past the write's deadline
// while `late` is set: the write has done all its statements and holds the
// version row, and only the deadline check and COMMIT remain.
class LateCommitTest : public PgStoreFixture {
 protected:
  void SetUp() override {
    PgStoreFixture::SetUp();
    if (HasFatalFailure()) return;
    PgStoreOptions options = Options();
    options.TEST_before_commit = [this](const WriteContext&, absl::Time deadline) {
      if (!late_.load()) return;
      hook_calls_.fetch_add(1);
      absl::SleepFor(deadline - absl::Now() + absl::Milliseconds(1));
    };
    auto store = PgStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    late_store_ = *std::move(store);
  }

  // Nothing of a rolled-back write: no version, change-log row, assignment
  // or request id.
  void ExpectNothingWritten(int64_t version, int64_t log_rows) {
    EXPECT_EQ(*store_->CurrentVersion(), version);
    EXPECT_EQ(QueryInt("SELECT count(*) FROM change_log"), log_rows);
    EXPECT_EQ(QueryInt("SELECT count(*) FROM request_ids"), 0);
    EXPECT_EQ(QueryInt("SELECT count(*) FROM assignments WHERE team_id = 5"), 0);
  }

  std::atomic<bool> late_{true};
  std::atomic<int> hook_calls_{0};
  std::unique_ptr<PgStore> late_store_;
};

TEST_F(LateCommitTest, WriteWhoseDeadlinePassesBeforeCommitIsRolledBack) {
  late_ = false;
  ASSERT_EQ(late_store_->Write(Ctx("CreateBucket"), nullptr, CreateBucketPlan("alpha"))->version,
            1);
  late_ = true;
  WriteContext ctx = Ctx("AssignTeam", "req-late", "fp-late");
  ctx.deadline = absl::Now() + absl::Milliseconds(300);
  auto result = late_store_->Write(ctx, nullptr, PinPlan(5, 1));
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kUnavailable,
                               HasSubstr("deadline passed before COMMIT; rolled back")));
  EXPECT_EQ(hook_calls_.load(), 1);
  ExpectNothingWritten(1, 1);

  // The caller's retry with the same request_id performs the write, once.
  late_ = false;
  auto retried =
      late_store_->Write(Ctx("AssignTeam", "req-late", "fp-late"), nullptr, PinPlan(5, 1));
  ASSERT_THAT(retried, IsOk());
  EXPECT_FALSE(retried->replayed);
  EXPECT_EQ(retried->version, 2);
  auto replayed =
      late_store_->Write(Ctx("AssignTeam", "req-late", "fp-late"), nullptr, PinPlan(5, 1));
  ASSERT_THAT(replayed, IsOk());
  EXPECT_TRUE(replayed->replayed);
  EXPECT_EQ(replayed->version, 2);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM change_log WHERE request_id = 'req-late'"), 1);
}

TEST_F(LateCommitTest, NoOpWhoseDeadlinePassesBeforeCommitDoesNotRememberItsRequestId) {
  late_ = false;
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  MustWrite(Ctx("AssignTeam"), PinPlan(11, 1));
  late_ = true;
  WriteContext ctx = Ctx("AssignTeam", "req-noop-late", "fp");
  ctx.deadline = absl::Now() + absl::Milliseconds(300);
  EXPECT_THAT(late_store_->Write(ctx, nullptr, PinPlan(11, 1)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("deadline passed before COMMIT")));
  EXPECT_EQ(hook_calls_.load(), 1);
  ExpectNothingWritten(2, 2);
}

// `plan` as WriteGroup takes it.
ReadingPlanFn Reading(PlanFn plan) {
  return [plan = std::move(plan)](const Snapshot& s, WriteReads&) { return plan(s); };
}

// The group of contexts[i] with plans[i].
std::vector<GroupedWrite> Group(const std::vector<WriteContext>& contexts,
                                const std::vector<ReadingPlanFn>& plans) {
  std::vector<GroupedWrite> writes;
  for (size_t i = 0; i < contexts.size(); ++i) writes.push_back({&contexts[i], &plans[i]});
  return writes;
}

// How many transactions wrote the change-log rows after version 1.
constexpr char kTransactionsAfterV1[] =
    "SELECT count(DISTINCT xmin::text) FROM change_log WHERE version > 1";

// The writes of a group (Store::WriteGroup) as PgStore runs them: in one
// transaction, each planned on what the ones before it left, with its own
// version or its own error, and nothing written for a failed one.
TEST_F(PgStoreTest, WriteGroupCommitsEachWriteAtItsOwnVersionInOneTransaction) {
  const std::shared_ptr<const Snapshot> v1 =
      MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha")).snapshot;
  const PlanFn failing = [](const Snapshot&) -> absl::StatusOr<PlannedWrite> {
    return absl::FailedPreconditionError("bucket 1 is draining");
  };
  WriteContext stale = Ctx("AssignTeam");
  stale.expected_version = 1;  // the version before the group, not at its turn
  WriteContext in_turn = Ctx("AssignTeam");
  in_turn.expected_version = 3;
  const std::vector<WriteContext> contexts = {
      Ctx("AssignTeam", "g-1", "fp-1"),      // version 2
      Ctx("AssignTeam"),                     // version 3
      Ctx("AssignTeam", "g-noop", "fp"),     // no-op at 3
      Ctx("AssignTeam"),                     // its plan's error
      stale,                                 // Aborted
      Ctx("AssignTeam", "g-1", "fp-1"),      // replay of version 2
      Ctx("AssignTeam", "g-1", "fp-other"),  // InvalidArgument
      in_turn,                               // version 4
  };
  const std::vector<ReadingPlanFn> plans = {Reading(PinPlan(10, 1)), Reading(PinPlan(11, 1)),
                                            Reading(PinPlan(10, 1)), Reading(failing),
                                            Reading(PinPlan(13, 1)), Reading(PinPlan(10, 1)),
                                            Reading(PinPlan(14, 1)), Reading(PinPlan(12, 1))};

  std::vector<absl::StatusOr<WriteResult>> results = store_->WriteGroup(Group(contexts, plans), v1);
  ASSERT_THAT(results, SizeIs(contexts.size()));
  for (int i : {0, 1, 2, 5, 7}) ASSERT_THAT(results[i], IsOk()) << "write " << i;
  EXPECT_EQ(results[0]->version, 2);
  EXPECT_EQ(results[1]->version, 3);
  EXPECT_EQ(results[2]->version, 3);
  EXPECT_FALSE(results[2]->effect.changed);
  EXPECT_THAT(results[3], StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("draining")));
  EXPECT_THAT(results[4], StatusIs(absl::StatusCode::kAborted, HasSubstr("expected_version 1")));
  EXPECT_TRUE(results[5]->replayed);
  EXPECT_EQ(results[5]->version, 2);
  EXPECT_EQ(results[5]->response, "assign 1");
  EXPECT_THAT(results[6], StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("request_id")));
  EXPECT_EQ(results[7]->version, 4);
  // Each changed write has the snapshot after it and its encoded delta.
  for (int i : {0, 1, 7}) {
    ASSERT_NE(results[i]->snapshot, nullptr);
    EXPECT_EQ(results[i]->snapshot->version(), results[i]->version);
    EXPECT_NE(results[i]->encoded_delta, nullptr);
  }

  // One transaction wrote versions 2 to 4, with a change-log row each.
  EXPECT_EQ(*store_->CurrentVersion(), 4);
  EXPECT_EQ(pg_->Psql("SELECT version, request_id IS NOT NULL FROM change_log WHERE version > 1"
                      " ORDER BY version")
                .value_or(""),
            "2|t\n3|f\n4|f");
  EXPECT_EQ(QueryInt(kTransactionsAfterV1), 1);
  EXPECT_EQ(
      pg_->Psql("SELECT request_id, version FROM request_ids ORDER BY request_id").value_or(""),
      "g-1|2\ng-noop|3");
  auto loaded = store_->LoadSnapshot();
  ASSERT_THAT(loaded, IsOk());
  EXPECT_EQ((*loaded)->assignment_count(), 3u);  // teams 10, 11 and 12; not 13 or 14
}

// A write of a group whose deadline passes before COMMIT rolls the group
// back; the others are then run again, each alone, and commit.
TEST_F(PgStoreTest, WriteGroupWithALateWriteIsRunAgainWriteByWrite) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  PgStoreOptions options = Options();
  std::atomic<int> late_calls{0};
  options.TEST_before_commit = [&](const WriteContext& ctx, absl::Time deadline) {
    if (ctx.request_id != "req-late") return;
    late_calls.fetch_add(1);
    absl::SleepFor(deadline - absl::Now() + absl::Milliseconds(1));
  };
  auto store = PgStore::Open(options);
  ASSERT_THAT(store, IsOk());
  WriteContext late = Ctx("AssignTeam", "req-late", "fp");
  late.deadline = absl::Now() + absl::Milliseconds(300);
  const std::vector<WriteContext> contexts = {Ctx("AssignTeam", "a", "fp"), late,
                                              Ctx("AssignTeam", "b", "fp")};
  const std::vector<ReadingPlanFn> plans = {Reading(PinPlan(20, 1)), Reading(PinPlan(5, 1)),
                                            Reading(PinPlan(21, 1))};

  std::vector<absl::StatusOr<WriteResult>> results =
      (*store)->WriteGroup(Group(contexts, plans), nullptr);
  ASSERT_THAT(results, SizeIs(3));
  ASSERT_THAT(results[0], IsOk());
  EXPECT_EQ(results[0]->version, 2);
  EXPECT_THAT(results[1], StatusIs(absl::StatusCode::kUnavailable, HasSubstr("deadline passed")));
  ASSERT_THAT(results[2], IsOk());
  EXPECT_EQ(results[2]->version, 3);
  EXPECT_EQ(late_calls.load(), 1);  // alone, its deadline had passed before it started
  // Nothing of the late write; the others in a transaction each.
  EXPECT_EQ(QueryInt("SELECT count(*) FROM assignments WHERE team_id = 5"), 0);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM request_ids WHERE request_id = 'req-late'"), 0);
  EXPECT_EQ(QueryInt(kTransactionsAfterV1), 2);
  EXPECT_EQ(*store_->CurrentVersion(), 3);
}

// A statement that fails in a group's transaction (here a CHECK violated
// by a corrupt plan) rolls the group back; each write is then run again
// alone, and only the bad one fails.
TEST_F(PgStoreTest, WriteGroupWhoseStatementFailsIsRunAgainWriteByWrite) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  const std::vector<WriteContext> contexts = {Ctx("AssignTeam"), Ctx("AssignTeam", "bad", "fp"),
                                              Ctx("AssignTeam")};
  const std::vector<ReadingPlanFn> plans = {
      Reading(PinPlan(30, 1)), Reading([](const Snapshot& s) -> absl::StatusOr<PlannedWrite> {
        ASSIGN_OR_RETURN(PlannedWrite planned, PinPlan(32, 1)(s));
        planned.plan.change.set[0].second = Target::Pin(-5);  // bucket_id >= 1 in the table
        return planned;
      }),
      Reading(PinPlan(31, 1))};

  std::vector<absl::StatusOr<WriteResult>> results =
      store_->WriteGroup(Group(contexts, plans), nullptr);
  ASSERT_THAT(results, SizeIs(3));
  ASSERT_THAT(results[0], IsOk());
  EXPECT_EQ(results[0]->version, 2);
  EXPECT_FALSE(results[1].ok());
  ASSERT_THAT(results[2], IsOk());
  EXPECT_EQ(results[2]->version, 3);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM assignments WHERE team_id IN (30, 31)"), 2);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM assignments WHERE team_id = 32"), 0);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM request_ids"), 0);
  EXPECT_EQ(QueryInt(kTransactionsAfterV1), 2);
  EXPECT_EQ(*store_->CurrentVersion(), 3);
}

// A write that stops between statements while it holds the version row (a
// frozen process: its socket stays open) is ended by PostgreSQL after
// idle_in_transaction_timeout, so other writers wait that long, not for as
// long as it is stopped.
TEST_F(PgStoreTest, WriteIdleInItsTransactionIsEndedAndReleasesTheVersionRow) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  PgStoreOptions options = Options();
  options.idle_in_transaction_timeout = absl::Milliseconds(300);
  std::atomic<bool> stall{true};
  options.TEST_before_commit = [&](const WriteContext&, absl::Time) {
    if (stall.load()) absl::SleepFor(absl::Seconds(3));
  };
  auto stalling = PgStore::Open(options);
  ASSERT_THAT(stalling, IsOk());
  absl::StatusOr<WriteResult> stalled = absl::UnknownError("not run");
  std::thread writer([&] {
    stalled = (*stalling)->Write(Ctx("AssignTeam", "req-stall", "fp"), nullptr, PinPlan(5, 1));
  });
  const std::string holding =
      "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
      " AND query LIKE 'INSERT INTO request_ids%'";
  const absl::Time wait_end = absl::Now() + absl::Seconds(10);
  while (QueryInt(holding) != 1 && absl::Now() < wait_end) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_EQ(QueryInt(holding), 1);

  const absl::Time start = absl::Now();
  EXPECT_EQ(MustWrite(Ctx("AssignTeam"), PinPlan(6, 1)).version, 2);
  const absl::Duration waited = absl::Now() - start;
  std::printf("a write waited %s behind one idle in its transaction\n",
              absl::FormatDuration(waited).c_str());
  EXPECT_LT(waited, absl::Milliseconds(2000));
  writer.join();
  EXPECT_THAT(stalled, StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_EQ(QueryInt("SELECT count(*) FROM request_ids"), 0);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM assignments WHERE team_id = 5"), 0);

  // The broken connection is replaced: the retry writes, once.
  stall = false;
  auto retried = (*stalling)->Write(Ctx("AssignTeam", "req-stall", "fp"), nullptr, PinPlan(5, 1));
  ASSERT_THAT(retried, IsOk());
  EXPECT_FALSE(retried->replayed);
  EXPECT_EQ(retried->version, 3);
}

TEST_F(PgStoreTest, BadIdleInTransactionTimeoutIsInvalidArgument) {
  PgStoreOptions options = Options();
  options.idle_in_transaction_timeout = absl::Seconds(-1);
  EXPECT_THAT(PgStore::Open(options), StatusIs(absl::StatusCode::kInvalidArgument,
                                               HasSubstr("idle_in_transaction_timeout")));
  options.idle_in_transaction_timeout = absl::Hours(24 * 25);
  EXPECT_THAT(PgStore::Open(options), StatusIs(absl::StatusCode::kInvalidArgument,
                                               HasSubstr("idle_in_transaction_timeout")));
}

TEST_F(PgStoreTest, BulkAssignOfHundredThousandTeamsIsOneVersion) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("beta", "paid"));
  constexpr int kTeams = 100000;
  std::vector<AssignmentOp> ops;
  ops.reserve(kTeams);
  for (int i = 1; i <= kTeams; ++i) {
    ops.push_back({i, i % 3 == 0 ? Target::Pool("paid") : Target::Pin(1 + i % 2)});
  }
  absl::Time start = absl::Now();
  WriteResult bulk = MustWrite(Ctx("BulkAssign"), AssignPlan(std::move(ops)));
  const absl::Duration write_time = absl::Now() - start;
  std::printf("BulkAssign of %d teams: %s\n", kTeams, absl::FormatDuration(write_time).c_str());
  EXPECT_EQ(bulk.version, 3);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM assignments"), kTeams);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM change_log_teams WHERE version = 3"), kTeams);
  EXPECT_EQ(QueryInt("SELECT assignments_changed FROM change_log WHERE version = 3"), kTeams);
  // Generous bound: the suite shares two cores with other tests.
  EXPECT_LT(write_time, absl::Seconds(5));

  start = absl::Now();
  auto loaded = store_->LoadSnapshot();
  std::printf("LoadSnapshot of %d teams: %s\n", kTeams,
              absl::FormatDuration(absl::Now() - start).c_str());
  ASSERT_THAT(loaded, IsOk());
  EXPECT_EQ((*loaded)->team_ids(), bulk.snapshot->team_ids());
  EXPECT_EQ((*loaded)->targets(), bulk.snapshot->targets());
  EXPECT_EQ((*loaded)->pools(), bulk.snapshot->pools());

  // A large mixed write: move half of them and unassign the other half.
  std::vector<AssignmentOp> mixed;
  for (int i = 1; i <= kTeams; ++i) {
    if (i % 2 == 0) {
      mixed.push_back({i, std::nullopt});
    } else {
      mixed.push_back({i, Target::Pool("paid")});
    }
  }
  WriteResult second = MustWrite(Ctx("BulkAssign"), AssignPlan(std::move(mixed)), bulk.snapshot);
  EXPECT_EQ(second.version, 4);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM assignments"), kTeams / 2);
  int64_t moved_to_paid = 0;  // odd teams not already in "paid"
  for (int i = 1; i <= kTeams; i += 2) moved_to_paid += i % 3 == 0 ? 0 : 1;
  EXPECT_EQ(QueryInt("SELECT count(*) FROM assignments WHERE pool = 'paid' AND version = 4 "
                     "AND bucket_id IS NULL"),
            moved_to_paid);
  loaded = store_->LoadSnapshot();
  ASSERT_THAT(loaded, IsOk());
  EXPECT_EQ((*loaded)->team_ids(), second.snapshot->team_ids());
  EXPECT_EQ((*loaded)->targets(), second.snapshot->targets());

  // History by team sees both bulk versions of team 2 (pinned, then unset).
  HistoryQuery by_team;
  by_team.team_id = 2;
  by_team.include_delta = true;
  auto history = store_->GetHistory(by_team);
  ASSERT_THAT(history, IsOk());
  ASSERT_THAT(history->records, SizeIs(2));
  EXPECT_EQ(history->records[0].version(), 3);
  EXPECT_EQ(history->records[1].version(), 4);
  EXPECT_EQ(history->records[1].delta().to_version(), 4);
  EXPECT_EQ(history->records[1].delta().unset_team_ids_size(), kTeams / 2);
}

TEST_F(PgStoreTest, GetHistoryPagesByRangeAndByTeam) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("beta"));
  // Versions 3..25: team 5 moves at every fourth version.
  for (int v = 3; v <= 25; ++v) {
    const int64_t team = v % 4 == 0 ? 5 : 100 + v;
    // Team 5 alternates buckets so that none of its writes is a no-op.
    const int32_t bucket = team == 5 ? 1 + (v / 4) % 2 : 1 + v % 2;
    MustWrite(Ctx("AssignTeam", absl::StrCat("h-", v), "fp"), PinPlan(team, bucket));
  }

  HistoryQuery query;
  query.page_size = 10;
  std::vector<int64_t> seen;
  for (int page = 0; page < 5; ++page) {
    auto result = store_->GetHistory(query);
    ASSERT_THAT(result, IsOk());
    for (const auto& r : result->records) seen.push_back(r.version());
    EXPECT_FALSE(result->records.empty());
    EXPECT_FALSE(result->records[0].has_delta());
    if (result->next_from_version == 0) break;
    query.from_version = result->next_from_version;
  }
  std::vector<int64_t> all(25);
  for (int i = 0; i < 25; ++i) all[i] = i + 1;
  EXPECT_EQ(seen, all);

  HistoryQuery range;
  range.from_version = 4;
  range.to_version = 6;
  auto ranged = store_->GetHistory(range);
  ASSERT_THAT(ranged, IsOk());
  ASSERT_THAT(ranged->records, SizeIs(3));
  EXPECT_EQ(ranged->records[0].version(), 4);
  EXPECT_EQ(ranged->records[2].version(), 6);
  EXPECT_EQ(ranged->next_from_version, 0);

  HistoryQuery team;
  team.team_id = 5;
  team.page_size = 2;
  team.include_delta = true;
  auto first = store_->GetHistory(team);
  ASSERT_THAT(first, IsOk());
  ASSERT_THAT(first->records, SizeIs(2));
  EXPECT_EQ(first->records[0].version(), 4);
  EXPECT_EQ(first->records[1].version(), 8);
  EXPECT_EQ(first->next_from_version, 12);
  ASSERT_TRUE(first->records[0].has_delta());
  EXPECT_EQ(first->records[0].delta().to_version(), 4);
  EXPECT_EQ(first->records[0].delta().from_version(), 3);
  EXPECT_THAT(first->records[0].delta().set().team_ids(), ElementsAre(5));
  team.from_version = first->next_from_version;
  team.page_size = 100;
  auto rest = store_->GetHistory(team);
  ASSERT_THAT(rest, IsOk());
  std::vector<int64_t> versions;
  for (const auto& r : rest->records) versions.push_back(r.version());
  EXPECT_THAT(versions, ElementsAre(12, 16, 20, 24));
  EXPECT_EQ(rest->next_from_version, 0);

  // Page sizes beyond the maximum are clamped.
  HistoryQuery huge;
  huge.page_size = 1 << 30;
  auto clamped = store_->GetHistory(huge);
  ASSERT_THAT(clamped, IsOk());
  EXPECT_THAT(clamped->records, SizeIs(25));
}

TEST_F(PgStoreTest, PruneDeletesOldHistoryAndRequestIds) {
  MustWrite(Ctx("CreateBucket", "p-1", "fp"), CreateBucketPlan("alpha"));
  MustWrite(Ctx("AssignTeam", "p-2", "fp"), PinPlan(9, 1));
  // Only rows published to Kafka may go (see tests/outbox).
  ASSERT_THAT(store_->MarkPublished(2), IsOk());

  // Nothing is old enough with the default retentions.
  auto none = store_->Prune(absl::Now(), absl::Hours(24 * 90), absl::Hours(24));
  ASSERT_THAT(none, IsOk());
  EXPECT_EQ(*none, 0);

  // An hour later, with 30-minute retentions, everything goes.
  auto pruned = store_->Prune(absl::Now() + absl::Hours(1), absl::Minutes(30), absl::Minutes(30));
  ASSERT_THAT(pruned, IsOk());
  EXPECT_EQ(*pruned, 4);  // 2 change-log rows + 2 request ids
  EXPECT_EQ(QueryInt("SELECT count(*) FROM change_log"), 0);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM change_log_teams"), 0);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM request_ids"), 0);
  auto history = store_->GetHistory(HistoryQuery{});
  ASSERT_THAT(history, IsOk());
  EXPECT_TRUE(history->records.empty());

  // The mapping and its version are untouched; a forgotten request id is a
  // new request.
  EXPECT_EQ(*store_->CurrentVersion(), 2);
  auto again = store_->Write(Ctx("AssignTeam", "p-2", "fp"), nullptr, PinPlan(10, 1));
  ASSERT_THAT(again, IsOk());
  EXPECT_FALSE(again->replayed);
  EXPECT_EQ(again->version, 3);
}

TEST_F(PgStoreTest, RequestIdsAndHistoryHaveSeparateRetention) {
  MustWrite(Ctx("CreateBucket", "r-1", "fp"), CreateBucketPlan("alpha"));
  ASSERT_THAT(store_->MarkPublished(1), IsOk());
  auto pruned = store_->Prune(absl::Now() + absl::Hours(2), absl::Hours(24 * 90), absl::Hours(1));
  ASSERT_THAT(pruned, IsOk());
  EXPECT_EQ(*pruned, 1);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM change_log"), 1);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM request_ids"), 0);
}

TEST_F(PgStoreTest, PoolObjectsAndTeamRulesArePersistedWithTheirVersions) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha", "free"));
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("beta", "free"));
  MustWrite(Ctx("AssignTeam"), PinPlan(42, 1));
  auto plan_of = [](std::function<absl::StatusOr<Plan>(const Snapshot&)> f) -> PlanFn {
    return [f](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
      ASSIGN_OR_RETURN(Plan plan, f(before));
      return PlannedWrite{std::move(plan), "ok"};
    };
  };
  PoolUpdate pause;
  pause.name = "free";
  pause.state = BucketState::kPaused;
  pause.priority = 50;
  pause.reason = "things went bad";
  pause.actor = "alice";
  const WriteResult paused = MustWrite(
      Ctx("UpdatePool"), plan_of([&](const Snapshot& s) { return PlanUpdatePool(s, pause); }));
  EXPECT_EQ(paused.version, 4);
  const absl::Time now = absl::FromUnixMicros(absl::ToUnixMicros(absl::Now()));
  TeamRule drop;
  drop.team_id = 42;
  drop.kind = RuleKind::kDrop;
  drop.expire_time = now + absl::Hours(1);
  drop.reason = "spam";
  drop.actor = "bob";
  MustWrite(Ctx("SetTeamRule"),
            plan_of([&](const Snapshot& s) { return PlanSetTeamRule(s, drop, now); }));
  TeamRule skip;
  skip.team_id = 7;
  skip.kind = RuleKind::kSkipPersonProcessing;
  MustWrite(Ctx("SetTeamRule"),
            plan_of([&](const Snapshot& s) { return PlanSetTeamRule(s, skip, now); }));

  auto loaded = store_->LoadSnapshot();
  ASSERT_THAT(loaded, IsOk());
  const Snapshot& s = **loaded;
  EXPECT_EQ(s.version(), 6);
  ASSERT_THAT(s.pool_objects(), SizeIs(1));
  EXPECT_EQ(s.pool_objects()[0], paused.snapshot->pool_objects()[0]);
  EXPECT_TRUE(s.PoolPaused("free"));
  EXPECT_EQ(s.PoolOf("free").priority, 50);
  EXPECT_THAT(s.PoolOf("free").paused_bucket_ids, ElementsAre(1, 2));
  EXPECT_EQ(s.FindBucket(1)->state, BucketState::kPaused);
  EXPECT_EQ(s.FindBucket(2)->state, BucketState::kPaused);
  ASSERT_THAT(s.team_rules(), SizeIs(2));
  const TeamRule* stored = s.FindRule(42, RuleKind::kDrop);
  ASSERT_NE(stored, nullptr);
  EXPECT_EQ(stored->expire_time, drop.expire_time);
  EXPECT_EQ(stored->create_time, now);
  EXPECT_EQ(stored->version, 5);
  EXPECT_EQ(stored->actor, "bob");
  EXPECT_EQ(stored->reason, "spam");
  EXPECT_FALSE(s.FindRule(7, RuleKind::kSkipPersonProcessing)->expires());

  // Cleared rules are deleted; the deltas and the team's history keep them.
  MustWrite(Ctx("ClearTeamRule"),
            plan_of([](const Snapshot& s) { return PlanClearTeamRules(s, 42, std::nullopt); }));
  auto reloaded = store_->LoadSnapshot();
  ASSERT_THAT(reloaded, IsOk());
  EXPECT_FALSE((*reloaded)->HasRules(42));
  EXPECT_TRUE((*reloaded)->HasRules(7));
  EXPECT_EQ(QueryInt("SELECT count(*) FROM team_rules"), 1);
  auto deltas = store_->LoadDeltas(3, 7);
  ASSERT_THAT(deltas, IsOk());
  ASSERT_THAT(*deltas, SizeIs(4));
  EXPECT_THAT((*deltas)[0].pool_objects(), SizeIs(1));
  EXPECT_THAT((*deltas)[0].buckets(), SizeIs(2));
  EXPECT_THAT((*deltas)[1].team_rules(), SizeIs(1));
  ASSERT_THAT((*deltas)[3].cleared_team_rules(), SizeIs(1));
  EXPECT_EQ((*deltas)[3].cleared_team_rules(0).team_id(), 42);
  HistoryQuery history;
  history.team_id = 42;
  auto page = store_->GetHistory(history);
  ASSERT_THAT(page, IsOk());
  std::vector<int64_t> versions;
  for (const auto& r : page->records) versions.push_back(r.version());
  EXPECT_THAT(versions, ElementsAre(3, 5, 7));
}

}  // namespace
}  // namespace store_test
}  // namespace bucketmap
