// LoadCounter (bucketmap/load_counter.h): exact counts from many threads,
// the top teams and the rest per bucket, a full table, slots given back
// after two idle windows, the report times, and the first window starting
// at the first event. Runs under ThreadSanitizer (client_tests).
#include "bucketmap/load_counter.h"

#include <atomic>
#include <map>
#include <thread>
#include <vector>

#include "bucketmap/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/client_test_util.h"

namespace bucketmap {
namespace client_testing {
namespace {

using ::testing::ElementsAre;

// The counter's clock in these tests.
std::atomic<int64_t> g_now_ms{1700000000000};
absl::Time TestNow() { return absl::FromUnixMillis(g_now_ms.load()); }

LoadCounter::Options TestOptions() {
  LoadCounter::Options o;
  o.clock = TestNow;
  return o;
}

int64_t Total(const LoadReport& r) {
  int64_t total = r.other_events;
  for (int64_t e : r.events) total += e;
  return total;
}

TEST(LoadCounterTest, CountsEveryEventOnceFromManyThreads) {
  LoadCounter counter(TestOptions());
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&counter, t] {
      for (int i = 0; i < kPerThread; ++i) counter.CountEvent(1 + (i * 7 + t) % 300);
    });
  }
  // Reports taken while the threads count: each event lands in one.
  int64_t reported = 0;
  absl::Time now = TestNow();
  for (int i = 0; i < 20; ++i) {
    LoadReport r;
    now += absl::Seconds(10);
    if (counter.TakeReport(now, nullptr, false, &r)) {
      EXPECT_TRUE(ValidateLoadReport(r, LoadReporter::kProducer).ok());
      reported += Total(r);
    }
  }
  for (std::thread& th : threads) th.join();
  LoadReport last;
  if (counter.TakeReport(now + absl::Seconds(10), nullptr, false, &last)) reported += Total(last);
  EXPECT_EQ(reported, int64_t{kThreads} * kPerThread);
}

TEST(LoadCounterTest, ListsTheTopTeamsAndSumsTheRestPerBucket) {
  MappingState state;
  state.version = 1;
  state.cluster_id = "c";
  state.buckets = {MakeBucket(1), MakeBucket(2)};
  state.next_bucket_id = 3;
  state.assignments = {{1, Target::Pin(1)},
                       {2, Target::Pin(1)},
                       {3, Target::Pin(2)},
                       {4, Target::Pin(2)},
                       {5, Target::Pin(1)}};
  ClientOptions client_options;
  client_options.client_id = "t";
  Client client(client_options);
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(state)), IsOk());

  LoadCounter::Options options = TestOptions();
  options.top_teams = 2;
  LoadCounter counter(options);
  const std::map<int64_t, int64_t> counts = {{1, 5}, {2, 50}, {3, 7}, {4, 40}, {5, 1}};
  for (const auto& [team, n] : counts) counter.CountEvent(team, n);
  counter.CountEvent(0);  // ignored
  LoadReport r;
  ASSERT_TRUE(counter.TakeReport(TestNow() + absl::Seconds(12), client.Current().get(), false, &r));
  EXPECT_TRUE(ValidateLoadReport(r, LoadReporter::kProducer).ok());
  EXPECT_EQ(r.window_ms, 12000);  // from the first event
  EXPECT_THAT(r.team_ids, ElementsAre(2, 4));
  EXPECT_THAT(r.events, ElementsAre(50, 40));
  EXPECT_EQ(r.other_events, 5 + 7 + 1);
  EXPECT_THAT(r.other_bucket_ids, ElementsAre(1, 2));
  EXPECT_THAT(r.other_bucket_events, ElementsAre(5 + 1, 7));
  EXPECT_TRUE(r.processing_us.empty());

  // Nothing since: no report.
  EXPECT_FALSE(counter.TakeReport(TestNow() + absl::Seconds(22), nullptr, false, &r));
}

TEST(LoadCounterTest, ConsumersReportProcessingTime) {
  LoadCounter counter(TestOptions());
  counter.CountProcessing(9, absl::Milliseconds(3));
  counter.CountProcessing(9, absl::Microseconds(500));
  LoadReport r;
  ASSERT_TRUE(counter.TakeReport(TestNow() + absl::Seconds(10), nullptr, true, &r));
  EXPECT_TRUE(ValidateLoadReport(r, LoadReporter::kConsumer).ok());
  EXPECT_THAT(r.team_ids, ElementsAre(9));
  EXPECT_THAT(r.processing_us, ElementsAre(3500));
  EXPECT_TRUE(r.events.empty());
}

TEST(LoadCounterTest, AFullTableCountsNewTeamsAsOtherAndIdleSlotsAreGivenBack) {
  LoadCounter::Options options = TestOptions();
  options.capacity = 16;
  options.stripes = 1;
  LoadCounter counter(options);
  for (int64_t t = 1; t <= 16; ++t) counter.CountEvent(t);
  counter.CountEvent(17);  // no slot left
  absl::Time now = TestNow();
  LoadReport r;
  ASSERT_TRUE(counter.TakeReport(now += absl::Seconds(10), nullptr, false, &r));
  EXPECT_EQ(r.team_ids.size(), 16u);
  EXPECT_EQ(r.other_events, 1);
  EXPECT_TRUE(r.other_bucket_ids.empty());  // no bucket known for it
  // Two windows without teams 1..16 give their slots back.
  EXPECT_FALSE(counter.TakeReport(now += absl::Seconds(10), nullptr, false, &r));
  EXPECT_FALSE(counter.TakeReport(now += absl::Seconds(10), nullptr, false, &r));
  for (int64_t t = 101; t <= 116; ++t) counter.CountEvent(t);
  ASSERT_TRUE(counter.TakeReport(now += absl::Seconds(10), nullptr, false, &r));
  EXPECT_EQ(r.team_ids.size(), 16u);
  EXPECT_EQ(r.other_events, 0);
  EXPECT_EQ(r.window_ms, 10000);  // the empty windows ended the last one
}

TEST(LoadCounterTest, ReportsGoOutMidWindowAtLeastOneWindowAfterTheFirstEvent) {
  LoadCounter counter(TestOptions());                         // 10 s windows
  const absl::Time t0 = absl::FromUnixMillis(1700000003000);  // x3 s
  g_now_ms = absl::ToUnixMillis(t0);
  // Before any event: the next mid-window time.
  EXPECT_EQ(counter.NextReport(t0), absl::FromUnixMillis(1700000005000));
  counter.CountEvent(1);
  // The first window lasts at least one window from the first event.
  EXPECT_EQ(counter.NextReport(t0), absl::FromUnixMillis(1700000015000));
  EXPECT_EQ(counter.NextReport(absl::FromUnixMillis(1700000015000)),
            absl::FromUnixMillis(1700000025000));
  LoadReport r;
  // Asked before the first window is over (a reporter that computed its
  // time before the first event): nothing yet.
  EXPECT_FALSE(counter.TakeReport(absl::FromUnixMillis(1700000005000), nullptr, false, &r));
  ASSERT_TRUE(counter.TakeReport(absl::FromUnixMillis(1700000015000), nullptr, false, &r));
  EXPECT_EQ(r.window_ms, 12000);
  EXPECT_EQ(counter.NextReport(absl::FromUnixMillis(1700000015000)),
            absl::FromUnixMillis(1700000025000));
}

}  // namespace
}  // namespace client_testing
}  // namespace bucketmap
