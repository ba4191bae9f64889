// The whole server publishing change events to librdkafka's mock Kafka
// cluster (in this process), read back with a real librdkafka consumer.
#include <librdkafka/rdkafka.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bucketmap/v1/events.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "server/outbox/embedded_kafka.h"
#include "server/outbox/kafka_publisher.h"
#include "tests/server/server_fixture.h"

namespace bucketmap {
namespace {

constexpr char kTopic[] = "bucketmap_changes";

struct Record {
  int64_t offset = 0;
  std::string key;
  std::string value;
  std::map<std::string, std::string> headers;  // last value of each
};

// A consumer of partition 0 of the changes topic, from the beginning.
class Consumer {
 public:
  explicit Consumer(const std::string& bootstraps) {
    char error[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    const std::pair<const char*, std::string> settings[] = {
        {"bootstrap.servers", bootstraps},
        {"group.id", "outbox-test"},
        {"enable.auto.commit", "false"},
    };
    for (const auto& [name, value] : settings) {
      EXPECT_EQ(rd_kafka_conf_set(conf, name, value.c_str(), error, sizeof(error)),
                RD_KAFKA_CONF_OK)
          << name << ": " << error;
    }
    rk_ = rd_kafka_new(RD_KAFKA_CONSUMER, conf, error, sizeof(error));
    if (rk_ == nullptr) {
      ADD_FAILURE() << error;
      rd_kafka_conf_destroy(conf);
      return;
    }
    rd_kafka_poll_set_consumer(rk_);
    rd_kafka_topic_partition_list_t* assignment = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(assignment, kTopic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    EXPECT_EQ(rd_kafka_assign(rk_, assignment), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(assignment);
  }
  ~Consumer() {
    if (rk_ != nullptr) {
      rd_kafka_consumer_close(rk_);
      rd_kafka_destroy(rk_);
    }
  }

  // Reads until a record with version header >= `version` arrived or
  // `timeout` passed; returns everything read so far.
  const std::vector<Record>& ReadUntilVersion(int64_t version, absl::Duration timeout) {
    const absl::Time give_up = absl::Now() + timeout;
    while (max_version_ < version && absl::Now() < give_up && rk_ != nullptr) {
      rd_kafka_message_t* m = rd_kafka_consumer_poll(rk_, 100);
      if (m == nullptr) continue;
      if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        Record r;
        r.offset = m->offset;
        r.key.assign(static_cast<const char*>(m->key), m->key_len);
        r.value.assign(static_cast<const char*>(m->payload), m->len);
        rd_kafka_headers_t* headers = nullptr;
        if (rd_kafka_message_headers(m, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
          const char* name;
          const void* value;
          size_t size;
          for (size_t i = 0; rd_kafka_header_get_all(headers, i, &name, &value, &size) ==
                             RD_KAFKA_RESP_ERR_NO_ERROR;
               ++i) {
            r.headers[name].assign(static_cast<const char*>(value), size);
          }
        }
        int64_t v = 0;
        if (absl::SimpleAtoi(r.headers["bucketmap-version"], &v)) {
          max_version_ = std::max(max_version_, v);
        }
        records_.push_back(std::move(r));
      } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        // Transient while a broker is down; the consumer retries.
      }
      rd_kafka_message_destroy(m);
    }
    return records_;
  }

 private:
  rd_kafka_t* rk_ = nullptr;
  std::vector<Record> records_;
  int64_t max_version_ = 0;
};

class OutboxServerTest : public ServerFixture {
 protected:
  void SetUp() override {
    auto kafka = EmbeddedKafka::Start(1);
    ASSERT_TRUE(kafka.ok()) << kafka.status();
    kafka_ = *std::move(kafka);
    ASSERT_TRUE(kafka_->CreateTopic(kTopic, topic_partitions_).ok());
    ServerFixture::SetUp();
  }
  void TearDown() override {
    ServerFixture::TearDown();
    kafka_.reset();
  }

  ServerOptions Options() override {
    ServerOptions options = ServerFixture::Options();
    options.outbox.kafka_brokers = kafka_->bootstraps();
    options.outbox.publisher = publisher_;
    options.outbox.format = format_;
    options.outbox.poll_interval = absl::Milliseconds(200);
    options.outbox.topic_check_timeout = absl::Seconds(5);
    options.outbox.shutdown_flush_timeout = absl::Seconds(1);
    return options;
  }

  // Decodes a record's ChangeEvent in `format_`.
  v1::ChangeEvent Decode(const Record& r) {
    v1::ChangeEvent event;
    if (format_ == ChangesFormat::kJson) {
      EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(r.value, &event).ok()) << r.value;
    } else {
      EXPECT_TRUE(event.ParseFromString(r.value));
    }
    return event;
  }

  // Checks the records as a consumer would take them: drops every version
  // <= the last one seen, then expects exactly 1..n in order. Returns the
  // number of duplicates dropped.
  int ExpectVersionsOneTo(const std::vector<Record>& records, int64_t n) {
    int64_t last = 0;
    int duplicates = 0;
    for (const Record& r : records) {
      EXPECT_EQ(r.key, "mapping");
      const v1::ChangeEvent event = Decode(r);
      EXPECT_EQ(r.headers.at("bucketmap-version"), absl::StrCat(event.version()));
      EXPECT_EQ(r.headers.at("content-type"),
                format_ == ChangesFormat::kJson ? "application/json" : "application/x-protobuf");
      EXPECT_EQ(event.mapping_changed().delta().to_version(), event.version());
      EXPECT_EQ(event.cluster_id(), server_->manager().Current()->snapshot().cluster_id());
      if (event.version() <= last) {
        ++duplicates;
        continue;
      }
      EXPECT_EQ(event.version(), last + 1) << "gap after version " << last;
      last = event.version();
    }
    EXPECT_EQ(last, n);
    return duplicates;
  }

  // The outbox as the store reports it, through a second PgStore.
  OutboxStats PgStoreStats() {
    PgStoreOptions options;
    options.url = pg_->url();
    options.run_migrations = false;
    auto store = PgStore::Open(options);
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return {};
    auto stats = (*store)->GetOutboxStats();
    EXPECT_TRUE(stats.ok()) << stats.status();
    return stats.value_or(OutboxStats{});
  }

  int64_t Unpublished() {
    auto out = pg_->Psql("SELECT count(*) FROM change_log WHERE published_at IS NULL");
    int64_t n = -1;
    if (!out.ok() || !absl::SimpleAtoi(*out, &n)) return -1;
    return n;
  }

  bool WaitAllPublished(absl::Duration timeout = absl::Seconds(10)) {
    const absl::Time give_up = absl::Now() + timeout;
    while (absl::Now() < give_up) {
      if (Unpublished() == 0) return true;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return false;
  }

  double Gauge(const std::string& name) {
    for (const auto& family : server_->metrics().registry().Collect()) {
      if (family.name == name && !family.metric.empty()) {
        return family.type == prometheus::MetricType::Counter ? family.metric[0].counter.value
                                                              : family.metric[0].gauge.value;
      }
    }
    return -1;
  }

  grpc::Status Bulk(int64_t first_team, int count, int32_t bucket) {
    v1::BulkAssignRequest req;
    for (int i = 0; i < count; ++i) {
      auto* entry = req.add_assignments();
      entry->set_team_id(first_team + i);
      entry->set_bucket_id(bucket);
    }
    req.set_reason("bulk for test");
    v1::BulkAssignResponse resp;
    return admin_->BulkAssign(Ctx().get(), req, &resp);
  }

  ChangesFormat format_ = ChangesFormat::kProtobuf;
  std::unique_ptr<EmbeddedKafka> kafka_;
  int topic_partitions_ = 1;
  // When set before SetUp, the server publishes through it.
  std::shared_ptr<EventPublisher> publisher_;
};

TEST_F(OutboxServerTest, ThousandWritesArriveContiguousAndInOrder) {
  const int32_t bucket = MakeBucket("alpha");
  ASSERT_GT(bucket, 0);
  for (int i = 0; i < 989; ++i) ASSERT_TRUE(Pin(1000 + i, bucket).ok());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(Bulk(100000 + i * 50, 50, bucket).ok());
  const int64_t n = Version();
  ASSERT_EQ(n, 1000);

  Consumer consumer(server_->kafka_bootstrap());
  const std::vector<Record>& records = consumer.ReadUntilVersion(n, absl::Seconds(15));
  EXPECT_EQ(ExpectVersionsOneTo(records, n), 0);  // no crash: no duplicates
  ASSERT_FALSE(records.empty());
  EXPECT_EQ(Decode(records[0]).kind(), "CreateBucket");
  EXPECT_EQ(Decode(records.back()).kind(), "BulkAssign");
  EXPECT_EQ(Decode(records.back()).mapping_changed().delta().set().team_ids_size(), 50);

  ASSERT_TRUE(WaitAllPublished());
  EXPECT_EQ(server_->outbox_relay()->delivered_version(), n);
}

TEST_F(OutboxServerTest, BrokerDownDuringWritesLosesNothingAndLeavesNoGap) {
  const int32_t bucket = MakeBucket("alpha");
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(Pin(1000 + i, bucket).ok());
  ASSERT_TRUE(WaitAllPublished());

  ASSERT_TRUE(kafka_->SetBrokerDown(1).ok());
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(Pin(2000 + i, bucket).ok());
  const int64_t n = Version();
  ASSERT_EQ(n, 121);

  // Writes do not wait for Kafka; the backlog shows in the store and the
  // metrics.
  absl::SleepFor(absl::Milliseconds(1500));
  EXPECT_EQ(Unpublished(), 100);
  auto stats = PgStoreStats();
  EXPECT_EQ(stats.backlog, 100);
  EXPECT_EQ(stats.last_published_version, 21);
  EXPECT_GT(stats.oldest_age, absl::Seconds(1));
  EXPECT_EQ(Gauge("bucketmap_outbox_backlog"), 100);
  EXPECT_GT(Gauge("bucketmap_outbox_oldest_unpublished_age_seconds"), 0.5);
  EXPECT_EQ(Gauge("bucketmap_outbox_last_published_version"), 21);

  ASSERT_TRUE(kafka_->SetBrokerUp(1).ok());
  Consumer consumer(server_->kafka_bootstrap());
  const std::vector<Record>& records = consumer.ReadUntilVersion(n, absl::Seconds(15));
  ExpectVersionsOneTo(records, n);
  ASSERT_TRUE(WaitAllPublished());
  // The metrics catch up within a poll.
  const absl::Time give_up = absl::Now() + absl::Seconds(5);
  while (Gauge("bucketmap_outbox_backlog") != 0 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(Gauge("bucketmap_outbox_backlog"), 0);
  EXPECT_EQ(Gauge("bucketmap_outbox_last_published_version"), n);
}

// A fatal error of the idempotent producer (what librdkafka raises when
// the gapless guarantee would be broken) fails everything in flight; the
// relay resets the producer and resends from its watermark.
class OutboxServerFatalTest : public OutboxServerTest {
 protected:
  void SetUp() override {
    auto kafka = EmbeddedKafka::Start(1);
    ASSERT_TRUE(kafka.ok()) << kafka.status();
    kafka_ = *std::move(kafka);
    ASSERT_TRUE(kafka_->CreateTopic(kTopic, 1).ok());
    KafkaPublisherOptions options;
    options.brokers = kafka_->bootstraps();
    options.topic = kTopic;
    auto publisher = KafkaPublisher::Create(options);
    ASSERT_TRUE(publisher.ok()) << publisher.status();
    kafka_publisher_ = publisher->get();
    publisher_ = std::shared_ptr<EventPublisher>(*std::move(publisher));
    ServerFixture::SetUp();
  }

  KafkaPublisher* kafka_publisher_ = nullptr;
};

TEST_F(OutboxServerFatalTest, FatalProducerErrorIsRecoveredWithoutGap) {
  const int32_t bucket = MakeBucket("alpha");
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(Pin(1000 + i, bucket).ok());
    if (i == 50) ASSERT_TRUE(kafka_publisher_->TEST_RaiseFatalError().ok());
  }
  // Again with nothing in flight: the next Publish fails instead.
  ASSERT_TRUE(WaitAllPublished());
  ASSERT_TRUE(kafka_publisher_->TEST_RaiseFatalError().ok());
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(Pin(2000 + i, bucket).ok());
  const int64_t n = Version();
  Consumer consumer(kafka_->bootstraps());
  const std::vector<Record>& records = consumer.ReadUntilVersion(n, absl::Seconds(15));
  ExpectVersionsOneTo(records, n);
  ASSERT_TRUE(WaitAllPublished());
  EXPECT_GE(Gauge("bucketmap_outbox_publish_errors_total"), 2);
}

// --kafka_brokers=embedded: the server hosts the mock cluster itself.
class OutboxEmbeddedTest : public ServerFixture {
 protected:
  ServerOptions Options() override {
    ServerOptions options = ServerFixture::Options();
    options.outbox.kafka_brokers = "embedded";
    options.outbox.poll_interval = absl::Milliseconds(200);
    return options;
  }
};

TEST_F(OutboxEmbeddedTest, ServesChangesAndExportsItsBootstrap) {
  const std::string bootstrap = server_->kafka_bootstrap();
  ASSERT_FALSE(bootstrap.empty());
  bool exported = false;
  for (const auto& family : server_->metrics().registry().Collect()) {
    if (family.name != "bucketmap_embedded_kafka_info") continue;
    ASSERT_EQ(family.metric.size(), 1u);
    ASSERT_EQ(family.metric[0].label.size(), 1u);
    EXPECT_EQ(family.metric[0].label[0].name, "bootstrap");
    EXPECT_EQ(family.metric[0].label[0].value, bootstrap);
    EXPECT_EQ(family.metric[0].gauge.value, 1);
    exported = true;
  }
  EXPECT_TRUE(exported);

  const int32_t bucket = MakeBucket("alpha");
  ASSERT_TRUE(Pin(7, bucket).ok());
  Consumer consumer(bootstrap);
  const std::vector<Record>& records = consumer.ReadUntilVersion(2, absl::Seconds(10));
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1].headers.at("bucketmap-version"), "2");
}

TEST(ChangesTopicTest, ReportsPartitionsAndMissingTopics) {
  auto kafka = EmbeddedKafka::Start(1);
  ASSERT_TRUE(kafka.ok()) << kafka.status();
  ASSERT_TRUE((*kafka)->CreateTopic("three", 3).ok());
  ASSERT_TRUE((*kafka)->CreateTopic("one", 1).ok());
  auto three = EnsureChangesTopic((*kafka)->bootstraps(), "three", true, absl::Seconds(5));
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_EQ(*three, 3);
  auto one = EnsureChangesTopic((*kafka)->bootstraps(), "one", false, absl::Seconds(5));
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(*one, 1);
  auto missing = EnsureChangesTopic((*kafka)->bootstraps(), "missing", false, absl::Seconds(5));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  auto down = EnsureChangesTopic("127.0.0.1:1", "one", true, absl::Milliseconds(500));
  EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable) << down.status();
}

class OutboxServerThreePartitionTest : public OutboxServerTest {
 protected:
  void SetUp() override {
    topic_partitions_ = 3;
    OutboxServerTest::SetUp();
  }
};

TEST_F(OutboxServerThreePartitionTest, MisconfiguredTopicIsReportedAndEventsStayOnPartitionZero) {
  EXPECT_EQ(Gauge("bucketmap_changes_topic_partitions"), 3);
  const int32_t bucket = MakeBucket("alpha");
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Pin(10 + i, bucket).ok());
  Consumer consumer(kafka_->bootstraps());  // partition 0 only
  ExpectVersionsOneTo(consumer.ReadUntilVersion(6, absl::Seconds(10)), 6);
}

TEST_F(OutboxServerTest, StopWithBrokerDownIsBoundedAndARestartPublishesTheRest) {
  const int32_t bucket = MakeBucket("alpha");
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(Pin(1000 + i, bucket).ok());
  ASSERT_TRUE(WaitAllPublished());
  ASSERT_TRUE(kafka_->SetBrokerDown(1).ok());
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(Pin(2000 + i, bucket).ok());
  const int64_t n = Version();
  ASSERT_EQ(n, 41);

  const absl::Time stop_start = absl::Now();
  StopServer();
  EXPECT_LT(absl::Now() - stop_start, absl::Seconds(8));
  EXPECT_EQ(Unpublished(), 30);

  ASSERT_TRUE(kafka_->SetBrokerUp(1).ok());
  StartServer();
  Consumer consumer(kafka_->bootstraps());
  ExpectVersionsOneTo(consumer.ReadUntilVersion(n, absl::Seconds(15)), n);
  ASSERT_TRUE(WaitAllPublished());
}

class OutboxServerJsonTest : public OutboxServerTest {
 protected:
  void SetUp() override {
    format_ = ChangesFormat::kJson;
    OutboxServerTest::SetUp();
  }
};

TEST_F(OutboxServerJsonTest, JsonEventsDecode) {
  const int32_t bucket = MakeBucket("alpha");
  ASSERT_TRUE(Pin(42, bucket).ok());
  ASSERT_TRUE(Bulk(500, 3, bucket).ok());
  Consumer consumer(server_->kafka_bootstrap());
  const std::vector<Record>& records = consumer.ReadUntilVersion(3, absl::Seconds(10));
  ExpectVersionsOneTo(records, 3);
  ASSERT_EQ(records.size(), 3u);
  const v1::ChangeEvent created = Decode(records[0]);
  EXPECT_EQ(created.kind(), "CreateBucket");
  EXPECT_EQ(created.actor(), "test-admin");
  EXPECT_THAT(created.mapping_changed().changed_bucket_ids(), ::testing::ElementsAre(bucket));
  EXPECT_EQ(created.mapping_changed().delta().buckets(0).name(), "alpha");
  const v1::ChangeEvent pinned = Decode(records[1]);
  EXPECT_EQ(pinned.kind(), "AssignTeam");
  EXPECT_EQ(pinned.reason(), "pin for test");
  EXPECT_THAT(pinned.mapping_changed().delta().set().team_ids(), ::testing::ElementsAre(42));
  EXPECT_GT(pinned.commit_time().seconds(), 0);
  EXPECT_THAT(Decode(records[2]).mapping_changed().delta().set().team_ids(),
              ::testing::ElementsAre(500, 501, 502));
}

}  // namespace
}  // namespace bucketmap
