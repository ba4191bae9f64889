// domain/load.h: load report validation (every refusal names its field),
// contributions per window, the bias-corrected EWMA and per-bucket sums.
#include "domain/load.h"

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bucketmap {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

LoadReport Producer() {
  LoadReport r;
  r.window_ms = 10000;
  r.team_ids = {1, 5, 9};
  r.events = {100, 50, 10};
  r.other_events = 40;
  r.other_bucket_ids = {2};
  r.other_bucket_events = {30};
  return r;
}

std::string Refusal(const LoadReport& r, LoadReporter who = LoadReporter::kProducer) {
  absl::Status s = ValidateLoadReport(r, who);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  return std::string(s.message());
}

TEST(LoadReportTest, AValidReportPasses) {
  EXPECT_TRUE(ValidateLoadReport(Producer(), LoadReporter::kProducer).ok());
  LoadReport c;
  c.window_ms = 1000;
  c.team_ids = {3};
  c.processing_us = {250000};
  EXPECT_TRUE(ValidateLoadReport(c, LoadReporter::kConsumer).ok());
  LoadReport empty;
  empty.window_ms = 600000;
  EXPECT_TRUE(ValidateLoadReport(empty, LoadReporter::kProducer).ok());
}

TEST(LoadReportTest, EveryRefusalNamesItsField) {
  LoadReport r = Producer();
  r.window_ms = 999;
  EXPECT_THAT(Refusal(r), StartsWith("load.window_ms: "));
  r.window_ms = 600001;
  EXPECT_THAT(Refusal(r), StartsWith("load.window_ms: "));

  r = Producer();
  r.team_ids = {5, 1, 9};
  EXPECT_THAT(Refusal(r), StartsWith("load.team_ids[1]: must be ascending"));
  r.team_ids = {1, 1, 9};
  EXPECT_THAT(Refusal(r), StartsWith("load.team_ids[1]: "));
  r.team_ids = {0, 1, 9};
  EXPECT_THAT(Refusal(r), StartsWith("load.team_ids[0]: ids are at least 1"));

  r = Producer();
  r.events = {1, 2};
  EXPECT_THAT(Refusal(r), StartsWith("load.events: has 2 entries; must be empty or 3"));
  r.events = {1, -2, 3};
  EXPECT_THAT(Refusal(r), StartsWith("load.events[1]: must not be negative"));
  r.events = {1, 10000 * kMaxEventsPerMs + 1, 3};
  EXPECT_THAT(Refusal(r), StartsWith("load.events[1]: "));

  r = Producer();
  r.team_ids.clear();
  r.events.clear();
  for (int64_t t = 1; t <= kMaxLoadReportTeams + 1; ++t) {
    r.team_ids.push_back(t);
    r.events.push_back(1);
  }
  EXPECT_THAT(Refusal(r), StartsWith("load.team_ids: 1001 entries; at most 1000"));

  r = Producer();
  r.other_events = -1;
  EXPECT_THAT(Refusal(r), StartsWith("load.other_events: "));
  r = Producer();
  r.other_bucket_events = {41};
  EXPECT_THAT(Refusal(r), StartsWith("load.other_bucket_events: sum above other_events"));
  r = Producer();
  r.other_bucket_ids = {2, 2};
  r.other_bucket_events = {1, 1};
  EXPECT_THAT(Refusal(r), StartsWith("load.other_bucket_ids[1]: "));

  // Each role reports its own column only.
  r = Producer();
  r.processing_us = {1, 2, 3};
  EXPECT_THAT(Refusal(r), StartsWith("load.processing_us: producers report events"));
  EXPECT_THAT(Refusal(Producer(), LoadReporter::kConsumer),
              StartsWith("load.events: consumers report processing time"));

  // The window's total must be plausible, not only each team's.
  r = Producer();
  r.window_ms = 1000;
  r.events = {kMaxEventsPerMs * 1000, 0, 0};
  r.other_events = 1;
  r.other_bucket_events = {0};
  EXPECT_THAT(Refusal(r), HasSubstr("the window's total is not plausible"));
}

TEST(LoadContributionTest, CountsBecomeRatesOverTheLongerOfTheTwoWindows) {
  std::map<LoadKey, LoadRate> rates;
  ContributionsOf(Producer(), absl::Seconds(10), &rates);
  EXPECT_DOUBLE_EQ(rates[(LoadKey{LoadKind::kTeam, 1})].events, 10.0);
  EXPECT_DOUBLE_EQ(rates[(LoadKey{LoadKind::kTeam, 9})].events, 1.0);
  EXPECT_DOUBLE_EQ(rates[(LoadKey{LoadKind::kBucketOther, 2})].events, 3.0);
  // other_events beyond other_bucket_events: 10 events, no bucket.
  EXPECT_DOUBLE_EQ(rates[(LoadKey{LoadKind::kUnattributed, 0})].events, 1.0);

  // Ten 1 s reports in a 10 s window add up to the window's rate.
  std::map<LoadKey, LoadRate> short_windows;
  LoadReport r;
  r.window_ms = 1000;
  r.team_ids = {4};
  r.events = {50};
  for (int i = 0; i < 10; ++i) ContributionsOf(r, absl::Seconds(10), &short_windows);
  EXPECT_DOUBLE_EQ(short_windows[(LoadKey{LoadKind::kTeam, 4})].events, 50.0);
}

TEST(LoadRatesTest, TheFirstWindowIsItsOwnRateAndLaterOnesAverage) {
  LoadTable table;
  table.config.window = absl::Seconds(10);
  table.config.half_life = absl::Minutes(10);
  const double decay = LoadDecay(table.config);
  EXPECT_NEAR(std::pow(decay, 60), 0.5, 1e-12);  // 60 windows = one half-life
  // One window folded with 100 events/s: stored (1 - decay) * 100.
  table.first_slot = 7;
  table.folded_through = 7;
  table.rows.push_back({{LoadKind::kTeam, 42}, {(1 - decay) * 100, 0}, 7});
  LoadRates rates = RatesOf(table);
  EXPECT_EQ(rates.windows, 1);
  EXPECT_NEAR(rates.teams[42].events, 100.0, 1e-9);
  EXPECT_EQ(rates.as_of, absl::FromUnixSeconds(80));

  // Then 60 windows (a half-life) without the team: its stored value has
  // halved, and the correction now covers 61 windows.
  table.folded_through = 7 + 60;
  rates = RatesOf(table);
  const double norm = 1 - std::pow(decay, 61);
  EXPECT_NEAR(rates.teams[42].events, (1 - decay) * 100 * 0.5 / norm, 1e-9);

  // A steady 10 events/s over 200 windows reads 10.
  LoadTable steady = table;
  steady.rows.clear();
  steady.first_slot = 0;
  steady.folded_through = 199;
  double v = 0;
  for (int i = 0; i < 200; ++i) v = decay * v + (1 - decay) * 10;
  steady.rows.push_back({{LoadKind::kTeam, 1}, {v, 0}, 199});
  EXPECT_NEAR(RatesOf(steady).teams[1].events, 10.0, 1e-9);

  // Nothing folded yet: nothing known.
  EXPECT_EQ(RatesOf(LoadTable()).windows, 0);
}

TEST(LoadRatesTest, BucketsSumTheirTeamsAtTheVersionAndRankTheTop) {
  MappingState state;
  state.version = 3;
  state.cluster_id = "c";
  Bucket a;
  a.id = 1;
  a.name = "a";
  a.weight = 300;
  Bucket b;
  b.id = 2;
  b.name = "b";
  b.weight = 100;
  Bucket gone;
  gone.id = 3;
  gone.name = "gone";
  gone.state = BucketState::kRetired;
  state.buckets = {a, b, gone};
  state.next_bucket_id = 4;
  state.assignments = {{10, Target::Pin(1)}, {11, Target::Pin(1)}, {12, Target::Pin(2)}};
  auto snapshot = Snapshot::Build(state);
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();

  LoadRates rates;
  rates.teams[10] = {5, 0};
  rates.teams[11] = {20, 1};
  rates.teams[12] = {7, 0};
  rates.bucket_other[2] = {3, 0};
  rates.bucket_other[99] = {1, 0};  // a bucket that no longer exists
  LoadRate unattributed;
  std::vector<BucketLoadView> loads = BucketLoads(**snapshot, rates, 1, &unattributed);
  ASSERT_EQ(loads.size(), 3u);
  EXPECT_DOUBLE_EQ(loads[0].rate.events, 25);
  EXPECT_DOUBLE_EQ(loads[0].rate.processing, 1);
  EXPECT_EQ(loads[0].teams_with_load, 2);
  ASSERT_EQ(loads[0].top_teams.size(), 1u);
  EXPECT_EQ(loads[0].top_teams[0].first, 11);
  EXPECT_DOUBLE_EQ(loads[1].rate.events, 10);  // team 12 and the unlisted 3
  EXPECT_DOUBLE_EQ(loads[0].weight_share, 0.75);
  EXPECT_DOUBLE_EQ(loads[1].weight_share, 0.25);
  EXPECT_DOUBLE_EQ(loads[2].weight_share, 0);  // RETIRED: not placeable
  EXPECT_DOUBLE_EQ(loads[0].event_share, 25.0 / 35.0);
  EXPECT_DOUBLE_EQ(unattributed.events, 1);
  // The buckets and the unattributed rest add up to everything reported.
  EXPECT_DOUBLE_EQ(
      loads[0].rate.events + loads[1].rate.events + loads[2].rate.events + unattributed.events,
      5 + 20 + 7 + 3 + 1);
}

TEST(LoadSlotTest, SlotsAreWholeWindowsOfUnixTime) {
  EXPECT_EQ(LoadSlotOf(absl::FromUnixMillis(19999), absl::Seconds(10)), 1);
  EXPECT_EQ(LoadSlotOf(absl::FromUnixMillis(20000), absl::Seconds(10)), 2);
  EXPECT_EQ(LoadSlotStart(2, absl::Seconds(10)), absl::FromUnixSeconds(20));
}

}  // namespace
}  // namespace bucketmap
