// The client library's WatchConnection against a real server in
// ACK_REQUESTED mode (docs/protocol.md, "ACK modes"): it gets every
// version in order without ACKing each push, ACKs the pushes the server
// marks at once (so a handoff opened while it watches passes its barrier
// as soon as its events are delivered, and ListClients catches up once per
// ack interval), ACKs the others lazily at heartbeats, and a push it cannot
// apply is answered with one snapshot on the same stream. Clients that ACK
// every push are tested against the same server in watch_streaming_test.cc
// (OldStyleClientsKeepOnePushPerAckOnTheSameServer) and watch_test.cc.
#include <atomic>
#include <optional>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "bucketmap/client.h"
#include "bucketmap/delivery_tracker.h"
#include "bucketmap/watch.h"
#include "gtest/gtest.h"
#include "tests/handoff/handoff_test_util.h"
#include "tests/server/server_fixture.h"

namespace bucketmap {
namespace {

class ClientAckTest : public ServerFixture {
 protected:
  ServerOptions Options() override {
    ServerOptions options = ServerFixture::Options();
    options.watch.heartbeat = heartbeat_;
    options.watch.ack_interval = ack_interval_;
    // Long enough that no stream of these tests is closed for a late ACK.
    options.watch.ack_timeout = absl::Seconds(60);
    options.watch.client_flush = absl::Milliseconds(100);
    return options;
  }

  ClientOptions ClientOpts(const std::string& id, v1::ClientRole role = v1::CONSUMER) {
    ClientOptions options;
    options.addresses = {absl::StrCat("127.0.0.1:", server_->port())};
    options.client_id = id;
    options.role = role;
    options.cache_path = pg_->dir() + "/" + id + ".cache";
    return options;
  }

  static WatchConnectionOptions Fast(DeliveryTracker* tracker = nullptr) {
    WatchConnectionOptions options;
    options.initial_backoff = absl::Milliseconds(20);
    options.max_backoff = absl::Milliseconds(200);
    options.delivery_tracker = tracker;
    return options;
  }

  // Client `id` as ListClients shows it, once `pred` holds, polling for up
  // to `timeout`; nullopt if it never does.
  std::optional<v1::ClientInfo> WaitForClient(const std::string& id,
                                              std::function<bool(const v1::ClientInfo&)> pred,
                                              absl::Duration timeout = absl::Seconds(5)) {
    const absl::Time end = absl::Now() + timeout;
    do {
      v1::ListClientsResponse clients;
      EXPECT_TRUE(admin_->ListClients(Ctx().get(), v1::ListClientsRequest(), &clients).ok());
      for (const v1::ClientInfo& c : clients.clients()) {
        if (c.client_id() == id && pred(c)) return c;
      }
      absl::SleepFor(absl::Milliseconds(50));
    } while (absl::Now() < end);
    return std::nullopt;
  }

  std::optional<v1::ClientInfo> WaitForApplied(const std::string& id, int64_t version,
                                               absl::Duration timeout = absl::Seconds(5)) {
    return WaitForClient(
        id, [version](const v1::ClientInfo& c) { return c.applied_version() == version; }, timeout);
  }

  // Every server-side heartbeat of these tests comes later than the test
  // ends unless a fixture says otherwise, and no push asks for an ACK for
  // being the first in an interval: only the catch-up, snapshots and a
  // producer's pushes while a handoff is open are marked.
  absl::Duration heartbeat_ = absl::Seconds(60);
  absl::Duration ack_interval_ = absl::Hours(1);
};

// Records the versions a client publishes.
class Versions {
 public:
  explicit Versions(Client* client) {
    client->OnChange([this](const ChangeEvent& e) {
      absl::MutexLock lock(&mu_);
      events_.push_back(e);
    });
  }
  // The events once one reached `version` (listeners run after
  // WaitForVersion() returns), or after 10 s.
  std::vector<ChangeEvent> Until(int64_t version) const {
    absl::MutexLock lock(&mu_);
    auto reached = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !events_.empty() && events_.back().new_version >= version;
    };
    mu_.AwaitWithTimeout(absl::Condition(&reached), absl::Seconds(10));
    return events_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<ChangeEvent> events_ ABSL_GUARDED_BY(mu_);
};

TEST_F(ClientAckTest, EveryVersionArrivesInOrderAndOnlyTheMarkedPushesAreAcked) {
  const int32_t b1 = MakeBucket("b1");
  const int32_t b2 = MakeBucket("b2");
  Client client(ClientOpts("consumer-stream"));
  Versions versions(&client);
  WatchConnection connection(&client, Fast());
  connection.Start();
  ASSERT_TRUE(client.WaitForVersion(2, absl::Seconds(10)));
  // The catch-up is marked: its ACK reaches ListClients.
  ASSERT_TRUE(WaitForApplied("consumer-stream", 2).has_value());

  constexpr int kWrites = 30;
  for (int team = 1; team <= kWrites; ++team) ASSERT_TRUE(Pin(team, team % 2 ? b1 : b2).ok());
  const int64_t last = 2 + kWrites;
  ASSERT_TRUE(client.WaitForVersion(last, absl::Seconds(10)));
  for (int team = 1; team <= kWrites; ++team) {
    EXPECT_EQ(client.Route(team).bucket_id(), team % 2 ? b1 : b2) << team;
  }
  // Each publication follows the one before: nothing skipped, nothing
  // applied twice.
  const std::vector<ChangeEvent> events = versions.Until(last);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front().old_version, 0);
  for (size_t i = 1; i < events.size(); ++i) {
    EXPECT_EQ(events[i].old_version, events[i - 1].new_version) << i;
    EXPECT_GT(events[i].new_version, events[i].old_version) << i;
  }
  EXPECT_EQ(events.back().new_version, last);
  // None of those pushes asked for an ACK, and the client sent none: the
  // server still has the catch-up's version (a client that ACKs every push
  // would be at `last` within one flush, 100 ms).
  absl::SleepFor(absl::Milliseconds(600));
  std::optional<v1::ClientInfo> info = WaitForClient(
      "consumer-stream", [](const v1::ClientInfo&) { return true; }, absl::ZeroDuration());
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->applied_version(), 2);
  EXPECT_EQ(connection.streams_opened(), 1);
}

class ClientLazyAckTest : public ClientAckTest {
 protected:
  ClientLazyAckTest() { heartbeat_ = absl::Milliseconds(300); }
};

TEST_F(ClientLazyAckTest, UnmarkedPushesAreAckedAtTheNextHeartbeat) {
  const int32_t b1 = MakeBucket("b1");
  Client client(ClientOpts("consumer-lazy"));
  WatchConnection connection(&client, Fast());
  connection.Start();
  ASSERT_TRUE(client.WaitForVersion(1, absl::Seconds(10)));
  for (int team = 1; team <= 5; ++team) ASSERT_TRUE(Pin(team, b1).ok());
  ASSERT_TRUE(client.WaitForVersion(6, absl::Seconds(10)));
  // No push asked for it; a heartbeat comes within 300 ms, and the client
  // ACKs the newest version it applied.
  EXPECT_TRUE(WaitForApplied("consumer-lazy", 6, absl::Seconds(3)).has_value())
      << "ListClients never showed the lazily ACKed version";
  EXPECT_EQ(connection.streams_opened(), 1);
}

class ClientAckIntervalTest : public ClientAckTest {
 protected:
  ClientAckIntervalTest() { ack_interval_ = absl::Milliseconds(300); }
};

TEST_F(ClientAckIntervalTest, APushMarkedForTheIntervalIsAckedAtOnce) {
  const int32_t b1 = MakeBucket("b1");
  Client client(ClientOpts("consumer-interval"));
  WatchConnection connection(&client, Fast());
  connection.Start();
  ASSERT_TRUE(client.WaitForVersion(1, absl::Seconds(10)));
  ASSERT_TRUE(WaitForApplied("consumer-interval", 1).has_value());
  // A push after a quiet spell is not marked, and no heartbeat comes during
  // the test: the client does not ACK it.
  absl::SleepFor(absl::Milliseconds(400));
  ASSERT_TRUE(Pin(1, b1).ok());
  ASSERT_TRUE(client.WaitForVersion(2, absl::Seconds(10)));
  absl::SleepFor(absl::Milliseconds(400));
  ASSERT_FALSE(WaitForApplied("consumer-interval", 2, absl::ZeroDuration()).has_value())
      << "an unmarked push was ACKed at once";
  // Its ACK now missing for longer than the interval, the next push asks
  // for one: only that ACK can move ListClients.
  ASSERT_TRUE(Pin(2, b1).ok());
  EXPECT_TRUE(WaitForApplied("consumer-interval", 3, absl::Seconds(3)).has_value())
      << "the marked push's ACK never reached ListClients";
}

class ClientAckHandoffTest : public ClientAckTest {
 protected:
  ServerOptions Options() override {
    ServerOptions options = ClientAckTest::Options();
    options.handoff.enabled = true;
    // Far past the test: only the producer's drained_version passes the
    // barrier.
    options.handoff.grace = absl::Seconds(60);
    options.handoff.poll_interval = absl::Milliseconds(100);
    // The coordinator judges barriers one client lease after it leads.
    options.watch.client_lease = absl::Seconds(1);
    return options;
  }
};

TEST_F(ClientAckHandoffTest, AHandoffOpenedWhileTheProducerWatchesPassesOnceItsEventsAreDelivered) {
  const int32_t a = MakeBucket("a");
  const int32_t b = MakeBucket("b", "other");
  Client client(ClientOpts("producer-ack", v1::PRODUCER));
  DeliveryTracker tracker(&client);
  WatchConnection connection(&client, Fast(&tracker));
  connection.Start();
  ASSERT_TRUE(client.WaitForVersion(2, absl::Seconds(10)));
  WaitForClientLeased(admin_.get(), "producer-ack");
  // A team on `a` by default, and an event of it in flight, routed at the
  // version before the move.
  int64_t team = 1;
  while (client.Route(team).bucket_id() != a) ++team;
  DeliveryTracker::Routed in_flight = tracker.Route(team);
  ASSERT_EQ(in_flight.route.bucket_id(), a);

  v1::AssignTeamResponse moved;
  ASSERT_TRUE(Pin(team, b, &moved).ok());
  ASSERT_EQ(moved.effect().handoffs_size(), 1);
  const int64_t id = moved.effect().handoffs(0).id();
  ASSERT_TRUE(client.WaitForVersion(moved.version(), absl::Seconds(10)));
  // The push that opened the handoff was marked and ACKed at once (no
  // heartbeat comes), with the in-flight event holding drained_version
  // back: the barrier waits.
  std::optional<v1::ClientInfo> acked = WaitForApplied("producer-ack", moved.version());
  ASSERT_TRUE(acked.has_value()) << "the handoff's push was not ACKed at once";
  EXPECT_LT(acked->drained_version(), moved.version());
  absl::SleepFor(absl::Milliseconds(500));
  std::optional<v1::Handoff> waiting = FindHandoff(admin_.get(), id);
  ASSERT_TRUE(waiting.has_value());
  EXPECT_EQ(waiting->state(), v1::HANDOFF_SWITCHING) << waiting->ShortDebugString();

  // Delivered: the client reports drained_version, and the barrier passes
  // well within the grace period.
  tracker.Done(in_flight.ticket);
  const absl::Time delivered = absl::Now();
  const v1::Handoff passed = WaitForHandoff(
      admin_.get(), id, [](const v1::Handoff& h) { return h.state() != v1::HANDOFF_SWITCHING; },
      absl::Seconds(10));
  EXPECT_NE(passed.state(), v1::HANDOFF_SWITCHING);
  EXPECT_NE(passed.state(), v1::HANDOFF_FORCED) << passed.ShortDebugString();
  EXPECT_LT(absl::Now() - delivered, absl::Seconds(10));
  EXPECT_TRUE(WaitForClient("producer-ack", [&](const v1::ClientInfo& c) {
                return c.drained_version() >= moved.version();
              }).has_value());
}

TEST_F(ClientAckTest, APushThatCannotApplyIsAnsweredWithOneSnapshotOnTheSameStream) {
  const int32_t b1 = MakeBucket("b1");
  v1::MappingSnapshot without_b2;
  ASSERT_TRUE(mapping_->GetMapping(Ctx().get(), v1::GetMappingRequest(), &without_b2).ok());
  const int32_t b2 = MakeBucket("b2");
  ASSERT_EQ(Version(), 2);
  // A cache file that claims version 2 of this cluster but lacks bucket
  // b2: the client resumes at 2 with no push, and a delta that pins a team
  // to b2 cannot apply.
  ClientOptions options = ClientOpts("consumer-nack");
  {
    without_b2.set_version(2);
    Client seed(options);
    ASSERT_TRUE(seed.ApplySnapshot(without_b2).ok());
    ASSERT_TRUE(seed.WriteCache().ok());
  }
  Client client(options);
  Versions versions(&client);
  // The watch thread stops for a second in the listener of version 3, so
  // the pushes behind it (the one that cannot apply, and the next) are
  // written to the stream before the client reads them.
  std::atomic<bool> held{false};
  client.OnChange([&](const ChangeEvent& e) {
    if (e.new_version == 3 && !held.exchange(true)) absl::SleepFor(absl::Seconds(1));
  });
  WatchConnection connection(&client, Fast());
  connection.Start();
  ASSERT_EQ(client.version(), 2);  // from the cache file
  for (int i = 0; i < 200 && !connection.synced(); ++i) absl::SleepFor(absl::Milliseconds(10));
  ASSERT_TRUE(connection.synced());

  ASSERT_TRUE(Pin(1, b1).ok());                                           // version 3
  ASSERT_TRUE(Pin(2, b2).ok());                                           // 4: cannot apply
  for (int team = 3; team <= 7; ++team) ASSERT_TRUE(Pin(team, b1).ok());  // 5..9
  ASSERT_TRUE(client.WaitForVersion(9, absl::Seconds(10)));
  EXPECT_TRUE(held);
  EXPECT_EQ(client.Route(2).bucket_id(), b2);
  for (int team : {1, 3, 4, 5, 6, 7}) EXPECT_EQ(client.Route(team).bucket_id(), b1) << team;
  // One NACK counted, no reconnect, and no snapshot taken twice (a second
  // one would publish its version again).
  EXPECT_TRUE(WaitForClient("consumer-nack", [](const v1::ClientInfo& c) {
                return c.nacks() == 1;
              }).has_value());
  EXPECT_EQ(connection.streams_opened(), 1);
  // Still watching: the next write arrives as a delta.
  ASSERT_TRUE(Pin(8, b1).ok());
  ASSERT_TRUE(client.WaitForVersion(10, absl::Seconds(10)));
  const std::vector<ChangeEvent> events = versions.Until(10);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().new_version, 10);
  for (size_t i = 1; i < events.size(); ++i) {
    EXPECT_EQ(events[i].old_version, events[i - 1].new_version) << i;
    EXPECT_GT(events[i].new_version, events[i].old_version) << i;
  }
  absl::SleepFor(absl::Milliseconds(300));
  std::optional<v1::ClientInfo> after = WaitForClient(
      "consumer-nack", [](const v1::ClientInfo&) { return true; }, absl::ZeroDuration());
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->nacks(), 1);
  EXPECT_EQ(connection.streams_opened(), 1);
}

}  // namespace
}  // namespace bucketmap
