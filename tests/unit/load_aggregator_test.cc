// LoadAggregator (server/signals/load_signals.h) over a FakeStore, which
// records what it is given, and a FakeClock: each report goes to the
// window it arrived in; a window is folded two flushes after it ends;
// stopping flushes what is pending (a replica that shuts down loses
// nothing); a failed flush keeps its windows for the next; the pending
// keys are bounded. No thread runs a flush here except Stop()'s (the
// flush interval is an hour unless a test says otherwise).
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "server/signals/load_signals.h"
#include "tests/support/fake_clock.h"
#include "tests/support/fake_store.h"
#include "tests/unit/unit_test_util.h"

namespace bucketmap {
namespace unit_test {
namespace {

constexpr absl::Duration kWindow = absl::Seconds(10);

LoadKey Team(int64_t id) { return LoadKey{LoadKind::kTeam, id}; }

// A producer's report of one 10 s window.
LoadReport Events(std::vector<int64_t> teams, std::vector<int64_t> events) {
  LoadReport r;
  r.window_ms = absl::ToInt64Milliseconds(kWindow);
  r.team_ids = std::move(teams);
  r.events = std::move(events);
  EXPECT_TRUE(ValidateLoadReport(r, LoadReporter::kProducer).ok());
  return r;
}

class LoadAggregatorTest : public ::testing::Test {
 protected:
  LoadAggregatorTest() {
    options_.config.window = kWindow;
    options_.flush_interval = absl::Hours(1);
  }

  // The window the fake clock is in now (it starts on a window boundary).
  int64_t SlotNow() const { return LoadSlotOf(clock_.Now(), kWindow); }

  FakeClock clock_;
  FakeStore store_{&clock_};
  LoadOptions options_;
};

TEST_F(LoadAggregatorTest, EachReportGoesToTheWindowItArrivedIn) {
  LoadAggregator load(&store_, nullptr, options_, &clock_);
  const int64_t first = SlotNow();
  load.Add(Events({1, 2}, {100, 50}));
  load.Add(Events({1}, {20}));  // another client, same window
  clock_.Advance(kWindow);
  load.Add(Events({2}, {10}));
  ASSERT_TRUE(load.Flush().ok());

  const LoadSlots added = store_.load_added();
  ASSERT_EQ(added.size(), 2u);
  // Counts over the 10 s window: events per second.
  EXPECT_DOUBLE_EQ(added.at(first).at(Team(1)).events, 12.0);
  EXPECT_DOUBLE_EQ(added.at(first).at(Team(2)).events, 5.0);
  EXPECT_DOUBLE_EQ(added.at(first + 1).at(Team(2)).events, 1.0);
  EXPECT_EQ(added.at(first + 1).count(Team(1)), 0u);
  // What was flushed is not added again.
  ASSERT_TRUE(load.Flush().ok());
  EXPECT_DOUBLE_EQ(store_.load_added().at(first).at(Team(1)).events, 12.0);
}

TEST_F(LoadAggregatorTest, AWindowIsFoldedTwoFlushesAfterItEnds) {
  options_.flush_interval = absl::Seconds(1);
  LoadAggregator load(&store_, nullptr, options_, &clock_);
  const int64_t slot = SlotNow();
  load.Add(Events({1}, {10}));
  clock_.Advance(kWindow + absl::Milliseconds(1999));  // 1.999 s past its end
  ASSERT_TRUE(load.Flush().ok());
  EXPECT_EQ(store_.last_fold_through(), slot - 1);
  clock_.Advance(absl::Milliseconds(1));  // 2 s past its end
  ASSERT_TRUE(load.Flush().ok());
  EXPECT_EQ(store_.last_fold_through(), slot);
}

TEST_F(LoadAggregatorTest, StoppingFlushesWhatIsPending) {
  const int64_t slot = SlotNow();
  {
    LoadAggregator load(&store_, nullptr, options_, &clock_);
    load.Start();
    load.Add(Events({7}, {30}));
    EXPECT_EQ(store_.calls(FakeStore::kAddLoad), 0);
    // Destroyed: stops, and flushes once more (a replica shutting down).
  }
  EXPECT_DOUBLE_EQ(store_.load_added().at(slot).at(Team(7)).events, 3.0);

  // A new aggregator (the restarted replica) adds to the same window.
  LoadAggregator again(&store_, nullptr, options_, &clock_);
  again.Add(Events({7}, {10}));
  ASSERT_TRUE(again.Flush().ok());
  EXPECT_DOUBLE_EQ(store_.load_added().at(slot).at(Team(7)).events, 4.0);
}

TEST_F(LoadAggregatorTest, AFailedFlushKeepsItsWindowsForTheNext) {
  Metrics metrics;
  LoadAggregator load(&store_, &metrics, options_, &clock_);
  const int64_t slot = SlotNow();
  load.Add(Events({1}, {100}));
  store_.FailNext(FakeStore::kAddLoad, absl::UnavailableError("database down"));
  EXPECT_EQ(load.Flush().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(store_.load_added().empty());
  load.Add(Events({1, 2}, {50, 10}));  // merges with what is kept
  ASSERT_TRUE(load.Flush().ok());
  const LoadSlots added = store_.load_added();
  EXPECT_DOUBLE_EQ(added.at(slot).at(Team(1)).events, 15.0);
  EXPECT_DOUBLE_EQ(added.at(slot).at(Team(2)).events, 1.0);
  EXPECT_THAT(prometheus::TextSerializer().Serialize(metrics.registry().Collect()),
              ::testing::HasSubstr("bucketmap_load_flush_errors_total 1"));
}

TEST_F(LoadAggregatorTest, PendingKeysAreBoundedTheRestCountsUnattributed) {
  options_.max_pending_keys = 2;
  LoadAggregator load(&store_, nullptr, options_, &clock_);
  const int64_t slot = SlotNow();
  load.Add(Events({1, 2, 3, 4}, {10, 20, 30, 40}));
  load.Add(Events({1, 5}, {10, 50}));  // a kept key still adds up
  ASSERT_TRUE(load.Flush().ok());
  const LoadSlots added = store_.load_added();  // a copy: keep it while `window` is used
  const auto& window = added.at(slot);
  EXPECT_DOUBLE_EQ(window.at(Team(1)).events, 2.0);
  EXPECT_DOUBLE_EQ(window.at(Team(2)).events, 2.0);
  EXPECT_EQ(window.count(Team(3)) + window.count(Team(4)) + window.count(Team(5)), 0u);
  EXPECT_DOUBLE_EQ(window.at(LoadKey{LoadKind::kUnattributed, 0}).events, 12.0);

  // Flushed, the bound starts again.
  load.Add(Events({3}, {30}));
  ASSERT_TRUE(load.Flush().ok());
  EXPECT_DOUBLE_EQ(store_.load_added().at(slot).at(Team(3)).events, 3.0);
}

}  // namespace
}  // namespace unit_test
}  // namespace bucketmap
