#include "domain/assignment_columns.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bucketmap {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

using Rows = std::map<int64_t, int32_t>;

AssignmentColumns FromRows(const Rows& rows) {
  std::vector<int64_t> teams;
  std::vector<int32_t> targets;
  for (const auto& [team, target] : rows) {
    teams.push_back(team);
    targets.push_back(target);
  }
  return AssignmentColumns(teams, targets);
}

// Checks every read path of `cols` against `want`.
void ExpectRows(const AssignmentColumns& cols, const Rows& want) {
  ASSERT_EQ(cols.size(), want.size());
  std::vector<int64_t> teams(cols.team_ids().begin(), cols.team_ids().end());
  std::vector<int32_t> targets(cols.targets().begin(), cols.targets().end());
  std::vector<int64_t> want_teams;
  std::vector<int32_t> want_targets;
  for (const auto& [team, target] : want) {
    want_teams.push_back(team);
    want_targets.push_back(target);
  }
  ASSERT_EQ(teams, want_teams);
  ASSERT_EQ(targets, want_targets);
  std::vector<int64_t> runs;
  cols.team_ids().ForEachRun(
      [&runs](absl::Span<const int64_t> run) { runs.insert(runs.end(), run.begin(), run.end()); });
  ASSERT_EQ(runs, want_teams);
  for (size_t i = 0; i < want_teams.size(); i += 97) {
    ASSERT_EQ(cols.team_ids()[i], want_teams[i]);
    ASSERT_EQ(cols.targets()[i], want_targets[i]);
  }
  for (const auto& [team, target] : want) {
    const int32_t* found = cols.Find(team);
    ASSERT_NE(found, nullptr) << team;
    ASSERT_EQ(*found, target);
    if (want.count(team + 1) == 0) ASSERT_EQ(cols.Find(team + 1), nullptr);
  }
}

TEST(AssignmentColumnsTest, EmptyColumns) {
  AssignmentColumns cols;
  EXPECT_EQ(cols.size(), 0u);
  EXPECT_THAT(cols.team_ids(), IsEmpty());
  EXPECT_EQ(cols.Find(1), nullptr);
  AssignmentColumns next = cols.Apply({{5, 1}, {7, -1}}, {3});
  EXPECT_THAT(next.team_ids(), ElementsAre(5, 7));
  EXPECT_THAT(next.targets(), ElementsAre(1, -1));
  EXPECT_THAT(next.Apply({}, {5, 7}).team_ids(), IsEmpty());
}

TEST(AssignmentColumnsTest, ApplySetsReplacesAndUnsets) {
  AssignmentColumns cols = FromRows({{2, 1}, {4, 2}, {6, -1}});
  AssignmentColumns next = cols.Apply({{1, 3}, {4, -2}, {9, 5}}, {2, 3});
  EXPECT_THAT(next.team_ids(), ElementsAre(1, 4, 6, 9));
  EXPECT_THAT(next.targets(), ElementsAre(3, -2, -1, 5));
  // The original is unchanged.
  EXPECT_THAT(cols.team_ids(), ElementsAre(2, 4, 6));
  EXPECT_THAT(cols.targets(), ElementsAre(1, 2, -1));
}

TEST(AssignmentColumnsTest, OneRowWriteSharesEveryOtherChunk) {
  Rows rows;
  for (int64_t t = 1; t <= 100'000; ++t) rows[t * 2] = static_cast<int32_t>(t % 7 + 1);
  const AssignmentColumns cols = FromRows(rows);
  ASSERT_GT(cols.chunk_count(), 40u);
  const AssignmentColumns next = cols.Apply({{100'001, 9}}, {});
  rows[100'001] = 9;
  ExpectRows(next, rows);
  // Rows far from the change live at the same address in both: their
  // chunks are shared, not copied.
  EXPECT_EQ(next.Find(2), cols.Find(2));
  EXPECT_EQ(next.Find(200'000), cols.Find(200'000));
  EXPECT_NE(next.Find(100'000), cols.Find(100'000));
}

TEST(AssignmentColumnsTest, GrowingAndShrinkingChunksStayBounded) {
  Rows rows;
  AssignmentColumns cols;
  // Insert 20k rows into one key range: the chunk splits as it grows.
  for (int64_t round = 0; round < 20; ++round) {
    std::vector<std::pair<int64_t, int32_t>> set;
    for (int64_t t = 0; t < 1000; ++t) set.emplace_back(t * 20 + round + 1, 1);
    std::sort(set.begin(), set.end());
    for (const auto& [team, target] : set) rows[team] = target;
    cols = cols.Apply(set, {});
  }
  ExpectRows(cols, rows);
  EXPECT_LE(cols.chunk_count(), rows.size() / (AssignmentColumns::kChunkSize / 2) + 1);
  // Remove most rows: slivers merge into their predecessors.
  for (int64_t round = 0; round < 19; ++round) {
    std::vector<int64_t> unset;
    for (int64_t t = 0; t < 1000; ++t) unset.push_back(t * 20 + round + 1);
    for (int64_t team : unset) rows.erase(team);
    cols = cols.Apply({}, unset);
  }
  ExpectRows(cols, rows);
  EXPECT_LE(cols.chunk_count(), 2u);
}

TEST(AssignmentColumnsTest, RandomChangesMatchAMap) {
  std::mt19937_64 rng(15);
  Rows rows;
  for (int64_t t = 1; t <= 30'000; ++t) {
    if (rng() % 3 != 0) rows[t] = static_cast<int32_t>(rng() % 9) - 4;
  }
  AssignmentColumns cols = FromRows(rows);
  for (int step = 0; step < 300; ++step) {
    std::map<int64_t, int32_t> set;
    std::vector<int64_t> unset;
    const int n = static_cast<int>(rng() % (step % 10 == 0 ? 3000 : 5)) + 1;
    for (int i = 0; i < n; ++i) {
      const int64_t team = static_cast<int64_t>(rng() % 35'000) + 1;
      if (rng() % 2 == 0) {
        set[team] = static_cast<int32_t>(rng() % 9) + 1;
      } else {
        unset.push_back(team);
      }
    }
    // A team is either set or unset (Snapshot::Apply refuses both).
    unset.erase(std::remove_if(unset.begin(), unset.end(),
                               [&set](int64_t team) { return set.count(team) > 0; }),
                unset.end());
    std::sort(unset.begin(), unset.end());
    unset.erase(std::unique(unset.begin(), unset.end()), unset.end());
    std::vector<std::pair<int64_t, int32_t>> set_rows(set.begin(), set.end());
    for (const auto& [team, target] : set) rows[team] = target;
    for (int64_t team : unset) rows.erase(team);
    cols = cols.Apply(set_rows, unset);
    if (step % 50 == 0) ExpectRows(cols, rows);
  }
  ExpectRows(cols, rows);
  const AssignmentColumns mapped = cols.MapTargets([](int32_t t) { return t * 2; });
  for (auto& [team, target] : rows) target *= 2;
  ExpectRows(mapped, rows);
}

TEST(AssignmentColumnsTest, ScanAfterStartsPastTheTeamAndStops) {
  Rows rows;
  for (int64_t t = 1; t <= 10'000; ++t) rows[t * 3] = 1;
  const AssignmentColumns cols = FromRows(rows);
  std::vector<int64_t> seen;
  cols.ScanAfter(6'000, [&seen](int64_t team, int32_t) {
    seen.push_back(team);
    return seen.size() < 3;
  });
  EXPECT_THAT(seen, ElementsAre(6'003, 6'006, 6'009));
  seen.clear();
  cols.ScanAfter(29'999, [&seen](int64_t team, int32_t) {
    seen.push_back(team);
    return true;
  });
  EXPECT_THAT(seen, ElementsAre(30'000));
}

TEST(AssignmentColumnsTest, ColumnsCompareByContent) {
  const AssignmentColumns a = FromRows({{1, 1}, {2, 2}});
  const AssignmentColumns b = AssignmentColumns().Apply({{1, 1}, {2, 2}}, {});
  EXPECT_EQ(a.team_ids(), b.team_ids());
  EXPECT_EQ(a.targets(), b.targets());
  EXPECT_NE(a.targets(), a.Apply({{2, 3}}, {}).targets());
}

}  // namespace
}  // namespace bucketmap
