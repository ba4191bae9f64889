// The Client's notification and freshness API: OnChange, WaitForVersion,
// ConfirmCurrent and Staleness.
#include "bucketmap/client.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "client_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bucketmap {
namespace {

using ::bucketmap::client_testing::DeltaProto;
using ::bucketmap::client_testing::FakeClock;
using ::bucketmap::client_testing::IsOk;
using ::bucketmap::client_testing::MakeBucket;
using ::bucketmap::client_testing::SnapshotProto;

MappingState State(int64_t version) {
  MappingState s;
  s.version = version;
  s.cluster_id = "c";
  s.buckets = {MakeBucket(1), MakeBucket(2)};
  return s;
}

v1::MappingDelta PinDelta(int64_t from, int64_t team, int32_t bucket) {
  Change c;
  c.set = {{team, Target::Pin(bucket)}};
  return DeltaProto(c, from);
}

TEST(ClientNotifyTest, OnChangeSeesEachPublication) {
  Client client({});
  std::vector<std::pair<int64_t, int64_t>> seen;
  std::vector<int64_t> routed;
  client.OnChange([&](const ChangeEvent& e) {
    seen.emplace_back(e.old_version, e.new_version);
    EXPECT_FALSE(e.reset);
    ASSERT_NE(e.view, nullptr);
    EXPECT_EQ(e.view->version(), e.new_version);
    // Listeners run after publication: reads already see the new version.
    EXPECT_EQ(client.version(), e.new_version);
    routed.push_back(client.Route(7).version());
  });
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(State(5))), IsOk());
  ASSERT_THAT(client.ApplyDeltas({PinDelta(5, 7, 2)}), IsOk());
  ASSERT_THAT(client.ApplyDeltas({PinDelta(6, 7, 1), PinDelta(7, 8, 1)}), IsOk());
  // A failed apply publishes nothing.
  EXPECT_FALSE(client.ApplyDeltas({PinDelta(3, 7, 1)}).ok());
  EXPECT_THAT(seen, ::testing::ElementsAre(std::make_pair(0, 5), std::make_pair(5, 6),
                                           std::make_pair(6, 8)));
  EXPECT_THAT(routed, ::testing::ElementsAre(5, 6, 8));
}

TEST(ClientNotifyTest, RemoveListener) {
  Client client({});
  int a = 0, b = 0;
  const Client::ListenerId ida = client.OnChange([&](const ChangeEvent&) { ++a; });
  client.OnChange([&](const ChangeEvent&) { ++b; });
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(State(1))), IsOk());
  client.RemoveListener(ida);
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(State(2))), IsOk());
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, 2);
}

TEST(ClientNotifyTest, WaitForVersion) {
  Client client({});
  EXPECT_FALSE(client.WaitForVersion(1, absl::Milliseconds(20)));
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(State(5))), IsOk());
  EXPECT_TRUE(client.WaitForVersion(5, absl::ZeroDuration()));
  EXPECT_TRUE(client.WaitForVersion(3, absl::ZeroDuration()));
  EXPECT_FALSE(client.WaitForVersion(6, absl::Milliseconds(10)));

  absl::Notification waiting;
  std::atomic<bool> reached{false};
  std::thread waiter([&] {
    waiting.Notify();
    reached = client.WaitForVersion(7, absl::Seconds(30));
    // Whoever observed version 7 routes from 7 or newer.
    EXPECT_GE(client.Route(9).version(), 7);
  });
  waiting.WaitForNotification();
  ASSERT_THAT(client.ApplyDeltas({PinDelta(5, 9, 1)}), IsOk());
  absl::SleepFor(absl::Milliseconds(5));
  EXPECT_FALSE(reached.load());
  ASSERT_THAT(client.ApplyDeltas({PinDelta(6, 9, 2)}), IsOk());
  waiter.join();
  EXPECT_TRUE(reached.load());
}

TEST(ClientNotifyTest, ManyWaitersWakeTogether) {
  Client client({});
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(State(1))), IsOk());
  std::atomic<int> woke{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < 4; ++i) {
    waiters.emplace_back([&] { woke += client.WaitForVersion(3, absl::Seconds(30)); });
  }
  ASSERT_THAT(client.ApplyDeltas({PinDelta(1, 9, 1), PinDelta(2, 9, 2)}), IsOk());
  for (auto& t : waiters) t.join();
  EXPECT_EQ(woke.load(), 4);
}

TEST(ClientNotifyTest, StalenessFollowsConfirmations) {
  FakeClock clock;
  ClientOptions options;
  options.clock = clock.AsFunction();
  Client client(std::move(options));
  EXPECT_EQ(client.Staleness(), absl::InfiniteDuration());
  client.ConfirmCurrent(0);  // nothing loaded: nothing is current
  EXPECT_EQ(client.Staleness(), absl::InfiniteDuration());

  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(State(5))), IsOk());
  EXPECT_EQ(client.Staleness(), absl::ZeroDuration());
  clock.Advance(absl::Seconds(30));
  EXPECT_EQ(client.Staleness(), absl::Seconds(30));
  // A heartbeat from a server that is ahead does not make us current.
  client.ConfirmCurrent(6);
  EXPECT_EQ(client.Staleness(), absl::Seconds(30));
  // One at our version does.
  client.ConfirmCurrent(5);
  EXPECT_EQ(client.Staleness(), absl::ZeroDuration());
  clock.Advance(absl::Seconds(4));
  ASSERT_THAT(client.ApplyDeltas({PinDelta(5, 1, 1)}), IsOk());
  EXPECT_EQ(client.Staleness(), absl::ZeroDuration());
  // A clock that steps back never yields a negative staleness.
  clock.Advance(-absl::Seconds(10));
  EXPECT_EQ(client.Staleness(), absl::ZeroDuration());
}

TEST(ClientNotifyTest, HandleOutlivesPublicationsAndClient) {
  std::shared_ptr<const MappingView> held;
  {
    Client client({});
    ASSERT_THAT(client.ApplySnapshot(SnapshotProto(State(5))), IsOk());
    held = client.Current();
    for (int64_t v = 5; v < 50; ++v) {
      ASSERT_THAT(client.ApplyDeltas({PinDelta(v, 100 + v, 1)}), IsOk());
    }
    EXPECT_EQ(client.version(), 50);
  }
  // The client and every later view are gone; the handle still works.
  EXPECT_EQ(held->version(), 5);
  EXPECT_EQ(*held->Topic(1, "ingestion"), "events_plugin_ingestion_1");
  EXPECT_EQ(held->Route(120).source(), RouteSource::kDefault);
  EXPECT_EQ(held->Route(120).version(), 5);
}

}  // namespace
}  // namespace bucketmap
