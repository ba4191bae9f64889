// WatchMapping end to end: catch-up, pushes, ACK/NACK, heartbeats,
// timeouts, filters, resumes and many watchers, on a real PostgreSQL.
#include <atomic>
#include <functional>
#include <optional>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_fixture.h"
#include "tests/server/watch_client.h"

namespace bucketmap {
namespace {

using ::testing::HasSubstr;

class WatchTest : public ServerFixture {
 protected:
  ServerOptions Options() override {
    ServerOptions options = ServerFixture::Options();
    options.watch.heartbeat = heartbeat_;
    options.watch.ack_timeout = ack_timeout_;
    options.watch.resume_max_versions = resume_max_versions_;
    options.watch.max_deltas_per_push = 8;
    options.watch.client_flush = absl::Milliseconds(100);
    return options;
  }

  // Reads the catch-up (one push, then SYNC) and ACKs the push.
  v1::WatchResponse::Push CatchUp(WatchClient& client) {
    std::optional<v1::WatchResponse> push = client.NextNonHeartbeat();
    EXPECT_TRUE(push.has_value() && push->has_push());
    std::optional<v1::WatchResponse> sync = client.NextNonHeartbeat();
    EXPECT_TRUE(sync.has_value() && sync->has_sync());
    if (!push.has_value()) return {};
    client.Ack(push->push());
    return push->push();
  }

  // Polls ListClients (fed by batched flushes) until the only client
  // matches `pred`.
  std::optional<v1::ClientInfo> WaitForClient(std::function<bool(const v1::ClientInfo&)> pred) {
    for (int i = 0; i < 50; ++i) {
      v1::ListClientsResponse clients;
      EXPECT_TRUE(admin_->ListClients(Ctx().get(), v1::ListClientsRequest(), &clients).ok());
      if (clients.clients_size() == 1 && pred(clients.clients(0))) return clients.clients(0);
      absl::SleepFor(absl::Milliseconds(50));
    }
    return std::nullopt;
  }

  absl::Duration heartbeat_ = absl::Seconds(30);
  absl::Duration ack_timeout_ = absl::Seconds(30);
  int resume_max_versions_ = 1000;
};

TEST_F(WatchTest, SnapshotThenSyncThenDeltaPushes) {
  const int32_t b1 = MakeBucket("b1");
  ASSERT_TRUE(Pin(7, b1).ok());
  WatchClient client(mapping_.get());
  client.Subscribe("producer-1", v1::PRODUCER);
  const v1::WatchResponse::Push first = CatchUp(client);
  EXPECT_EQ(first.to_version(), 2);
  EXPECT_EQ(first.snapshot().version(), 2);
  EXPECT_EQ(first.snapshot().assignments().team_ids(0), 7);
  EXPECT_FALSE(first.snapshot().cluster_id().empty());
  EXPECT_FALSE(first.reset());

  ASSERT_TRUE(Pin(8, b1).ok());
  std::optional<v1::WatchResponse> next = client.NextNonHeartbeat();
  ASSERT_TRUE(next.has_value() && next->has_push());
  const v1::WatchResponse::Push& push = next->push();
  EXPECT_EQ(push.from_version(), 2);
  EXPECT_EQ(push.to_version(), 3);
  EXPECT_GT(push.nonce(), first.nonce());
  ASSERT_EQ(push.deltas_size(), 1);
  EXPECT_EQ(push.deltas(0).to_version(), 3);
  EXPECT_EQ(push.deltas(0).set().team_ids(0), 8);
  EXPECT_EQ(push.deltas(0).set().targets(0), b1);
  client.Ack(push);

  // ListClients shows the applied version, recorded in PostgreSQL.
  std::optional<v1::ClientInfo> info =
      WaitForClient([](const v1::ClientInfo& c) { return c.applied_version() == 3; });
  ASSERT_TRUE(info.has_value()) << "ListClients never showed applied_version 3";
  EXPECT_EQ(info->client_id(), "producer-1");
  EXPECT_EQ(info->role(), v1::PRODUCER);
  EXPECT_TRUE(info->connected());
}

TEST_F(WatchTest, OnlyOnePushInFlightUntilAcked) {
  const int32_t b1 = MakeBucket("b1");
  WatchClient client(mapping_.get());
  client.Subscribe("c1", v1::OBSERVER);
  CatchUp(client);
  ASSERT_TRUE(Pin(1, b1).ok());
  std::optional<v1::WatchResponse> push = client.NextNonHeartbeat();
  ASSERT_TRUE(push.has_value() && push->has_push());
  EXPECT_EQ(push->push().to_version(), 2);
  // Not ACKed: further versions wait.
  ASSERT_TRUE(Pin(2, b1).ok());
  ASSERT_TRUE(Pin(3, b1).ok());
  EXPECT_FALSE(client.NextNonHeartbeat(absl::Milliseconds(500)).has_value());
  client.Ack(push->push());
  // One push now carries both pending versions' frames.
  std::optional<v1::WatchResponse> batched = client.NextNonHeartbeat();
  ASSERT_TRUE(batched.has_value() && batched->has_push());
  EXPECT_EQ(batched->push().from_version(), 2);
  EXPECT_EQ(batched->push().to_version(), 4);
  EXPECT_EQ(batched->push().deltas_size(), 2);
}

TEST_F(WatchTest, NackIsAnsweredWithSnapshotAndCounted) {
  const int32_t b1 = MakeBucket("b1");
  WatchClient client(mapping_.get());
  client.Subscribe("c1", v1::CONSUMER);
  CatchUp(client);
  ASSERT_TRUE(Pin(1, b1).ok());
  std::optional<v1::WatchResponse> push = client.NextNonHeartbeat();
  ASSERT_TRUE(push.has_value() && push->has_push());
  EXPECT_EQ(push->push().deltas_size(), 1);
  client.Nack(push->push(), "checksum mismatch");
  std::optional<v1::WatchResponse> snap = client.NextNonHeartbeat();
  ASSERT_TRUE(snap.has_value() && snap->has_push());
  EXPECT_TRUE(snap->push().has_snapshot());
  EXPECT_EQ(snap->push().snapshot().version(), 2);
  client.Ack(snap->push());
  std::optional<v1::ClientInfo> info =
      WaitForClient([](const v1::ClientInfo& c) { return c.nacks() == 1; });
  ASSERT_TRUE(info.has_value()) << "the NACK was not recorded";
  EXPECT_EQ(info->last_nack_error(), "checksum mismatch");
}

class WatchTimeoutTest : public WatchTest {
 protected:
  WatchTimeoutTest() {
    heartbeat_ = absl::Milliseconds(100);
    ack_timeout_ = absl::Milliseconds(800);
  }
};

TEST_F(WatchTimeoutTest, HeartbeatsFlowWhileUnackedAndStuckStreamIsClosed) {
  const int32_t b1 = MakeBucket("b1");
  WatchClient stuck(mapping_.get());
  stuck.Subscribe("stuck", v1::OBSERVER);
  WatchClient healthy(mapping_.get());
  healthy.Subscribe("healthy", v1::OBSERVER);
  // `stuck` never ACKs its catch-up push.
  std::optional<v1::WatchResponse> first = stuck.NextNonHeartbeat();
  ASSERT_TRUE(first.has_value() && first->has_push());
  CatchUp(healthy);

  int heartbeats = 0;
  for (int i = 0; i < 5; ++i) {
    std::optional<v1::WatchResponse> r = stuck.Next(absl::Milliseconds(500));
    if (r.has_value() && r->has_heartbeat()) {
      ++heartbeats;
      EXPECT_EQ(r->heartbeat().version(), 1);
    }
  }
  EXPECT_GE(heartbeats, 2);

  // The stuck client delays nobody.
  ASSERT_TRUE(Pin(5, b1).ok());
  std::optional<v1::WatchResponse> push = healthy.NextNonHeartbeat();
  ASSERT_TRUE(push.has_value() && push->has_push());
  EXPECT_EQ(push->push().to_version(), 2);

  grpc::Status status = stuck.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("not ACKed"));
}

TEST_F(WatchTest, AClientThatNeverReadsHoldsABoundedAmountAndDelaysNobody) {
  const int32_t b1 = MakeBucket("b1");
  // A raw stream that subscribes and then never reads nor ACKs.
  grpc::ClientContext stuck_ctx;
  auto stuck = mapping_->WatchMapping(&stuck_ctx);
  v1::WatchRequest subscribe;
  subscribe.mutable_subscribe()->set_client_id("never-reads");
  subscribe.mutable_subscribe()->set_role(v1::OBSERVER);
  ASSERT_TRUE(stuck->Write(subscribe));
  WatchClient healthy(mapping_.get());
  healthy.Subscribe("healthy", v1::OBSERVER);
  CatchUp(healthy);

  // 200 writes of 500 teams each; the healthy client sees every version.
  int64_t seen = 0;
  for (int w = 0; w < 200; ++w) {
    v1::BulkAssignRequest bulk;
    bulk.set_reason("load");
    for (int i = 0; i < 500; ++i) {
      v1::BulkAssignment* a = bulk.add_assignments();
      a->set_team_id(1 + w * 500 + i);
      a->set_bucket_id(b1);
    }
    v1::BulkAssignResponse resp;
    ASSERT_TRUE(admin_->BulkAssign(Ctx().get(), bulk, &resp).ok());
    while (seen < resp.version()) {
      std::optional<v1::WatchResponse> r = healthy.NextNonHeartbeat();
      ASSERT_TRUE(r.has_value() && r->has_push());
      seen = r->push().to_version();
      healthy.Ack(r->push());
    }
    // The stuck stream holds at most its catch-up push and SYNC marker,
    // never one message per version.
    EXPECT_LE(server_->watch_hub().pending_writes(), 3) << "after write " << w;
  }
  EXPECT_EQ(seen, 201);
  stuck_ctx.TryCancel();
}

TEST_F(WatchTest, ResumeGetsDeltasAndOtherClusterGetsReset) {
  const int32_t b1 = MakeBucket("b1");
  std::string cluster;
  {
    WatchClient client(mapping_.get());
    client.Subscribe("c1", v1::PRODUCER);
    cluster = CatchUp(client).snapshot().cluster_id();
  }
  ASSERT_TRUE(Pin(1, b1).ok());
  ASSERT_TRUE(Pin(2, b1).ok());
  {
    WatchClient client(mapping_.get());
    client.Subscribe("c1", v1::PRODUCER, /*known_version=*/1, cluster);
    std::optional<v1::WatchResponse> push = client.NextNonHeartbeat();
    ASSERT_TRUE(push.has_value() && push->has_push());
    EXPECT_FALSE(push->push().has_snapshot());
    EXPECT_EQ(push->push().from_version(), 1);
    EXPECT_EQ(push->push().to_version(), 3);
    EXPECT_EQ(push->push().deltas_size(), 2);
  }
  {
    // Up to date: only the SYNC marker.
    WatchClient client(mapping_.get());
    client.Subscribe("c1", v1::PRODUCER, 3, cluster);
    std::optional<v1::WatchResponse> sync = client.NextNonHeartbeat();
    ASSERT_TRUE(sync.has_value());
    EXPECT_TRUE(sync->has_sync());
    EXPECT_EQ(sync->sync().version(), 3);
  }
  {
    WatchClient client(mapping_.get());
    client.Subscribe("c1", v1::PRODUCER, 3, "another-cluster");
    std::optional<v1::WatchResponse> push = client.NextNonHeartbeat();
    ASSERT_TRUE(push.has_value() && push->has_push());
    EXPECT_TRUE(push->push().reset());
    EXPECT_TRUE(push->push().has_snapshot());
    EXPECT_EQ(push->push().snapshot().cluster_id(), cluster);
  }
}

TEST_F(WatchTest, ResumeAfterRestartGetsDeltasFromTheChangeLog) {
  const int32_t b1 = MakeBucket("b1");
  ASSERT_TRUE(Pin(1, b1).ok());
  ASSERT_TRUE(Pin(2, b1).ok());
  std::string cluster;
  {
    v1::MappingSnapshot snap;
    ASSERT_TRUE(mapping_->GetMapping(Ctx().get(), v1::GetMappingRequest(), &snap).ok());
    cluster = snap.cluster_id();
  }
  StopServer();
  StartServer();
  WatchClient client(mapping_.get());
  client.Subscribe("c1", v1::PRODUCER, /*known_version=*/1, cluster);
  std::optional<v1::WatchResponse> push = client.NextNonHeartbeat();
  ASSERT_TRUE(push.has_value() && push->has_push());
  EXPECT_FALSE(push->push().has_snapshot());
  EXPECT_EQ(push->push().deltas_size(), 2);
  EXPECT_EQ(push->push().deltas(1).set().team_ids(0), 2);
}

class WatchShortRetentionTest : public WatchTest {
 protected:
  WatchShortRetentionTest() { resume_max_versions_ = 2; }
};

TEST_F(WatchShortRetentionTest, ResumeOlderThanRetentionGetsSnapshot) {
  const int32_t b1 = MakeBucket("b1");
  std::string cluster;
  {
    WatchClient client(mapping_.get());
    client.Subscribe("c1", v1::PRODUCER);
    cluster = CatchUp(client).snapshot().cluster_id();
  }
  for (int team = 1; team <= 4; ++team) ASSERT_TRUE(Pin(team, b1).ok());
  WatchClient client(mapping_.get());
  client.Subscribe("c1", v1::PRODUCER, /*known_version=*/1, cluster);
  std::optional<v1::WatchResponse> push = client.NextNonHeartbeat();
  ASSERT_TRUE(push.has_value() && push->has_push());
  EXPECT_TRUE(push->push().has_snapshot());
  EXPECT_EQ(push->push().to_version(), 5);
}

TEST_F(WatchTest, FiltersNarrowAssignmentRowsOnlyAndProducersCannotFilter) {
  const int32_t b1 = MakeBucket("b1");
  const int32_t b2 = MakeBucket("b2");
  ASSERT_TRUE(Pin(1, b1).ok());
  ASSERT_TRUE(Pin(2, b2).ok());
  {
    WatchClient producer(mapping_.get());
    producer.Subscribe("p", v1::PRODUCER, 0, "", {b1});
    grpc::Status status = producer.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("bucket_filter"));
  }
  WatchClient consumer(mapping_.get());
  consumer.Subscribe("consumer-b1", v1::CONSUMER, 0, "", {b1});
  const v1::WatchResponse::Push first = CatchUp(consumer);
  EXPECT_EQ(first.snapshot().buckets_size(), 2);  // every bucket is sent
  ASSERT_EQ(first.snapshot().assignments().team_ids_size(), 1);
  EXPECT_EQ(first.snapshot().assignments().team_ids(0), 1);

  // A team pinned elsewhere is filtered out; one leaving b1 is unset.
  ASSERT_TRUE(Pin(3, b2).ok());
  ASSERT_TRUE(Pin(1, b2).ok());
  std::vector<v1::MappingDelta> deltas;
  while (deltas.size() < 2) {
    std::optional<v1::WatchResponse> r = consumer.NextNonHeartbeat();
    ASSERT_TRUE(r.has_value() && r->has_push());
    for (const auto& d : r->push().deltas()) deltas.push_back(d);
    consumer.Ack(r->push());
  }
  EXPECT_EQ(deltas[0].set().team_ids_size(), 0);
  EXPECT_EQ(deltas[0].unset_team_ids_size(), 0);
  EXPECT_EQ(deltas[1].set().team_ids_size(), 0);
  ASSERT_EQ(deltas[1].unset_team_ids_size(), 1);
  EXPECT_EQ(deltas[1].unset_team_ids(0), 1);
}

// Filters narrow only assignment rows: the handoffs a version opens reach
// filtered streams in its delta too (the filtered encoding dropped them).
class WatchHandoffTest : public WatchTest {
 protected:
  ServerOptions Options() override {
    ServerOptions options = WatchTest::Options();
    options.handoff.enabled = true;
    return options;
  }
};

TEST_F(WatchHandoffTest, FilteredStreamsGetTheHandoffsOfADelta) {
  const int32_t b1 = MakeBucket("b1");
  const int32_t b2 = MakeBucket("b2", "other");
  ASSERT_TRUE(Pin(1, b1).ok());
  WatchClient consumer(mapping_.get());
  consumer.Subscribe("consumer-b2", v1::CONSUMER, 0, "", {b2});
  CatchUp(consumer);
  v1::AssignTeamResponse moved;
  ASSERT_TRUE(Pin(1, b2, &moved).ok());
  ASSERT_EQ(moved.effect().handoffs_size(), 1);
  std::optional<v1::WatchResponse> r = consumer.NextNonHeartbeat();
  ASSERT_TRUE(r.has_value() && r->has_push());
  ASSERT_GE(r->push().deltas_size(), 1);
  const v1::MappingDelta& delta = r->push().deltas(r->push().deltas_size() - 1);
  EXPECT_EQ(delta.to_version(), moved.version());
  ASSERT_EQ(delta.handoffs_size(), 1);
  EXPECT_EQ(delta.handoffs(0).id(), moved.effect().handoffs(0).id());
  ASSERT_EQ(delta.set().team_ids_size(), 1);  // pinned into the filtered bucket
  EXPECT_EQ(delta.set().team_ids(0), 1);
}

TEST_F(WatchTest, ThousandConcurrentWatchersAllReachTheNewVersion) {
  const int32_t b1 = MakeBucket("b1");
  constexpr int kWatchers = 1000;
  constexpr int kChannels = 10;
  std::vector<std::unique_ptr<v1::MappingService::Stub>> stubs;
  for (int c = 0; c < kChannels; ++c) {
    grpc::ChannelArguments args;
    args.SetInt("grpc.channel_id", c);  // distinct connections
    stubs.push_back(v1::MappingService::NewStub(grpc::CreateCustomChannel(
        absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials(), args)));
  }
  std::vector<std::unique_ptr<WatchClient>> clients;
  for (int i = 0; i < kWatchers; ++i) {
    clients.push_back(std::make_unique<WatchClient>(stubs[i % kChannels].get()));
    clients.back()->Subscribe(absl::StrCat("w", i), v1::OBSERVER);
  }
  for (auto& c : clients) CatchUp(*c);
  ASSERT_TRUE(Pin(42, b1).ok());
  int reached = 0;
  for (auto& c : clients) {
    std::optional<v1::WatchResponse> r = c->NextNonHeartbeat(absl::Seconds(20));
    if (r.has_value() && r->has_push() && r->push().to_version() == 2) ++reached;
  }
  EXPECT_EQ(reached, kWatchers);
  EXPECT_EQ(server_->watch_hub().stream_count(), static_cast<size_t>(kWatchers));
}

TEST_F(WatchTest, ShutdownEndsStreamsWithUnavailable) {
  MakeBucket("b1");
  WatchClient client(mapping_.get());
  client.Subscribe("c1", v1::CONSUMER);
  CatchUp(client);
  server_->Shutdown(absl::Seconds(1));
  grpc::Status status = client.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(WatchTest, BadSubscriptionsAreRejectedWithTheFieldNamed) {
  {
    WatchClient client(mapping_.get());
    client.Subscribe("", v1::CONSUMER);
    grpc::Status status = client.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("subscribe.client_id"));
  }
  {
    WatchClient client(mapping_.get());
    client.Subscribe("c", v1::CLIENT_ROLE_UNSPECIFIED);
    grpc::Status status = client.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("subscribe.role"));
  }
}

}  // namespace
}  // namespace bucketmap
