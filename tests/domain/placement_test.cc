#include "domain/placement.h"

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bucketmap {
namespace {

constexpr int64_t kTeams = 100000;

std::vector<PlacementMember> Equal(int32_t first, int32_t last) {
  std::vector<PlacementMember> m;
  for (int32_t id = first; id <= last; ++id) m.push_back({id, 100});
  return m;
}

TEST(Mix64Test, MatchesSplitMix64) {
  // SplitMix64 seeded with 0 yields 0xe220a8397b1dcdaf first: the finalizer
  // applied to 0 + golden gamma.
  EXPECT_EQ(Mix64(0), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(Mix64(1), 0x910a2dec89025cc1ULL);
  EXPECT_EQ(TeamSlot(1), 0x910aU);
  EXPECT_EQ(TeamSlot(1), 37130U);
}

TEST(PlacementTest, EmptyPoolIsUnroutable) {
  PlacementTable t = PlacementTable::Build({});
  EXPECT_TRUE(t.empty());
  EXPECT_EQ(t.BucketForTeam(1), 0);
  EXPECT_EQ(t.BucketForSlot(65535), 0);
  EXPECT_TRUE(t.members().empty());
  EXPECT_EQ(PlacementTable::ShareMoved(t, t), 0.0);
  PlacementTable one = PlacementTable::Build({{3, 100}});
  EXPECT_EQ(PlacementTable::ShareMoved(t, one), 1.0);
  EXPECT_EQ(PlacementTable::ShareMoved(one, t), 1.0);
}

TEST(PlacementTest, SingleMemberTakesEverySlot) {
  PlacementTable t = PlacementTable::Build({{7, 1}});
  for (uint32_t s = 0; s < static_cast<uint32_t>(kSlotCount); ++s) {
    ASSERT_EQ(t.BucketForSlot(s), 7);
  }
}

TEST(PlacementTest, DeterministicAndOrderIndependent) {
  PlacementTable a = PlacementTable::Build({{1, 100}, {2, 50}, {5, 300}, {9, 1}});
  PlacementTable b = PlacementTable::Build({{9, 1}, {5, 300}, {1, 100}, {2, 50}});
  EXPECT_EQ(PlacementTable::ShareMoved(a, b), 0.0);
  ASSERT_EQ(b.members().size(), 4u);
  EXPECT_EQ(b.members()[0].bucket_id, 1);
  EXPECT_EQ(b.members()[3].bucket_id, 9);
  for (int64_t team = 1; team <= 1000; ++team) {
    ASSERT_EQ(a.BucketForTeam(team), b.BucketForTeam(team));
  }
}

TEST(PlacementTest, AddingNinthBucketMovesOnlyIntoIt) {
  PlacementTable eight = PlacementTable::Build(Equal(1, 8));
  PlacementTable nine = PlacementTable::Build(Equal(1, 9));
  int64_t moved = 0;
  for (int64_t team = 1; team <= kTeams; ++team) {
    const int32_t before = eight.BucketForTeam(team);
    const int32_t after = nine.BucketForTeam(team);
    if (before != after) {
      ++moved;
      ASSERT_EQ(after, 9) << "team " << team << " moved from " << before << " to " << after;
    }
  }
  EXPECT_LE(moved, static_cast<int64_t>((1.0 / 9 + 0.02) * kTeams));
  EXPECT_GT(moved, 0);
  EXPECT_NEAR(PlacementTable::ShareMoved(eight, nine), 1.0 / 9, 0.02);
}

TEST(PlacementTest, RemovingOneOfNineMovesOnlyItsTeams) {
  PlacementTable nine = PlacementTable::Build(Equal(1, 9));
  std::vector<PlacementMember> without = Equal(1, 9);
  without.erase(without.begin() + 4);  // bucket 5
  PlacementTable eight = PlacementTable::Build(without);
  int64_t moved = 0, owned = 0;
  for (int64_t team = 1; team <= kTeams; ++team) {
    const int32_t before = nine.BucketForTeam(team);
    const int32_t after = eight.BucketForTeam(team);
    if (before == 5) {
      ++owned;
      ASSERT_NE(after, 5);
    }
    if (before != after) {
      ++moved;
      ASSERT_EQ(before, 5) << "team " << team << " moved from " << before << " to " << after;
    }
  }
  EXPECT_EQ(moved, owned);
}

TEST(PlacementTest, WeightsTwoToOne) {
  PlacementTable t = PlacementTable::Build({{1, 200}, {2, 100}});
  int64_t heavy = 0, light = 0;
  for (int64_t team = 1; team <= kTeams; ++team) {
    const int32_t b = t.BucketForTeam(team);
    ASSERT_TRUE(b == 1 || b == 2);
    (b == 1 ? heavy : light)++;
  }
  const double ratio = static_cast<double>(heavy) / static_cast<double>(light);
  EXPECT_GE(ratio, 1.94);
  EXPECT_LE(ratio, 2.06);
}

TEST(PlacementTest, WeightedSlotSharesFollowWeights) {
  const std::vector<PlacementMember> members = {{1, 1}, {2, 10}, {3, 100}, {4, 1000}, {5, 500}};
  PlacementTable t = PlacementTable::Build(members);
  std::map<int32_t, int64_t> slots;
  for (uint32_t s = 0; s < static_cast<uint32_t>(kSlotCount); ++s) ++slots[t.BucketForSlot(s)];
  const double total = 1 + 10 + 100 + 1000 + 500;
  for (const PlacementMember& m : members) {
    const double expected = m.weight / total * kSlotCount;
    // Five standard deviations of a binomial share.
    EXPECT_NEAR(static_cast<double>(slots[m.bucket_id]), expected, 5 * std::sqrt(expected) + 1)
        << "bucket " << m.bucket_id;
  }
}

TEST(PlacementTest, ChangingOneWeightMovesSlotsOnlyToOrFromIt) {
  PlacementTable a = PlacementTable::Build(Equal(1, 6));
  std::vector<PlacementMember> m = Equal(1, 6);
  m[2].weight = 300;  // bucket 3
  PlacementTable b = PlacementTable::Build(m);
  for (uint32_t s = 0; s < static_cast<uint32_t>(kSlotCount); ++s) {
    if (a.BucketForSlot(s) != b.BucketForSlot(s)) {
      ASSERT_EQ(b.BucketForSlot(s), 3);
    }
  }
}

// ---------------------------------------------------------------------------
// The committed test vector.

struct VectorPool {
  std::string name;
  std::vector<PlacementMember> members;
  std::vector<std::array<int64_t, 3>> rows;  // team_id, slot, bucket_id
};

std::string VectorPath() { return std::string(BUCKETMAP_TESTDATA_DIR) + "/placement_vector.txt"; }

std::vector<int64_t> VectorTeams() {
  std::vector<int64_t> teams;
  for (int64_t t = 1; t <= 20; ++t) teams.push_back(t);
  for (int64_t t : {int64_t{100}, int64_t{1000}, int64_t{12345}, int64_t{65535}, int64_t{65536},
                    int64_t{99999}, int64_t{100000}, int64_t{2147483647}, int64_t{2147483648},
                    int64_t{4294967296}, (int64_t{1} << 40) + 7, int64_t{1} << 53, int64_t{1} << 62,
                    std::numeric_limits<int64_t>::max()}) {
    teams.push_back(t);
  }
  // Pseudo-random ids from a fixed 64-bit LCG (Knuth's MMIX constants).
  uint64_t x = 42;
  while (teams.size() < 50) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    teams.push_back(static_cast<int64_t>(x >> 1) % 1000000000 + 1);
  }
  return teams;
}

std::vector<VectorPool> VectorPools() {
  return {
      {"empty", {}, {}},
      {"single", {{1, 100}}, {}},
      {"three-equal", {{1, 100}, {2, 100}, {3, 100}}, {}},
      {"eight-equal", Equal(1, 8), {}},
      {"nine-equal", Equal(1, 9), {}},
      {"weighted", {{1, 100}, {2, 200}, {3, 50}, {4, 1000}, {5, 1}}, {}},
      {"sparse-ids", {{7, 100}, {42, 100}, {1000, 300}, {65537, 100}, {2147483647, 100}}, {}},
  };
}

std::string GenerateVector() {
  std::string out =
      "# bucketmap placement test vector, version 1.\n"
      "# Every client must reproduce this file bit for bit (see domain/placement.h).\n"
      "# Generated by tests/domain/placement_test.cc; regenerate with\n"
      "#   BUCKETMAP_REGENERATE_VECTOR=1 domain_tests --gtest_filter=PlacementVector*\n"
      "# only when placement changes on purpose, which moves teams in production.\n"
      "#\n"
      "# Format (whitespace-separated, '#' starts a comment line):\n"
      "#   mix64 <x> <Mix64(x)>                  both as 16 lowercase hex digits\n"
      "#   pool <name> [<bucket_id>:<weight>]...  starts a pool configuration; no\n"
      "#                                          member means an empty pool\n"
      "#   <team_id> <slot> <bucket_id>           decimal; slot = TeamSlot(team_id),\n"
      "#                                          bucket 0 = unroutable\n";
  for (uint64_t x : {uint64_t{0}, uint64_t{1}, uint64_t{2}, uint64_t{0x7fffffffffffffff},
                     uint64_t{0xffffffffffffffff}, kPlacementSalt}) {
    absl::StrAppendFormat(&out, "mix64 %016x %016x\n", x, Mix64(x));
  }
  const std::vector<int64_t> teams = VectorTeams();
  for (const VectorPool& pool : VectorPools()) {
    absl::StrAppend(&out, "pool ", pool.name);
    for (const PlacementMember& m : pool.members) {
      absl::StrAppend(&out, " ", m.bucket_id, ":", m.weight);
    }
    absl::StrAppend(&out, "\n");
    PlacementTable t = PlacementTable::Build(pool.members);
    for (int64_t team : teams) {
      absl::StrAppend(&out, team, " ", TeamSlot(team), " ", t.BucketForTeam(team), "\n");
    }
  }
  return out;
}

TEST(PlacementVectorTest, MatchesCommittedVector) {
  const char* regen = std::getenv("BUCKETMAP_REGENERATE_VECTOR");
  if (regen != nullptr && std::string(regen) == "1") {
    std::ofstream f(VectorPath(), std::ios::trunc);
    ASSERT_TRUE(f) << "cannot write " << VectorPath();
    f << GenerateVector();
    ASSERT_TRUE(f.good());
    GTEST_SKIP() << "regenerated " << VectorPath();
  }

  // Verify by parsing the file independently of the generator, so that the
  // file (not this code) is the contract.
  std::ifstream f(VectorPath());
  ASSERT_TRUE(f) << "cannot read " << VectorPath();
  std::string line;
  int line_no = 0, mixes = 0, pools = 0, rows = 0;
  std::optional<PlacementTable> table;
  while (std::getline(f, line)) {
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> tok = absl::StrSplit(line, ' ', absl::SkipEmpty());
    SCOPED_TRACE(absl::StrCat("line ", line_no, ": ", line));
    if (tok[0] == "mix64") {
      ASSERT_EQ(tok.size(), 3u);
      uint64_t x = 0, want = 0;
      ASSERT_TRUE(absl::SimpleHexAtoi(tok[1], &x));
      ASSERT_TRUE(absl::SimpleHexAtoi(tok[2], &want));
      EXPECT_EQ(Mix64(x), want);
      ++mixes;
    } else if (tok[0] == "pool") {
      ASSERT_GE(tok.size(), 2u);
      std::vector<PlacementMember> members;
      for (size_t i = 2; i < tok.size(); ++i) {
        std::vector<std::string> kv = absl::StrSplit(tok[i], ':');
        ASSERT_EQ(kv.size(), 2u);
        PlacementMember m{};
        ASSERT_TRUE(absl::SimpleAtoi(kv[0], &m.bucket_id));
        ASSERT_TRUE(absl::SimpleAtoi(kv[1], &m.weight));
        members.push_back(m);
      }
      table = PlacementTable::Build(members);
      ++pools;
    } else {
      ASSERT_TRUE(table.has_value()) << "team row before any pool";
      ASSERT_EQ(tok.size(), 3u);
      int64_t team = 0;
      uint32_t slot = 0;
      int32_t bucket = 0;
      ASSERT_TRUE(absl::SimpleAtoi(tok[0], &team));
      ASSERT_TRUE(absl::SimpleAtoi(tok[1], &slot));
      ASSERT_TRUE(absl::SimpleAtoi(tok[2], &bucket));
      EXPECT_EQ(TeamSlot(team), slot);
      EXPECT_EQ(table->BucketForTeam(team), bucket);
      ++rows;
    }
  }
  EXPECT_GE(mixes, 1);
  EXPECT_GE(pools, 5);
  EXPECT_GE(rows, 250);
  // The generator and the file agree too (catches an edited generator).
  std::ifstream again(VectorPath());
  std::stringstream whole;
  whole << again.rdbuf();
  EXPECT_EQ(whole.str(), GenerateVector());
}

}  // namespace
}  // namespace bucketmap
