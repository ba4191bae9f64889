// Kafka helpers of the handoff tests: produce to a topic's partitions, and
// commit a consumer group's offsets as a consumer that processed
// everything before them would. Header-only; gtest assertions on failure.
#ifndef BUCKETMAP_TESTS_HANDOFF_KAFKA_TEST_UTIL_H_
#define BUCKETMAP_TESTS_HANDOFF_KAFKA_TEST_UTIL_H_

#include <librdkafka/rdkafka.h>

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace bucketmap {

// Produces `n` messages to each of the `partitions` partitions of `topic`.
inline void Produce(const std::string& bootstrap, const std::string& topic, int partitions, int n) {
  char error[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), error, sizeof(error));
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof(error));
  ASSERT_NE(rk, nullptr) << error;
  for (int p = 0; p < partitions; ++p) {
    for (int i = 0; i < n; ++i) {
      std::string payload = absl::StrCat("event ", p, "/", i);
      ASSERT_EQ(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(p),
                                  RD_KAFKA_V_VALUE(payload.data(), payload.size()),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                RD_KAFKA_RESP_ERR_NO_ERROR);
    }
  }
  EXPECT_EQ(rd_kafka_flush(rk, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_destroy(rk);
}

// Commits `offset` on every partition of `topic` for `group`.
inline void Commit(const std::string& bootstrap, const std::string& group, const std::string& topic,
                   int partitions, int64_t offset) {
  char error[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), error, sizeof(error));
  rd_kafka_conf_set(conf, "group.id", group.c_str(), error, sizeof(error));
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", error, sizeof(error));
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, error, sizeof(error));
  ASSERT_NE(rk, nullptr) << error;
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(partitions);
  for (int p = 0; p < partitions; ++p) {
    rd_kafka_topic_partition_list_add(list, topic.c_str(), p)->offset = offset;
  }
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
  for (int attempt = 0; attempt < 20; ++attempt) {
    err = rd_kafka_commit(rk, list, 0);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_EQ(err, RD_KAFKA_RESP_ERR_NO_ERROR) << rd_kafka_err2str(err);
  rd_kafka_topic_partition_list_destroy(list);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
}

}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_HANDOFF_KAFKA_TEST_UTIL_H_
