// example-producer end to end: the built binary runs against a real server
// (in-process, on a throwaway PostgreSQL) and librdkafka's mock Kafka
// cluster; a real librdkafka consumer then reads back what it produced.
#include <librdkafka/rdkafka.h>

#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/examples/example_support.h"
#include "tests/server/server_fixture.h"

namespace bucketmap {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct Consumed {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
  std::string key;
  std::string value;
  // name -> every value of that header, in order.
  std::map<std::string, std::vector<std::string>> headers;
};

// Reads every message of `partitions` (topic, partition count) from the
// beginning, until each partition has reported its end or `deadline`
// passes. The producer has exited by then, so the end is the end.
std::vector<Consumed> ConsumeAll(const std::string& bootstraps,
                                 const std::vector<std::pair<std::string, int>>& partitions,
                                 absl::Duration deadline) {
  std::vector<Consumed> out;
  char error[256];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  const std::pair<const char*, const char*> settings[] = {
      {"bootstrap.servers", bootstraps.c_str()}, {"group.id", "example-producer-test"},
      {"auto.offset.reset", "earliest"},         {"enable.auto.commit", "false"},
      {"enable.partition.eof", "true"},
  };
  for (const auto& [name, value] : settings) {
    if (rd_kafka_conf_set(conf, name, value, error, sizeof(error)) != RD_KAFKA_CONF_OK) {
      ADD_FAILURE() << name << ": " << error;
      rd_kafka_conf_destroy(conf);
      return out;
    }
  }
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, error, sizeof(error));
  if (rk == nullptr) {
    ADD_FAILURE() << error;
    rd_kafka_conf_destroy(conf);
    return out;
  }
  rd_kafka_poll_set_consumer(rk);
  // Assigned rather than subscribed: no group rebalance to wait for.
  rd_kafka_topic_partition_list_t* assignment = rd_kafka_topic_partition_list_new(8);
  int open_partitions = 0;
  for (const auto& [topic, count] : partitions) {
    for (int p = 0; p < count; ++p, ++open_partitions) {
      rd_kafka_topic_partition_list_add(assignment, topic.c_str(), p)->offset =
          RD_KAFKA_OFFSET_BEGINNING;
    }
  }
  EXPECT_EQ(rd_kafka_assign(rk, assignment), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_destroy(assignment);

  std::set<std::pair<std::string, int32_t>> at_end;
  const absl::Time give_up = absl::Now() + deadline;
  while (static_cast<int>(at_end.size()) < open_partitions && absl::Now() < give_up) {
    rd_kafka_message_t* message = rd_kafka_consumer_poll(rk, 100);
    if (message == nullptr) continue;
    const std::string topic = message->rkt != nullptr ? rd_kafka_topic_name(message->rkt) : "";
    if (message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      at_end.emplace(topic, message->partition);
    } else if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      ADD_FAILURE() << "consume " << topic << ": " << rd_kafka_message_errstr(message);
    } else {
      Consumed c;
      c.topic = topic;
      c.partition = message->partition;
      c.offset = message->offset;
      c.key.assign(static_cast<const char*>(message->key), message->key_len);
      c.value.assign(static_cast<const char*>(message->payload), message->len);
      rd_kafka_headers_t* headers = nullptr;
      if (rd_kafka_message_headers(message, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char* name;
        const void* value;
        size_t size;
        for (size_t i = 0; rd_kafka_header_get_all(headers, i, &name, &value, &size) ==
                           RD_KAFKA_RESP_ERR_NO_ERROR;
             ++i) {
          c.headers[name].emplace_back(static_cast<const char*>(value), size);
        }
      }
      out.push_back(std::move(c));
    }
    rd_kafka_message_destroy(message);
  }
  EXPECT_EQ(static_cast<int>(at_end.size()), open_partitions) << "not every partition was read";
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return out;
}

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs example-producer with `args` to its end; kills it after `timeout`.
RunResult RunProducer(const std::vector<std::string>& args, const std::string& dir,
                      absl::Duration timeout = absl::Seconds(60)) {
  ExampleProcess producer(BUCKETMAP_EXAMPLE_PRODUCER, args, dir, "producer");
  RunResult result;
  result.exit_code = producer.Wait(timeout);
  result.out = producer.Out();
  result.err = producer.Err();
  return result;
}

class ExampleProducerTest : public ServerFixture {
 protected:
  std::string ServerAddress() const { return absl::StrCat("127.0.0.1:", server_->port()); }

  v1::TeamRoute GetTeam(int64_t team) {
    v1::GetTeamRequest req;
    req.set_team_id(team);
    v1::TeamRoute route;
    grpc::Status s = mapping_->GetTeam(Ctx().get(), req, &route);
    EXPECT_TRUE(s.ok()) << team << ": " << s.error_message();
    return route;
  }
};

TEST_F(ExampleProducerTest, ProducesEachEventToItsTeamsTopicStampedWithTheRouteVersion) {
  constexpr int kTeams = 20;
  constexpr int kEvents = 400;
  constexpr int kPartitions = 3;
  const int32_t b1 = MakeBucket("b1");  // topic events_b1
  const int32_t b2 = MakeBucket("b2");  // topic events_b2
  // Pins on both sides, so both topics get events whatever default
  // placement does with the other teams.
  for (int64_t team : {1, 2, 3}) ASSERT_TRUE(Pin(team, b2).ok());
  for (int64_t team : {4, 5}) ASSERT_TRUE(Pin(team, b1).ok());
  const int64_t version = Version();

  MockKafka kafka;
  ASSERT_TRUE(kafka.ok());
  for (const char* topic : {"events_b1", "events_b2"}) {
    ASSERT_EQ(kafka.CreateTopic(topic, kPartitions), RD_KAFKA_RESP_ERR_NO_ERROR) << topic;
  }

  const RunResult run =
      RunProducer({"--servers=" + ServerAddress(), "--kafka_brokers=" + kafka.bootstraps(),
                   absl::StrCat("--teams=", kTeams), absl::StrCat("--events=", kEvents),
                   "--client_id=example-producer-test"},
                  pg_->dir());
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_THAT(run.out, HasSubstr("unroutable: 0\n"));
  EXPECT_THAT(run.out, HasSubstr(absl::StrCat("route versions: ", version, "..", version, "\n")));
  EXPECT_THAT(run.out, HasSubstr("delivery failures: 0\n"));

  // The server's word on every team, at the same version.
  std::map<int64_t, v1::TeamRoute> routes;
  int to_b1 = 0;
  for (int64_t team = 1; team <= kTeams; ++team) {
    routes[team] = GetTeam(team);
    ASSERT_EQ(routes[team].version(), version);
    if (routes[team].bucket_id() == b1) ++to_b1;
  }
  EXPECT_THAT(run.out,
              HasSubstr(absl::StrCat("topic events_b1: produced ", to_b1 * kEvents / kTeams,
                                     ", delivered ", to_b1 * kEvents / kTeams, "\n")));

  const std::vector<Consumed> consumed =
      ConsumeAll(kafka.bootstraps(), {{"events_b1", kPartitions}, {"events_b2", kPartitions}},
                 absl::Seconds(15));
  ASSERT_EQ(static_cast<int>(consumed.size()), kEvents);

  std::map<std::string, int> per_topic;
  std::map<int64_t, int> per_team;
  std::map<int64_t, std::pair<std::string, int32_t>> partition_of_team;
  std::map<int64_t, int64_t> last_seq;  // by team; a team has one partition
  for (const Consumed& c : consumed) {
    SCOPED_TRACE(absl::StrCat(c.topic, "/", c.partition, "@", c.offset, " ", c.value));
    long long team = 0;
    long long seq = -1;
    ASSERT_EQ(std::sscanf(c.value.c_str(), R"({"team_id":%lld,"seq":%lld})", &team, &seq), 2);
    ASSERT_GE(team, 1);
    ASSERT_LE(team, kTeams);
    EXPECT_EQ(c.key, absl::StrCat(team));
    const v1::TeamRoute& route = routes[team];
    EXPECT_EQ(c.topic, route.topics().at("ingestion"));
    // Exactly one of each header.
    EXPECT_THAT(c.headers, ::testing::Contains(::testing::Pair(
                               "bucketmap-version", ElementsAre(absl::StrCat(version)))));
    EXPECT_THAT(c.headers, ::testing::Contains(::testing::Pair(
                               "bucketmap-bucket", ElementsAre(absl::StrCat(route.bucket_id())))));
    // Keyed by team: one partition per team, and its events in order.
    auto [where, first] = partition_of_team.try_emplace(team, c.topic, c.partition);
    EXPECT_EQ(where->second, std::make_pair(c.topic, c.partition));
    if (!first) {
      EXPECT_GT(seq, last_seq[team]);
    }
    last_seq[team] = seq;
    ++per_topic[c.topic];
    ++per_team[team];
  }
  EXPECT_EQ(per_topic["events_b1"], to_b1 * kEvents / kTeams);
  EXPECT_EQ(per_topic["events_b1"] + per_topic["events_b2"], kEvents);
  EXPECT_GT(per_topic["events_b2"], 0);
  for (int64_t team = 1; team <= kTeams; ++team) {
    // Strictly increasing seq values in [0, kEvents/kTeams), as many as
    // that: each exactly once.
    EXPECT_EQ(per_team[team], kEvents / kTeams) << team;
    EXPECT_EQ(last_seq[team], kEvents / kTeams - 1) << team;
  }
}

TEST_F(ExampleProducerTest, AppliesTeamRulesAndKeepsAnOverflowedTeamOnTheOverflowTopic) {
  // b1 has an overflow topic; teams 1..3 are pinned to it.
  v1::CreateBucketRequest create;
  create.mutable_bucket()->set_name("b1");
  (*create.mutable_bucket()->mutable_topics())["ingestion"] = "events_b1";
  (*create.mutable_bucket()->mutable_topics())["overflow"] = "overflow_b1";
  create.set_reason("test setup");
  v1::CreateBucketResponse created;
  ASSERT_TRUE(admin_->CreateBucket(Ctx().get(), create, &created).ok());
  for (int64_t team : {1, 2, 3}) ASSERT_TRUE(Pin(team, created.bucket().id()).ok());
  auto set_rule = [&](int64_t team, v1::TeamRuleKind kind) {
    v1::SetTeamRuleRequest req;
    req.set_team_id(team);
    req.set_kind(kind);
    if (kind == v1::RATE_LIMIT) {
      // A burst of 5, then one event per 100 s: the run never refills it.
      req.mutable_rate_limit()->set_events_per_second(0.01);
      req.mutable_rate_limit()->set_burst(5);
    }
    req.set_reason("test");
    v1::SetTeamRuleResponse resp;
    grpc::Status s = admin_->SetTeamRule(Ctx().get(), req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  };
  set_rule(1, v1::FORCE_OVERFLOW);
  set_rule(2, v1::DROP);
  set_rule(3, v1::RATE_LIMIT);

  MockKafka kafka;
  ASSERT_TRUE(kafka.ok());
  for (const char* topic : {"events_b1", "overflow_b1"}) {
    ASSERT_EQ(kafka.CreateTopic(topic, 1), RD_KAFKA_RESP_ERR_NO_ERROR) << topic;
  }
  const RunResult run =
      RunProducer({"--servers=" + ServerAddress(), "--kafka_brokers=" + kafka.bootstraps(),
                   "--teams=3", "--events=90", "--client_id=example-producer-rules"},
                  pg_->dir());
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_THAT(run.out, HasSubstr("dropped by a rule: 30\n"));
  EXPECT_THAT(run.out, HasSubstr("to an overflow topic: 55\n"));
  EXPECT_THAT(run.out, HasSubstr("topic events_b1: produced 5, delivered 5\n"));
  EXPECT_THAT(run.out, HasSubstr("topic overflow_b1: produced 55, delivered 55\n"));

  const std::vector<Consumed> consumed =
      ConsumeAll(kafka.bootstraps(), {{"events_b1", 1}, {"overflow_b1", 1}}, absl::Seconds(15));
  ASSERT_EQ(consumed.size(), 60u);
  std::map<std::string, std::vector<long long>> team3_seqs;  // by topic
  for (const Consumed& c : consumed) {
    long long team = 0;
    long long seq = -1;
    ASSERT_EQ(std::sscanf(c.value.c_str(), R"({"team_id":%lld,"seq":%lld})", &team, &seq), 2);
    EXPECT_NE(team, 2) << "a dropped team's event was produced";
    if (team == 1) EXPECT_EQ(c.topic, "overflow_b1");
    if (team == 3) team3_seqs[c.topic].push_back(seq);
  }
  // Team 3: its burst on the main topic, then everything on overflow; once
  // overflowed, it never went back.
  EXPECT_THAT(team3_seqs["events_b1"], ElementsAre(0, 1, 2, 3, 4));
  ASSERT_EQ(team3_seqs["overflow_b1"].size(), 25u);
  for (size_t i = 0; i < 25; ++i) EXPECT_EQ(team3_seqs["overflow_b1"][i], 5 + i);
}

TEST_F(ExampleProducerTest, SkipsAndCountsUnroutableTeamsWithoutGuessing) {
  // The only bucket is in pool "paid"; the default pool has none, so the
  // teams left to default placement (2 and 4) must not be routed anywhere.
  const int32_t paid = MakeBucket("b1", "paid");
  for (int64_t team : {1, 3}) {
    v1::AssignTeamRequest assign;
    assign.set_team_id(team);
    assign.set_pool("paid");
    assign.set_reason("test");
    v1::AssignTeamResponse assigned;
    grpc::Status s = admin_->AssignTeam(Ctx().get(), assign, &assigned);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // Dry mode: routes and counts without Kafka; paced at 200 events/s.
  const absl::Time start = absl::Now();
  const RunResult run = RunProducer(
      {"--servers=" + ServerAddress(), "--teams=4", "--events=40", "--rate=200"}, pg_->dir());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(190));
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_THAT(run.out, HasSubstr("mode: dry"));
  EXPECT_THAT(run.out, HasSubstr("events generated: 40\n"));
  EXPECT_THAT(run.out, HasSubstr("unroutable: 20\n"));
  EXPECT_THAT(run.out, HasSubstr("topic events_b1: routed 20\n"));
  EXPECT_THAT(run.out, HasSubstr("delivery failures: 0\n"));
  EXPECT_EQ(GetTeam(1).bucket_id(), paid);
}

TEST_F(ExampleProducerTest, FailsWhenNoMappingArrivesInTime) {
  const RunResult run =
      RunProducer({"--servers=127.0.0.1:1", "--wait_for_mapping=1", "--events=10"}, pg_->dir());
  EXPECT_EQ(run.exit_code, 2) << run.out << run.err;
  EXPECT_THAT(run.err, HasSubstr("no mapping"));
}

TEST_F(ExampleProducerTest, FailsWhenDeliveriesFail) {
  MakeBucket("b1");
  // Nothing listens on port 1: every event times out in librdkafka.
  const RunResult run = RunProducer({"--servers=" + ServerAddress(), "--kafka_brokers=127.0.0.1:1",
                                     "--delivery_timeout=1", "--teams=2", "--events=6"},
                                    pg_->dir());
  EXPECT_EQ(run.exit_code, 1) << run.out << run.err;
  EXPECT_THAT(run.out, HasSubstr("delivery failures: 6\n"));
  EXPECT_THAT(run.out, HasSubstr("topic events_b1: produced 6, delivered 0\n"));
}

}  // namespace
}  // namespace bucketmap
