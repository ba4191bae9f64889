// The bucketmap-server binary SIGKILLed mid-handoff, with the Kafka mock in
// a helper process (it outlives the server): the restarted server resumes
// the handoff from PostgreSQL and completes it.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/handoff/handoff_test_util.h"
#include "tests/handoff/kafka_test_util.h"
#include "tests/support/kafka_harness.h"
#include "tests/support/pg_harness.h"
#include "tests/support/server_process.h"

namespace bucketmap {
namespace {

using ::testing::ElementsAre;

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  return ctx;
}

class HandoffProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = TestPostgres::Start();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
    auto kafka = KafkaMockProcess::Start({{"bucketmap_changes", 1}, {"in_a", 2}, {"in_b", 1}});
    ASSERT_TRUE(kafka.ok()) << kafka.status();
    kafka_ = *std::move(kafka);
    server_ = std::make_unique<ServerProcess>(BUCKETMAP_SERVER_BINARY, pg_->dir() + "/server.log");
    Launch();
  }

  void Launch() {
    ASSERT_TRUE(server_
                    ->Launch(pg_->url(), {"--kafka_brokers=" + kafka_->bootstrap(),
                                          "--kafka_create_topics=false", "--client_lease=1s",
                                          "--handoff_poll_interval=100ms", "--handoff_grace=2s",
                                          "--move_cooldown=0", "--shutdown_grace=1s"})
                    .ok())
        << server_->log();
  }

  int32_t Create(const std::string& name, const std::string& pool, const std::string& topic) {
    v1::CreateBucketRequest req;
    req.mutable_bucket()->set_name(name);
    req.mutable_bucket()->set_pool(pool);
    (*req.mutable_bucket()->mutable_topics())["ingestion"] = topic;
    (*req.mutable_bucket()->mutable_consumer_groups())["ingestion"] = "g_" + topic;
    req.set_reason("test");
    v1::CreateBucketResponse resp;
    grpc::Status s = server_->admin()->CreateBucket(Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.bucket().id();
  }

  v1::Handoff WaitFor(int64_t id, v1::HandoffPhase phase) {
    return WaitForHandoff(server_->admin(), id, InState(phase), absl::Seconds(30), server_->log());
  }

  // Pins a team that the default pool places on bucket `a` to bucket `b`.
  int64_t MoveATeam(int32_t a, int32_t b, int64_t from) {
    for (int64_t t = from;; ++t) {
      v1::GetTeamRequest get;
      get.set_team_id(t);
      v1::TeamRoute route;
      if (!server_->mapping()->GetTeam(Ctx().get(), get, &route).ok() || route.bucket_id() != a) {
        continue;
      }
      v1::AssignTeamRequest req;
      req.set_team_id(t);
      req.set_bucket_id(b);
      req.set_reason("move");
      v1::AssignTeamResponse resp;
      grpc::Status s = server_->admin()->AssignTeam(Ctx().get(), req, &resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
      EXPECT_EQ(resp.effect().handoffs_size(), 1);
      return resp.effect().handoffs_size() == 1 ? resp.effect().handoffs(0).id() : 0;
    }
  }

  std::unique_ptr<TestPostgres> pg_;
  std::unique_ptr<KafkaMockProcess> kafka_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(HandoffProcessTest, SigkillWhileDrainingAndWhileSwitchingStillCompletes) {
  const int32_t a = Create("a", "default", "in_a");
  const int32_t b = Create("b", "other", "in_b");
  Produce(kafka_->bootstrap(), "in_a", 2, 3);

  const int64_t first = MoveATeam(a, b, 1000);
  v1::Handoff draining = WaitFor(first, v1::HANDOFF_DRAINING);
  EXPECT_THAT(draining.drains(0).end_offsets(), ElementsAre(3, 3));
  server_->Kill(SIGKILL);
  Commit(kafka_->bootstrap(), "g_in_a", "in_a", 2, 3);
  Launch();
  WaitFor(first, v1::HANDOFF_COMPLETED);

  // Killed right after the move, while SWITCHING.
  Produce(kafka_->bootstrap(), "in_a", 2, 1);
  const int64_t second = MoveATeam(a, b, 2000);
  server_->Kill(SIGKILL);
  Launch();
  v1::Handoff resumed = WaitFor(second, v1::HANDOFF_DRAINING);
  EXPECT_THAT(resumed.drains(0).end_offsets(), ElementsAre(4, 4));
  Commit(kafka_->bootstrap(), "g_in_a", "in_a", 2, 4);
  v1::Handoff done = WaitFor(second, v1::HANDOFF_COMPLETED);
  EXPECT_TRUE(done.drains(0).drained());
}

}  // namespace
}  // namespace bucketmap
