// OutboxRelay against the real PgStore and a fake publisher with failure
// switches: order, the delivered watermark, resend after a failed delivery.
#include "server/outbox/outbox_relay.h"

#include <set>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "bucketmap/v1/events.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/store/store_test_util.h"

namespace bucketmap {
namespace store_test {
namespace {

// Delivers synchronously, unless told to fail a version (once) or to
// hold deliveries back.
class FakePublisher final : public EventPublisher {
 public:
  absl::Status Publish(int64_t version, std::string key, std::string value,
                       std::vector<EventHeader> headers, DeliveryCallback on_delivery) override {
    bool fail = false;
    {
      absl::MutexLock lock(&mu_);
      ++publishes_;
      if (closed_) return absl::FailedPreconditionError("closed");
      if (broken_) {
        held_.push_back(std::move(on_delivery));
        return absl::OkStatus();
      }
      fail = fail_versions_.erase(version) > 0;
      if (fail) broken_ = true;  // like the gapless guarantee: nothing after it
      if (!fail) {
        delivered_.push_back(version);
        keys_.push_back(key);
        values_.push_back(std::move(value));
        headers_.push_back(std::move(headers));
      }
    }
    on_delivery(fail ? absl::UnavailableError("injected") : absl::OkStatus());
    return absl::OkStatus();
  }
  absl::Status Flush(absl::Duration) override { return absl::OkStatus(); }
  absl::Status Reset() override {
    std::vector<DeliveryCallback> held;
    {
      absl::MutexLock lock(&mu_);
      ++resets_;
      broken_ = false;
      held.swap(held_);
    }
    for (auto& cb : held) cb(absl::AbortedError("purged"));
    return absl::OkStatus();
  }
  void Close(absl::Duration) override {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }

  void FailOnce(int64_t version) {
    absl::MutexLock lock(&mu_);
    fail_versions_.insert(version);
  }
  std::vector<int64_t> delivered() {
    absl::MutexLock lock(&mu_);
    return delivered_;
  }
  std::vector<std::string> values() {
    absl::MutexLock lock(&mu_);
    return values_;
  }
  std::vector<std::vector<EventHeader>> headers() {
    absl::MutexLock lock(&mu_);
    return headers_;
  }
  int resets() {
    absl::MutexLock lock(&mu_);
    return resets_;
  }

 private:
  absl::Mutex mu_;
  std::set<int64_t> fail_versions_;
  bool broken_ = false;
  bool closed_ = false;
  int publishes_ = 0;
  int resets_ = 0;
  std::vector<DeliveryCallback> held_;
  std::vector<int64_t> delivered_;
  std::vector<std::string> keys_;
  std::vector<std::string> values_;
  std::vector<std::vector<EventHeader>> headers_;
};

class OutboxRelayTest : public PgStoreFixture {
 protected:
  OutboxRelayOptions RelayOptions() {
    OutboxRelayOptions options;
    options.cluster_id = "cluster-x";
    options.poll_interval = absl::Milliseconds(50);
    options.batch_size = 7;  // several batches
    options.retry_delay = absl::Milliseconds(20);
    return options;
  }

  void WriteVersions(int n) {
    MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
    for (int i = 1; i < n; ++i) MustWrite(Ctx("AssignTeam"), PinPlan(100 + i, 1));
  }

  // Waits until the store shows every version up to `n` published.
  bool WaitAllMarked(int64_t n, absl::Duration timeout = absl::Seconds(10)) {
    const absl::Time give_up = absl::Now() + timeout;
    while (absl::Now() < give_up) {
      auto stats = store_->GetOutboxStats();
      if (stats.ok() && stats->backlog == 0 && stats->last_published_version == n) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }

  static std::vector<int64_t> Range(int64_t from, int64_t to) {
    std::vector<int64_t> out;
    for (int64_t v = from; v <= to; ++v) out.push_back(v);
    return out;
  }
};

TEST_F(OutboxRelayTest, PublishesEveryVersionInOrderAndMarksThem) {
  WriteVersions(40);
  FakePublisher publisher;
  OutboxRelay relay(store_.get(), &publisher, nullptr, RelayOptions());
  relay.Start();
  ASSERT_TRUE(WaitAllMarked(40));
  EXPECT_EQ(publisher.delivered(), Range(1, 40));
  EXPECT_EQ(relay.delivered_version(), 40);

  // New versions are picked up by the poll (no Notify here).
  MustWrite(Ctx("AssignTeam"), PinPlan(5000, 1));
  ASSERT_TRUE(WaitAllMarked(41));
  relay.Stop();
  EXPECT_EQ(publisher.delivered(), Range(1, 41));

  const auto values = publisher.values();
  const auto headers = publisher.headers();
  for (size_t i = 0; i < values.size(); ++i) {
    v1::ChangeEvent event;
    ASSERT_TRUE(event.ParseFromString(values[i]));
    EXPECT_EQ(event.version(), static_cast<int64_t>(i + 1));
    EXPECT_EQ(event.cluster_id(), "cluster-x");
    EXPECT_EQ(event.mapping_changed().delta().to_version(), event.version());
    ASSERT_EQ(headers[i].size(), 2u);
    EXPECT_EQ(headers[i][0].name, kVersionHeader);
    EXPECT_EQ(headers[i][0].value, absl::StrCat(i + 1));
    EXPECT_EQ(headers[i][1].value, "application/x-protobuf");
  }
  v1::ChangeEvent first;
  ASSERT_TRUE(first.ParseFromString(values[0]));
  EXPECT_EQ(first.kind(), "CreateBucket");
  EXPECT_THAT(first.mapping_changed().changed_bucket_ids(), ::testing::ElementsAre(1));
}

TEST_F(OutboxRelayTest, FailedDeliveryResendsFromTheWatermarkWithoutGap) {
  WriteVersions(30);
  FakePublisher publisher;
  publisher.FailOnce(12);
  OutboxRelay relay(store_.get(), &publisher, nullptr, RelayOptions());
  relay.Start();
  ASSERT_TRUE(WaitAllMarked(30));
  relay.Stop();
  EXPECT_EQ(publisher.delivered(), Range(1, 30));
  EXPECT_GE(publisher.resets(), 1);
}

TEST_F(OutboxRelayTest, RestartResumesAfterTheLastMarkedVersion) {
  WriteVersions(10);
  ASSERT_THAT(store_->MarkPublished(6), IsOk());
  FakePublisher publisher;
  OutboxRelay relay(store_.get(), &publisher, nullptr, RelayOptions());
  relay.Start();
  ASSERT_TRUE(WaitAllMarked(10));
  relay.Stop();
  EXPECT_EQ(publisher.delivered(), Range(7, 10));
}

TEST_F(OutboxRelayTest, JsonEncodingDecodes) {
  OutboxRow row;
  row.version = 3;
  row.kind = "AssignTeam";
  row.actor = "alice";
  row.reason = "why";
  row.request_id = "r1";
  row.created_at = absl::FromUnixMicros(1700000000123456);
  v1::MappingDelta delta;
  delta.set_from_version(2);
  delta.set_to_version(3);
  delta.add_buckets()->set_id(4);
  row.delta = delta.SerializeAsString();
  auto json = EncodeChangeEvent(row, "c1", ChangesFormat::kJson);
  ASSERT_THAT(json, IsOk());
  v1::ChangeEvent event;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(*json, &event).ok()) << *json;
  EXPECT_EQ(event.version(), 3);
  EXPECT_EQ(event.cluster_id(), "c1");
  EXPECT_EQ(event.actor(), "alice");
  EXPECT_EQ(event.request_id(), "r1");
  EXPECT_EQ(event.commit_time().seconds(), 1700000000);
  EXPECT_EQ(event.commit_time().nanos(), 123456000);
  EXPECT_EQ(event.mapping_changed().delta().to_version(), 3);
  EXPECT_THAT(event.mapping_changed().changed_bucket_ids(), ::testing::ElementsAre(4));

  row.delta = "\xff\xff not a delta";
  EXPECT_THAT(EncodeChangeEvent(row, "c1", ChangesFormat::kProtobuf),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("delta")));
  EXPECT_THAT(ParseChangesFormat("xml"),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("changes_format")));
}

}  // namespace
}  // namespace store_test
}  // namespace bucketmap
