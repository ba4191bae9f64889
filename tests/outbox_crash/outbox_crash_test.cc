// Crash tests of the outbox relay, with the real bucketmap-server binary:
// writes through the admin API while the relay publishes, SIGKILL of the
// server mid-publish, restart against the same PostgreSQL and the same
// Kafka, more writes, then a real librdkafka consumer reads the changes
// topic back.
//
// Kafka is librdkafka's mock cluster in a helper process of its own
// (tests/support/kafka_mock_helper.cc): an in-process mock, like
// `--kafka_brokers=embedded`, would die with the server it tests.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/v1/events.pb.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "tests/support/kafka_harness.h"
#include "tests/support/local_process.h"
#include "tests/support/pg_harness.h"

namespace bucketmap {
namespace {

constexpr char kTopic[] = "bucketmap_changes";

std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout = absl::Seconds(10)) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

class OutboxCrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = TestPostgres::Start();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
    log_ = pg_->dir() + "/server.log";
    auto kafka = KafkaMockProcess::Start({{kTopic, 1}});
    ASSERT_TRUE(kafka.ok()) << kafka.status();
    kafka_ = *std::move(kafka);
  }

  void TearDown() override { Kill(); }

  // Starts the server against the same PostgreSQL and Kafka every time and
  // waits until it serves.
  void Launch() {
    grpc_port_ = FreePort();
    metrics_port_ = FreePort();
    std::vector<std::string> args = {
        BUCKETMAP_SERVER_BINARY,
        "--postgres_url=" + pg_->url(),
        absl::StrCat("--grpc_listen=127.0.0.1:", grpc_port_),
        absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port_),
        "--kafka_brokers=" + kafka_->bootstrap(),
        // The helper created the topic; the mock does not answer
        // CreateTopics.
        "--kafka_create_topics=false",
        // Handoffs would refuse pins of teams that adding the second bucket
        // moved (open handoff) and add versions of their own; this test is
        // about the outbox (tests/handoff covers handoffs).
        "--handoffs=false",
        absl::StrCat("--changes_topic=", kTopic),
        "--changes_format=protobuf",
    };
    pid_ = Spawn(args, log_);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", grpc_port_),
                                   grpc::InsecureChannelCredentials());
    admin_ = v1::AdminService::NewStub(channel_);
    auto mapping = v1::MappingService::NewStub(channel_);
    for (int i = 0; i < 300; ++i) {
      auto ctx = Ctx(absl::Seconds(1));
      ctx->set_wait_for_ready(true);
      v1::MappingSnapshot snap;
      if (mapping->GetMapping(ctx.get(), v1::GetMappingRequest(), &snap).ok()) return;
      ASSERT_EQ(waitpid(pid_, nullptr, WNOHANG), 0) << "server exited:\n" << ReadFile(log_);
    }
    FAIL() << "server does not serve:\n" << ReadFile(log_);
  }

  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = 0;
  }

  double Metric(const std::string& name) {
    return MetricValue(HttpGet(metrics_port_, "/metrics"), name);
  }

  int64_t PsqlInt(const std::string& sql) {
    auto out = pg_->Psql(sql);
    EXPECT_TRUE(out.ok()) << out.status();
    int64_t value = -1;
    if (out.ok() && !absl::SimpleAtoi(*out, &value)) ADD_FAILURE() << sql << ": " << *out;
    return value;
  }

  void CreateBuckets() {
    for (int i = 1; i <= 2; ++i) {
      v1::CreateBucketRequest req;
      req.mutable_bucket()->set_name(absl::StrCat("b", i));
      (*req.mutable_bucket()->mutable_topics())["ingestion"] =
          absl::StrCat("events_plugin_ingestion_", i);
      req.set_reason("crash test");
      v1::CreateBucketResponse resp;
      grpc::Status s = admin_->CreateBucket(Ctx().get(), req, &resp);
      ASSERT_TRUE(s.ok()) << s.error_message();
    }
  }

  grpc::Status Assign(int64_t team) {
    v1::AssignTeamRequest req;
    req.set_team_id(team);
    req.set_bucket_id(1 + team % 2);
    req.set_reason("crash test");
    v1::AssignTeamResponse resp;
    return admin_->AssignTeam(Ctx().get(), req, &resp);
  }

  std::unique_ptr<TestPostgres> pg_;
  std::unique_ptr<KafkaMockProcess> kafka_;
  std::string log_;
  pid_t pid_ = 0;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
};

TEST_F(OutboxCrashTest, SigkillMidPublishThenRestartPublishesTheRestWithOnlyPublishedDuplicates) {
  ASSERT_NO_FATAL_FAILURE(Launch());
  ASSERT_NO_FATAL_FAILURE(CreateBuckets());

  // Each round: four writers write until the server dies under them; the
  // kill comes once the relay has published some of this round's writes,
  // while writes (and so publishing) are still going on. Up to three
  // rounds, until one kill leaves committed but unpublished versions (the
  // case under test; the relay may, rarely, have caught up at the instant
  // of the kill).
  std::vector<size_t> kill_offsets;  // records in the topic at each kill
  std::atomic<int64_t> next_team{1};
  bool killed_with_backlog = false;
  for (int round = 0; round < 3 && !killed_with_backlog; ++round) {
    if (round > 0) ASSERT_NO_FATAL_FAILURE(Launch());
    const double published_before =
        std::max(0.0, Metric("bucketmap_outbox_last_published_version"));
    std::atomic<bool> stop{false};
    std::atomic<int> ok_writes{0};
    std::vector<std::thread> writers;
    for (int w = 0; w < 4; ++w) {
      writers.emplace_back([&] {
        while (!stop.load()) {
          if (!Assign(next_team.fetch_add(1)).ok()) return;  // the server is gone
          ok_writes.fetch_add(1);
          // A cap, so that a round never runs away when the relay stalls.
          if (ok_writes.load() >= 400) return;
        }
      });
    }
    const absl::Time give_up = absl::Now() + absl::Seconds(60);
    while (absl::Now() < give_up &&
           (ok_writes.load() < 250 ||
            Metric("bucketmap_outbox_last_published_version") < published_before + 20)) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    const int written = ok_writes.load();
    Kill();
    stop = true;
    for (auto& t : writers) t.join();
    // Produce requests the server wrote just before it died may still be in
    // the broker's socket buffer: let them land before taking the count.
    absl::SleepFor(absl::Milliseconds(300));
    ASSERT_LT(absl::Now(), give_up) << "the relay did not publish (" << written << " writes):\n"
                                    << ReadFile(log_);

    const int64_t unpublished =
        PsqlInt("SELECT count(*) FROM change_log WHERE published_at IS NULL");
    const int64_t marked =
        PsqlInt("SELECT coalesce(max(version), 0) FROM change_log WHERE published_at IS NOT NULL");
    auto in_kafka = ReadAllChangeEvents(kafka_->bootstrap(), kTopic, absl::Seconds(20));
    ASSERT_TRUE(in_kafka.ok()) << in_kafka.status();
    kill_offsets.push_back(in_kafka->size());
    const int64_t committed = PsqlInt("SELECT coalesce(max(version), 0) FROM change_log");
    const int64_t in_topic = in_kafka->empty() ? 0 : in_kafka->back().version;
    std::printf(
        "round %d: killed after %d writes; versions 1..%ld committed, up to %ld in the "
        "topic (%zu records), up to %ld marked published, %ld unmarked\n",
        round, written, static_cast<long>(committed), static_cast<long>(in_topic), in_kafka->size(),
        static_cast<long>(marked), static_cast<long>(unpublished));
    killed_with_backlog = unpublished > 0;
  }
  EXPECT_TRUE(killed_with_backlog) << "no kill caught the relay with unpublished versions";

  // The restarted relay resumes from the first unpublished version.
  ASSERT_NO_FATAL_FAILURE(Launch());
  for (int i = 0; i < 50; ++i) {
    grpc::Status s = Assign(next_team.fetch_add(1));
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  const int64_t last = PsqlInt("SELECT max(version) FROM change_log");
  ASSERT_GE(last, 300);

  auto records = ReadAllChangeEvents(kafka_->bootstrap(), kTopic, absl::Seconds(60), last);
  ASSERT_TRUE(records.ok()) << records.status();

  // Consumers drop versions <= the last one seen; what remains must be
  // 1..last, in order. A dropped (duplicate) record must come after a
  // restart and carry a version that was in the topic before that kill,
  // with the same event.
  std::map<int64_t, v1::ChangeEvent> first_seen;
  int64_t seen = 0;
  int64_t duplicates = 0;
  std::vector<int64_t> max_version_at_kill;
  for (size_t i = 0; i < records->size(); ++i) {
    const KafkaRecord& r = (*records)[i];
    for (size_t k = max_version_at_kill.size(); k < kill_offsets.size() && kill_offsets[k] == i;
         ++k) {
      max_version_at_kill.push_back(seen);
    }
    ASSERT_EQ(r.key, "mapping") << "offset " << r.offset;
    v1::ChangeEvent event;
    ASSERT_TRUE(event.ParseFromString(r.value)) << "offset " << r.offset;
    ASSERT_EQ(event.version(), r.version) << "offset " << r.offset;
    ASSERT_TRUE(event.has_mapping_changed()) << "offset " << r.offset;
    if (r.version <= seen) {
      ++duplicates;
      ASSERT_FALSE(max_version_at_kill.empty())
          << "version " << r.version << " duplicated at offset " << r.offset << " before any kill";
      EXPECT_LE(r.version, max_version_at_kill.back())
          << "offset " << r.offset << ": version " << r.version
          << " sent twice but was not in the topic before the last kill";
      EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(event, first_seen[r.version]))
          << "version " << r.version << " was republished with another event";
      continue;
    }
    ASSERT_EQ(r.version, seen + 1) << "gap or reordering at offset " << r.offset;
    seen = r.version;
    first_seen[seen] = std::move(event);
  }
  EXPECT_EQ(seen, last) << "the consumer saw versions 1.." << seen << " of 1.." << last;
  std::printf("%zu records: versions 1..%ld, %ld duplicates after %zu kill(s)\n", records->size(),
              static_cast<long>(seen), static_cast<long>(duplicates), kill_offsets.size());

  // The relay's metrics agree once it has caught up.
  for (int i = 0; i < 100 && Metric("bucketmap_outbox_backlog") != 0; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(Metric("bucketmap_outbox_backlog"), 0);
  EXPECT_EQ(Metric("bucketmap_outbox_last_published_version"), static_cast<double>(last));
  EXPECT_EQ(PsqlInt("SELECT count(*) FROM change_log WHERE published_at IS NULL"), 0);
}

}  // namespace
}  // namespace bucketmap
