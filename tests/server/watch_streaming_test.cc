// WatchMapping with Subscribe.ack_mode = ACK_REQUESTED (docs/protocol.md,
// "ACK modes"), end to end on a real PostgreSQL: pushes stream without
// waiting for ACKs, only the marked ones are held to the ACK timeout, one
// snapshot answers any number of NACKs, the marks come where the server
// needs ACKs (catch-up, snapshot, ACKs behind for the ack interval, a
// producer's push while a handoff is open), and clients that leave
// ack_mode out keep the protocol they were written for, on the same server.
#include <memory>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_fixture.h"
#include "tests/server/watch_client.h"

namespace bucketmap {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

class WatchStreamingTest : public ServerFixture {
 protected:
  ServerOptions Options() override {
    ServerOptions options = ServerFixture::Options();
    options.watch.heartbeat = heartbeat_;
    options.watch.ack_timeout = ack_timeout_;
    options.watch.ack_interval = ack_interval_;
    options.watch.max_deltas_per_push = 8;
    options.watch.client_flush = absl::Milliseconds(100);
    options.watch.fanout_threads = fanout_threads_;
    options.watch.min_streams_per_fanout_thread = min_streams_per_fanout_thread_;
    return options;
  }

  // Subscribes streaming and reads the catch-up push (then the SYNC).
  v1::WatchResponse::Push Subscribe(WatchClient& client, const std::string& id,
                                    v1::ClientRole role = v1::CONSUMER) {
    client.Subscribe(id, role, 0, "", {}, v1::ACK_REQUESTED);
    std::optional<v1::WatchResponse> push = client.NextNonHeartbeat();
    EXPECT_TRUE(push.has_value() && push->has_push());
    std::optional<v1::WatchResponse> sync = client.NextNonHeartbeat();
    EXPECT_TRUE(sync.has_value() && sync->has_sync());
    return push.value_or(v1::WatchResponse()).push();
  }

  // The next push (skipping heartbeats); fails the test on anything else.
  v1::WatchResponse::Push NextPush(WatchClient& client) {
    std::optional<v1::WatchResponse> r = client.NextNonHeartbeat();
    EXPECT_TRUE(r.has_value() && r->has_push()) << (r ? r->ShortDebugString() : "nothing");
    return r.value_or(v1::WatchResponse()).push();
  }

  // Polls ListClients until client `id` matches `pred`.
  std::optional<v1::ClientInfo> WaitForClient(const std::string& id,
                                              std::function<bool(const v1::ClientInfo&)> pred) {
    for (int i = 0; i < 100; ++i) {
      v1::ListClientsResponse clients;
      EXPECT_TRUE(admin_->ListClients(Ctx().get(), v1::ListClientsRequest(), &clients).ok());
      for (const v1::ClientInfo& c : clients.clients()) {
        if (c.client_id() == id && pred(c)) return c;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    return std::nullopt;
  }

  absl::Duration heartbeat_ = absl::Seconds(30);
  absl::Duration ack_timeout_ = absl::Seconds(30);
  absl::Duration ack_interval_ = absl::Hours(1);
  int fanout_threads_ = 0;
  size_t min_streams_per_fanout_thread_ = WatchOptions().min_streams_per_fanout_thread;
};

TEST_F(WatchStreamingTest, PushesStreamWithoutAcksAndOnlyTheNeededOnesAreMarked) {
  const int32_t b1 = MakeBucket("b1");
  WatchClient client(mapping_.get());
  const v1::WatchResponse::Push first = Subscribe(client, "streamer");
  EXPECT_TRUE(first.has_snapshot());
  EXPECT_TRUE(first.ack_requested()) << "the catch-up's ACK is needed";
  client.Ack(first);

  // No ACK from here on: every version arrives anyway, in order, gapless,
  // and none asks for an ACK (no handoff, the ack interval is long).
  int64_t at = first.to_version();
  v1::WatchResponse::Push last;
  for (int team = 1; team <= 5; ++team) ASSERT_TRUE(Pin(team, b1).ok());
  while (at < Version()) {
    last = NextPush(client);
    EXPECT_EQ(last.from_version(), at);
    EXPECT_EQ(last.deltas_size(), last.to_version() - last.from_version());
    EXPECT_FALSE(last.ack_requested());
    at = last.to_version();
    if (HasFailure()) return;
  }
  EXPECT_EQ(at, 6);

  // A lazy ACK of the last push covers every earlier one. (Not of nonce
  // first + 5: versions committed while a push is being written coalesce
  // into the next push, so there may be fewer than five pushes.)
  client.Ack(last);
  EXPECT_TRUE(
      WaitForClient("streamer", [](const v1::ClientInfo& c) { return c.applied_version() == 6; })
          .has_value())
      << "ListClients never showed the lazily ACKed version";
}

TEST_F(WatchStreamingTest, OldStyleClientsKeepOnePushPerAckOnTheSameServer) {
  const int32_t b1 = MakeBucket("b1");
  WatchClient streaming(mapping_.get());
  Subscribe(streaming, "new");
  // Subscribes as clients written before ack_mode do: the field left out.
  WatchClient old_style(mapping_.get());
  old_style.Subscribe("old", v1::CONSUMER);
  std::optional<v1::WatchResponse> catch_up = old_style.NextNonHeartbeat();
  ASSERT_TRUE(catch_up.has_value() && catch_up->has_push());
  EXPECT_FALSE(catch_up->push().ack_requested()) << "never set for ACK_EVERY_PUSH streams";
  ASSERT_TRUE(old_style.NextNonHeartbeat()->has_sync());

  // The old-style stream has not ACKed its catch-up: it gets nothing more,
  // while the streaming one gets every version.
  ASSERT_TRUE(Pin(1, b1).ok());
  ASSERT_TRUE(Pin(2, b1).ok());
  int64_t at = 0;
  while (at < 3) at = NextPush(streaming).to_version();
  EXPECT_FALSE(old_style.NextNonHeartbeat(absl::Milliseconds(300)).has_value());
  old_style.Ack(catch_up->push());
  std::optional<v1::WatchResponse> next = old_style.NextNonHeartbeat();
  ASSERT_TRUE(next.has_value() && next->has_push());
  EXPECT_EQ(next->push().from_version(), 1);
  EXPECT_EQ(next->push().to_version(), 3);
  EXPECT_FALSE(next->push().ack_requested());
}

TEST_F(WatchStreamingTest, OneSnapshotAnswersEveryNackOfThePushesBeforeIt) {
  const int32_t b1 = MakeBucket("b1");
  WatchClient client(mapping_.get());
  const v1::WatchResponse::Push first = Subscribe(client, "nacker");
  client.Ack(first);
  for (int team = 1; team <= 3; ++team) ASSERT_TRUE(Pin(team, b1).ok());
  // Read every push up to version 4, NACKing each: the first NACK asks for
  // the snapshot, the others are of pushes that snapshot replaces.
  std::vector<v1::WatchResponse::Push> pushes;
  while (pushes.empty() || pushes.back().to_version() < 4) {
    pushes.push_back(NextPush(client));
    ASSERT_FALSE(pushes.back().has_snapshot());
  }
  for (const auto& p : pushes) client.Nack(p, "cannot apply");
  const v1::WatchResponse::Push snap = NextPush(client);
  EXPECT_TRUE(snap.has_snapshot());
  EXPECT_EQ(snap.to_version(), 4);
  EXPECT_TRUE(snap.ack_requested());
  client.Ack(snap);
  // No second snapshot: the next push is the next version's delta.
  ASSERT_TRUE(Pin(9, b1).ok());
  const v1::WatchResponse::Push after = NextPush(client);
  EXPECT_FALSE(after.has_snapshot());
  EXPECT_EQ(after.from_version(), 4);
  EXPECT_EQ(after.to_version(), 5);
  EXPECT_TRUE(
      WaitForClient("nacker", [](const v1::ClientInfo& c) { return c.nacks() == 1; }).has_value())
      << "the NACKs of pushes the snapshot replaced were counted";
}

class WatchFanoutTest : public WatchStreamingTest {
 protected:
  WatchFanoutTest() {
    fanout_threads_ = 4;
    min_streams_per_fanout_thread_ = 8;
  }
};

TEST_F(WatchFanoutTest, EveryStreamGetsEveryVersionInOrderWhenSeveralThreadsPush) {
  // First 16 streams: two threads' shares (at least 8 each, as this
  // fixture sets), the other two threads sit those versions out; then 48:
  // all four threads push. Half stream, half ACK every push.
  const int32_t b1 = MakeBucket("b1");
  std::vector<std::unique_ptr<WatchClient>> clients;
  std::vector<v1::WatchResponse::Push> last;
  int team = 0;
  for (const int streams : {16, 48}) {
    for (int i = static_cast<int>(clients.size()); i < streams; ++i) {
      clients.push_back(std::make_unique<WatchClient>(mapping_.get()));
      if (i % 2 == 0) {
        last.push_back(Subscribe(*clients.back(), absl::StrCat("streamer-", i)));
        continue;
      }
      clients.back()->Subscribe(absl::StrCat("acker-", i), v1::CONSUMER);
      last.push_back(NextPush(*clients.back()));
      std::optional<v1::WatchResponse> sync = clients.back()->NextNonHeartbeat();
      ASSERT_TRUE(sync.has_value() && sync->has_sync());
      clients.back()->Ack(last.back());
    }
    // Three versions each time, six in all: fewer than
    // max_deltas_per_push, so no stream is sent the snapshot.
    for (int k = 0; k < 3; ++k) ASSERT_TRUE(Pin(++team, b1).ok());
  }
  const int64_t final_version = Version();
  const int kStreams = static_cast<int>(clients.size());
  // Each stream: gapless and in order from its catch-up to the last
  // version, every push carrying exactly the deltas it claims.
  for (int i = 0; i < kStreams; ++i) {
    int64_t at = last[i].to_version();
    while (at < final_version) {
      const v1::WatchResponse::Push push = NextPush(*clients[i]);
      ASSERT_EQ(push.from_version(), at) << "stream " << i;
      ASSERT_FALSE(push.has_snapshot()) << "stream " << i;
      ASSERT_EQ(push.deltas_size(), push.to_version() - push.from_version()) << "stream " << i;
      for (int d = 0; d < push.deltas_size(); ++d) {
        EXPECT_EQ(push.deltas(d).to_version(), at + d + 1) << "stream " << i;
      }
      at = push.to_version();
      if (i % 2 == 1) clients[i]->Ack(push);
    }
    EXPECT_EQ(at, final_version) << "stream " << i;
  }
}

class WatchStreamingIntervalTest : public WatchStreamingTest {
 protected:
  WatchStreamingIntervalTest() { ack_interval_ = absl::Milliseconds(300); }
};

TEST_F(WatchStreamingIntervalTest, APushAsksForAnAckOncePerInterval) {
  const int32_t b1 = MakeBucket("b1");
  WatchClient client(mapping_.get());
  client.Ack(Subscribe(client, "lazy"));
  // Within the interval after an ACK: not marked.
  ASSERT_TRUE(Pin(1, b1).ok());
  EXPECT_FALSE(NextPush(client).ack_requested());
  // Past it: marked, and marks stop until that one is ACKed.
  absl::SleepFor(absl::Milliseconds(400));
  ASSERT_TRUE(Pin(2, b1).ok());
  const v1::WatchResponse::Push marked = NextPush(client);
  EXPECT_TRUE(marked.ack_requested());
  absl::SleepFor(absl::Milliseconds(400));
  ASSERT_TRUE(Pin(3, b1).ok());
  EXPECT_FALSE(NextPush(client).ack_requested()) << "one marked push at a time";
  client.Ack(marked);
  EXPECT_TRUE(WaitForClient("lazy", [&](const v1::ClientInfo& c) {
                return c.applied_version() == marked.to_version();
              }).has_value());
}

TEST_F(WatchStreamingIntervalTest, APushAfterAQuietSpellIsNotMarked) {
  const int32_t b1 = MakeBucket("b1");
  WatchClient client(mapping_.get());
  client.Ack(Subscribe(client, "rare"));
  // Writes rarer than the interval, each push ACKed (as a lazy client does
  // at its next heartbeat) before the next write: the server was never
  // behind for an interval, so none of them asks for an ACK at once.
  for (int team = 1; team <= 3; ++team) {
    absl::SleepFor(absl::Milliseconds(400));
    ASSERT_TRUE(Pin(team, b1).ok());
    const v1::WatchResponse::Push push = NextPush(client);
    EXPECT_FALSE(push.ack_requested()) << "write " << team;
    client.Ack(push);
  }
  // A partial ACK restarts the wait: pushes 4 and 5 go out, 4 is ACKed, and
  // 6 comes within the interval of that ACK.
  ASSERT_TRUE(Pin(4, b1).ok());
  const v1::WatchResponse::Push fourth = NextPush(client);
  absl::SleepFor(absl::Milliseconds(200));
  ASSERT_TRUE(Pin(5, b1).ok());
  EXPECT_FALSE(NextPush(client).ack_requested());
  absl::SleepFor(absl::Milliseconds(150));
  client.Ack(fourth);
  absl::SleepFor(absl::Milliseconds(200));
  ASSERT_TRUE(Pin(6, b1).ok());
  EXPECT_FALSE(NextPush(client).ack_requested()) << "behind for 200 ms since the last ACK";
  // Behind for longer than the interval since then: marked.
  absl::SleepFor(absl::Milliseconds(200));
  ASSERT_TRUE(Pin(7, b1).ok());
  EXPECT_TRUE(NextPush(client).ack_requested());
}

class WatchStreamingTimeoutTest : public WatchStreamingTest {
 protected:
  WatchStreamingTimeoutTest() {
    heartbeat_ = absl::Milliseconds(100);
    ack_timeout_ = absl::Milliseconds(800);
  }
};

TEST_F(WatchStreamingTimeoutTest, OnlyAMarkedPushNotAckedInTimeClosesTheStream) {
  const int32_t b1 = MakeBucket("b1");
  WatchClient lazy(mapping_.get());
  lazy.Ack(Subscribe(lazy, "lazy"));
  // Unmarked pushes, never ACKed, for longer than the ACK timeout.
  for (int team = 1; team <= 3; ++team) {
    ASSERT_TRUE(Pin(team, b1).ok());
    absl::SleepFor(absl::Milliseconds(400));
  }
  EXPECT_FALSE(lazy.done()) << "an unmarked push is not held to the ACK timeout";

  // A stream that never ACKs its (marked) catch-up is closed.
  WatchClient silent(mapping_.get());
  Subscribe(silent, "silent");
  grpc::Status status = silent.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("not ACKed"));
  EXPECT_FALSE(lazy.done());
}

TEST_F(WatchStreamingTest, ClaimsBeyondWhatWasSentEndTheStream) {
  MakeBucket("b1");
  {
    WatchClient liar(mapping_.get());
    const v1::WatchResponse::Push first = Subscribe(liar, "liar-1", v1::PRODUCER);
    v1::WatchRequest ack;
    ack.mutable_ack()->set_nonce(first.nonce());
    ack.mutable_ack()->set_applied_version(first.to_version() + 1);
    liar.Send(ack);
    grpc::Status s = liar.Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), StartsWith("ack.applied_version:"));
  }
  {
    WatchClient liar(mapping_.get());
    const v1::WatchResponse::Push first = Subscribe(liar, "liar-2", v1::PRODUCER);
    v1::WatchRequest ack;
    ack.mutable_ack()->set_nonce(first.nonce());
    ack.mutable_ack()->set_applied_version(first.to_version());
    ack.mutable_ack()->set_drained_version(first.to_version() + 1);
    liar.Send(ack);
    grpc::Status s = liar.Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), StartsWith("ack.drained_version:"));
  }
  {
    WatchClient bad(mapping_.get());
    v1::WatchRequest sub;
    sub.mutable_subscribe()->set_client_id("bad-mode");
    sub.mutable_subscribe()->set_role(v1::CONSUMER);
    sub.mutable_subscribe()->set_ack_mode(static_cast<v1::AckMode>(7));
    bad.Send(sub);
    grpc::Status s = bad.Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), StartsWith("subscribe.ack_mode:"));
  }
}

class WatchStreamingHandoffTest : public WatchStreamingTest {
 protected:
  ServerOptions Options() override {
    ServerOptions options = WatchStreamingTest::Options();
    options.handoff.enabled = true;
    options.handoff.grace = absl::Seconds(60);  // the barrier stays open
    return options;
  }
};

TEST_F(WatchStreamingHandoffTest, AProducersPushesAskForAcksWhileAHandoffIsOpen) {
  const int32_t a = MakeBucket("a");
  const int32_t b = MakeBucket("b", "other");
  WatchClient producer(mapping_.get());
  producer.Ack(Subscribe(producer, "producer", v1::PRODUCER), 0);
  WatchClient consumer(mapping_.get());
  consumer.Ack(Subscribe(consumer, "consumer", v1::CONSUMER));
  ASSERT_TRUE(WaitForClient("producer", [](const v1::ClientInfo&) { return true; }).has_value());
  // With no handoff open, no mark.
  ASSERT_TRUE(Pin(100000, a).ok());
  EXPECT_FALSE(NextPush(producer).ack_requested());
  EXPECT_FALSE(NextPush(consumer).ack_requested());

  // A move out of `a` opens a handoff whose barrier waits for this
  // producer (leased, not drained).
  int64_t team = 1;
  for (;; ++team) {
    v1::GetTeamRequest req;
    req.set_team_id(team);
    v1::TeamRoute route;
    if (mapping_->GetTeam(Ctx().get(), req, &route).ok() && route.bucket_id() == a &&
        route.source() == "default") {
      break;
    }
  }
  v1::AssignTeamResponse moved;
  ASSERT_TRUE(Pin(team, b, &moved).ok());
  ASSERT_EQ(moved.effect().handoffs_size(), 1);
  v1::WatchResponse::Push push = NextPush(producer);
  while (push.to_version() < moved.version()) push = NextPush(producer);
  EXPECT_TRUE(push.ack_requested()) << "the producer's ACK of the handoff's version is needed";
  v1::WatchResponse::Push consumer_push = NextPush(consumer);
  while (consumer_push.to_version() < moved.version()) consumer_push = NextPush(consumer);
  EXPECT_FALSE(consumer_push.ack_requested()) << "the barrier counts producers only";
  // The producer's ACK, drained, reaches ListClients (and the barrier).
  producer.Ack(push, push.to_version());
  EXPECT_TRUE(WaitForClient("producer", [&](const v1::ClientInfo& c) {
                return c.drained_version() == moved.version();
              }).has_value());
}

}  // namespace
}  // namespace bucketmap
