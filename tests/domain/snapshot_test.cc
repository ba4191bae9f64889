#include "domain/snapshot.h"

#include <map>
#include <random>
#include <string>
#include <vector>

#include "domain_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bucketmap {
namespace {

using ::bucketmap::testing_util::IsOk;
using ::bucketmap::testing_util::MakeBucket;
using ::bucketmap::testing_util::MustBuild;
using ::bucketmap::testing_util::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

MappingState BaseState() {
  MappingState s;
  s.version = 10;
  s.cluster_id = "c1";
  s.next_bucket_id = 5;
  s.buckets = {MakeBucket(3, "paid"), MakeBucket(1), MakeBucket(2),
               MakeBucket(4, "free", BucketState::kDraining)};
  s.assignments = {{5, Target::Pin(3)},
                   {7, Target::Pool("paid")},
                   {9, Target::Pool("vip")},
                   {11, Target::Pin(4)}};
  return s;
}

TEST(SnapshotBuildTest, BuildsSortedBucketsPoolsAndColumns) {
  auto s = MustBuild(BaseState());
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->version(), 10);
  EXPECT_EQ(s->cluster_id(), "c1");
  EXPECT_EQ(s->next_bucket_id(), 5);
  ASSERT_EQ(s->buckets().size(), 4u);
  EXPECT_EQ(s->buckets()[0].id, 1);
  EXPECT_EQ(s->buckets()[3].id, 4);
  EXPECT_THAT(s->pools(), ElementsAre("default", "free", "paid", "vip"));
  EXPECT_THAT(s->team_ids(), ElementsAre(5, 7, 9, 11));
  // Pins are bucket ids; pools are -(index + 1) into pools().
  EXPECT_THAT(s->targets(), ElementsAre(3, -3, -4, 4));
  EXPECT_EQ(s->assignment_count(), 4u);
  EXPECT_EQ(s->FindBucket(3)->name, "b3");
  EXPECT_EQ(s->FindBucket(99), nullptr);
  EXPECT_EQ(s->FindBucketByName("b2")->id, 2);
  EXPECT_EQ(s->FindBucketByName("nope"), nullptr);
}

TEST(SnapshotBuildTest, DefaultPoolAlwaysPresent) {
  auto s = MustBuild(MappingState{});
  EXPECT_THAT(s->pools(), ElementsAre("default"));
  EXPECT_TRUE(s->PoolTable("default").empty());
  Route r = s->RouteOf(42);
  EXPECT_FALSE(r.routable());
  EXPECT_EQ(r.source, RouteSource::kDefault);
  EXPECT_EQ(r.pool, "default");
}

TEST(SnapshotBuildTest, RepairsStaleNextBucketId) {
  MappingState st = BaseState();
  st.next_bucket_id = 2;
  EXPECT_EQ(MustBuild(st)->next_bucket_id(), 5);
}

TEST(SnapshotBuildTest, RejectsInconsistentState) {
  MappingState dup_id = BaseState();
  dup_id.buckets.push_back(MakeBucket(2));
  dup_id.buckets.back().name = "other";
  EXPECT_THAT(Snapshot::Build(dup_id),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duplicate bucket id 2")));

  MappingState dup_name = BaseState();
  dup_name.buckets.push_back(MakeBucket(8));
  dup_name.buckets.back().name = "b1";
  EXPECT_THAT(Snapshot::Build(dup_name), StatusIs(absl::StatusCode::kInvalidArgument,
                                                  HasSubstr("duplicate bucket name \"b1\"")));

  MappingState unsorted = BaseState();
  std::swap(unsorted.assignments[0], unsorted.assignments[1]);
  EXPECT_THAT(Snapshot::Build(unsorted),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ascending")));

  MappingState dup_team = BaseState();
  dup_team.assignments[1].first = 5;
  EXPECT_THAT(Snapshot::Build(dup_team),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("assignments[1].team_id")));

  MappingState missing = BaseState();
  missing.assignments[0].second = Target::Pin(77);
  EXPECT_THAT(Snapshot::Build(missing),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("missing bucket 77")));

  MappingState both = BaseState();
  both.assignments[0].second = Target{1, "paid"};
  EXPECT_THAT(Snapshot::Build(both),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exactly one")));

  MappingState zero_team = BaseState();
  zero_team.assignments.insert(zero_team.assignments.begin(), {0, Target::Pin(1)});
  EXPECT_THAT(Snapshot::Build(zero_team),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("team_id: must be >= 1")));

  MappingState bad_id = BaseState();
  bad_id.buckets[0].id = 0;
  EXPECT_THAT(Snapshot::Build(bad_id),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("id")));
}

TEST(SnapshotRouteTest, SourcesAndFallbacks) {
  auto s = MustBuild(BaseState());
  Route pin = s->RouteOf(5);
  EXPECT_EQ(pin.bucket_id, 3);
  EXPECT_EQ(pin.source, RouteSource::kPin);
  EXPECT_EQ(RouteSourceString(pin), "pin");

  // Pins to a DRAINING bucket still route there.
  EXPECT_EQ(s->RouteOf(11).bucket_id, 4);

  Route pool = s->RouteOf(7);
  EXPECT_EQ(pool.bucket_id, 3);  // the only placeable bucket of "paid"
  EXPECT_EQ(pool.source, RouteSource::kPool);
  EXPECT_EQ(RouteSourceString(pool), "pool:paid");

  Route vip = s->RouteOf(9);  // a pool without buckets
  EXPECT_FALSE(vip.routable());
  EXPECT_EQ(vip.source, RouteSource::kPool);
  EXPECT_EQ(vip.pool, "vip");

  for (int64_t team : {1, 2, 3, 100, 123456}) {
    Route d = s->RouteOf(team);
    EXPECT_EQ(d.source, RouteSource::kDefault);
    EXPECT_EQ(RouteSourceString(d), "default");
    EXPECT_EQ(d.pool, "default");
    EXPECT_EQ(d.bucket_id, s->PoolTable("default").BucketForTeam(team));
    EXPECT_TRUE(d.bucket_id == 1 || d.bucket_id == 2);
  }
  // DRAINING buckets are out of placement: "free" has no placeable bucket.
  EXPECT_TRUE(s->PoolTable("free").empty());
  EXPECT_TRUE(s->PoolTable("unknown").empty());
  EXPECT_EQ(s->PoolTable("default").members().size(), 2u);
}

TEST(SnapshotTest, FindAssignmentAndCounts) {
  auto s = MustBuild(BaseState());
  EXPECT_EQ(s->FindAssignment(5), Target::Pin(3));
  EXPECT_EQ(s->FindAssignment(9), Target::Pool("vip"));
  EXPECT_EQ(s->FindAssignment(6), std::nullopt);
  EXPECT_THAT(s->PinnedCounts(), ElementsAre(Pair(3, 1), Pair(4, 1)));
  EXPECT_EQ(s->PinnedCount(3), 1);
  EXPECT_EQ(s->PinnedCount(1), 0);
  EXPECT_EQ(s->PoolAssignedCount("paid"), 1);
  EXPECT_EQ(s->PoolAssignedCount("default"), 0);
}

TEST(SnapshotTest, ToStateRoundTrips) {
  MappingState st = BaseState();
  auto s = MustBuild(st);
  MappingState back = s->ToState();
  EXPECT_EQ(back.version, st.version);
  EXPECT_EQ(back.cluster_id, st.cluster_id);
  EXPECT_EQ(back.next_bucket_id, st.next_bucket_id);
  EXPECT_EQ(back.assignments, st.assignments);
  ASSERT_EQ(back.buckets.size(), 4u);
  EXPECT_EQ(back.buckets[2], *s->FindBucket(3));
}

TEST(SnapshotApplyTest, MergesBucketsAndAssignments) {
  auto s = MustBuild(BaseState());
  Change c;
  Bucket b2 = MakeBucket(2);
  b2.weight = 300;
  c.buckets = {MakeBucket(5, "paid"), b2};
  c.next_bucket_id = 6;
  c.set = {{1, Target::Pin(5)}, {7, Target::Pin(1)}, {20, Target::Pool("paid")}};
  c.unset = {5, 6};  // 6 has no override: ignored
  auto after = s->Apply(c);
  ASSERT_THAT(after, IsOk());
  const Snapshot& a = **after;
  EXPECT_EQ(a.version(), 11);
  EXPECT_EQ(a.next_bucket_id(), 6);
  ASSERT_EQ(a.buckets().size(), 5u);
  EXPECT_EQ(a.buckets()[4].id, 5);
  EXPECT_EQ(a.FindBucket(2)->weight, 300);
  EXPECT_THAT(a.team_ids(), ElementsAre(1, 7, 9, 11, 20));
  EXPECT_EQ(a.FindAssignment(1), Target::Pin(5));
  EXPECT_EQ(a.FindAssignment(7), Target::Pin(1));
  EXPECT_EQ(a.FindAssignment(20), Target::Pool("paid"));
  EXPECT_EQ(a.FindAssignment(5), std::nullopt);
  EXPECT_THAT(a.PinnedCounts(), ElementsAre(Pair(1, 1), Pair(4, 1), Pair(5, 1)));
  EXPECT_EQ(a.PoolAssignedCount("paid"), 1);
  EXPECT_EQ(a.PoolAssignedCount("vip"), 1);
  // The predecessor is untouched.
  EXPECT_EQ(s->version(), 10);
  EXPECT_EQ(s->FindAssignment(5), Target::Pin(3));
}

TEST(SnapshotApplyTest, ReencodesTargetsWhenPoolTableChanges) {
  auto s = MustBuild(BaseState());  // pools: default free paid vip
  Change add;
  add.set = {{100, Target::Pool("alpha")}};  // sorts before every pool but default
  auto a = *s->Apply(add);
  EXPECT_THAT(a->pools(), ElementsAre("alpha", "default", "free", "paid", "vip"));
  EXPECT_THAT(a->targets(), ElementsAre(3, -4, -5, 4, -1));
  EXPECT_EQ(a->FindAssignment(7), Target::Pool("paid"));
  EXPECT_EQ(a->FindAssignment(9), Target::Pool("vip"));
  EXPECT_EQ(a->RouteOf(9).pool, "vip");

  // Removing the last assignment of a bucketless pool drops the pool.
  Change drop;
  drop.unset = {9, 100};
  auto b = *a->Apply(drop);
  EXPECT_THAT(b->pools(), ElementsAre("default", "free", "paid"));
  EXPECT_THAT(b->targets(), ElementsAre(3, -3, 4));
  EXPECT_EQ(b->FindAssignment(7), Target::Pool("paid"));
  EXPECT_EQ(b->PoolAssignedCount("vip"), 0);

  // A bucket moving to a new pool adds it.
  Change move;
  Bucket moved = *b->FindBucket(2);
  moved.pool = "enterprise";
  move.buckets = {moved};
  auto c = *b->Apply(move);
  EXPECT_THAT(c->pools(), ElementsAre("default", "enterprise", "free", "paid"));
  EXPECT_EQ(c->FindAssignment(7), Target::Pool("paid"));
  EXPECT_EQ(c->PoolTable("enterprise").members().size(), 1u);
  EXPECT_EQ(c->PoolTable("default").members().size(), 1u);
}

TEST(SnapshotApplyTest, SharesUntouchedAssignmentChunks) {
  MappingState state = BaseState();
  state.assignments.clear();
  for (int64_t team = 1; team <= 50'000; ++team) {
    state.assignments.emplace_back(team, team % 2 == 0 ? Target::Pin(1) : Target::Pool("paid"));
  }
  auto s = MustBuild(std::move(state));
  Change change;
  change.set = {{25'000, Target::Pin(2)}, {60'000, Target::Pool("paid")}};
  change.unset = {25'001};
  auto a = *s->Apply(change);
  EXPECT_EQ(a->assignment_count(), 50'000u);
  EXPECT_EQ(a->RouteOf(25'000).bucket_id, 2);
  EXPECT_FALSE(a->FindAssignment(25'001).has_value());
  EXPECT_EQ(a->FindAssignment(60'000)->pool, "paid");
  // A row far from the change is the same object in both snapshots: its
  // chunk is shared, not copied.
  EXPECT_EQ(a->assignments().Find(10'000), s->assignments().Find(10'000));
  EXPECT_NE(a->assignments().Find(25'002), s->assignments().Find(25'002));
  EXPECT_EQ(*a->assignments().Find(25'002), *s->assignments().Find(25'002));
}

TEST(SnapshotApplyTest, SharesUntouchedPoolTables) {
  auto s = MustBuild(BaseState());
  Change assign;
  assign.set = {{1000, Target::Pin(1)}};
  auto a = *s->Apply(assign);
  EXPECT_EQ(&a->PoolTable("default"), &s->PoolTable("default"));
  EXPECT_EQ(&a->PoolTable("paid"), &s->PoolTable("paid"));

  // Labels do not affect placement: the table is shared.
  Change relabel;
  Bucket b1 = *s->FindBucket(1);
  b1.labels["team"] = "x";
  relabel.buckets = {b1};
  auto r = *s->Apply(relabel);
  EXPECT_EQ(&r->PoolTable("default"), &s->PoolTable("default"));

  // A weight change rebuilds only its pool.
  Change reweigh;
  b1.weight = 500;
  reweigh.buckets = {b1};
  auto w = *s->Apply(reweigh);
  EXPECT_NE(&w->PoolTable("default"), &s->PoolTable("default"));
  EXPECT_EQ(&w->PoolTable("paid"), &s->PoolTable("paid"));
  EXPECT_GT(PlacementTable::ShareMoved(s->PoolTable("default"), w->PoolTable("default")), 0.0);

  // Pausing keeps the bucket in placement; draining takes it out.
  Change pause;
  Bucket b2 = *s->FindBucket(2);
  b2.state = BucketState::kPaused;
  pause.buckets = {b2};
  auto p = *s->Apply(pause);
  EXPECT_EQ(&p->PoolTable("default"), &s->PoolTable("default"));
  b2.state = BucketState::kDraining;
  pause.buckets = {b2};
  auto d = *s->Apply(pause);
  EXPECT_THAT(d->PoolTable("default").members().size(), 1u);
}

TEST(SnapshotApplyTest, RejectsInconsistentChange) {
  auto s = MustBuild(BaseState());
  Change unsorted;
  unsorted.set = {{9, Target::Pin(1)}, {2, Target::Pin(1)}};
  EXPECT_THAT(s->Apply(unsorted),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("change.set[1].team_id")));
  Change overlap;
  overlap.set = {{9, Target::Pin(1)}};
  overlap.unset = {9};
  EXPECT_THAT(s->Apply(overlap),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("both set and unset")));
  Change missing;
  missing.set = {{9, Target::Pin(42)}};
  EXPECT_THAT(s->Apply(missing),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("missing bucket 42")));
  Change dup_name;
  Bucket b = MakeBucket(6);
  b.name = "b1";
  dup_name.buckets = {b};
  EXPECT_THAT(s->Apply(dup_name), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("duplicate bucket name \"b1\"")));
  Change unsorted_unset;
  unsorted_unset.unset = {9, 5};
  EXPECT_THAT(s->Apply(unsorted_unset),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("change.unset[1]")));
}

// Applies random changes to both a snapshot and a std::map model.
TEST(SnapshotApplyTest, RandomChangesMatchModel) {
  std::mt19937_64 rng(7);
  MappingState st;
  for (int id = 1; id <= 6; ++id) {
    st.buckets.push_back(MakeBucket(id, id <= 3 ? "default" : (id <= 5 ? "paid" : "free")));
  }
  const std::vector<std::string> pools = {"default", "paid", "free", "x", "y", "zz"};
  std::map<int64_t, Target> model;
  auto random_target = [&]() {
    return rng() % 2 ? Target::Pin(1 + static_cast<int32_t>(rng() % 6))
                     : Target::Pool(pools[rng() % pools.size()]);
  };
  for (int64_t t = 1; t <= 3000; ++t) {
    if (rng() % 3 == 0) model[t] = random_target();
  }
  st.assignments.assign(model.begin(), model.end());
  auto s = MustBuild(st);
  for (int round = 0; round < 30; ++round) {
    Change c;
    std::map<int64_t, std::optional<Target>> ops;
    for (int k = 0; k < 200; ++k) {
      const int64_t t = 1 + static_cast<int64_t>(rng() % 3500);
      ops[t] = rng() % 3 == 0 ? std::nullopt : std::optional<Target>(random_target());
    }
    for (const auto& [t, op] : ops) {
      if (op) {
        c.set.emplace_back(t, *op);
        model[t] = *op;
      } else {
        c.unset.push_back(t);
        model.erase(t);
      }
    }
    auto next = s->Apply(c);
    ASSERT_THAT(next, IsOk());
    s = *next;
    MappingState got = s->ToState();
    std::vector<std::pair<int64_t, Target>> want(model.begin(), model.end());
    ASSERT_EQ(got.assignments, want) << "round " << round;
    std::map<int32_t, int64_t> pins;
    std::map<std::string, int64_t> pool_counts;
    for (const auto& [t, target] : model) {
      if (target.is_pin()) {
        ++pins[target.bucket_id];
      } else {
        ++pool_counts[target.pool];
      }
    }
    ASSERT_EQ(s->PinnedCounts(), pins);
    for (const std::string& p : pools) ASSERT_EQ(s->PoolAssignedCount(p), pool_counts[p]) << p;
    // Every target decodes to a pool that is in the table.
    for (int32_t enc : s->targets()) {
      if (enc < 0) {
        ASSERT_LT(static_cast<size_t>(-enc - 1), s->pools().size());
      }
    }
  }
  EXPECT_EQ(s->version(), 30);
}

}  // namespace
}  // namespace bucketmap
