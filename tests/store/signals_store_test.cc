// PgStore's signals (migrations/0006_lag_and_load.sql) against a real
// PostgreSQL: lag readings replaced whole and read back (unknown stays
// unknown), load windows added by several "replicas", folded into the
// EWMA once due, late windows redirected, decayed rows forgotten, and the
// averages reset when the window or half-life changes.
#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/store/pg_store.h"
#include "tests/store/store_test_util.h"

namespace bucketmap {
namespace store_test {
namespace {

class SignalsStoreTest : public PgStoreFixture {
 protected:
  LoadConfig Config() const {
    LoadConfig c;
    c.window = absl::Seconds(10);
    c.half_life = absl::Seconds(100);
    return c;
  }

  LoadSlots Window(int64_t slot, int64_t team, double events) {
    LoadSlots slots;
    slots[slot][LoadKey{LoadKind::kTeam, team}] = LoadRate{events, 0};
    return slots;
  }

  LoadRates Rates() {
    absl::StatusOr<LoadTable> table = store_->LoadLoadTable();
    EXPECT_TRUE(table.ok()) << table.status();
    return table.ok() ? RatesOf(*table) : LoadRates();
  }
};

TEST_F(SignalsStoreTest, LagReadingsAreReplacedWholeAndUnknownStaysUnknown) {
  const absl::Time at = absl::FromUnixMicros(1700000000123456);
  LagReading up{1, "ingestion", "g1", true, 42, 3.5, "", at};
  LagReading down{2, "ingestion", "g2", false, 7, 9, "broker down", at};
  ASSERT_TRUE(store_->SaveLagReadings({up, down}).ok());
  absl::StatusOr<std::vector<LagReading>> read = store_->LoadLagReadings();
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), 2u);
  EXPECT_TRUE((*read)[0].up);
  EXPECT_EQ((*read)[0].messages, 42);
  EXPECT_EQ((*read)[0].seconds, 3.5);
  EXPECT_EQ((*read)[0].read_at, at);
  EXPECT_FALSE((*read)[1].up);
  EXPECT_EQ((*read)[1].messages, 0);  // stored as NULL, never as a number
  EXPECT_EQ((*read)[1].error, "broker down");
  EXPECT_EQ(QueryInt("SELECT count(*) FROM bucket_lag WHERE messages IS NULL"), 1);

  ASSERT_TRUE(store_->SaveLagReadings({down}).ok());
  EXPECT_EQ(store_->LoadLagReadings()->size(), 1u);
}

// Automatic rebalancing's daily churn (migration 0008): per pool and UTC
// day, added up.
TEST_F(SignalsStoreTest, RebalanceChurnAddsUpPerPoolAndDay) {
  EXPECT_EQ(store_->LoadRebalanceChurn("hot", 20000).value_or(-1), 0);
  ASSERT_TRUE(store_->AddRebalanceChurn("hot", 20000, 0.0125).ok());
  ASSERT_TRUE(store_->AddRebalanceChurn("hot", 20000, 0.005).ok());
  ASSERT_TRUE(store_->AddRebalanceChurn("cold", 20000, 0.01).ok());
  ASSERT_TRUE(store_->AddRebalanceChurn("hot", 20001, 0.02).ok());
  EXPECT_DOUBLE_EQ(store_->LoadRebalanceChurn("hot", 20000).value_or(-1), 0.0175);
  EXPECT_DOUBLE_EQ(store_->LoadRebalanceChurn("cold", 20000).value_or(-1), 0.01);
  EXPECT_DOUBLE_EQ(store_->LoadRebalanceChurn("hot", 20001).value_or(-1), 0.02);
  EXPECT_EQ(store_->LoadRebalanceChurn("cold", 20001).value_or(-1), 0);
}

TEST_F(SignalsStoreTest, WindowsFromSeveralReplicasAddUpAndFoldOnceDue) {
  // Two replicas add to window 100; it is not due yet.
  ASSERT_TRUE(store_->AddLoad(Config(), Window(100, 7, 30), 99, 0.001).ok());
  ASSERT_TRUE(store_->AddLoad(Config(), Window(100, 7, 20), 99, 0.001).ok());
  EXPECT_EQ(Rates().windows, 0);
  // Due: folded; one window after the start it reads as that window.
  ASSERT_TRUE(store_->AddLoad(Config(), {}, 100, 0.001).ok());
  LoadRates rates = Rates();
  EXPECT_EQ(rates.windows, 1);
  EXPECT_NEAR(rates.teams[7].events, 50, 1e-9);
  EXPECT_EQ(rates.as_of, LoadSlotStart(101, absl::Seconds(10)));

  // A late report for window 100 (a replica behind) goes to window 101.
  ASSERT_TRUE(store_->AddLoad(Config(), Window(100, 7, 50), 100, 0.001).ok());
  ASSERT_TRUE(store_->AddLoad(Config(), {}, 101, 0.001).ok());
  rates = Rates();
  EXPECT_EQ(rates.windows, 2);
  EXPECT_NEAR(rates.teams[7].events, 50, 1e-9);  // 50 in both windows

  // Windows without the team decay it; the steady part stays exact.
  ASSERT_TRUE(store_->AddLoad(Config(), Window(102, 8, 10), 111, 0.001).ok());
  rates = Rates();
  EXPECT_EQ(rates.windows, 12);
  const double decay = LoadDecay(Config());
  const double norm = 1 - std::pow(decay, 12);
  const double team7 = 50 * (1 - std::pow(decay, 2)) * std::pow(decay, 10) / norm;
  EXPECT_NEAR(rates.teams[7].events, team7, 1e-9);
  EXPECT_NEAR(rates.teams[8].events, 10 * (1 - decay) * std::pow(decay, 9) / norm, 1e-9);
}

TEST_F(SignalsStoreTest, DecayedRowsAreForgottenAndAConfigChangeResets) {
  ASSERT_TRUE(store_->AddLoad(Config(), Window(10, 1, 0.01), 10, 0.001).ok());
  EXPECT_EQ(QueryInt("SELECT count(*) FROM load_rates"), 1);
  // 40 half-lives later team 1 is far below 0.001/s.
  ASSERT_TRUE(store_->AddLoad(Config(), Window(11, 2, 5), 10 + 400, 0.001).ok());
  EXPECT_EQ(QueryInt("SELECT count(*) FROM load_rates WHERE id = 1"), 0);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM load_rates WHERE id = 2"), 0);  // decayed too

  LoadConfig other = Config();
  other.half_life = absl::Seconds(200);
  ASSERT_TRUE(store_->AddLoad(other, Window(500, 3, 4), 500, 0.001).ok());
  LoadRates rates = Rates();
  EXPECT_EQ(rates.config.half_life, absl::Seconds(200));
  EXPECT_EQ(rates.windows, 1);
  EXPECT_EQ(rates.teams.size(), 1u);
  EXPECT_NEAR(rates.teams[3].events, 4, 1e-9);
}

}  // namespace
}  // namespace store_test
}  // namespace bucketmap
