// example-consumer end to end: the built binary consumes its bucket's topic
// from librdkafka's mock Kafka cluster, watching a real server (in-process,
// on a throwaway PostgreSQL); pausing the bucket's pool stops it, resuming
// the pool lets it consume what arrived meanwhile.
#include <librdkafka/rdkafka.h>
#include <signal.h>

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/examples/example_support.h"
#include "tests/server/server_fixture.h"

namespace bucketmap {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Produces `count` messages to `topic` and waits for their delivery.
void Produce(const std::string& bootstraps, const std::string& topic, int count) {
  char error[256];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  ASSERT_EQ(rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps.c_str(), error, sizeof(error)),
            RD_KAFKA_CONF_OK)
      << error;
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof(error));
  ASSERT_NE(rk, nullptr) << error;
  for (int i = 0; i < count; ++i) {
    const std::string value = absl::StrCat("event ", i);
    ASSERT_EQ(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic.c_str()),
                                RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
              RD_KAFKA_RESP_ERR_NO_ERROR);
  }
  EXPECT_EQ(rd_kafka_flush(rk, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_destroy(rk);
}

// Waits until `consumer`'s output contains `text`.
bool OutputShows(const ExampleProcess& consumer, const std::string& text,
                 absl::Duration timeout = absl::Seconds(30)) {
  const absl::Time give_up = absl::Now() + timeout;
  while (!absl::StrContains(consumer.Out(), text)) {
    if (absl::Now() >= give_up) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

class ExampleConsumerTest : public ServerFixture {
 protected:
  int64_t SetPool(const std::string& pool, v1::BucketState state) {
    v1::UpdatePoolRequest req;
    req.set_name(pool);
    req.set_state(state);
    req.set_reason("consumer test");
    v1::UpdatePoolResponse resp;
    grpc::Status s = admin_->UpdatePool(Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.version();
  }
};

TEST_F(ExampleConsumerTest, StopsWhileItsBucketIsPausedAndConsumesTheBacklogOnResume) {
  const int32_t bucket = MakeBucket("f1", "free");  // topic events_f1
  MockKafka kafka;
  ASSERT_TRUE(kafka.ok());
  ASSERT_EQ(kafka.CreateTopic("events_f1", 2), RD_KAFKA_RESP_ERR_NO_ERROR);

  ExampleProcess consumer(
      BUCKETMAP_EXAMPLE_CONSUMER,
      {absl::StrCat("--servers=127.0.0.1:", server_->port()),
       "--kafka_brokers=" + kafka.bootstraps(), "--bucket=f1", "--client_id=example-consumer-test"},
      pg_->dir(), "consumer");
  ASSERT_TRUE(OutputShows(consumer, absl::StrCat("bucket ", bucket, " ACTIVE at version ")))
      << consumer.Out() << consumer.Err();
  Produce(kafka.bootstraps(), "events_f1", 5);
  ASSERT_TRUE(OutputShows(consumer, "consumed 5\n")) << consumer.Out() << consumer.Err();

  const int64_t paused_at = SetPool("free", v1::PAUSED);
  ASSERT_TRUE(
      OutputShows(consumer, absl::StrCat("bucket ", bucket, " PAUSED at version ", paused_at)))
      << consumer.Out();
  Produce(kafka.bootstraps(), "events_f1", 5);
  // The consumer polls every 100 ms and the mock broker answers at once:
  // without the pause, these would be consumed well within this time.
  absl::SleepFor(absl::Seconds(2));
  EXPECT_THAT(consumer.Out(), Not(HasSubstr("consumed 6\n")));

  const int64_t resumed_at = SetPool("free", v1::ACTIVE);
  ASSERT_TRUE(
      OutputShows(consumer, absl::StrCat("bucket ", bucket, " ACTIVE at version ", resumed_at)))
      << consumer.Out();
  ASSERT_TRUE(OutputShows(consumer, "consumed 10\n")) << consumer.Out() << consumer.Err();

  consumer.Signal(SIGTERM);
  EXPECT_EQ(consumer.Wait(absl::Seconds(30)), 0) << consumer.Err();
  // Each event once: none lost to the pause, none processed twice.
  EXPECT_THAT(consumer.Out(), HasSubstr("consumed: 10\n"));
  EXPECT_THAT(consumer.Out(), Not(HasSubstr("consumed 11\n")));
}

TEST_F(ExampleConsumerTest, FailsOnAnUnknownBucket) {
  MakeBucket("f1", "free");
  ExampleProcess consumer(BUCKETMAP_EXAMPLE_CONSUMER,
                          {absl::StrCat("--servers=127.0.0.1:", server_->port()), "--bucket=nope"},
                          pg_->dir(), "consumer");
  EXPECT_EQ(consumer.Wait(absl::Seconds(30)), 2);
  EXPECT_THAT(consumer.Err(), HasSubstr("no bucket nope"));
}

}  // namespace
}  // namespace bucketmap
