// PartitionHold against librdkafka's in-process mock cluster: a held event
// pauses its partition, nothing after it is processed or stored, and once
// the handoff ends the partition resumes from the held offset, in order,
// without losing or repeating an event. Also TrackDelivery() with a real
// producer's delivery reports.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bucketmap/client.h"
#include "bucketmap/delivery_tracker.h"
#include "bucketmap/kafka_hold.h"
#include "client_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bucketmap {
namespace {

using ::bucketmap::client_testing::DeltaProto;
using ::bucketmap::client_testing::IsOk;
using ::bucketmap::client_testing::MakeBucket;
using ::bucketmap::client_testing::SnapshotProto;
using ::testing::ElementsAre;

constexpr char kTopic[] = "hold_test";

rd_kafka_conf_t* Conf(const std::vector<std::pair<std::string, std::string>>& settings) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char error[512];
  for (const auto& [name, value] : settings) {
    EXPECT_EQ(rd_kafka_conf_set(conf, name.c_str(), value.c_str(), error, sizeof(error)),
              RD_KAFKA_CONF_OK)
        << name << ": " << error;
  }
  return conf;
}

v1::Handoff MoveOf7(v1::HandoffPhase phase) {
  v1::Handoff h;
  h.set_id(1);
  h.set_opened_version(2);
  h.set_source_bucket_id(1);
  h.add_target_bucket_ids(2);
  h.add_team_ids(7);
  h.add_to_bucket_ids(2);
  h.set_state(phase);
  h.set_ordered(true);
  return h;
}

class KafkaHoldTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char error[512];
    // A producer hosts the mock cluster; everything else connects to it.
    host_ = rd_kafka_new(RD_KAFKA_PRODUCER, Conf({}), error, sizeof(error));
    ASSERT_NE(host_, nullptr) << error;
    mock_ = rd_kafka_mock_cluster_new(host_, 1);
    ASSERT_NE(mock_, nullptr);
    ASSERT_EQ(rd_kafka_mock_topic_create(mock_, kTopic, 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    bootstrap_ = rd_kafka_mock_cluster_bootstraps(mock_);

    MappingState state;
    state.version = 1;
    state.cluster_id = "cluster-a";
    state.buckets = {MakeBucket(1), MakeBucket(2)};
    state.assignments = {{7, Target::Pin(1)}, {9, Target::Pin(2)}};
    ASSERT_THAT(client_.ApplySnapshot(SnapshotProto(state)), IsOk());
  }

  void TearDown() override {
    if (mock_ != nullptr) rd_kafka_mock_cluster_destroy(mock_);
    if (host_ != nullptr) rd_kafka_destroy(host_);
  }

  // Produces "team:n" events keyed by team, stamped with `version`.
  void Produce(const std::vector<std::pair<int64_t, int64_t>>& events, int64_t version,
               DeliveryTracker* tracker = nullptr) {
    rd_kafka_conf_t* conf = Conf({{"bootstrap.servers", bootstrap_}, {"linger.ms", "0"}});
    if (tracker != nullptr) {
      rd_kafka_conf_set_dr_msg_cb(conf, [](rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
        TrackDelivery(static_cast<DeliveryTracker*>(opaque), m);
      });
      rd_kafka_conf_set_opaque(conf, tracker);
    }
    char error[512];
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof(error));
    ASSERT_NE(rk, nullptr) << error;
    const std::string stamp = absl::StrCat(version);
    for (const auto& [team, n] : events) {
      const std::string key = absl::StrCat(team);
      const std::string value = absl::StrCat(team, ":", n);
      void* opaque = nullptr;
      if (tracker != nullptr) opaque = tracker->Route(team).ticket.ToOpaque();
      ASSERT_EQ(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(kTopic), RD_KAFKA_V_PARTITION(0),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                  RD_KAFKA_V_KEY(key.data(), key.size()),
                                  RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                                  RD_KAFKA_V_HEADER(kVersionHeader, stamp.data(), stamp.size()),
                                  RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END),
                RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    ASSERT_EQ(rd_kafka_flush(rk, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(rk);
  }

  rd_kafka_t* host_ = nullptr;
  rd_kafka_mock_cluster_t* mock_ = nullptr;
  std::string bootstrap_;
  Client client_{ClientOptions{}};
};

TEST_F(KafkaHoldTest, HoldsAtTheFirstHeldOffsetAndResumesFromItInOrder) {
  // Team 7 moves from bucket 1 to bucket 2 at version 2; this consumer
  // serves bucket 2, the target.
  Change pin;
  pin.set = {{7, Target::Pin(2)}};
  v1::MappingDelta opened = DeltaProto(pin, 1);
  *opened.add_handoffs() = MoveOf7(v1::HANDOFF_SWITCHING);
  ASSERT_THAT(client_.ApplyDeltas({opened}), IsOk());
  // Offsets 0..4: team 9, team 7 (held), then teams 9 and 7 again.
  Produce({{9, 0}, {7, 0}, {9, 1}, {7, 1}, {9, 2}}, 2);

  char error[512];
  rd_kafka_t* consumer = rd_kafka_new(
      RD_KAFKA_CONSUMER,
      Conf({{"bootstrap.servers", bootstrap_},
            {"group.id", "hold-test"},
            {"auto.offset.reset", "earliest"},
            {"enable.auto.offset.store", "false"},
            {"enable.auto.commit", "false"}}),
      error, sizeof(error));
  ASSERT_NE(consumer, nullptr) << error;
  rd_kafka_poll_set_consumer(consumer);
  rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(topics, kTopic, RD_KAFKA_PARTITION_UA);
  ASSERT_EQ(rd_kafka_subscribe(consumer, topics), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_destroy(topics);

  std::vector<int64_t> processed;  // offsets, in processing order
  {
    PartitionHold hold(consumer, &client_);
    // Polls until `done()` (or 20 s), then `extra` longer.
    auto poll_until = [&](const std::function<bool()>& done, absl::Duration extra) {
      absl::Time until = absl::Now() + absl::Seconds(20);
      bool reached = false;
      while (absl::Now() < until) {
        if (!reached && done()) {
          reached = true;
          until = absl::Now() + extra;
        }
        hold.ResumeReady();
        rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer, 50);
        if (m == nullptr) continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
          const std::string value(static_cast<const char*>(m->payload), m->len);
          const int64_t team = value[0] - '0';
          if (hold.Admit(m, team, 2) == PartitionHold::Admission::kProcess) {
            processed.push_back(m->offset);
          }
        }
        rd_kafka_message_destroy(m);
      }
    };
    // Joins the group and reads what it may; then a while longer, to see
    // that nothing after the held offset is processed.
    poll_until([&] { return hold.held() == 1; }, absl::Milliseconds(500));
    EXPECT_THAT(processed, ElementsAre(0));
    EXPECT_EQ(hold.held(), 1u);
    EXPECT_EQ(hold.stats().holds, 1);

    // The handoff completes: the partition resumes from offset 1.
    v1::MappingDelta done = DeltaProto(Change{}, 2);
    *done.add_handoffs() = MoveOf7(v1::HANDOFF_COMPLETED);
    ASSERT_THAT(client_.ApplyDeltas({done}), IsOk());
    poll_until([&] { return processed.size() >= 5; }, absl::Milliseconds(300));
    EXPECT_THAT(processed, ElementsAre(0, 1, 2, 3, 4));
    EXPECT_EQ(hold.held(), 0u);
    EXPECT_EQ(hold.stats().resumes, 1);
  }
  rd_kafka_consumer_close(consumer);
  rd_kafka_destroy(consumer);
}

TEST_F(KafkaHoldTest, DeliveryReportsDrainTheTracker) {
  DeliveryTracker tracker(&client_);
  Produce({{9, 0}, {9, 1}, {7, 0}}, 1, &tracker);
  // Every ticket came back through the delivery reports.
  EXPECT_EQ(tracker.in_flight(), 0);
  EXPECT_EQ(tracker.DrainedVersion(client_.version()), client_.version());
}

}  // namespace
}  // namespace bucketmap
