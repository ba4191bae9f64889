// The handoff lifecycle on a real server (in-process), a throwaway
// PostgreSQL and librdkafka's mock Kafka cluster owned by the test (so it
// outlives a server restart): switch barrier, drains in order, FORCED after
// grace naming the producer, restart mid-handoff, guards, cancel, and the
// handoff_changed events on the changes topic.
#include <librdkafka/rdkafka.h>

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bucketmap/v1/events.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/kafka/kafka_offsets.h"
#include "server/outbox/embedded_kafka.h"
#include "tests/handoff/handoff_test_util.h"
#include "tests/handoff/kafka_test_util.h"
#include "tests/server/server_fixture.h"
#include "tests/server/watch_client.h"
#include "tests/support/kafka_harness.h"

namespace bucketmap {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kChanges[] = "bucketmap_changes";

class HandoffServerTest : public ServerFixture {
 protected:
  void SetUp() override {
    auto kafka = EmbeddedKafka::Start(1);
    ASSERT_TRUE(kafka.ok()) << kafka.status();
    kafka_ = *std::move(kafka);
    ASSERT_TRUE(kafka_->CreateTopic(kChanges, 1).ok());
    for (const char* t : {"in_a", "out_a", "in_b"}) ASSERT_TRUE(kafka_->CreateTopic(t, 2).ok());
    ServerFixture::SetUp();
  }
  void TearDown() override {
    ServerFixture::TearDown();
    kafka_.reset();
  }

  ServerOptions Options() override {
    ServerOptions options = ServerFixture::Options();
    options.outbox.kafka_brokers = kafka_->bootstraps();
    options.outbox.poll_interval = absl::Milliseconds(100);
    options.outbox.topic_check_timeout = absl::Seconds(5);
    options.outbox.shutdown_flush_timeout = absl::Seconds(1);
    options.handoff.enabled = true;
    options.handoff.grace = grace_;
    options.handoff.max_hold = absl::Minutes(5);
    options.handoff.move_cooldown = cooldown_;
    options.handoff.max_move_lag = max_move_lag_;
    if (max_hold_ > absl::ZeroDuration()) options.handoff.max_hold = max_hold_;
    options.handoff_offsets = offsets_;
    options.handoff.poll_interval = absl::Milliseconds(100);
    options.handoff.kafka_refresh_interval = absl::Milliseconds(300);
    options.watch.client_flush = absl::Milliseconds(100);
    options.watch.client_lease = absl::Seconds(1);
    options.watch.ack_timeout = absl::Seconds(60);
    return options;
  }

  // Bucket "a" (default pool): ingestion -> in_a (group g_in_a), and with
  // `two_roles` processed -> out_a (group g_out_a), drained in that order.
  // Bucket "b" in pool "other" (pins to it move no default placement).
  void MakeBuckets(bool two_roles = false) {
    v1::CreateBucketRequest a;
    a.mutable_bucket()->set_name("a");
    (*a.mutable_bucket()->mutable_topics())["ingestion"] = "in_a";
    (*a.mutable_bucket()->mutable_consumer_groups())["ingestion"] = "g_in_a";
    a.mutable_bucket()->add_drain_order("ingestion");
    if (two_roles) {
      (*a.mutable_bucket()->mutable_topics())["processed"] = "out_a";
      (*a.mutable_bucket()->mutable_consumer_groups())["processed"] = "g_out_a";
      a.mutable_bucket()->add_drain_order("processed");
    }
    a.set_reason("test");
    v1::CreateBucketResponse resp;
    ASSERT_TRUE(admin_->CreateBucket(Ctx().get(), a, &resp).ok());
    a_ = resp.bucket().id();
    v1::CreateBucketRequest b;
    b.mutable_bucket()->set_name("b");
    b.mutable_bucket()->set_pool("other");
    (*b.mutable_bucket()->mutable_topics())["ingestion"] = "in_b";
    (*b.mutable_bucket()->mutable_consumer_groups())["ingestion"] = "g_in_b";
    b.set_reason("test");
    ASSERT_TRUE(admin_->CreateBucket(Ctx().get(), b, &resp).ok());
    b_ = resp.bucket().id();
  }

  grpc::Status Move(int64_t team, int32_t bucket, v1::AssignTeamResponse* resp, bool force = false,
                    bool ordered = true, bool dry_run = false) {
    v1::AssignTeamRequest req;
    req.set_team_id(team);
    req.set_bucket_id(bucket);
    req.set_reason("move for test");
    req.set_force(force);
    if (!ordered) req.set_ordered(false);
    req.set_dry_run(dry_run);
    return admin_->AssignTeam(Ctx().get(), req, resp);
  }

  std::optional<v1::Handoff> Find(int64_t id) { return FindHandoff(admin_.get(), id); }

  template <typename Pred>
  v1::Handoff WaitFor(int64_t id, Pred pred, absl::Duration timeout = absl::Seconds(20)) {
    return WaitForHandoff(admin_.get(), id, pred, timeout);
  }

  // A team placed on bucket a by the default pool.
  int64_t TeamOnA(int64_t from = 1000) {
    for (int64_t t = from;; ++t) {
      v1::GetTeamRequest req;
      req.set_team_id(t);
      v1::TeamRoute route;
      if (mapping_->GetTeam(Ctx().get(), req, &route).ok() && route.bucket_id() == a_) return t;
    }
  }

  std::unique_ptr<EmbeddedKafka> kafka_;
  absl::Duration grace_ = absl::Seconds(2);
  absl::Duration cooldown_ = absl::ZeroDuration();
  absl::Duration max_hold_ = absl::ZeroDuration();
  int64_t max_move_lag_ = 0;
  std::shared_ptr<OffsetReader> offsets_;
  int32_t a_ = 0;
  int32_t b_ = 0;
};

TEST_F(HandoffServerTest, LifecycleCompletesOnceTheGroupCommitsPastTheDrainPoint) {
  MakeBuckets();
  Produce(kafka_->bootstraps(), "in_a", 2, 5);
  const int64_t team = TeamOnA();
  v1::AssignTeamResponse moved;
  ASSERT_TRUE(Move(team, b_, &moved).ok());
  ASSERT_EQ(moved.effect().handoffs_size(), 1);
  const v1::Handoff& opened = moved.effect().handoffs(0);
  EXPECT_EQ(opened.source_bucket_id(), a_);
  EXPECT_THAT(opened.target_bucket_ids(), ElementsAre(b_));
  EXPECT_THAT(opened.team_ids(), ElementsAre(team));
  EXPECT_EQ(opened.opened_version(), moved.version());
  EXPECT_EQ(opened.state(), v1::HANDOFF_SWITCHING);
  ASSERT_EQ(opened.drains_size(), 1);
  EXPECT_EQ(opened.drains(0).partition_count(), 2);

  // GetTeam shows the open handoff.
  v1::GetTeamRequest get;
  get.set_team_id(team);
  v1::TeamRoute route;
  ASSERT_TRUE(mapping_->GetTeam(Ctx().get(), get, &route).ok());
  EXPECT_EQ(route.bucket_id(), b_);
  EXPECT_EQ(route.handoff().id(), opened.id());

  // No producer leased: the barrier passes at the coordinator's first
  // look; the drain point is the end of in_a (5 per partition) and the
  // group lags.
  v1::Handoff draining = WaitFor(opened.id(), [](const v1::Handoff& h) {
    return h.state() == v1::HANDOFF_DRAINING && h.drains(0).lag() > 0;
  });
  EXPECT_THAT(draining.drains(0).end_offsets(), ElementsAre(5, 5));
  // The metrics count it (every replica, from its snapshot).
  bool counted = false;
  for (int i = 0; i < 50 && !counted; ++i) {
    for (const prometheus::MetricFamily& f : server_->metrics().registry().Collect()) {
      if (f.name != "bucketmap_handoffs_open") continue;
      for (const prometheus::ClientMetric& m : f.metric) {
        if (m.label.size() == 1 && m.label[0].value == "DRAINING" && m.gauge.value == 1) {
          counted = true;
        }
      }
    }
    if (!counted) absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_TRUE(counted);
  EXPECT_EQ(draining.drains(0).lag(), 10);
  EXPECT_TRUE(draining.missing_producers().empty());

  Commit(kafka_->bootstraps(), "g_in_a", "in_a", 2, 3);
  WaitFor(opened.id(), [](const v1::Handoff& h) { return h.drains(0).lag() == 4; });
  EXPECT_EQ(Find(opened.id())->state(), v1::HANDOFF_DRAINING);
  Commit(kafka_->bootstraps(), "g_in_a", "in_a", 2, 5);
  v1::Handoff done = WaitFor(opened.id(), InState(v1::HANDOFF_COMPLETED));
  EXPECT_TRUE(done.drains(0).drained());
  EXPECT_THAT(done.drains(0).committed_offsets(), ElementsAre(5, 5));
  EXPECT_GT(done.phase_version(), opened.opened_version());

  ASSERT_TRUE(mapping_->GetTeam(Ctx().get(), get, &route).ok());
  EXPECT_FALSE(route.has_handoff());

  // Every phase change was a version, published as handoff_changed.
  auto events =
      ReadAllChangeEvents(kafka_->bootstraps(), kChanges, absl::Seconds(10), done.phase_version());
  ASSERT_TRUE(events.ok()) << events.status();
  std::vector<v1::HandoffPhase> phases;
  for (const KafkaRecord& r : *events) {
    v1::ChangeEvent e;
    ASSERT_TRUE(e.ParseFromString(r.value));
    if (!e.has_handoff_changed()) continue;
    for (const v1::Handoff& h : e.handoff_changed().handoffs()) {
      if (h.id() == opened.id()) phases.push_back(h.state());
    }
    if (e.version() == opened.opened_version()) {
      // The opening version carries the route change too.
      EXPECT_EQ(e.handoff_changed().delta().set().team_ids_size(), 1);
    }
  }
  EXPECT_THAT(phases,
              ElementsAre(v1::HANDOFF_SWITCHING, v1::HANDOFF_DRAINING, v1::HANDOFF_COMPLETED));
}

TEST_F(HandoffServerTest, ProducerThatNeverAcksIsNamedAndTheHandoffEndsForced) {
  MakeBuckets();
  const int64_t team = TeamOnA();
  // One producer drains properly, one never ACKs.
  WatchClient good(mapping_.get());
  good.Subscribe("good-producer", v1::PRODUCER);
  WatchClient stuck(mapping_.get());
  stuck.Subscribe("stuck-producer", v1::PRODUCER);
  std::atomic<bool> stop{false};
  std::thread acker([&] {
    while (!stop) {
      std::optional<v1::WatchResponse> r = good.Next(absl::Milliseconds(100));
      if (r.has_value() && r->has_push()) good.Ack(r->push(), r->push().to_version());
    }
  });
  absl::SleepFor(absl::Milliseconds(500));  // both sessions flushed and leased

  v1::AssignTeamResponse moved;
  ASSERT_TRUE(Move(team, b_, &moved).ok());
  const int64_t id = moved.effect().handoffs(0).id();
  // While SWITCHING, the leader shows who is still missing.
  v1::Handoff switching = WaitFor(id, [](const v1::Handoff& h) {
    return h.state() == v1::HANDOFF_SWITCHING && h.missing_producers_size() > 0;
  });
  EXPECT_THAT(switching.missing_producers(), ElementsAre("stuck-producer"));

  // After grace the barrier passes anyway; with nothing to drain the
  // handoff ends at once, FORCED, naming the producer.
  v1::Handoff forced = WaitFor(id, InState(v1::HANDOFF_FORCED));
  EXPECT_THAT(forced.missing_producers(), ElementsAre("stuck-producer"));
  EXPECT_THAT(forced.end_reason(), HasSubstr("stuck-producer"));
  stop = true;
  acker.join();
}

TEST_F(HandoffServerTest, RestartMidHandoffStillCompletes) {
  MakeBuckets();
  Produce(kafka_->bootstraps(), "in_a", 2, 3);
  const int64_t team = TeamOnA();
  v1::AssignTeamResponse moved;
  ASSERT_TRUE(Move(team, b_, &moved).ok());
  const int64_t id = moved.effect().handoffs(0).id();
  WaitFor(id, InState(v1::HANDOFF_DRAINING));

  StopServer();
  Commit(kafka_->bootstraps(), "g_in_a", "in_a", 2, 3);
  StartServer();
  v1::Handoff done = WaitFor(id, InState(v1::HANDOFF_COMPLETED));
  EXPECT_THAT(done.drains(0).end_offsets(), ElementsAre(3, 3));

  // A restart while SWITCHING: the new leader (no producer leased, so it
  // does not wait a lease) goes on.
  const int64_t other = TeamOnA(team + 1);
  ASSERT_TRUE(Move(other, b_, &moved).ok());
  const int64_t id2 = moved.effect().handoffs(0).id();
  StopServer();
  StartServer();
  WaitFor(id2, InState(v1::HANDOFF_COMPLETED));
}

TEST_F(HandoffServerTest, SecondMoveWhileOpenIsRefusedUntilCancelled) {
  MakeBuckets();
  Produce(kafka_->bootstraps(), "in_a", 2, 1);
  const int64_t team = TeamOnA();
  v1::AssignTeamResponse moved;
  // A dry run lists the handoff it would open and commits nothing.
  ASSERT_TRUE(Move(team, b_, &moved, false, true, /*dry_run=*/true).ok());
  ASSERT_EQ(moved.effect().handoffs_size(), 1);
  EXPECT_EQ(moved.effect().handoffs(0).source_bucket_id(), a_);
  EXPECT_THAT(moved.effect().moved_teams(0).team_id(), team);
  ASSERT_TRUE(Move(team, b_, &moved).ok());
  const int64_t id = moved.effect().handoffs(0).id();

  grpc::Status again = Move(team, a_, &moved);
  EXPECT_EQ(again.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(again.error_message(), HasSubstr(absl::StrCat("team ", team)));
  EXPECT_THAT(again.error_message(), HasSubstr(absl::StrCat("handoff ", id)));
  // Force does not override it.
  EXPECT_EQ(Move(team, a_, &moved, /*force=*/true).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  v1::CancelHandoffRequest cancel;
  cancel.set_handoff_id(id);
  cancel.set_reason("operator gave up");
  v1::CancelHandoffResponse cancelled;
  ASSERT_TRUE(admin_->CancelHandoff(Ctx().get(), cancel, &cancelled).ok());
  EXPECT_EQ(cancelled.handoff().state(), v1::HANDOFF_CANCELLED);
  EXPECT_THAT(cancelled.handoff().end_reason(), HasSubstr("operator gave up"));
  EXPECT_EQ(admin_->CancelHandoff(Ctx().get(), cancel, &cancelled).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(Move(team, a_, &moved).ok());
}

TEST_F(HandoffServerTest, TwoRolesDrainInOrder) {
  MakeBuckets(/*two_roles=*/true);
  Produce(kafka_->bootstraps(), "in_a", 2, 4);
  Produce(kafka_->bootstraps(), "out_a", 2, 2);
  const int64_t team = TeamOnA();
  v1::AssignTeamResponse moved;
  ASSERT_TRUE(Move(team, b_, &moved).ok());
  const int64_t id = moved.effect().handoffs(0).id();
  ASSERT_EQ(moved.effect().handoffs(0).drains_size(), 2);
  EXPECT_EQ(moved.effect().handoffs(0).drains(0).role(), "ingestion");
  EXPECT_EQ(moved.effect().handoffs(0).drains(1).role(), "processed");

  WaitFor(id, InState(v1::HANDOFF_DRAINING));
  // The downstream group is done first: the handoff still waits on the
  // upstream role, and has not taken the downstream drain point yet.
  Commit(kafka_->bootstraps(), "g_out_a", "out_a", 2, 2);
  absl::SleepFor(absl::Seconds(1));
  std::optional<v1::Handoff> h = Find(id);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->state(), v1::HANDOFF_DRAINING);
  EXPECT_EQ(h->drain_index(), 0);
  EXPECT_TRUE(h->drains(1).end_offsets().empty());

  // More arrives downstream before the upstream drain completes: the
  // downstream drain point, taken only after upstream drained, covers it.
  Produce(kafka_->bootstraps(), "out_a", 2, 1);
  Commit(kafka_->bootstraps(), "g_in_a", "in_a", 2, 4);
  v1::Handoff next = WaitFor(id, [](const v1::Handoff& x) { return x.drain_index() == 1; });
  EXPECT_TRUE(next.drains(0).drained());
  EXPECT_THAT(next.drains(1).end_offsets(), ElementsAre(3, 3));
  EXPECT_EQ(next.state(), v1::HANDOFF_DRAINING);
  Commit(kafka_->bootstraps(), "g_out_a", "out_a", 2, 3);
  v1::Handoff done = WaitFor(id, InState(v1::HANDOFF_COMPLETED));
  EXPECT_TRUE(done.drains(1).drained());
}

TEST_F(HandoffServerTest, DrainingBucketHandsOffItsDefaultPlacedTeamsVisibly) {
  MakeBuckets();
  v1::CreateBucketRequest c;
  c.mutable_bucket()->set_name("c");
  (*c.mutable_bucket()->mutable_topics())["ingestion"] = "in_b";
  (*c.mutable_bucket()->mutable_consumer_groups())["ingestion"] = "g_c";
  c.set_reason("test");
  v1::CreateBucketResponse created;
  ASSERT_TRUE(admin_->CreateBucket(Ctx().get(), c, &created).ok());
  const int32_t c_id = created.bucket().id();
  // Adding c moved some of a's default-placed teams to c: one handoff.
  ASSERT_EQ(created.effect().handoffs_size(), 1);
  EXPECT_EQ(created.effect().handoffs(0).source_bucket_id(), a_);
  EXPECT_EQ(created.effect().handoffs(0).source_pool(), "default");
  WaitFor(created.effect().handoffs(0).id(), InState(v1::HANDOFF_COMPLETED));
  const int64_t team = TeamOnA();

  // A dry run of DRAINING c lists the handoff it would open, and commits
  // nothing.
  v1::UpdateBucketRequest drain;
  drain.mutable_bucket()->set_id(c_id);
  drain.mutable_bucket()->set_state(v1::DRAINING);
  drain.mutable_update_mask()->add_paths("state");
  drain.set_reason("drain c");
  drain.set_dry_run(true);
  v1::UpdateBucketResponse preview;
  ASSERT_TRUE(admin_->UpdateBucket(Ctx().get(), drain, &preview).ok());
  ASSERT_EQ(preview.effect().handoffs_size(), 1);
  EXPECT_EQ(preview.effect().handoffs(0).source_bucket_id(), c_id);
  EXPECT_THAT(preview.effect().handoffs(0).target_bucket_ids(), ElementsAre(a_));
  ASSERT_EQ(preview.effect().pool_shifts_size(), 1);

  Produce(kafka_->bootstraps(), "in_b", 2, 2);  // c's drain waits for g_c
  drain.set_dry_run(false);
  v1::UpdateBucketResponse drained;
  ASSERT_TRUE(admin_->UpdateBucket(Ctx().get(), drain, &drained).ok());
  ASSERT_EQ(drained.effect().handoffs_size(), 1);
  const int64_t id = drained.effect().handoffs(0).id();
  // A team c held by default placement is in it: GetTeam and ListHandoffs
  // by team show it; a team that stayed on a is in none.
  int64_t moved = 0;
  for (int64_t t = 1; moved == 0; ++t) {
    v1::GetTeamRequest get;
    get.set_team_id(t);
    v1::TeamRoute route;
    ASSERT_TRUE(mapping_->GetTeam(Ctx().get(), get, &route).ok());
    if (route.has_handoff() && route.handoff().id() == id) moved = t;
  }
  v1::ListHandoffsRequest by_team;
  by_team.set_team_id(moved);
  v1::ListHandoffsResponse listed;
  ASSERT_TRUE(admin_->ListHandoffs(Ctx().get(), by_team, &listed).ok());
  ASSERT_EQ(listed.handoffs_size(), 1);
  EXPECT_EQ(listed.handoffs(0).id(), id);
  by_team.set_team_id(team);
  ASSERT_TRUE(admin_->ListHandoffs(Ctx().get(), by_team, &listed).ok());
  EXPECT_EQ(listed.handoffs_size(), 0);
  // c cannot retire while its handoff is open.
  v1::UpdateBucketRequest retire;
  retire.mutable_bucket()->set_id(c_id);
  retire.mutable_bucket()->set_state(v1::RETIRED);
  retire.mutable_update_mask()->add_paths("state");
  retire.set_reason("retire c");
  v1::UpdateBucketResponse retired;
  grpc::Status s = admin_->UpdateBucket(Ctx().get(), retire, &retired);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr(absl::StrCat("open handoff ", id)));
  Commit(kafka_->bootstraps(), "g_c", "in_b", 2, 2);
  WaitFor(id, InState(v1::HANDOFF_COMPLETED));
  ASSERT_TRUE(admin_->UpdateBucket(Ctx().get(), retire, &retired).ok());
}

class HandoffCooldownTest : public HandoffServerTest {
 protected:
  void SetUp() override {
    cooldown_ = absl::Hours(1);
    HandoffServerTest::SetUp();
  }
};

TEST_F(HandoffCooldownTest, CooldownRefusesAMoveUnlessForcedAndForceIsRecorded) {
  MakeBuckets();
  const int64_t team = TeamOnA();
  v1::AssignTeamResponse moved;
  // Unordered moves open no hold, so only the cooldown stands in the way.
  ASSERT_TRUE(Move(team, b_, &moved, false, /*ordered=*/false).ok());
  ASSERT_EQ(moved.effect().handoffs_size(), 1);
  EXPECT_EQ(moved.effect().handoffs(0).state(), v1::HANDOFF_FORCED);
  EXPECT_EQ(moved.effect().handoffs(0).end_reason(), "unordered");

  grpc::Status s = Move(team, a_, &moved, false, false);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("move_cooldown"));
  ASSERT_TRUE(Move(team, a_, &moved, /*force=*/true, false).ok());

  v1::GetHistoryRequest history;
  history.set_team_id(team);
  v1::GetHistoryResponse records;
  ASSERT_TRUE(admin_->GetHistory(Ctx().get(), history, &records).ok());
  ASSERT_GE(records.records_size(), 2);
  EXPECT_EQ(records.records(records.records_size() - 1).kind(), "AssignTeam+force");
}

// Reads the mock cluster, but can pretend a topic's partition count changed
// (librdkafka's mock cannot add partitions).
class RepartitioningOffsets final : public OffsetReader {
 public:
  explicit RepartitioningOffsets(std::unique_ptr<OffsetReader> real) : real_(std::move(real)) {}
  void Pretend(const std::string& topic, int32_t partitions) {
    absl::MutexLock lock(&mu_);
    pretend_[topic] = partitions;
  }
  absl::StatusOr<std::map<std::string, int32_t>> PartitionCounts(absl::Duration timeout) override {
    auto counts = real_->PartitionCounts(timeout);
    if (!counts.ok()) return counts;
    absl::MutexLock lock(&mu_);
    for (const auto& [topic, n] : pretend_) (*counts)[topic] = n;
    return counts;
  }
  absl::StatusOr<std::vector<int64_t>> EndOffsets(const std::string& topic, int32_t partitions,
                                                  absl::Duration timeout) override {
    return real_->EndOffsets(topic, partitions, timeout);
  }
  absl::StatusOr<std::vector<int64_t>> CommittedOffsets(const std::string& group,
                                                        const std::string& topic,
                                                        int32_t partitions,
                                                        absl::Duration timeout) override {
    return real_->CommittedOffsets(group, topic, partitions, timeout);
  }

 private:
  std::unique_ptr<OffsetReader> real_;
  absl::Mutex mu_;
  std::map<std::string, int32_t> pretend_ ABSL_GUARDED_BY(mu_);
};

TEST_F(HandoffServerTest, PartitionCountChangeForcesTheHandoff) {
  StopServer();
  auto real = RdKafkaOffsetReader::Create(kafka_->bootstraps());
  ASSERT_TRUE(real.ok()) << real.status();
  auto fake = std::make_shared<RepartitioningOffsets>(*std::move(real));
  offsets_ = fake;
  StartServer();
  MakeBuckets();
  Produce(kafka_->bootstraps(), "in_a", 2, 2);
  v1::AssignTeamResponse moved;
  ASSERT_TRUE(Move(TeamOnA(), b_, &moved).ok());
  const int64_t id = moved.effect().handoffs(0).id();
  WaitFor(id, InState(v1::HANDOFF_DRAINING));
  fake->Pretend("in_a", 3);
  v1::Handoff forced = WaitFor(id, InState(v1::HANDOFF_FORCED));
  EXPECT_EQ(forced.end_reason(),
            "partition count of topic in_a changed from 2 to 3 during the handoff");
}

TEST_F(HandoffServerTest, MaxHoldForcesAndLagAboveTheBoundRefusesMoves) {
  StopServer();
  max_hold_ = absl::Seconds(3);
  max_move_lag_ = 5;
  StartServer();
  MakeBuckets();
  Produce(kafka_->bootstraps(), "in_a", 2, 5);
  const int64_t team = TeamOnA();
  // Lag of bucket a is 10 > 5, once the monitor has read it (every 300 ms).
  absl::SleepFor(absl::Seconds(1));
  v1::AssignTeamResponse moved;
  grpc::Status refused = Move(team, b_, &moved);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(refused.error_message(), HasSubstr("max_move_lag"));
  ASSERT_TRUE(Move(team, b_, &moved, /*force=*/true).ok());
  const int64_t id = moved.effect().handoffs(0).id();
  // Nobody commits: --max_hold ends it.
  v1::Handoff forced = WaitFor(id, InState(v1::HANDOFF_FORCED));
  EXPECT_THAT(forced.end_reason(), HasSubstr("max_hold"));
}

class HandoffNoKafkaTest : public ServerFixture {
 protected:
  ServerOptions Options() override {
    ServerOptions options = ServerFixture::Options();
    options.handoff.enabled = true;
    options.handoff.poll_interval = absl::Milliseconds(100);
    options.watch.client_lease = absl::Milliseconds(500);
    options.watch.client_flush = absl::Milliseconds(100);
    return options;
  }
};

TEST_F(HandoffNoKafkaTest, WithoutKafkaADrainWithAGroupEndsForcedAndOneWithoutCompletes) {
  // MakeBucket gives an ingestion topic and no consumer group.
  const int32_t a = MakeBucket("a");
  const int32_t b = MakeBucket("b", "other");
  // A leased producer, so that the handoffs out of a (no group) open
  // SWITCHING and are ended by the coordinator (with no producer leased
  // they would be COMPLETED at once). It ACKs drained_version 0 until
  // `drain` is set, then re-ACKs, and drains every later push.
  WatchClient producer(mapping_.get());
  producer.Subscribe("producer-1", v1::PRODUCER);
  std::atomic<bool> drain{false};
  std::atomic<bool> stop{false};
  std::thread acker([&] {
    std::optional<v1::WatchResponse::Push> last;
    bool reported = false;  // the last push was ACKed as drained
    while (!stop) {
      std::optional<v1::WatchResponse> r = producer.Next(absl::Milliseconds(50));
      if (r.has_value() && r->has_push()) {
        last = r->push();
        reported = drain;
        producer.Ack(*last, reported ? last->to_version() : 0);
      } else if (last.has_value() && drain && !reported) {
        reported = true;
        producer.Ack(*last, last->to_version());
      }
    }
  });
  WaitForClientLeased(admin_.get(), "producer-1");
  v1::CreateBucketRequest c;
  c.mutable_bucket()->set_name("c");
  c.mutable_bucket()->set_pool("third");
  (*c.mutable_bucket()->mutable_topics())["ingestion"] = "in_c";
  (*c.mutable_bucket()->mutable_consumer_groups())["ingestion"] = "g_c";
  c.set_reason("test");
  v1::CreateBucketResponse created;
  ASSERT_TRUE(admin_->CreateBucket(Ctx().get(), c, &created).ok());
  const int32_t with_group = created.bucket().id();

  v1::AssignTeamResponse first;
  ASSERT_TRUE(Pin(1, b, &first).ok());  // from a: no group, nothing to wait for
  ASSERT_EQ(first.effect().handoffs_size(), 1);
  EXPECT_EQ(first.effect().handoffs(0).source_bucket_id(), a);
  v1::AssignTeamResponse second;
  ASSERT_TRUE(Pin(2, with_group, &second).ok());
  v1::AssignTeamResponse third;
  EXPECT_FALSE(Pin(2, b, &third).ok());  // team 2 is in an open handoff
  drain = true;

  auto wait_ended = [&](int64_t id) { return WaitForHandoff(admin_.get(), id, Ended); };
  EXPECT_EQ(wait_ended(first.effect().handoffs(0).id()).state(), v1::HANDOFF_COMPLETED);
  // Team 2 moves out of c (which has a group) by a second pin.
  ASSERT_TRUE(wait_ended(second.effect().handoffs(0).id()).state() == v1::HANDOFF_COMPLETED);
  ASSERT_TRUE(Pin(2, b, &third).ok());
  ASSERT_EQ(third.effect().handoffs_size(), 1);
  EXPECT_EQ(third.effect().handoffs(0).source_bucket_id(), with_group);
  v1::Handoff forced = wait_ended(third.effect().handoffs(0).id());
  EXPECT_EQ(forced.state(), v1::HANDOFF_FORCED);
  EXPECT_THAT(forced.end_reason(), HasSubstr("no kafka"));
  stop = true;
  acker.join();
}

// Records a watch client's lease in the fixture's database, as a replica
// serving it would (PgStore::SaveClients), leased for `lease`.
void SaveLease(const std::string& url, const std::string& client_id, v1::ClientRole role,
               int64_t drained_version, absl::Duration lease) {
  PgStoreOptions options;
  options.url = url;
  auto store = PgStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  ClientState c;
  c.client_id = client_id;
  c.role = role;
  c.replica = "another-replica";
  c.peer = "test";
  c.applied_version = drained_version;
  c.drained_version = drained_version;
  c.connected = true;
  c.connected_at = absl::Now();
  c.last_ack = absl::Now();
  ASSERT_TRUE((*store)->SaveClients({c}, absl::Now() + lease).ok());
}

// A calm first day (issue 10, item 7): the server as the binary runs it by
// default (handoffs on, --move_cooldown 1h, --handoff_grace 30s,
// --client_lease 30s), no Kafka, and no client connected.
class CalmFirstDayTest : public ServerFixture {
 protected:
  ServerOptions Options() override {
    ServerOptions options = ServerFixture::Options();
    options.admin.write_timeout = absl::Seconds(60);
    options.handoff.enabled = true;
    options.handoff.move_cooldown = absl::Hours(1);
    return options;
  }

  // Creates bucket `name` (an ingestion topic, no consumer group) and
  // returns the handoffs it opened.
  std::vector<v1::Handoff> Create(const std::string& name, bool dry_run = false) {
    v1::CreateBucketRequest req;
    req.mutable_bucket()->set_name(name);
    (*req.mutable_bucket()->mutable_topics())["ingestion"] = "events_" + name;
    req.set_reason("first day");
    req.set_dry_run(dry_run);
    v1::CreateBucketResponse resp;
    grpc::Status s = admin_->CreateBucket(Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return {resp.effect().handoffs().begin(), resp.effect().handoffs().end()};
  }

  std::vector<v1::Handoff> List(bool include_ended) {
    v1::ListHandoffsRequest req;
    req.set_include_ended(include_ended);
    req.set_page_size(1000);
    v1::ListHandoffsResponse resp;
    grpc::Status s = admin_->ListHandoffs(Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return {resp.handoffs().begin(), resp.handoffs().end()};
  }
};

MATCHER(CompletedAtOnce, "COMPLETED at its opening, saying there was nothing to wait for") {
  return arg.state() == v1::HANDOFF_COMPLETED && arg.phase_version() == arg.opened_version() &&
         absl::StrContains(arg.end_reason(),
                           absl::StrCat("nothing to wait for: no producer session was leased and "
                                        "bucket ",
                                        arg.source_bucket_id(), " has no consumer group"));
}

TEST_F(CalmFirstDayTest, FourBucketsThenABulkAssignOf100kTeamsIsAcceptedAtOnce) {
  std::vector<v1::Handoff> opened;
  for (const char* name : {"b1", "b2", "b3"}) {
    for (const v1::Handoff& h : Create(name)) opened.push_back(h);
  }
  // A dry run says the same as the write.
  for (const v1::Handoff& h : Create("b4", /*dry_run=*/true)) {
    EXPECT_EQ(h.state(), v1::HANDOFF_COMPLETED) << h.ShortDebugString();
  }
  for (const v1::Handoff& h : Create("b4")) opened.push_back(h);
  // Bucket 2 moved slots out of 1, bucket 3 out of 1 and 2, bucket 4 out
  // of 1, 2 and 3.
  ASSERT_EQ(opened.size(), 6u);
  for (const v1::Handoff& h : opened) EXPECT_THAT(h, CompletedAtOnce()) << h.ShortDebugString();

  const int64_t version = Version();
  v1::BulkAssignRequest req;
  req.set_reason("the existing team -> bucket mapping");
  constexpr int64_t kTeams = 100000;
  for (int64_t team = 1; team <= kTeams; ++team) {
    v1::BulkAssignment* a = req.add_assignments();
    a->set_team_id(team);
    a->set_bucket_id(static_cast<int32_t>(1 + team % 4));
  }
  v1::BulkAssignResponse resp;
  const absl::Time start = absl::Now();
  grpc::Status s = admin_->BulkAssign(Ctx(absl::Seconds(60)).get(), req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.version(), version + 1);  // one version
  EXPECT_EQ(resp.effect().assignments_changed(), kTeams);
  // Well within one client lease (30 s), let alone a grace period: nothing
  // waited for the coordinator.
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  ASSERT_EQ(resp.effect().handoffs_size(), 4);  // out of each bucket
  for (const v1::Handoff& h : resp.effect().handoffs()) {
    EXPECT_THAT(h, CompletedAtOnce()) << h.source_bucket_id();
    EXPECT_EQ(h.opened_version(), resp.version());
  }

  // ListHandoffs: none open; the ten ended ones, each COMPLETED with its
  // reason.
  EXPECT_THAT(List(false), ::testing::IsEmpty());
  std::vector<v1::Handoff> all = List(true);
  ASSERT_EQ(all.size(), 10u);
  for (const v1::Handoff& h : all) EXPECT_THAT(h, CompletedAtOnce()) << h.id();
  EXPECT_EQ(Version(), version + 1);  // and the coordinator added no version
}

TEST_F(CalmFirstDayTest, ALeasedProducerKeepsTheHandoffOpen) {
  Create("b1");
  SaveLease(pg_->url(), "producer-1", v1::PRODUCER, 0, absl::Minutes(5));
  std::vector<v1::Handoff> opened = Create("b2");
  ASSERT_EQ(opened.size(), 1u);
  EXPECT_EQ(opened[0].state(), v1::HANDOFF_SWITCHING);
  EXPECT_EQ(opened[0].end_reason(), "");
  ASSERT_EQ(List(false).size(), 1u);
}

TEST_F(CalmFirstDayTest, AConsumerLeaseAloneDoesNotKeepItOpen) {
  Create("b1");
  SaveLease(pg_->url(), "consumer-1", v1::CONSUMER, 0, absl::Minutes(5));
  SaveLease(pg_->url(), "producer-gone", v1::PRODUCER, 0, absl::Milliseconds(1));
  absl::SleepFor(absl::Milliseconds(10));  // the producer's lease has expired
  std::vector<v1::Handoff> opened = Create("b2");
  ASSERT_EQ(opened.size(), 1u);
  EXPECT_THAT(opened[0], CompletedAtOnce()) << opened[0].ShortDebugString();
}

// The leader's wait: a coordinator that has just taken over waits one
// client lease (30 s here, as by default) only while a producer lease is
// alive.
class HandoffLeaderWaitTest : public HandoffServerTest {
 protected:
  ServerOptions Options() override {
    ServerOptions options = HandoffServerTest::Options();
    options.watch.client_lease = absl::Seconds(30);
    return options;
  }
};

TEST_F(HandoffLeaderWaitTest, WithNoLiveProducerLeaseTheBarrierIsJudgedAtOnce) {
  MakeBuckets();
  // A consumer's lease does not count: the barrier waits for producers.
  SaveLease(pg_->url(), "consumer-1", v1::CONSUMER, 0, absl::Minutes(5));
  Produce(kafka_->bootstraps(), "in_a", 2, 5);  // so that it stays DRAINING
  const int64_t team = TeamOnA();
  v1::AssignTeamResponse moved;
  ASSERT_TRUE(Move(team, b_, &moved).ok());
  ASSERT_EQ(moved.effect().handoffs_size(), 1);
  const v1::Handoff& opened = moved.effect().handoffs(0);
  EXPECT_EQ(opened.state(), v1::HANDOFF_SWITCHING);  // a has a group to drain
  const absl::Time start = absl::Now();
  v1::Handoff draining = WaitFor(opened.id(), InState(v1::HANDOFF_DRAINING), absl::Seconds(10));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_TRUE(draining.missing_producers().empty());
}

TEST_F(HandoffLeaderWaitTest, WithALiveProducerLeaseItStillWaitsOneLease) {
  MakeBuckets();
  // A producer whose recorded state has drained everything: only the
  // leader's wait can hold the barrier.
  SaveLease(pg_->url(), "producer-1", v1::PRODUCER, int64_t{1} << 40, absl::Minutes(5));
  const int64_t team = TeamOnA();
  v1::AssignTeamResponse moved;
  ASSERT_TRUE(Move(team, b_, &moved).ok());
  ASSERT_EQ(moved.effect().handoffs_size(), 1);
  const int64_t id = moved.effect().handoffs(0).id();
  absl::SleepFor(absl::Seconds(3));  // 30 poll intervals
  std::optional<v1::Handoff> h = Find(id);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->state(), v1::HANDOFF_SWITCHING);
  EXPECT_TRUE(h->missing_producers().empty());
}

}  // namespace
}  // namespace bucketmap
