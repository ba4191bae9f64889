// OutboxRelay (server/outbox/outbox_relay.h) over a FakeStore and a
// FakePublisher: version order, marking only what was delivered, resending
// from the watermark after a failed delivery, store failures, and the
// leader-epoch fence on MarkPublished. The relay runs its own thread; the
// test waits on the fakes' state with a bounded poll (milliseconds).
// No PostgreSQL, no Kafka.
#include <memory>
#include <string>
#include <vector>

#include "bucketmap/v1/events.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/outbox/outbox_relay.h"
#include "tests/support/fake_publisher.h"
#include "tests/support/fake_store.h"
#include "tests/unit/unit_test_util.h"

namespace bucketmap {
namespace unit_test {
namespace {

using ::testing::ElementsAre;

class OutboxRelayUnitTest : public ::testing::Test {
 protected:
  OutboxRelayOptions Options() {
    OutboxRelayOptions options;
    options.cluster_id = "unit-cluster";
    options.poll_interval = absl::Milliseconds(5);
    options.retry_delay = absl::Milliseconds(5);
    options.mark_batch = 1;  // mark every delivery at once
    return options;
  }

  void StartRelay(OutboxRelayOptions options) {
    relay_ = std::make_unique<OutboxRelay>(&store_, &publisher_, nullptr, options);
    relay_->Start();
  }

  // Versions 1..n: a bucket, then pins to it.
  void WriteVersions(int n) {
    for (int i = store_.version(); i < n; ++i) {
      PlanFn plan = i == 0 ? CreateBucketPlan("a") : PinPlan(100 + i, 1);
      ASSERT_THAT(store_.Write(Ctx(i == 0 ? "CreateBucket" : "AssignTeam"), nullptr, plan), IsOk());
    }
  }

  std::vector<int64_t> PublishedVersions() {
    std::vector<int64_t> out;
    for (const FakePublisher::Record& r : publisher_.records()) out.push_back(r.version);
    return out;
  }

  bool WaitMarked(int64_t version) {
    return WaitUntil([&] { return relay_->marked_version() >= version; });
  }

  FakeStore store_;
  FakePublisher publisher_;
  std::unique_ptr<OutboxRelay> relay_;  // declared last: stopped first
};

TEST_F(OutboxRelayUnitTest, PublishesInVersionOrderAndMarksOnlyWhatWasDelivered) {
  WriteVersions(5);
  publisher_.set_delivery(FakePublisher::Delivery::kHold);
  StartRelay(Options());
  ASSERT_TRUE(publisher_.AwaitPublished(5, absl::Seconds(10)));
  EXPECT_THAT(PublishedVersions(), ElementsAre(1, 2, 3, 4, 5));
  EXPECT_EQ(relay_->marked_version(), 0);
  EXPECT_EQ(store_.calls(FakeStore::kMarkPublished), 0);
  EXPECT_EQ(store_.GetOutboxStats()->backlog, 5);

  publisher_.Deliver(2);
  ASSERT_TRUE(WaitMarked(2));
  OutboxStats stats = *store_.GetOutboxStats();
  EXPECT_EQ(stats.last_published_version, 2);
  EXPECT_EQ(stats.backlog, 3);

  publisher_.set_delivery(FakePublisher::Delivery::kImmediate);
  ASSERT_TRUE(WaitMarked(5));
  WriteVersions(6);
  relay_->Notify();
  ASSERT_TRUE(WaitMarked(6));
  relay_->Stop();
  EXPECT_EQ(store_.GetOutboxStats()->backlog, 0);

  const std::vector<FakePublisher::Record> records = publisher_.records();
  ASSERT_EQ(records.size(), 6u);
  for (size_t i = 0; i < records.size(); ++i) {
    v1::ChangeEvent event;
    ASSERT_TRUE(event.ParseFromString(records[i].value));
    EXPECT_EQ(event.version(), static_cast<int64_t>(i + 1));
    EXPECT_EQ(event.cluster_id(), "unit-cluster");
    EXPECT_EQ(event.kind(), i == 0 ? "CreateBucket" : "AssignTeam");
    ASSERT_FALSE(records[i].headers.empty());
    EXPECT_EQ(records[i].headers[0].name, kVersionHeader);
    EXPECT_EQ(records[i].headers[0].value, absl::StrCat(i + 1));
  }
}

TEST_F(OutboxRelayUnitTest, ResendsFromTheWatermarkAfterAFailedDelivery) {
  WriteVersions(5);
  publisher_.FailDelivery(3, absl::UnavailableError("fatal producer error"));
  StartRelay(Options());
  ASSERT_TRUE(WaitMarked(5));
  relay_->Stop();
  // 3's report stopped the batch (the publisher delivers nothing after a
  // failure); after Reset() the relay resent from the watermark (2).
  EXPECT_THAT(PublishedVersions(), ElementsAre(1, 2, 3, 3, 4, 5));
  EXPECT_THAT(publisher_.delivered(), ElementsAre(1, 2, 3, 4, 5));
  EXPECT_THAT(publisher_.failed(), ElementsAre(3));
  EXPECT_EQ(publisher_.calls(FakePublisher::kReset), 1);
  EXPECT_EQ(store_.GetOutboxStats()->last_published_version, 5);
}

TEST_F(OutboxRelayUnitTest, StoreFailuresAreRetried) {
  WriteVersions(3);
  store_.FailNext(FakeStore::kGetOutboxStats, absl::UnavailableError("postgres down"));
  store_.FailNext(FakeStore::kLoadUnpublished, absl::UnavailableError("postgres down"), 2);
  store_.FailNext(FakeStore::kMarkPublished, absl::UnavailableError("postgres down"));
  StartRelay(Options());
  ASSERT_TRUE(WaitMarked(3));
  relay_->Stop();
  EXPECT_THAT(publisher_.delivered(), ElementsAre(1, 2, 3));
  EXPECT_EQ(store_.GetOutboxStats()->backlog, 0);
  EXPECT_GE(store_.calls(FakeStore::kLoadUnpublished), 3);
}

TEST_F(OutboxRelayUnitTest, StaleLeaderEpochStopsItsMarks) {
  store_.SetLeaderEpoch(2);
  OutboxRelayOptions options = Options();
  options.leader_epoch = 2;
  WriteVersions(2);
  StartRelay(options);
  ASSERT_TRUE(WaitMarked(2));

  store_.SetLeaderEpoch(3);  // another replica leads now
  const int64_t marks = store_.calls(FakeStore::kMarkPublished);
  WriteVersions(3);
  relay_->Notify();
  ASSERT_TRUE(publisher_.AwaitDelivered(3, absl::Seconds(10)));
  ASSERT_TRUE(WaitUntil([&] { return store_.calls(FakeStore::kMarkPublished) > marks; }));
  relay_->Stop();
  // Delivered (a duplicate for the new leader's relay to drop), but never
  // marked by this one.
  EXPECT_EQ(relay_->marked_version(), 2);
  OutboxStats stats = *store_.GetOutboxStats();
  EXPECT_EQ(stats.last_published_version, 2);
  EXPECT_EQ(stats.backlog, 1);
}

}  // namespace
}  // namespace unit_test
}  // namespace bucketmap
