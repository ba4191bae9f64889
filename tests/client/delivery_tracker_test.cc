// DeliveryTracker: drained_version from events in flight per route version
// (SPEC §5, switch barrier), including the race between a producer routing
// and the watch thread ACKing a new version.
#include "bucketmap/delivery_tracker.h"

#include <atomic>
#include <thread>
#include <vector>

#include "client_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bucketmap {
namespace {

using ::bucketmap::client_testing::DeltaProto;
using ::bucketmap::client_testing::IsOk;
using ::bucketmap::client_testing::MakeBucket;
using ::bucketmap::client_testing::SnapshotProto;

MappingState TwoBuckets() {
  MappingState state;
  state.version = 1;
  state.cluster_id = "cluster-a";
  state.buckets = {MakeBucket(1), MakeBucket(2)};
  return state;
}

// Moves the client one version on (an assignment of a throwaway team).
void Bump(Client& client) {
  Change change;
  change.set = {{1000 + client.version(), Target::Pin(1 + client.version() % 2)}};
  ASSERT_THAT(client.ApplyDeltas({DeltaProto(change, client.version())}), IsOk());
}

TEST(DeliveryTrackerTest, DrainedIsTheLowestVersionInFlightOrTheAppliedOne) {
  Client client(ClientOptions{});
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(TwoBuckets())), IsOk());
  DeliveryTracker tracker(&client);
  EXPECT_EQ(tracker.DrainedVersion(1), 1);

  DeliveryTracker::Routed a = tracker.Route(5);
  DeliveryTracker::Routed b = tracker.Route(6);
  EXPECT_EQ(a.ticket.version(), 1);
  EXPECT_EQ(a.route.version(), 1);
  EXPECT_EQ(tracker.in_flight(), 2);
  Bump(client);
  Bump(client);
  // Two events of version 1 are in flight: nothing below 1 is pending,
  // but version 1 itself is.
  EXPECT_EQ(tracker.DrainedVersion(3), 1);
  DeliveryTracker::Routed c = tracker.Route(7);
  EXPECT_EQ(c.ticket.version(), 3);
  tracker.Done(a.ticket);
  EXPECT_EQ(tracker.DrainedVersion(3), 1);
  tracker.Done(b.ticket);
  EXPECT_EQ(tracker.DrainedVersion(3), 3);
  tracker.Done(c.ticket);
  EXPECT_EQ(tracker.DrainedVersion(3), 3);
  EXPECT_EQ(tracker.in_flight(), 0);
  // An invalid ticket (a message produced without one) is ignored.
  tracker.Done(DeliveryTracker::Ticket());
  EXPECT_EQ(tracker.in_flight(), 0);
}

TEST(DeliveryTrackerTest, TicketsSurviveTheOpaqueRoundTrip) {
  Client client(ClientOptions{});
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(TwoBuckets())), IsOk());
  DeliveryTracker tracker(&client);
  DeliveryTracker::Viewed v = tracker.Current();
  ASSERT_NE(v.view, nullptr);
  EXPECT_EQ(v.ticket.version(), 1);
  void* opaque = v.ticket.ToOpaque();
  EXPECT_NE(opaque, nullptr);
  DeliveryTracker::Ticket back = DeliveryTracker::Ticket::FromOpaque(opaque);
  EXPECT_EQ(back.version(), 1);
  Bump(client);
  EXPECT_EQ(tracker.DrainedVersion(2), 1);
  tracker.Done(back);
  EXPECT_EQ(tracker.DrainedVersion(2), 2);
}

TEST(DeliveryTrackerTest, RebindMovesTheEventToTheVersionUsed) {
  Client client(ClientOptions{});
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(TwoBuckets())), IsOk());
  DeliveryTracker tracker(&client);
  DeliveryTracker::Ticket t = tracker.Begin();
  Bump(client);
  tracker.Rebind(&t, 2);
  EXPECT_EQ(t.version(), 2);
  EXPECT_EQ(tracker.DrainedVersion(2), 2);
  tracker.Rebind(&t, 1);  // lower: ignored
  EXPECT_EQ(t.version(), 2);
  tracker.Done(t);
  EXPECT_EQ(tracker.in_flight(), 0);
}

TEST(DeliveryTrackerTest, SignalsProgressOnlyWhenTheReportCanAdvance) {
  Client client(ClientOptions{});
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(TwoBuckets())), IsOk());
  DeliveryTracker tracker(&client);
  DeliveryTracker::Routed a = tracker.Route(5);
  Bump(client);
  tracker.SetReported(tracker.DrainedVersion(2), 2);  // drained 1 < applied 2
  const uint64_t seen = tracker.WaitForProgress(0, absl::ZeroDuration());
  std::thread done([&] { tracker.Done(a.ticket); });
  // Done() of the last version-1 event wakes the reporter.
  const uint64_t next = tracker.WaitForProgress(seen, absl::Seconds(10));
  done.join();
  EXPECT_NE(next, seen);
  EXPECT_EQ(tracker.DrainedVersion(2), 2);
  // Reported 2 of 2: events at 2 completing signal nothing.
  tracker.SetReported(2, 2);
  DeliveryTracker::Routed b = tracker.Route(6);
  const uint64_t quiet = tracker.WaitForProgress(0, absl::ZeroDuration());
  tracker.Done(b.ticket);
  EXPECT_EQ(tracker.WaitForProgress(quiet, absl::Milliseconds(50)), quiet);
}

// The barrier's safety: once the watch thread has computed drained = d
// after publishing a version, no producer can hold (or later take) a
// ticket of a version below d that it has not given back. Producers check
// every ticket they take against the last drained value published.
TEST(DeliveryTrackerTest, NoTicketBelowAPublishedDrainedVersion) {
  Client client(ClientOptions{});
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(TwoBuckets())), IsOk());
  DeliveryTracker tracker(&client);
  std::atomic<int64_t> published_drained{0};
  std::atomic<bool> stop{false};
  std::atomic<int64_t> violations{0};
  std::atomic<int64_t> events{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < 4; ++p) {
    producers.emplace_back([&, p] {
      std::vector<DeliveryTracker::Ticket> pending;
      int64_t team = 1 + p;
      while (!stop.load()) {
        DeliveryTracker::Routed r = tracker.Route(team += 4);
        if (r.ticket.version() < published_drained.load()) violations.fetch_add(1);
        if (r.route.version() != r.ticket.version()) violations.fetch_add(1);
        pending.push_back(r.ticket);
        // Deliver in batches, like a producer's poll loop.
        if (pending.size() >= 8) {
          for (const auto& t : pending) tracker.Done(t);
          pending.clear();
        }
        events.fetch_add(1);
      }
      for (const auto& t : pending) tracker.Done(t);
    });
  }
  for (int i = 0; i < 300; ++i) {
    Bump(client);
    const int64_t applied = client.version();
    const int64_t d = tracker.DrainedVersion(applied);
    ASSERT_LE(d, applied);
    published_drained.store(d);
  }
  stop.store(true);
  for (auto& t : producers) t.join();
  EXPECT_EQ(violations.load(), 0);
  EXPECT_GT(events.load(), 0);
  EXPECT_EQ(tracker.in_flight(), 0);
  EXPECT_EQ(tracker.DrainedVersion(client.version()), client.version());
}

}  // namespace
}  // namespace bucketmap
