// Tests of the Kafka test support itself: the mock helper process, its
// broker down/up commands, and the consumer that reads a topic back.
#include "tests/support/kafka_harness.h"

#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <sys/wait.h>

#include <fstream>
#include <iterator>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bucketmap {
namespace {

// Produces versions first..last to `topic` as the outbox relay does: key
// `mapping`, header `bucketmap-version`; waits for every delivery report.
void Produce(const std::string& bootstrap, const std::string& topic, int first, int last) {
  char error[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  ASSERT_EQ(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), error, sizeof(error)),
            RD_KAFKA_CONF_OK);
  ASSERT_EQ(rd_kafka_conf_set(conf, "enable.idempotence", "true", error, sizeof(error)),
            RD_KAFKA_CONF_OK);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof(error));
  ASSERT_NE(rk, nullptr) << error;
  for (int v = first; v <= last; ++v) {
    const std::string version = std::to_string(v);
    const std::string value = absl::StrCat("event ", v);
    ASSERT_EQ(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY("mapping", 7),
                                RD_KAFKA_V_HEADER("bucketmap-version", version.data(),
                                                  static_cast<ssize_t>(version.size())),
                                RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
              RD_KAFKA_RESP_ERR_NO_ERROR);
  }
  EXPECT_EQ(rd_kafka_flush(rk, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_destroy(rk);
}

TEST(KafkaHarnessTest, HelperServesTopicsAndConsumerReadsThemBack) {
  auto mock = KafkaMockProcess::Start({{"changes", 1}, {"other", 3}});
  ASSERT_TRUE(mock.ok()) << mock.status();
  EXPECT_THAT((*mock)->bootstrap(), ::testing::StartsWith("127.0.0.1:"));

  Produce((*mock)->bootstrap(), "changes", 1, 100);
  auto records = ReadAllChangeEvents((*mock)->bootstrap(), "changes", absl::Seconds(30), 100);
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), 100u);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ((*records)[i].version, i + 1);
    EXPECT_EQ((*records)[i].offset, i);
    EXPECT_EQ((*records)[i].key, "mapping");
    EXPECT_EQ((*records)[i].value, absl::StrCat("event ", i + 1));
  }

  // An empty topic with several partitions: returns at once, empty.
  auto empty = ReadAllChangeEvents((*mock)->bootstrap(), "other", absl::Seconds(30));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->empty());
}

TEST(KafkaHarnessTest, BrokerDownThenUpLosesNothing) {
  auto mock = KafkaMockProcess::Start({{"changes", 1}});
  ASSERT_TRUE(mock.ok()) << mock.status();
  Produce((*mock)->bootstrap(), "changes", 1, 10);
  ASSERT_TRUE((*mock)->SetBrokerDown(true).ok());
  // While the broker is down nothing new can be read.
  auto during = ReadAllChangeEvents((*mock)->bootstrap(), "changes", absl::Seconds(2), 1);
  EXPECT_TRUE(!during.ok() || during->empty());
  ASSERT_TRUE((*mock)->SetBrokerDown(false).ok());
  Produce((*mock)->bootstrap(), "changes", 11, 20);
  auto after = ReadAllChangeEvents((*mock)->bootstrap(), "changes", absl::Seconds(30), 20);
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_EQ(after->size(), 20u);
  EXPECT_EQ(after->back().version, 20);
}

// The state letter of /proc/PID/stat ('Z' for a zombie), '?' if unknown.
char ProcessState(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() ? stat[paren + 2] : '?';
}

TEST(KafkaHarnessTest, HelperExitsWhenItsParentGoes) {
  // A child that starts the helper and dies by SIGKILL: the helper must
  // notice the closed pipe and exit rather than linger.
  int report[2];
  ASSERT_EQ(pipe(report), 0);
  const pid_t child = fork();
  if (child == 0) {
    auto mock = KafkaMockProcess::Start({{"changes", 1}});
    const pid_t helper = mock.ok() ? (*mock)->pid() : -1;
    (void)!write(report[1], &helper, sizeof(helper));
    pause();
    _exit(0);
  }
  pid_t helper = 0;
  ASSERT_EQ(read(report[0], &helper, sizeof(helper)), static_cast<ssize_t>(sizeof(helper)));
  ASSERT_GT(helper, 0);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  // The helper was the child's child: once orphaned, it is not ours to
  // reap, so watch for it to disappear.
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = kill(helper, 0) != 0 || ProcessState(helper) == 'Z';
    if (!gone) absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(gone) << "kafka_mock_helper " << helper << " outlived its parent";
  if (!gone) kill(helper, SIGKILL);
  close(report[0]);
  close(report[1]);
}

}  // namespace
}  // namespace bucketmap
