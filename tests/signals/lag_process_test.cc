// Lag with real parts (issue 11): the bucketmap-server binary, PostgreSQL,
// librdkafka's mock cluster in a helper process, a real consumer group, and
// Debian's Prometheus 2.42 and promtool.
//
// One test in four phases, each building on the last (one server, broker
// and Prometheus throughout; ctest runs each TEST in a process of its own):
//   1. a group that never committed counts from the earliest offset;
//   2. after a real consumer group consumed part of the events, the
//      exporter reports the exact remainder and the age of the oldest
//      unconsumed event (the producer stamped its time), on /metrics and in
//      GetLoad;
//   3. promtool accepts the exposition, and the KEDA trigger's query, as
//      `bucketctl render keda` writes it, asked of Prometheus over its HTTP
//      API, returns the remainder;
//   4. with the broker down, lag_up goes to 0, the lag series disappear
//      from /metrics and from Prometheus (the KEDA query is empty: an
//      error, never 0), and GetLoad says up=false.
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/support/kafka_harness.h"
#include "tests/support/local_process.h"
#include "tests/support/pg_harness.h"
#include "tests/support/server_process.h"

namespace bucketmap {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr int kPartitions = 2;
constexpr int kPerPartition = 50;
constexpr int kConsumed = 30;
// The producer stamps event i of a partition at base + i seconds, base
// being this long before the test produced them.
constexpr absl::Duration kAge = absl::Minutes(5);

const char kLagUp[] =
    "bucketmap_bucket_lag_up{bucket=\"a\",bucket_id=\"1\",group=\"g_a\",role=\"ingestion\"}";
const char kLagMessages[] =
    "bucketmap_bucket_lag_messages{bucket=\"a\",bucket_id=\"1\",group=\"g_a\",role=\"ingestion\"}";
const char kLagSeconds[] =
    "bucketmap_bucket_lag_seconds{bucket=\"a\",bucket_id=\"1\",group=\"g_a\",role=\"ingestion\"}";

// Runs `command` through the shell; returns its exit status and output.
int Shell(const std::string& command, std::string* output) {
  output->clear();
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) output->append(buf, n);
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string UrlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, "%", absl::Hex(c, absl::kZeroPad2));
    }
  }
  return out;
}

// The HTTP body of a response (after the blank line).
std::string Body(const std::string& response) {
  const size_t at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

// Produces kPerPartition events to each partition, event i stamped
// base + i seconds.
void ProduceStamped(const std::string& bootstrap, const std::string& topic, absl::Time base) {
  char error[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), error, sizeof(error));
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof(error));
  ASSERT_NE(rk, nullptr) << error;
  for (int p = 0; p < kPartitions; ++p) {
    for (int i = 0; i < kPerPartition; ++i) {
      const std::string value = absl::StrCat("{\"p\":", p, ",\"i\":", i, "}");
      ASSERT_EQ(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(p),
                                  RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                                  RD_KAFKA_V_TIMESTAMP(absl::ToUnixMillis(base + absl::Seconds(i))),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                RD_KAFKA_RESP_ERR_NO_ERROR);
    }
  }
  EXPECT_EQ(rd_kafka_flush(rk, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_destroy(rk);
}

// A real consumer of `group`: subscribes, consumes `n` events, commits
// what it consumed, and leaves the group. Returns the next offset of each
// partition (what it committed).
std::vector<int64_t> ConsumeAndCommit(const std::string& bootstrap, const std::string& group,
                                      const std::string& topic, int n) {
  std::vector<int64_t> next(kPartitions, 0);
  char error[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"bootstrap.servers", bootstrap},
           {"group.id", group},
           {"enable.auto.commit", "false"},
           {"auto.offset.reset", "earliest"},
           // Small fetches, so that it does not read far ahead of what it
           // hands out (it commits only what it consumed anyway).
           {"max.partition.fetch.bytes", "1024"}}) {
    EXPECT_EQ(rd_kafka_conf_set(conf, k.c_str(), v.c_str(), error, sizeof(error)), RD_KAFKA_CONF_OK)
        << error;
  }
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, error, sizeof(error));
  EXPECT_NE(rk, nullptr) << error;
  if (rk == nullptr) return next;
  rd_kafka_poll_set_consumer(rk);
  rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(topics, topic.c_str(), RD_KAFKA_PARTITION_UA);
  EXPECT_EQ(rd_kafka_subscribe(rk, topics), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_destroy(topics);
  int consumed = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (consumed < n && absl::Now() < deadline) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 200);
    if (m == nullptr) continue;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      next[m->partition] = m->offset + 1;
      ++consumed;
    }
    rd_kafka_message_destroy(m);
  }
  EXPECT_EQ(consumed, n);
  // Commit exactly what was consumed (the position may be further ahead).
  rd_kafka_topic_partition_list_t* offsets = rd_kafka_topic_partition_list_new(kPartitions);
  for (int p = 0; p < kPartitions; ++p) {
    rd_kafka_topic_partition_list_add(offsets, topic.c_str(), p)->offset = next[p];
  }
  EXPECT_EQ(rd_kafka_commit(rk, offsets, 0), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_destroy(offsets);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return next;
}

class LagProcessTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto pg = TestPostgres::Start();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = pg->release();
    auto kafka = KafkaMockProcess::Start({{"bucketmap_changes", 1}, {"events_a", kPartitions}});
    ASSERT_TRUE(kafka.ok()) << kafka.status();
    kafka_ = kafka->release();
    server_ = new ServerProcess(BUCKETMAP_SERVER_BINARY, pg_->dir() + "/server.log");
    ASSERT_TRUE(server_
                    ->Launch(pg_->url(), {"--kafka_brokers=" + kafka_->bootstrap(),
                                          "--kafka_create_topics=false", "--lag_interval=1s",
                                          "--lag_read_timeout=1s", "--shutdown_grace=1s"})
                    .ok())
        << server_->log();
    v1::CreateBucketRequest req;
    req.mutable_bucket()->set_name("a");
    (*req.mutable_bucket()->mutable_topics())["ingestion"] = "events_a";
    (*req.mutable_bucket()->mutable_consumer_groups())["ingestion"] = "g_a";
    req.set_reason("lag test");
    v1::CreateBucketResponse resp;
    grpc::Status s =
        server_->admin()->CreateBucket(ContextWithTimeout(absl::Seconds(10)).get(), req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_EQ(resp.bucket().id(), 1);
  }

  static void TearDownTestSuite() {
    if (prometheus_pid_ > 0) {
      kill(prometheus_pid_, SIGTERM);
      waitpid(prometheus_pid_, nullptr, 0);
    }
    delete server_;
    delete kafka_;
    delete pg_;
  }

  static std::string Metrics() { return HttpGet(server_->metrics_port(), "/metrics"); }

  // Waits until /metrics shows `series` with `value`, or returns the last
  // exposition on timeout.
  static bool WaitForMetric(const std::string& series, double value, std::string* last) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      *last = Metrics();
      if (MetricValue(*last, series) == value) return true;
      absl::SleepFor(absl::Milliseconds(200));
    }
    return false;
  }

  static v1::RoleLag Lag() {
    v1::GetLoadResponse load;
    grpc::Status s =
        server_->mapping()->GetLoad(ContextWithTimeout(absl::Seconds(10)).get(), {}, &load);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (load.buckets_size() != 1 || load.buckets(0).lag_size() != 1) return v1::RoleLag();
    return load.buckets(0).lag(0);
  }

  // Asks Prometheus `query`; returns the values of the result vector.
  static std::vector<std::string> Query(const std::string& query) {
    const std::string body =
        Body(HttpGet(prometheus_port_, "/api/v1/query?query=" + UrlEncode(query)));
    google::protobuf::Struct json;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(body, &json).ok()) << body;
    EXPECT_EQ(json.fields().at("status").string_value(), "success") << body;
    std::vector<std::string> values;
    const auto& result = json.fields().at("data").struct_value().fields().at("result");
    for (const auto& sample : result.list_value().values()) {
      values.push_back(
          sample.struct_value().fields().at("value").list_value().values(1).string_value());
    }
    return values;
  }

  // The phases, in this order.
  void NeverCommitted();
  void ExactRemainder();
  void PrometheusAndKeda();
  void BrokerDown();

  static TestPostgres* pg_;
  static KafkaMockProcess* kafka_;
  static ServerProcess* server_;
  static pid_t prometheus_pid_;
  static int prometheus_port_;
  static std::vector<int64_t> committed_;
  static absl::Time base_;
};

TestPostgres* LagProcessTest::pg_ = nullptr;
KafkaMockProcess* LagProcessTest::kafka_ = nullptr;
ServerProcess* LagProcessTest::server_ = nullptr;
pid_t LagProcessTest::prometheus_pid_ = 0;
int LagProcessTest::prometheus_port_ = 0;
std::vector<int64_t> LagProcessTest::committed_;
absl::Time LagProcessTest::base_;

void LagProcessTest::NeverCommitted() {
  std::string last;
  // Nothing produced yet: known, and no lag.
  ASSERT_TRUE(WaitForMetric(kLagUp, 1, &last)) << Lag().error() << "\n" << server_->log();
  EXPECT_EQ(MetricValue(last, kLagMessages), 0);
  EXPECT_EQ(MetricValue(last, kLagSeconds), 0);

  base_ = absl::Now() - kAge;
  ProduceStamped(kafka_->bootstrap(), "events_a", base_);
  ASSERT_TRUE(WaitForMetric(kLagMessages, kPartitions * kPerPartition, &last))
      << Lag().error() << "\n"
      << last;
  // The oldest unconsumed event is the first of a partition: base.
  const double seconds = MetricValue(Metrics(), kLagSeconds);
  EXPECT_GE(seconds, absl::ToDoubleSeconds(kAge));
  EXPECT_LE(seconds, absl::ToDoubleSeconds(absl::Now() - base_) + 1);
}

void LagProcessTest::ExactRemainder() {
  committed_ = ConsumeAndCommit(kafka_->bootstrap(), "g_a", "events_a", kConsumed);
  ASSERT_EQ(committed_[0] + committed_[1], kConsumed);
  std::string last;
  const int remainder = kPartitions * kPerPartition - kConsumed;
  ASSERT_TRUE(WaitForMetric(kLagMessages, remainder, &last)) << last << server_->log();
  // The oldest unconsumed event: the one at the lowest committed offset,
  // stamped base + that many seconds.
  const int64_t oldest = std::min(committed_[0], committed_[1]);
  const double expected = absl::ToDoubleSeconds(absl::Now() - (base_ + absl::Seconds(oldest)));
  const double seconds = MetricValue(last, kLagSeconds);
  EXPECT_GT(seconds, expected - 3) << "a reading at most one lag interval old";
  EXPECT_LE(seconds, expected + 1);

  // Every replica's GetLoad shows the leader's reading, with its time.
  const v1::RoleLag lag = Lag();
  EXPECT_TRUE(lag.up()) << lag.error();
  EXPECT_EQ(lag.role(), "ingestion");
  EXPECT_EQ(lag.consumer_group(), "g_a");
  EXPECT_EQ(lag.messages(), remainder);
  EXPECT_NEAR(lag.seconds(), seconds, 3);
  EXPECT_NEAR(static_cast<double>(lag.read_time().seconds()), absl::ToUnixSeconds(absl::Now()), 5);
}

void LagProcessTest::PrometheusAndKeda() {
  // promtool checks the exposition as Prometheus would take it.
  const std::string exposition = Body(Metrics());
  const std::string file = pg_->dir() + "/metrics.txt";
  std::ofstream(file) << exposition;
  std::string out;
  EXPECT_EQ(Shell("promtool check metrics < " + file, &out), 0) << out;

  // The alert rules docs/autoscaling.md recommends are valid rules.
  const std::string doc = ReadFile(BUCKETMAP_SOURCE_DIR "/docs/autoscaling.md");
  const size_t rules_at = doc.find("```yaml\n", doc.find("## Alert rules worth having"));
  ASSERT_NE(rules_at, std::string::npos);
  const size_t rules_end = doc.find("```\n", rules_at + 8);
  const std::string rules = pg_->dir() + "/rules.yml";
  std::ofstream(rules) << doc.substr(rules_at + 8, rules_end - rules_at - 8);
  EXPECT_EQ(Shell("promtool check rules " + rules, &out), 0) << out;

  // Prometheus scrapes the server every second.
  prometheus_port_ = FreePort();
  const std::string config = pg_->dir() + "/prometheus.yml";
  std::ofstream(config) << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                        << "scrape_configs:\n  - job_name: bucketmap\n    static_configs:\n"
                        << "      - targets: ['127.0.0.1:" << server_->metrics_port() << "']\n";
  EXPECT_EQ(Shell("promtool check config " + config, &out), 0) << out;
  prometheus_pid_ = Spawn({"/usr/bin/prometheus", "--config.file=" + config,
                           "--storage.tsdb.path=" + pg_->dir() + "/prometheus",
                           absl::StrCat("--web.listen-address=127.0.0.1:", prometheus_port_)},
                          pg_->dir() + "/prometheus.log");
  ASSERT_GT(prometheus_pid_, 0);

  // The query as `bucketctl render keda` writes it into the ScaledObject.
  ASSERT_EQ(Shell(absl::StrCat(BUCKETCTL_BINARY, " --server ", server_->address(),
                               " render keda --bucket a --metric messages --threshold 10"),
                  &out),
            0)
      << out;
  std::string query;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (absl::ConsumePrefix(&line, "query: ")) {
      query = std::string(line.substr(1, line.size() - 2));  // unquote
      query = absl::StrReplaceAll(query, {{"\\\"", "\""}});
    }
  }
  EXPECT_EQ(query, "max(bucketmap_bucket_lag_messages{bucket_id=\"1\",role=\"ingestion\"})");
  EXPECT_THAT(out, HasSubstr("ignoreNullValues: \"false\""));

  const std::string remainder = absl::StrCat(kPartitions * kPerPartition - kConsumed);
  std::vector<std::string> values;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    // Ready, not only listening: while its TSDB starts, Prometheus answers
    // 503 with a body that is not JSON.
    const std::string ready = HttpGet(prometheus_port_, "/-/ready");
    if (absl::StrContains(ready.substr(0, ready.find("\r\n")), " 200 ")) {
      values = Query(query);
      if (values == std::vector<std::string>{remainder}) break;
    }
    absl::SleepFor(absl::Milliseconds(500));
  }
  EXPECT_EQ(values, std::vector<std::string>{remainder})
      << ReadFile(pg_->dir() + "/prometheus.log");
}

void LagProcessTest::BrokerDown() {
  ASSERT_TRUE(kafka_->SetBrokerDown(true).ok());
  std::string last;
  ASSERT_TRUE(WaitForMetric(kLagUp, 0, &last)) << last << server_->log();
  EXPECT_THAT(last, Not(HasSubstr("bucketmap_bucket_lag_messages{")));
  EXPECT_THAT(last, Not(HasSubstr("bucketmap_bucket_lag_seconds{")));

  const v1::RoleLag lag = Lag();
  EXPECT_FALSE(lag.up());
  EXPECT_FALSE(lag.error().empty());

  if (prometheus_port_ > 0) {
    // The series went stale at the next scrape: the KEDA query is empty
    // (an error for KEDA with ignoreNullValues false), never 0.
    const std::string query =
        "max(bucketmap_bucket_lag_messages{bucket_id=\"1\",role=\"ingestion\"})";
    std::vector<std::string> values = {"?"};
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline && !values.empty()) {
      values = Query(query);
      absl::SleepFor(absl::Milliseconds(500));
    }
    EXPECT_TRUE(values.empty()) << values[0];
    EXPECT_EQ(Query("max(bucketmap_bucket_lag_up{bucket_id=\"1\",role=\"ingestion\"})"),
              std::vector<std::string>{"0"});
  }
  ASSERT_TRUE(kafka_->SetBrokerDown(false).ok());
}

TEST_F(LagProcessTest, FromKafkaToPrometheusAndKeda) {
  ASSERT_NO_FATAL_FAILURE(NeverCommitted());
  ASSERT_NO_FATAL_FAILURE(ExactRemainder());
  ASSERT_NO_FATAL_FAILURE(PrometheusAndKeda());
  ASSERT_NO_FATAL_FAILURE(BrokerDown());
}

}  // namespace
}  // namespace bucketmap
