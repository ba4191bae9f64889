// LagExporter (server/signals/lag_exporter.h) over a FakeStore, a
// FakeOffsetReader and a FakeClock, round by round (RunRound) on the test
// thread: the lag arithmetic (committed, never committed, below the low
// watermark), the age of the oldest unconsumed message, failures as
// lag_up 0 with the lag series absent, the partition budget's rotation,
// and Stop() removing every series. No Kafka, no sleeping.
#include "server/signals/lag_exporter.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "server/signals/load_signals.h"
#include "server/state/mapping_manager.h"
#include "tests/support/fake_clock.h"
#include "tests/support/fake_offsets.h"
#include "tests/support/fake_store.h"
#include "tests/unit/unit_test_util.h"

namespace bucketmap {
namespace unit_test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::shared_ptr<const Snapshot> TwoBuckets() {
  MappingState state;
  state.version = 1;
  state.cluster_id = "c";
  Bucket a;
  a.id = 1;
  a.name = "a";
  a.topics = {{"ingestion", "in_a"}, {"clickhouse", "ch_a"}};
  a.consumer_groups = {{"ingestion", "g_in_a"}};  // clickhouse: no group, no lag
  Bucket b;
  b.id = 2;
  b.name = "b";
  b.topics = {{"ingestion", "in_b"}};
  b.consumer_groups = {{"ingestion", "g_in_b"}};
  Bucket retired;
  retired.id = 3;
  retired.name = "old";
  retired.state = BucketState::kRetired;
  retired.topics = {{"ingestion", "in_old"}};
  retired.consumer_groups = {{"ingestion", "g_old"}};
  state.buckets = {a, b, retired};
  state.next_bucket_id = 4;
  auto built = Snapshot::Build(state);
  EXPECT_TRUE(built.ok()) << built.status();
  return *built;
}

class LagExporterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = std::make_unique<FakeStore>(TwoBuckets(), &clock_);
    manager_ = std::make_unique<MappingManager>(store_.get());
    ASSERT_THAT(manager_->Init(), IsOk());
    offsets_ = owned_offsets_.get();
    offsets_->SetTopic("in_a", {10, 5, 8});
    offsets_->SetLowWatermarks("in_a", {2, 0, 4});
    // Partition 0 committed at 6; 1 never committed: from its low
    // watermark, 0; 2 committed at 1, below its low watermark 4 (retention
    // deleted the rest): from 4.
    offsets_->SetCommitted("g_in_a", "in_a", {6, -1, 1});
    offsets_->SetMessageTimestamp("in_a", 0, 6, Ms(-30));
    offsets_->SetMessageTimestamp("in_a", 1, 0, Ms(-90));
    offsets_->SetMessageTimestamp("in_a", 2, 4, Ms(-10));
    offsets_->SetTopic("in_b", {4});
    offsets_->SetCommitted("g_in_b", "in_b", {4});  // all consumed
    MakeExporter(LagOptions());
  }

  void MakeExporter(LagOptions options) {
    exporter_ = std::make_unique<LagExporter>(manager_.get(), store_.get(), owned_offsets_,
                                              &metrics_, options, &clock_);
  }

  // Milliseconds since the epoch, `seconds` from now.
  int64_t Ms(double seconds) { return absl::ToUnixMillis(clock_.Now() + absl::Seconds(seconds)); }

  std::string Exposition() {
    return prometheus::TextSerializer().Serialize(metrics_.registry().Collect());
  }

  FakeClock clock_;
  Metrics metrics_;
  std::unique_ptr<FakeStore> store_;
  std::unique_ptr<MappingManager> manager_;
  std::shared_ptr<FakeOffsetReader> owned_offsets_ = std::make_shared<FakeOffsetReader>();
  FakeOffsetReader* offsets_ = nullptr;
  std::unique_ptr<LagExporter> exporter_;
};

TEST_F(LagExporterTest, ReadsTheRemainderAndTheAgeOfTheOldestUnconsumedMessage) {
  std::vector<LagReading> readings = exporter_->RunRound();
  ASSERT_EQ(readings.size(), 2u);  // a/ingestion, b/ingestion; not the RETIRED one
  const LagReading& a = readings[0];
  EXPECT_EQ(a.bucket_id, 1);
  EXPECT_EQ(a.role, "ingestion");
  EXPECT_EQ(a.consumer_group, "g_in_a");
  EXPECT_TRUE(a.up) << a.error;
  EXPECT_EQ(a.messages, (10 - 6) + (5 - 0) + (8 - 4));
  EXPECT_DOUBLE_EQ(a.seconds, 90);
  const LagReading& b = readings[1];
  EXPECT_TRUE(b.up);
  EXPECT_EQ(b.messages, 0);
  EXPECT_EQ(b.seconds, 0);  // 0 only when nothing is unconsumed

  const std::string text = Exposition();
  EXPECT_THAT(text, HasSubstr("bucketmap_bucket_lag_messages{bucket=\"a\",bucket_id=\"1\","
                              "group=\"g_in_a\",role=\"ingestion\"} 13"));
  EXPECT_THAT(text, HasSubstr("bucketmap_bucket_lag_seconds{bucket=\"a\",bucket_id=\"1\","
                              "group=\"g_in_a\",role=\"ingestion\"} 90"));
  EXPECT_THAT(text, HasSubstr("bucketmap_bucket_lag_up{bucket=\"b\",bucket_id=\"2\","
                              "group=\"g_in_b\",role=\"ingestion\"} 1"));
  EXPECT_THAT(text, Not(HasSubstr("g_old")));

  // Saved for every replica's GetLoad.
  absl::StatusOr<std::vector<LagReading>> saved = store_->LoadLagReadings();
  ASSERT_THAT(saved.status(), IsOk());
  ASSERT_EQ(saved->size(), 2u);
  EXPECT_EQ((*saved)[0].messages, 13);
  EXPECT_EQ((*saved)[0].read_at, clock_.Now());
}

TEST_F(LagExporterTest, FollowersShowAReadingOlderThanThreeIntervalsAsUnknown) {
  exporter_->RunRound();
  SignalsOptions options;
  options.cache_ttl = absl::ZeroDuration();
  options.lag_interval = absl::Seconds(10);
  SignalsReader reader(store_.get(), options, &clock_);
  absl::StatusOr<std::shared_ptr<const std::vector<LagReading>>> lag = reader.Lag();
  ASSERT_THAT(lag.status(), IsOk());
  EXPECT_TRUE((**lag)[0].up);
  // The leader stopped reading (gone, or cut off).
  clock_.Advance(absl::Seconds(31));
  lag = reader.Lag();
  ASSERT_THAT(lag.status(), IsOk());
  EXPECT_FALSE((**lag)[0].up);
  EXPECT_THAT((**lag)[0].error, HasSubstr("stale"));
}

TEST_F(LagExporterTest, AFailedReadIsUnknownNeverZero) {
  ASSERT_TRUE(exporter_->RunRound()[0].up);
  offsets_->FailNext(FakeOffsetReader::kCommittedOffsets,
                     absl::UnavailableError("coordinator not available"));
  std::vector<LagReading> readings = exporter_->RunRound();
  EXPECT_FALSE(readings[0].up);
  EXPECT_THAT(readings[0].error, HasSubstr("coordinator not available"));
  EXPECT_TRUE(readings[1].up);
  const std::string text = Exposition();
  EXPECT_THAT(text, HasSubstr("bucketmap_bucket_lag_up{bucket=\"a\",bucket_id=\"1\","
                              "group=\"g_in_a\",role=\"ingestion\"} 0"));
  EXPECT_THAT(text, Not(HasSubstr("bucketmap_bucket_lag_messages{bucket=\"a\"")));
  EXPECT_THAT(text, Not(HasSubstr("bucketmap_bucket_lag_seconds{bucket=\"a\"")));
  EXPECT_THAT(text, HasSubstr("bucketmap_bucket_lag_messages{bucket=\"b\""));

  // A message whose timestamp cannot be read is a failed read too.
  offsets_->SetCommitted("g_in_a", "in_a", {7, -1, 1});  // no timestamp known at 7
  EXPECT_FALSE(exporter_->RunRound()[0].up);

  offsets_->SetCommitted("g_in_a", "in_a", {6, -1, 1});

  // The whole cluster down: every group unknown, no lag series at all.
  offsets_->FailNext(absl::UnavailableError("all brokers down"), 1);
  readings = exporter_->RunRound();
  for (const LagReading& r : readings) {
    EXPECT_FALSE(r.up);
    EXPECT_THAT(r.error, HasSubstr("all brokers down"));
  }
  EXPECT_THAT(Exposition(), Not(HasSubstr("bucketmap_bucket_lag_messages{")));
}

TEST_F(LagExporterTest, AMissingTopicIsUnknown) {
  offsets_->RemoveTopic("in_b");
  std::vector<LagReading> readings = exporter_->RunRound();
  EXPECT_FALSE(readings[1].up);
  EXPECT_THAT(readings[1].error, HasSubstr("topic in_b not found"));
}

TEST_F(LagExporterTest, ThePartitionBudgetReadsGroupsInTurn) {
  LagOptions options;
  options.max_partitions = 3;  // in_a alone has 3
  MakeExporter(options);
  exporter_->RunRound();  // reads a (the first group is read whatever its size)
  EXPECT_EQ(offsets_->calls(FakeOffsetReader::kWatermarks), 1);
  std::vector<LagReading> readings = exporter_->RunRound();  // reads b; a is kept
  EXPECT_EQ(offsets_->calls(FakeOffsetReader::kWatermarks), 2);
  EXPECT_TRUE(readings[0].up);
  EXPECT_TRUE(readings[1].up);
  // A kept reading older than 3 intervals is no longer shown as known.
  clock_.Advance(absl::Seconds(31));
  readings = exporter_->RunRound();  // reads a again; b's reading is stale
  EXPECT_TRUE(readings[0].up);
  EXPECT_FALSE(readings[1].up);
  EXPECT_THAT(readings[1].error, HasSubstr("not read"));
}

TEST_F(LagExporterTest, StopRemovesEverySeries) {
  exporter_->RunRound();
  EXPECT_THAT(Exposition(), HasSubstr("bucketmap_bucket_lag_up{"));
  exporter_->Start();
  exporter_->Stop();
  EXPECT_THAT(Exposition(), Not(HasSubstr("bucketmap_bucket_lag_up{")));
  EXPECT_THAT(Exposition(), Not(HasSubstr("bucketmap_bucket_lag_messages{")));
}

TEST_F(LagExporterTest, WithoutKafkaEveryGroupIsUnknown) {
  exporter_ = std::make_unique<LagExporter>(manager_.get(), store_.get(), nullptr, &metrics_,
                                            LagOptions(), &clock_);
  for (const LagReading& r : exporter_->RunRound()) {
    EXPECT_FALSE(r.up);
    EXPECT_THAT(r.error, HasSubstr("no Kafka cluster"));
  }
}

}  // namespace
}  // namespace unit_test
}  // namespace bucketmap
