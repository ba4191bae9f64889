// Replicas as real bucketmap-server processes on one PostgreSQL, with the
// Kafka mock in a helper process (it must outlive the servers):
//   - the relay leader is SIGKILLed while writes continue on the other
//     replica; the other takes over within 10 s and the changes topic has
//     every version, in order, with no gap;
//   - SIGTERM on a replica sends GOAWAY and ends its watch streams; a
//     client library WatchConnection given both addresses moves to the
//     other replica and keeps receiving versions.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bucketmap/client.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/v1/events.pb.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "bucketmap/watch.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "tests/support/kafka_harness.h"
#include "tests/support/local_process.h"
#include "tests/support/pg_harness.h"
#include "tests/support/server_process.h"

namespace bucketmap {
namespace {

constexpr char kTopic[] = "bucketmap_changes";

double Metric(const ServerProcess& s, const std::string& metric) {
  return MetricValue(HttpGet(s.metrics_port(), "/metrics"), metric);
}

class ReplicaProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = TestPostgres::Start();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
  }

  void TearDown() override {
    for (auto& s : servers_) s->Kill();
  }

  ServerProcess& Launch(const std::string& name, const std::string& kafka_brokers) {
    auto s =
        std::make_unique<ServerProcess>(BUCKETMAP_SERVER_BINARY, pg_->dir() + "/" + name + ".log");
    absl::Status launched = s->Launch(pg_->url(), {
                                                      "--replica_name=" + name,
                                                      "--kafka_brokers=" + kafka_brokers,
                                                      "--kafka_create_topics=false",
                                                      absl::StrCat("--changes_topic=", kTopic),
                                                      "--shutdown_grace=2s",
                                                  });
    EXPECT_TRUE(launched.ok()) << name << ": " << launched;
    servers_.push_back(std::move(s));
    return *servers_.back();
  }

  // The index of the one leader by its metric; -1 until exactly one says so.
  int Leader() {
    int leader = -1;
    int leaders = 0;
    for (size_t i = 0; i < servers_.size(); ++i) {
      // A stopped process accepts connections but never answers: skip it.
      if (servers_[i]->running() && frozen_.count(servers_[i]->pid()) == 0 &&
          Metric(*servers_[i], "bucketmap_leader") == 1) {
        ++leaders;
        leader = static_cast<int>(i);
      }
    }
    return leaders == 1 ? leader : -1;
  }

  int WaitForLeader(absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    for (;;) {
      const int leader = Leader();
      if (leader >= 0 || absl::Now() > end) return leader;
      absl::SleepFor(absl::Milliseconds(20));
    }
  }

  static grpc::Status CreateBucket(ServerProcess& s, const std::string& name) {
    v1::CreateBucketRequest req;
    req.mutable_bucket()->set_name(name);
    (*req.mutable_bucket()->mutable_topics())["ingestion"] = "events_" + name;
    req.set_reason("replica process test");
    v1::CreateBucketResponse resp;
    return s.admin()->CreateBucket(ContextWithTimeout(absl::Seconds(5)).get(), req, &resp);
  }

  // A new override that moves no route (so it opens no handoff and is
  // never refused as a move): one version per call.
  static grpc::Status Assign(ServerProcess& s, int64_t team, int64_t* version = nullptr) {
    v1::AssignTeamRequest req;
    req.set_team_id(team);
    req.set_pool("default");
    req.set_reason("replica process test");
    v1::AssignTeamResponse resp;
    grpc::Status status =
        s.admin()->AssignTeam(ContextWithTimeout(absl::Seconds(5)).get(), req, &resp);
    if (version != nullptr) *version = resp.version();
    return status;
  }

  int64_t PsqlInt(const std::string& sql) {
    auto out = pg_->Psql(sql);
    EXPECT_TRUE(out.ok()) << out.status();
    int64_t value = -1;
    if (out.ok() && !absl::SimpleAtoi(*out, &value)) ADD_FAILURE() << sql << ": " << *out;
    return value;
  }

  std::unique_ptr<TestPostgres> pg_;
  std::vector<std::unique_ptr<ServerProcess>> servers_;
  std::set<pid_t> frozen_;  // SIGSTOPped
};

// The events on `topic` up to version `last`, as a consumer that drops
// versions it has seen keeps them, must be 1..last in order.
void ExpectNoGap(const std::string& bootstrap, int64_t last, const char* what) {
  auto records = ReadAllChangeEvents(bootstrap, kTopic, absl::Seconds(60), last);
  ASSERT_TRUE(records.ok()) << records.status();
  int64_t seen = 0;
  int64_t duplicates = 0;
  for (const KafkaRecord& r : *records) {
    v1::ChangeEvent event;
    ASSERT_TRUE(event.ParseFromString(r.value)) << "offset " << r.offset;
    ASSERT_EQ(event.version(), r.version);
    if (r.version <= seen) {
      ++duplicates;
      continue;
    }
    ASSERT_EQ(r.version, seen + 1) << "gap or reordering at offset " << r.offset;
    seen = r.version;
  }
  EXPECT_EQ(seen, last);
  std::printf("%s: %zu records: versions 1..%ld, %ld duplicates\n", what, records->size(),
              static_cast<long>(seen), static_cast<long>(duplicates));
}

TEST_F(ReplicaProcessTest, KilledLeaderIsReplacedWithin10sAndTheChangesTopicHasNoGap) {
  auto kafka = KafkaMockProcess::Start({{kTopic, 1}});
  ASSERT_TRUE(kafka.ok()) << kafka.status();
  Launch("r1", (*kafka)->bootstrap());
  Launch("r2", (*kafka)->bootstrap());
  const int leader = WaitForLeader(absl::Seconds(10));
  ASSERT_GE(leader, 0) << "no single leader";
  ServerProcess& old_leader = *servers_[leader];
  ServerProcess& survivor = *servers_[1 - leader];
  ASSERT_TRUE(CreateBucket(survivor, "b1").ok());

  // Writers on both replicas; those on the killed one stop at the kill.
  std::atomic<bool> stop{false};
  std::atomic<int64_t> next_team{1};
  std::atomic<int> acked{0};
  std::vector<std::thread> writers;
  for (ServerProcess* s : {&old_leader, &survivor}) {
    for (int w = 0; w < 2; ++w) {
      writers.emplace_back([&, s] {
        while (!stop.load()) {
          if (Assign(*s, next_team.fetch_add(1)).ok()) {
            acked.fetch_add(1);
          } else if (s == &old_leader) {
            return;
          }
        }
      });
    }
  }
  // Kill once the leader has published some of this load.
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (
      absl::Now() < give_up &&
      (acked.load() < 200 || Metric(old_leader, "bucketmap_outbox_last_published_version") < 50)) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  const absl::Time killed = absl::Now();
  old_leader.Kill();
  const int next = WaitForLeader(absl::Seconds(10));
  const absl::Duration failover = absl::Now() - killed;
  ASSERT_EQ(next, 1 - leader) << "no takeover within 10 s:\n" << survivor.log();
  EXPECT_LT(failover, absl::Seconds(10));
  // Writes keep going through the takeover, then stop.
  absl::SleepFor(absl::Seconds(1));
  stop = true;
  for (auto& t : writers) t.join();
  const int64_t last = PsqlInt("SELECT max(version) FROM change_log");
  ASSERT_GT(last, 200);
  EXPECT_GE(PsqlInt("SELECT epoch FROM bm_leader"), 2);
  EXPECT_EQ(Metric(survivor, "bucketmap_version_listener_connected"), 1);
  EXPECT_GT(Metric(survivor, "bucketmap_version_notifications_total"), 0);
  EXPECT_EQ(Metric(survivor, "bucketmap_leader_epoch"), PsqlInt("SELECT epoch FROM bm_leader"));

  std::printf("failover in %s; %d acknowledged writes\n", absl::FormatDuration(failover).c_str(),
              acked.load());
  ExpectNoGap((*kafka)->bootstrap(), last, "after SIGKILL of the leader");
  // The new leader marks everything published.
  for (int i = 0; i < 100 && Metric(survivor, "bucketmap_outbox_backlog") != 0; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(PsqlInt("SELECT count(*) FROM change_log WHERE published_at IS NULL"), 0);
}

// A frozen leader (SIGSTOP) keeps its socket, so PostgreSQL keeps its
// session and the lock: a follower must cut it off once the session has
// been idle for the lease, and the leader must step down when it resumes.
TEST_F(ReplicaProcessTest, FrozenLeaderIsCutOffWithin10sAndStepsDownWhenItResumes) {
  auto kafka = KafkaMockProcess::Start({{kTopic, 1}});
  ASSERT_TRUE(kafka.ok()) << kafka.status();
  Launch("r1", (*kafka)->bootstrap());
  Launch("r2", (*kafka)->bootstrap());
  const int leader = WaitForLeader(absl::Seconds(10));
  ASSERT_GE(leader, 0);
  ServerProcess& old_leader = *servers_[leader];
  ServerProcess& survivor = *servers_[1 - leader];
  ASSERT_TRUE(CreateBucket(survivor, "b1").ok());
  std::atomic<bool> stop{false};
  std::atomic<int64_t> next_team{1};
  std::thread writer([&] {
    while (!stop.load()) {
      (void)Assign(survivor, next_team.fetch_add(1));
    }
  });
  absl::SleepFor(absl::Milliseconds(500));

  ASSERT_EQ(kill(old_leader.pid(), SIGSTOP), 0);
  frozen_.insert(old_leader.pid());
  const absl::Time frozen = absl::Now();
  const int next = WaitForLeader(absl::Seconds(10));
  const absl::Duration failover = absl::Now() - frozen;
  EXPECT_EQ(next, 1 - leader) << survivor.log();
  EXPECT_LT(failover, absl::Seconds(10));

  // It resumes believing it leads, with its relay mid-flight: it must find
  // its session gone and stop; its MarkPublished are fenced off meanwhile.
  absl::SleepFor(absl::Milliseconds(500));
  ASSERT_EQ(kill(old_leader.pid(), SIGCONT), 0);
  frozen_.erase(old_leader.pid());
  const absl::Time resumed = absl::Now();
  while (absl::Now() - resumed < absl::Seconds(10) && Metric(old_leader, "bucketmap_leader") != 0) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(Metric(old_leader, "bucketmap_leader"), 0);
  EXPECT_EQ(WaitForLeader(absl::Seconds(1)), 1 - leader);
  absl::SleepFor(absl::Milliseconds(500));
  stop = true;
  writer.join();
  const int64_t last = PsqlInt("SELECT max(version) FROM change_log");
  std::printf("frozen leader cut off after %s\n", absl::FormatDuration(failover).c_str());
  ExpectNoGap((*kafka)->bootstrap(), last, "after SIGSTOP/SIGCONT of the leader");
}

TEST_F(ReplicaProcessTest, SigtermSendsWatchersToTheOtherReplica) {
  ServerProcess& first = Launch("r1", "");
  ServerProcess& second = Launch("r2", "");
  ASSERT_TRUE(CreateBucket(first, "b1").ok());

  ClientOptions options;
  options.addresses = {first.address(), second.address()};
  options.client_id = "producer-moving";
  options.role = v1::PRODUCER;
  Client client(options);
  WatchConnectionOptions watch;
  watch.initial_backoff = absl::Milliseconds(20);
  watch.max_backoff = absl::Milliseconds(200);
  WatchConnection connection(&client, watch);
  connection.Start();
  ASSERT_TRUE(client.WaitForVersion(1, absl::Seconds(10)));
  ASSERT_EQ(connection.address(), first.address());

  const int status = first.Kill(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status << ":\n"
                                                             << first.log();
  // Writes on the survivor reach the client through it.
  for (int64_t team = 1; team <= 5; ++team) {
    int64_t version = 0;
    const grpc::Status s = Assign(second, team, &version);
    ASSERT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
    ASSERT_TRUE(client.WaitForVersion(version, absl::Seconds(10))) << "version " << version;
    EXPECT_EQ(client.Route(team).bucket_id(), 1);
  }
  EXPECT_EQ(connection.address(), second.address());
  EXPECT_GE(connection.streams_opened(), 2);
}

}  // namespace
}  // namespace bucketmap
