// RuleExpiry (server/rules/rule_expiry.h) over a FakeStore and a FakeClock:
// every rule due is removed in one version, written as the leader (fenced
// by its epoch), and nothing is written while nothing is due. No
// PostgreSQL, no sleeping beyond the thread test's few milliseconds.
#include "server/rules/rule_expiry.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/state/mapping_manager.h"
#include "tests/support/fake_clock.h"
#include "tests/support/fake_store.h"
#include "tests/unit/unit_test_util.h"

namespace bucketmap {
namespace unit_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int64_t kEpoch = 4;

TeamRule Rule(int64_t team, RuleKind kind, absl::Time expire) {
  TeamRule r;
  r.team_id = team;
  r.kind = kind;
  r.expire_time = expire;
  r.reason = "unit test";
  r.actor = "alice";
  return r;
}

std::vector<int64_t> RuleTeams(const Snapshot& s) {
  std::vector<int64_t> teams;
  for (const TeamRule& r : s.team_rules()) teams.push_back(r.team_id);
  return teams;
}

class RuleExpiryTest : public ::testing::Test {
 protected:
  // Teams 1 and 2 expire at +10 s, team 3 at +60 s, team 4 never.
  static std::shared_ptr<const Snapshot> Initial(absl::Time t0) {
    MappingState state;
    state.version = 5;
    state.cluster_id = "unit-cluster";
    state.buckets = {RoleBucket(1, "a", kDefaultPool, {{"ingestion", "in_a"}})};
    state.rules = {Rule(1, RuleKind::kDrop, t0 + absl::Seconds(10)),
                   Rule(2, RuleKind::kSkipPersonProcessing, t0 + absl::Seconds(10)),
                   Rule(3, RuleKind::kDrop, t0 + absl::Seconds(60)),
                   Rule(4, RuleKind::kDrop, absl::InfiniteFuture())};
    auto built = Snapshot::Build(std::move(state));
    EXPECT_TRUE(built.ok()) << built.status();
    return *built;
  }

  void SetUp() override {
    store_.SetLeaderEpoch(kEpoch);
    ASSERT_THAT(manager_.Init(), IsOk());
  }

  v1::ChangeRecord LastRecord() {
    HistoryQuery q;
    q.include_delta = true;
    absl::StatusOr<HistoryPage> page = store_.GetHistory(q);
    EXPECT_THAT(page, IsOk());
    return page.ok() && !page->records.empty() ? page->records.back() : v1::ChangeRecord();
  }

  FakeClock clock_;
  FakeStore store_{Initial(clock_.Now()), &clock_};
  MappingManager manager_{&store_};
  RuleExpiryOptions options_{absl::Milliseconds(5), absl::Seconds(10)};
  RuleExpiry expiry_{&manager_, nullptr, options_, &clock_};
};

TEST_F(RuleExpiryTest, NothingDueWritesNothing) {
  clock_.Advance(absl::Seconds(9));
  EXPECT_TRUE(expiry_.TEST_RunOnce(kEpoch));
  EXPECT_EQ(manager_.Current()->version(), 5);
  EXPECT_EQ(store_.calls(FakeStore::kWrite), 0);
}

TEST_F(RuleExpiryTest, EveryDueRuleIsRemovedInOneVersion) {
  clock_.Advance(absl::Seconds(10));
  EXPECT_TRUE(expiry_.TEST_RunOnce(kEpoch));
  ASSERT_EQ(manager_.Current()->version(), 6);
  EXPECT_THAT(RuleTeams(manager_.Current()->snapshot()), ElementsAre(3, 4));
  const v1::ChangeRecord record = LastRecord();
  EXPECT_EQ(record.version(), 6);
  EXPECT_EQ(record.kind(), "ExpireTeamRules");
  EXPECT_EQ(record.actor(), "rule-expiry");
  EXPECT_THAT(record.reason(), HasSubstr("team 1 DROP, team 2 SKIP_PERSON_PROCESSING"));
  ASSERT_EQ(record.delta().cleared_team_rules_size(), 2);
  EXPECT_EQ(record.delta().cleared_team_rules(1).team_id(), 2);

  // Nothing more until team 3's expiry.
  EXPECT_TRUE(expiry_.TEST_RunOnce(kEpoch));
  EXPECT_EQ(manager_.Current()->version(), 6);
  clock_.Advance(absl::Seconds(50));
  EXPECT_TRUE(expiry_.TEST_RunOnce(kEpoch));
  EXPECT_EQ(manager_.Current()->version(), 7);
  EXPECT_THAT(RuleTeams(manager_.Current()->snapshot()), ElementsAre(4));
}

TEST_F(RuleExpiryTest, AStaleLeaderStopsAndWritesNothing) {
  clock_.Advance(absl::Minutes(2));
  EXPECT_FALSE(expiry_.TEST_RunOnce(kEpoch - 1));
  EXPECT_EQ(manager_.Current()->version(), 5);
  EXPECT_THAT(RuleTeams(manager_.Current()->snapshot()), ElementsAre(1, 2, 3, 4));
}

TEST_F(RuleExpiryTest, AFailedWriteIsRetriedAtTheNextLook) {
  clock_.Advance(absl::Seconds(10));
  store_.FailNext(FakeStore::kWrite, absl::UnavailableError("PostgreSQL is away"));
  EXPECT_TRUE(expiry_.TEST_RunOnce(kEpoch));
  EXPECT_EQ(manager_.Current()->version(), 5);
  EXPECT_TRUE(expiry_.TEST_RunOnce(kEpoch));
  EXPECT_EQ(manager_.Current()->version(), 6);
}

TEST_F(RuleExpiryTest, TheThreadRemovesRulesWhenTheyComeDue) {
  expiry_.Start(kEpoch);
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(manager_.Current()->version(), 5);
  clock_.Advance(absl::Seconds(10));
  EXPECT_TRUE(WaitUntil([&] { return manager_.Current()->version() == 6; }));
  expiry_.Stop();
  EXPECT_THAT(RuleTeams(manager_.Current()->snapshot()), ElementsAre(3, 4));
}

}  // namespace
}  // namespace unit_test
}  // namespace bucketmap
