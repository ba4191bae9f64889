// PgStore as the outbox: LoadUnpublished, MarkPublished, GetOutboxStats,
// and Prune keeping unpublished rows.
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/store/store_test_util.h"

namespace bucketmap {
namespace store_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class OutboxStoreTest : public PgStoreFixture {
 protected:
  std::vector<int64_t> Versions(const std::vector<OutboxRow>& rows) {
    std::vector<int64_t> out;
    for (const OutboxRow& r : rows) out.push_back(r.version);
    return out;
  }
};

TEST_F(OutboxStoreTest, EveryVersionIsUnpublishedUntilMarked) {
  MustWrite(Ctx("CreateBucket", "req-1"), CreateBucketPlan("alpha"));
  MustWrite(Ctx("AssignTeam"), PinPlan(7, 1));
  MustWrite(Ctx("AssignTeam"), PinPlan(8, 1));

  auto stats = store_->GetOutboxStats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->backlog, 3);
  EXPECT_EQ(stats->last_published_version, 0);
  EXPECT_GT(stats->oldest_age, absl::ZeroDuration());

  auto rows = store_->LoadUnpublished(0, 10);
  ASSERT_THAT(rows, IsOk());
  ASSERT_THAT(Versions(*rows), ElementsAre(1, 2, 3));
  const OutboxRow& first = (*rows)[0];
  EXPECT_EQ(first.kind, "CreateBucket");
  EXPECT_EQ(first.actor, "test-actor");
  EXPECT_EQ(first.reason, "integration test");
  EXPECT_EQ(first.request_id, "req-1");
  EXPECT_EQ((*rows)[1].request_id, "");
  EXPECT_LT(absl::AbsDuration(absl::Now() - first.created_at), absl::Minutes(1));
  v1::MappingDelta delta;
  ASSERT_TRUE(delta.ParseFromString(first.delta));
  EXPECT_EQ(delta.to_version(), 1);
  ASSERT_EQ(delta.buckets_size(), 1);
  EXPECT_EQ(delta.buckets(0).name(), "alpha");

  auto limited = store_->LoadUnpublished(1, 1);
  ASSERT_THAT(limited, IsOk());
  EXPECT_THAT(Versions(*limited), ElementsAre(2));
  EXPECT_THAT(store_->LoadUnpublished(0, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));

  ASSERT_THAT(store_->MarkPublished(2), IsOk());
  ASSERT_THAT(store_->MarkPublished(1), IsOk());  // idempotent, never goes back
  auto after = store_->LoadUnpublished(0, 10);
  ASSERT_THAT(after, IsOk());
  EXPECT_THAT(Versions(*after), ElementsAre(3));
  stats = store_->GetOutboxStats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->backlog, 1);
  EXPECT_EQ(stats->last_published_version, 2);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM change_log WHERE published_at IS NOT NULL"), 2);

  ASSERT_THAT(store_->MarkPublished(3), IsOk());
  stats = store_->GetOutboxStats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->backlog, 0);
  EXPECT_EQ(stats->oldest_age, absl::ZeroDuration());
  EXPECT_EQ(stats->last_published_version, 3);
  auto none = store_->LoadUnpublished(0, 10);
  ASSERT_THAT(none, IsOk());
  EXPECT_THAT(*none, IsEmpty());
}

TEST_F(OutboxStoreTest, PruneNeverDeletesUnpublishedRows) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  MustWrite(Ctx("AssignTeam"), PinPlan(7, 1));
  MustWrite(Ctx("AssignTeam"), PinPlan(8, 1));
  MustWrite(Ctx("AssignTeam"), PinPlan(9, 1));
  // Everything is far older than the retention; only 1 and 2 are published.
  ASSERT_THAT(pg_->Psql("UPDATE change_log SET created_at = now() - interval '30 days'"), IsOk());
  ASSERT_THAT(store_->MarkPublished(2), IsOk());

  auto pruned = store_->Prune(absl::Now(), absl::Hours(1), absl::Hours(24));
  ASSERT_THAT(pruned, IsOk());
  EXPECT_EQ(*pruned, 2);
  EXPECT_EQ(QueryInt("SELECT min(version) FROM change_log"), 3);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM change_log"), 2);
  // The team rows of the kept versions stay; those of pruned ones go.
  EXPECT_EQ(QueryInt("SELECT count(*) FROM change_log_teams WHERE version <= 2"), 0);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM change_log_teams WHERE version >= 3"), 2);
  auto rows = store_->LoadUnpublished(0, 10);
  ASSERT_THAT(rows, IsOk());
  EXPECT_THAT(Versions(*rows), ElementsAre(3, 4));

  // Once published, they may go too.
  ASSERT_THAT(store_->MarkPublished(4), IsOk());
  pruned = store_->Prune(absl::Now(), absl::Hours(1), absl::Hours(24));
  ASSERT_THAT(pruned, IsOk());
  EXPECT_EQ(*pruned, 2);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM change_log"), 0);
}

}  // namespace
}  // namespace store_test
}  // namespace bucketmap
