// Several replicas on one PostgreSQL, in-process: propagation through
// LISTEN/NOTIFY, the shared client view, stale-replica guards, the leader
// election and the fencing of leader-only writes.
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "domain/planner.h"
#include "domain/status_macros.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "server/replica/leader.h"
#include "server/store/pg_store.h"
#include "server/server.h"
#include "tests/server/watch_client.h"
#include "tests/support/pg_harness.h"

namespace bucketmap {
namespace {

std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout = absl::Seconds(10)) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  ctx->AddMetadata("x-bucketmap-actor", "replica-test");
  return ctx;
}

// One in-process replica and stubs connected to it.
struct Replica {
  std::unique_ptr<BucketmapServer> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::AdminService::Stub> admin;
  std::unique_ptr<v1::MappingService::Stub> mapping;
};

class ReplicaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = TestPostgres::Start();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
  }

  void TearDown() override {
    for (auto& r : replicas_) {
      if (r != nullptr && r->server != nullptr) r->server->Shutdown(absl::Seconds(1));
    }
    replicas_.clear();
  }

  // Starts a replica named `name`. With `listen` false it has neither the
  // listener nor the election (a stale replica: only the poll, here off).
  Replica& Start(const std::string& name, bool listen = true,
                 absl::Duration refresh = absl::Hours(1)) {
    PgStoreOptions store_options;
    store_options.url = pg_->url();
    store_options.connect_timeout = absl::Seconds(1);
    auto store = PgStore::Open(store_options);
    EXPECT_TRUE(store.ok()) << store.status();
    ServerOptions options;
    options.grpc_listen = "127.0.0.1:0";
    // The catch-up poll is off unless asked for: what arrives, arrives
    // through LISTEN/NOTIFY.
    options.refresh_interval = refresh;
    options.admin.write_timeout = absl::Seconds(5);
    options.handoff.enabled = false;  // these tests are about versions reaching replicas
    options.watch.replica = name;
    options.watch.client_flush = absl::Milliseconds(100);
    options.replicas.name = name;
    if (listen) options.replicas.postgres_url = pg_->url();
    options.replicas.leader_interval = absl::Milliseconds(200);
    auto server = BucketmapServer::Start(*std::move(store), options);
    EXPECT_TRUE(server.ok()) << server.status();
    auto r = std::make_unique<Replica>();
    r->server = *std::move(server);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    r->channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", r->server->port()),
                                           grpc::InsecureChannelCredentials(), args);
    r->admin = v1::AdminService::NewStub(r->channel);
    r->mapping = v1::MappingService::NewStub(r->channel);
    replicas_.push_back(std::move(r));
    return *replicas_.back();
  }

  static int32_t MakeBucket(Replica& r, const std::string& name) {
    v1::CreateBucketRequest req;
    req.mutable_bucket()->set_name(name);
    (*req.mutable_bucket()->mutable_topics())["ingestion"] = "events_" + name;
    req.set_reason("replica test");
    v1::CreateBucketResponse resp;
    grpc::Status s = r.admin->CreateBucket(Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.bucket().id();
  }

  // Pins `team` on replica `r`; returns the committed version (0 on error).
  static int64_t Pin(Replica& r, int64_t team, int32_t bucket) {
    v1::AssignTeamRequest req;
    req.set_team_id(team);
    req.set_bucket_id(bucket);
    req.set_reason("replica test");
    v1::AssignTeamResponse resp;
    grpc::Status s = r.admin->AssignTeam(Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return s.ok() ? resp.version() : 0;
  }

  static grpc::Status GetMapping(Replica& r, int64_t min_version, v1::MappingSnapshot* snap) {
    v1::GetMappingRequest req;
    req.set_min_version(min_version);
    return r.mapping->GetMapping(Ctx().get(), req, snap);
  }

  // Reads the catch-up of a fresh subscription up to its SYNC; returns the
  // SYNC version (-1 if none came).
  static int64_t ReadUntilSync(WatchClient& client) {
    for (;;) {
      std::optional<v1::WatchResponse> r = client.NextNonHeartbeat(absl::Seconds(10));
      if (!r.has_value()) return -1;
      if (r->has_push()) client.Ack(r->push());
      if (r->has_sync()) return r->sync().version();
    }
  }

  // A watcher subscribed on `r`, its catch-up read up to the SYNC.
  static std::unique_ptr<WatchClient> SyncedWatcher(Replica& r, const std::string& client_id,
                                                    v1::ClientRole role = v1::CONSUMER) {
    auto watcher = std::make_unique<WatchClient>(r.mapping.get());
    watcher->Subscribe(client_id, role);
    EXPECT_GE(ReadUntilSync(*watcher), 0) << client_id;
    return watcher;
  }

  // Waits for a push reaching `version`, ACKing pushes on the way.
  static std::optional<v1::WatchResponse::Push> WaitForPush(WatchClient& client, int64_t version,
                                                            absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      std::optional<v1::WatchResponse> r = client.NextNonHeartbeat(end - absl::Now());
      if (!r.has_value()) return std::nullopt;
      if (!r->has_push()) continue;
      client.Ack(r->push());
      if (r->push().to_version() >= version) return r->push();
    }
    return std::nullopt;
  }

  int64_t PsqlInt(const std::string& sql) {
    auto out = pg_->Psql(sql);
    EXPECT_TRUE(out.ok()) << out.status();
    int64_t value = -1;
    if (out.ok() && !absl::SimpleAtoi(*out, &value)) ADD_FAILURE() << sql << ": " << *out;
    return value;
  }

  // Waits until exactly one of the replicas leads; returns its index, -1
  // on timeout.
  int WaitForOneLeader(absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      int leaders = 0;
      int leader = -1;
      for (size_t i = 0; i < replicas_.size(); ++i) {
        if (replicas_[i] != nullptr && replicas_[i]->server != nullptr &&
            replicas_[i]->server->leader().IsLeader()) {
          ++leaders;
          leader = static_cast<int>(i);
        }
      }
      EXPECT_LE(leaders, 1) << "two replicas lead at once";
      if (leaders == 1) return leader;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return -1;
  }

  std::unique_ptr<TestPostgres> pg_;
  std::vector<std::unique_ptr<Replica>> replicas_;
};

TEST_F(ReplicaTest, WriteOnOneReplicaReachesWatcherOfAnotherAsDeltas) {
  Replica& a = Start("a");
  Replica& b = Start("b");
  const int32_t bucket = MakeBucket(a, "b1");
  std::unique_ptr<WatchClient> watcher = SyncedWatcher(b, "watcher-on-b");

  for (int i = 0; i < 5; ++i) {
    const absl::Time start = absl::Now();
    const int64_t version = Pin(a, 100 + i, bucket);
    ASSERT_GT(version, 0);
    std::optional<v1::WatchResponse::Push> push = WaitForPush(*watcher, version, absl::Seconds(5));
    ASSERT_TRUE(push.has_value()) << "version " << version << " never reached replica b";
    // The poll is off (1 h): this came through NOTIFY, as a delta.
    EXPECT_LT(absl::Now() - start, absl::Seconds(2));
    EXPECT_FALSE(push->has_snapshot());
    EXPECT_GT(push->deltas_size(), 0);
  }
}

TEST_F(ReplicaTest, ListClientsOnOneReplicaShowsEveryReplicasClients) {
  Replica& a = Start("a");
  Replica& b = Start("b");
  MakeBucket(a, "b1");
  std::unique_ptr<WatchClient> on_a = SyncedWatcher(a, "client-on-a", v1::PRODUCER);
  std::unique_ptr<WatchClient> on_b = SyncedWatcher(b, "client-on-b");

  const absl::Time end = absl::Now() + absl::Seconds(10);
  std::map<std::string, std::string> seen;  // client_id -> replica
  while (absl::Now() < end) {
    v1::ListClientsResponse resp;
    ASSERT_TRUE(a.admin->ListClients(Ctx().get(), v1::ListClientsRequest(), &resp).ok());
    seen.clear();
    for (const v1::ClientInfo& c : resp.clients()) {
      if (c.connected()) seen[c.client_id()] = c.replica();
    }
    if (seen.size() == 2) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(seen["client-on-a"], "a");
  EXPECT_EQ(seen["client-on-b"], "b");
}

TEST_F(ReplicaTest, StaleReplicaCatchesUpBeforeServingAndNeverServesOlder) {
  Replica& a = Start("a");
  // No listener and no poll: b only moves when a client makes it.
  Replica& b = Start("b", /*listen=*/false);
  const int32_t bucket = MakeBucket(a, "b1");
  const int64_t v1 = Pin(a, 1, bucket);
  ASSERT_EQ(b.server->manager().Current()->version(), 0);

  v1::MappingSnapshot snap;
  grpc::Status s = GetMapping(b, v1, &snap);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_GE(snap.version(), v1);
  // Ahead of anything committed: UNAVAILABLE, not an older snapshot.
  s = GetMapping(b, v1 + 10, &snap);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();

  // A watcher that has seen a newer version (through replica a).
  const int64_t v2 = Pin(a, 2, bucket);
  ASSERT_LT(b.server->manager().Current()->version(), v2);
  WatchClient watcher(b.mapping.get());
  watcher.Subscribe("moved-from-a", v1::CONSUMER, v2, snap.cluster_id());
  EXPECT_GE(ReadUntilSync(watcher), v2);

  // Without a cluster id too (a client that never stored one).
  const int64_t v3 = Pin(a, 3, bucket);
  WatchClient anonymous(b.mapping.get());
  anonymous.Subscribe("no-cluster-id", v1::CONSUMER, v3, "");
  EXPECT_GE(ReadUntilSync(anonymous), v3);

  // And a known_version nobody committed ends the stream UNAVAILABLE.
  WatchClient ahead(b.mapping.get());
  ahead.Subscribe("from-the-future", v1::CONSUMER, v3 + 100, snap.cluster_id());
  EXPECT_EQ(ReadUntilSync(ahead), -1);
  EXPECT_EQ(ahead.Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(ReplicaTest, ExactlyOneLeaderAndAnotherTakesOverOnShutdown) {
  Start("a");
  Start("b");
  Start("c");
  const int first = WaitForOneLeader(absl::Seconds(10));
  ASSERT_GE(first, 0);
  const int64_t epoch = replicas_[first]->server->leader().epoch();
  EXPECT_GT(epoch, 0);
  EXPECT_EQ(PsqlInt("SELECT epoch FROM bm_leader"), epoch);
  // Stays so: nobody else grabs it while the leader lives.
  absl::SleepFor(absl::Seconds(1));
  EXPECT_EQ(WaitForOneLeader(absl::Seconds(1)), first);
  EXPECT_EQ(replicas_[first]->server->leader().epoch(), epoch);

  const absl::Time stopped = absl::Now();
  replicas_[first]->server->Shutdown(absl::Seconds(1));
  replicas_[first].reset();
  const int second = WaitForOneLeader(absl::Seconds(10));
  ASSERT_GE(second, 0);
  EXPECT_NE(second, first);
  EXPECT_LT(absl::Now() - stopped, absl::Seconds(10));
  EXPECT_GT(replicas_[second]->server->leader().epoch(), epoch);
}

TEST_F(ReplicaTest, LeaderTasksFollowLeadershipAndALostSessionHandsItOver) {
  LeaderElectionOptions options;
  options.url = pg_->url();
  options.interval = absl::Milliseconds(100);
  // The tables must exist: open a store once to migrate.
  PgStoreOptions store_options;
  store_options.url = pg_->url();
  ASSERT_TRUE(PgStore::Open(store_options).ok());

  std::atomic<int> running{0};
  std::atomic<int> starts{0};
  auto add_task = [&](LeaderElection& e) {
    e.AddLeaderTask(
        "counter",
        [&](int64_t epoch) {
          EXPECT_GT(epoch, 0);
          EXPECT_EQ(running.fetch_add(1), 0) << "two leaders run their tasks";
          starts.fetch_add(1);
        },
        [&] { running.fetch_sub(1); });
  };
  options.holder = "x";
  LeaderElection x(options, nullptr);
  options.holder = "y";
  LeaderElection y(options, nullptr);
  add_task(x);
  add_task(y);
  x.Start();
  y.Start();
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (absl::Now() < end && !x.IsLeader() && !y.IsLeader())
    absl::SleepFor(absl::Milliseconds(10));
  ASSERT_TRUE(x.IsLeader() != y.IsLeader());
  LeaderElection& leader = x.IsLeader() ? x : y;
  const int64_t epoch = leader.epoch();
  EXPECT_EQ(running.load(), 1);

  // The leader's session breaks: it steps down, and someone leads again at
  // a higher epoch.
  leader.TEST_DropSession();
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline && (starts.load() < 2 || !(x.IsLeader() || y.IsLeader()))) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_GE(starts.load(), 2);
  EXPECT_GT(std::max(x.epoch(), y.epoch()), epoch);
  EXPECT_EQ(running.load(), 1);
  x.Stop();
  y.Stop();
  EXPECT_EQ(running.load(), 0);
}

TEST_F(ReplicaTest, ReplicasReloadWhenTheDatabaseHasAnotherClusterId) {
  Replica& a = Start("a");
  Replica& b = Start("b");
  // No listener, a fast poll: only the poll can notice.
  Replica& c = Start("c", /*listen=*/false, absl::Milliseconds(100));
  const int32_t bucket = MakeBucket(a, "b1");
  const std::string old_cluster = a.server->manager().Current()->snapshot().cluster_id();
  // As if the database were restored from elsewhere: same versions, another
  // cluster. Deltas of it must not be applied to the old snapshot.
  ASSERT_TRUE(pg_->Psql("UPDATE bm_meta SET cluster_id = 'restored-cluster'").ok());
  ASSERT_GT(Pin(a, 5, bucket), 0);
  const absl::Time end = absl::Now() + absl::Seconds(5);
  auto cluster = [](Replica& r) { return r.server->manager().Current()->snapshot().cluster_id(); };
  while (absl::Now() < end &&
         (cluster(b) != "restored-cluster" || cluster(c) != "restored-cluster")) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_NE(old_cluster, "restored-cluster");
  EXPECT_EQ(cluster(b), "restored-cluster");  // through NOTIFY (its poll is off)
  EXPECT_EQ(cluster(c), "restored-cluster");  // through the poll
  EXPECT_EQ(b.server->manager().Current()->version(), a.server->manager().Current()->version());
}

class FencingTest : public ReplicaTest {
 protected:
  void SetUp() override {
    ReplicaTest::SetUp();
    PgStoreOptions options;
    options.url = pg_->url();
    auto store = PgStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  // A write creating bucket `name`, fenced with `epoch`; `during` runs
  // inside the transaction, after the fence check.
  absl::StatusOr<WriteResult> CreateBucket(const std::string& name, int64_t epoch,
                                           const std::function<void()>& during = nullptr) {
    WriteContext ctx;
    ctx.kind = "CreateBucket";
    ctx.actor = "fencing-test";
    ctx.reason = "fencing test";
    ctx.leader_epoch = epoch;
    return store_->Write(ctx, nullptr,
                         [&](const Snapshot& current) -> absl::StatusOr<PlannedWrite> {
                           if (during) during();
                           Bucket bucket;
                           bucket.name = name;
                           bucket.topics["ingestion"] = "events_" + name;
                           ASSIGN_OR_RETURN(Plan plan, PlanCreateBucket(current, bucket));
                           return PlannedWrite{std::move(plan), ""};
                         });
  }

  std::unique_ptr<PgStore> store_;
};

TEST_F(FencingTest, StaleEpochIsRefusedAndTheBumpWaitsForInFlightFencedWrites) {
  ASSERT_EQ(PsqlInt("UPDATE bm_leader SET epoch = epoch + 1 RETURNING epoch"), 1);
  absl::StatusOr<WriteResult> ok = CreateBucket("b1", 1);
  ASSERT_TRUE(ok.ok()) << ok.status();
  // Unfenced writes (epoch 0) are not affected.
  ASSERT_TRUE(CreateBucket("b2", 0).ok());

  // A new leader's bump waits for a fenced write in flight...
  std::atomic<bool> bumped{false};
  std::thread bump;
  absl::StatusOr<WriteResult> in_flight = CreateBucket("b3", 1, [&] {
    bump = std::thread([&] {
      EXPECT_EQ(PsqlInt("UPDATE bm_leader SET epoch = epoch + 1 RETURNING epoch"), 2);
      bumped = true;
    });
    absl::SleepFor(absl::Milliseconds(500));
    EXPECT_FALSE(bumped.load()) << "the epoch moved under a fenced write";
  });
  bump.join();
  ASSERT_TRUE(in_flight.ok()) << in_flight.status();
  EXPECT_TRUE(bumped.load());

  // ...and every later write of the old leader is refused.
  absl::StatusOr<WriteResult> stale = CreateBucket("b4", 1);
  ASSERT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition) << stale.status();
  EXPECT_NE(stale.status().message().find("not the leader"), std::string::npos);
  absl::Status mark = store_->MarkPublished(ok->version, /*leader_epoch=*/1);
  EXPECT_EQ(mark.code(), absl::StatusCode::kFailedPrecondition) << mark;
  EXPECT_EQ(PsqlInt("SELECT count(*) FROM change_log WHERE published_at IS NOT NULL"), 0);
  EXPECT_TRUE(store_->MarkPublished(ok->version, /*leader_epoch=*/2).ok());
  EXPECT_TRUE(CreateBucket("b5", 2).ok());
}

TEST_F(FencingTest, ClientVersionsNeverGoBackAndAStaleDisconnectIsIgnored) {
  const absl::Time now = absl::Now();
  ClientState on_b;
  on_b.client_id = "producer-1";
  on_b.role = v1::PRODUCER;
  on_b.replica = "b";
  on_b.applied_version = 10;
  on_b.drained_version = 9;
  on_b.connected = true;
  ASSERT_TRUE(store_->SaveClients({on_b}, now + absl::Seconds(30)).ok());
  // Replica a, which the client left, flushes its older state late.
  ClientState on_a = on_b;
  on_a.replica = "a";
  on_a.applied_version = 7;
  on_a.drained_version = 6;
  on_a.connected = false;
  ASSERT_TRUE(store_->SaveClients({on_a}, now + absl::Seconds(30)).ok());
  auto clients = store_->ListClients(now);
  ASSERT_TRUE(clients.ok()) << clients.status();
  ASSERT_EQ(clients->size(), 1u);
  EXPECT_EQ((*clients)[0].replica, "b");
  EXPECT_TRUE((*clients)[0].connected);
  EXPECT_EQ((*clients)[0].applied_version, 10);
  EXPECT_EQ((*clients)[0].drained_version, 9);
  // Even when a connected state comes with older versions (the COPY path
  // too), versions stay.
  on_a.connected = true;
  std::vector<ClientState> many(100, on_a);
  for (int i = 0; i < 99; ++i) many[i].client_id = absl::StrCat("other-", i);
  ASSERT_TRUE(store_->SaveClients(many, now + absl::Seconds(30)).ok());
  clients = store_->ListClients(now);
  ASSERT_TRUE(clients.ok());
  for (const ClientState& c : *clients) {
    if (c.client_id != "producer-1") continue;
    EXPECT_EQ(c.replica, "a");
    EXPECT_EQ(c.applied_version, 10);
    EXPECT_EQ(c.drained_version, 9);
  }
}

TEST_F(ReplicaTest, ListenerReconnectsAfterPostgresRestart) {
  Replica& a = Start("a");
  Replica& b = Start("b");
  const int32_t bucket = MakeBucket(a, "b1");
  std::unique_ptr<WatchClient> watcher = SyncedWatcher(b, "watcher-on-b");

  ASSERT_TRUE(pg_->Restart().ok());
  // Writes fail until the pool notices; retry for a while.
  int64_t version = 0;
  const absl::Time end = absl::Now() + absl::Seconds(15);
  while (version == 0 && absl::Now() < end) {
    v1::AssignTeamRequest req;
    req.set_team_id(7);
    req.set_bucket_id(bucket);
    req.set_reason("after restart");
    v1::AssignTeamResponse resp;
    if (a.admin->AssignTeam(Ctx().get(), req, &resp).ok())
      version = resp.version();
    else
      absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_GT(version, 0);
  // Another, once the listener has surely reconnected (it retries every
  // 500 ms): it must come through NOTIFY, the poll being off.
  absl::SleepFor(absl::Seconds(2));
  const absl::Time start = absl::Now();
  const int64_t next = Pin(a, 8, bucket);
  ASSERT_TRUE(WaitForPush(*watcher, next, absl::Seconds(5)).has_value());
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

}  // namespace
}  // namespace bucketmap
