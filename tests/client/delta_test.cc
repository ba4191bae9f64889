// Applying MappingDelta frames: the client's mapping must equal the domain
// snapshot the server derives with Snapshot::Apply(), version by version.
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "bucketmap/client.h"
#include "client/src/route_index.h"
#include "client_test_util.h"
#include "domain/placement.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bucketmap {
namespace {

using ::bucketmap::client_testing::DeltaProto;
using ::bucketmap::client_testing::IsOk;
using ::bucketmap::client_testing::MakeBucket;
using ::bucketmap::client_testing::MustBuild;
using ::bucketmap::client_testing::RandomState;
using ::bucketmap::client_testing::SnapshotProto;
using ::bucketmap::client_testing::StatusIs;
using ::bucketmap::client_testing::ToProto;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// Every override, a sample of other teams, and each touched team route as
// in `expected`.
void ExpectMatches(const Snapshot& expected, const Client& client,
                   const std::vector<int64_t>& extra_teams) {
  const auto view = client.Current();
  ASSERT_NE(view, nullptr);
  ASSERT_EQ(view->version(), expected.version());
  ASSERT_EQ(client.version(), expected.version());
  EXPECT_EQ(view->assignment_count(), expected.assignment_count());
  EXPECT_EQ(view->snapshot().team_ids(), expected.team_ids());
  auto check = [&](int64_t team) {
    const Route want = expected.RouteOf(team);
    const RouteResult got = client.Route(team);
    ASSERT_EQ(got.bucket_id(), want.bucket_id) << "team " << team << " v" << expected.version();
    ASSERT_EQ(got.source(), want.source) << team;
    ASSERT_EQ(got.version(), expected.version());
    if (want.source != RouteSource::kPin) ASSERT_EQ(view->PoolName(got.pool_index()), want.pool);
    if (want.routable()) {
      ASSERT_EQ(got.bucket_state(), expected.FindBucket(want.bucket_id)->state) << team;
    }
  };
  for (int64_t team : expected.team_ids()) check(team);
  for (int64_t team : extra_teams) check(team);
}

// A random change against `base`: mostly assignment churn, sometimes a
// bucket change (state, weight, a new bucket in a new pool) or an
// assignment to a pool nobody has used yet.
Change RandomChange(const Snapshot& base, std::mt19937_64& rng, int64_t max_team,
                    bool allow_buckets, int* next_pool) {
  Change change;
  std::uniform_int_distribution<int> roll(0, 99);
  std::uniform_int_distribution<int64_t> team(1, max_team);
  const auto& buckets = base.buckets();
  std::uniform_int_distribution<size_t> bucket_pick(0, buckets.size() - 1);
  if (allow_buckets && roll(rng) < 30) {
    Bucket b = buckets[bucket_pick(rng)];
    const int what = roll(rng) % 3;
    if (what == 0) {
      b.state = b.state == BucketState::kActive ? BucketState::kPaused : BucketState::kActive;
    } else if (what == 1) {
      b.weight = 1 + roll(rng) * 10;
    } else {
      Bucket nb = MakeBucket(base.next_bucket_id(), "pool-" + std::to_string((*next_pool)++));
      change.buckets.push_back(nb);
    }
    if (what != 2) change.buckets.push_back(b);
  }
  std::map<int64_t, Target> set;
  std::set<int64_t> unset;
  const int n = 1 + roll(rng) % 40;
  for (int i = 0; i < n; ++i) {
    const int64_t t = team(rng);
    const int k = roll(rng);
    if (k < 20 && base.FindAssignment(t).has_value()) {
      unset.insert(t);
      set.erase(t);
    } else if (k < 60) {
      set[t] = Target::Pin(buckets[bucket_pick(rng)].id);
      unset.erase(t);
    } else if (k < 95) {
      static const char* const kPools[] = {"default", "paid", "free", "enterprise", "ghost"};
      set[t] = Target::Pool(kPools[k % 5]);
      unset.erase(t);
    } else {
      // A pool no bucket has: the pool table grows, indexes shift.
      set[t] = Target::Pool("aaa-new-" + std::to_string((*next_pool)++));
      unset.erase(t);
    }
  }
  change.set.assign(set.begin(), set.end());
  change.unset.assign(unset.begin(), unset.end());
  return change;
}

TEST(ClientDeltaTest, RandomDeltaChainsMatchDomain) {
  std::mt19937_64 rng(77);
  for (const size_t teams : {50, 5000, 40000}) {
    SCOPED_TRACE(teams);
    const int64_t max_team = static_cast<int64_t>(teams) * 3;
    auto expected = MustBuild(RandomState(rng, 1000, teams, max_team));
    Client client({});
    ASSERT_THAT(client.ApplySnapshot(ToProto(*expected)), IsOk());
    int next_pool = 0;
    std::uniform_int_distribution<int64_t> any(1, max_team);
    for (int step = 0; step < 60; ++step) {
      // One to three deltas per push, as the server batches pending versions.
      const int k = 1 + step % 3;
      std::vector<v1::MappingDelta> push;
      std::vector<int64_t> touched;
      for (int j = 0; j < k; ++j) {
        Change change = RandomChange(*expected, rng, max_team, step % 4 == 0, &next_pool);
        for (const auto& [t, target] : change.set) touched.push_back(t);
        touched.insert(touched.end(), change.unset.begin(), change.unset.end());
        push.push_back(DeltaProto(change, expected->version(), /*reverse_pools=*/j % 2 == 0));
        auto next = expected->Apply(change);
        ASSERT_TRUE(next.ok()) << next.status();
        expected = *next;
      }
      ASSERT_THAT(client.ApplyDeltas(push), IsOk()) << "step " << step;
      for (int i = 0; i < 200; ++i) touched.push_back(any(rng));
      ExpectMatches(*expected, client, touched);
      if (HasFatalFailure()) return;
    }
  }
}

TEST(ClientDeltaTest, PoolIndexesAreDecodedByName) {
  MappingState state;
  state.version = 5;
  state.cluster_id = "c";
  state.buckets = {MakeBucket(1, "default"), MakeBucket(2, "free"), MakeBucket(3, "paid")};
  Client client({});
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(state)), IsOk());

  // The delta's own pool table: index 0 is "paid", 1 is "free".
  v1::MappingDelta d;
  d.set_from_version(5);
  d.set_to_version(6);
  d.add_pools("paid");
  d.add_pools("free");
  d.mutable_set()->add_team_ids(10);
  d.mutable_set()->add_targets(-1);  // paid
  d.mutable_set()->add_team_ids(11);
  d.mutable_set()->add_targets(-2);  // free
  d.mutable_set()->add_team_ids(12);
  d.mutable_set()->add_targets(1);  // pin
  ASSERT_THAT(client.ApplyDeltas({d}), IsOk());
  auto view = client.Current();
  EXPECT_EQ(client.Route(10).bucket_id(), 3);
  EXPECT_EQ(view->PoolName(client.Route(10).pool_index()), "paid");
  EXPECT_EQ(client.Route(11).bucket_id(), 2);
  EXPECT_EQ(view->PoolName(client.Route(11).pool_index()), "free");
  EXPECT_EQ(client.Route(12).source(), RouteSource::kPin);
}

TEST(ClientDeltaTest, BucketUpdatesMoveRoutes) {
  MappingState state;
  state.version = 1;
  state.cluster_id = "c";
  state.buckets = {MakeBucket(1, "paid"), MakeBucket(2)};
  state.assignments = {{7, Target::Pool("paid")}, {8, Target::Pin(2)}};
  Client client({});
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(state)), IsOk());
  EXPECT_EQ(client.Route(7).bucket_id(), 1);

  // Pause bucket 2: routes stay, states change for pins and default teams.
  Bucket paused = MakeBucket(2, "default", BucketState::kPaused);
  Change pause;
  pause.buckets = {paused};
  ASSERT_THAT(client.ApplyDeltas({DeltaProto(pause, 1)}), IsOk());
  EXPECT_TRUE(client.Route(8).paused());
  EXPECT_TRUE(client.Route(12345).paused());
  EXPECT_EQ(client.GetBucketState(2), BucketState::kPaused);

  // Drain the only "paid" bucket: the pool-assigned team becomes unroutable.
  Change drain;
  drain.buckets = {MakeBucket(1, "paid", BucketState::kDraining)};
  ASSERT_THAT(client.ApplyDeltas({DeltaProto(drain, 2)}), IsOk());
  EXPECT_EQ(client.Route(7).status(), RouteStatus::kNoPlaceableBucket);
  EXPECT_EQ(client.version(), 3);

  // A new paid bucket makes it routable again.
  Change add;
  add.buckets = {MakeBucket(3, "paid")};
  ASSERT_THAT(client.ApplyDeltas({DeltaProto(add, 3)}), IsOk());
  EXPECT_EQ(client.Route(7).bucket_id(), 3);
}

TEST(ClientDeltaTest, GapIsRejectedForResync) {
  MappingState state;
  state.version = 10;
  state.cluster_id = "c";
  state.buckets = {MakeBucket(1)};
  Client client({});
  Change c;
  c.set = {{5, Target::Pin(1)}};
  EXPECT_THAT(client.ApplyDeltas({DeltaProto(c, 10)}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("snapshot")));

  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(state)), IsOk());
  EXPECT_THAT(
      client.ApplyDeltas({DeltaProto(c, 11)}),
      StatusIs(absl::StatusCode::kFailedPrecondition, StartsWith("deltas[0].from_version: 11")));
  EXPECT_THAT(client.ApplyDeltas({DeltaProto(c, 9)}),
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
  EXPECT_EQ(client.version(), 10);
  EXPECT_THAT(client.ApplyDeltas(std::vector<v1::MappingDelta>{}), IsOk());
  EXPECT_THAT(client.ApplyDeltas({DeltaProto(c, 10)}), IsOk());
  EXPECT_EQ(client.version(), 11);
  EXPECT_EQ(client.Route(5).source(), RouteSource::kPin);
}

TEST(ClientDeltaTest, PushIsAllOrNothing) {
  MappingState state;
  state.version = 10;
  state.cluster_id = "c";
  state.buckets = {MakeBucket(1), MakeBucket(2)};
  Client client({});
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(state)), IsOk());
  Change a;
  a.set = {{5, Target::Pin(2)}};
  Change b;
  b.set = {{6, Target::Pin(2)}};

  // Not contiguous inside the push.
  EXPECT_THAT(client.ApplyDeltas({DeltaProto(a, 10), DeltaProto(b, 12)}),
              StatusIs(absl::StatusCode::kInvalidArgument, StartsWith("deltas[1].from_version")));
  // Spanning two versions.
  v1::MappingDelta wide = DeltaProto(a, 10);
  wide.set_to_version(12);
  EXPECT_THAT(client.ApplyDeltas({wide}),
              StatusIs(absl::StatusCode::kInvalidArgument, StartsWith("deltas[0].to_version")));
  // The second delta pins to a missing bucket.
  Change bad;
  bad.set = {{7, Target::Pin(99)}};
  EXPECT_THAT(client.ApplyDeltas({DeltaProto(a, 10), DeltaProto(bad, 11)}),
              StatusIs(absl::StatusCode::kInvalidArgument, StartsWith("deltas[1]: ")));
  // A malformed target.
  v1::MappingDelta zero = DeltaProto(a, 10);
  zero.mutable_set()->set_targets(0, 0);
  EXPECT_THAT(client.ApplyDeltas({zero}),
              StatusIs(absl::StatusCode::kInvalidArgument, StartsWith("deltas[0].set.targets[0]")));
  EXPECT_EQ(client.version(), 10);
  EXPECT_EQ(client.Route(5).source(), RouteSource::kDefault) << "nothing was applied";

  EXPECT_THAT(client.ApplyDeltas({DeltaProto(a, 10), DeltaProto(b, 11)}), IsOk());
  EXPECT_EQ(client.version(), 12);
  EXPECT_EQ(client.Route(5).bucket_id(), 2);
  EXPECT_EQ(client.Route(6).bucket_id(), 2);
}

TEST(ClientDeltaTest, RepeatedPtrFieldOverload) {
  MappingState state;
  state.version = 1;
  state.cluster_id = "c";
  state.buckets = {MakeBucket(1)};
  Client client({});
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(state)), IsOk());
  v1::WatchResponse::Push push;
  Change a;
  a.set = {{5, Target::Pin(1)}};
  *push.add_deltas() = DeltaProto(a, 1);
  Change b;
  b.unset = {5};
  *push.add_deltas() = DeltaProto(b, 2);
  ASSERT_THAT(client.ApplyDeltas(push.deltas()), IsOk());
  EXPECT_EQ(client.version(), 3);
  EXPECT_EQ(client.Route(5).source(), RouteSource::kDefault);
}

TEST(ClientDeltaTest, ClusterChangeResets) {
  MappingState a;
  a.version = 50;
  a.cluster_id = "cluster-a";
  a.buckets = {MakeBucket(1), MakeBucket(2)};
  a.assignments = {{5, Target::Pin(2)}};
  MappingState b;
  b.version = 3;  // a restored database: lower version, other cluster
  b.cluster_id = "cluster-b";
  b.buckets = {MakeBucket(1)};
  Client client({});
  std::vector<ChangeEvent> events;
  client.OnChange([&](const ChangeEvent& e) { events.push_back(e); });
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(a)), IsOk());
  // Same cluster, older: refused.
  MappingState older = a;
  older.version = 49;
  EXPECT_THAT(client.ApplySnapshot(SnapshotProto(older)),
              StatusIs(absl::StatusCode::kFailedPrecondition, StartsWith("snapshot.version")));
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(b)), IsOk());
  EXPECT_EQ(client.version(), 3);
  EXPECT_EQ(client.cluster_id(), "cluster-b");
  EXPECT_EQ(client.Route(5).bucket_id(), 1) << "the old pin is gone";
  EXPECT_EQ(client.Route(5).source(), RouteSource::kDefault);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_FALSE(events[0].reset);
  EXPECT_TRUE(events[1].reset);
  EXPECT_EQ(events[1].old_version, 50);
  EXPECT_EQ(events[1].new_version, 3);
  // Deltas continue from the new cluster's version.
  Change c;
  c.set = {{5, Target::Pin(1)}};
  EXPECT_THAT(client.ApplyDeltas({DeltaProto(c, 50)}),
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
  EXPECT_THAT(client.ApplyDeltas({DeltaProto(c, 3)}), IsOk());
  // Same version again (a NACK's answer): accepted.
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto([&] {
    MappingState s = b;
    s.version = 4;
    return s;
  }())),
              IsOk());
  EXPECT_EQ(client.Route(5).source(), RouteSource::kDefault);
}

TEST(RouteIndexTest, HashIsTheDomainHash) {
  std::mt19937_64 rng(1);
  for (int i = 0; i < 1000000; ++i) {
    const int64_t team = i < 1000 ? i : static_cast<int64_t>(rng() >> 1);
    ASSERT_EQ(client_internal::HashTeam(team), Mix64(static_cast<uint64_t>(team))) << team;
    ASSERT_EQ(client_internal::HashTeam(team) >> 48, TeamSlot(team)) << team;
  }
}

TEST(RouteIndexTest, SmallDeltaSharesUntouchedPartitions) {
  std::mt19937_64 rng(5);
  auto base = MustBuild(RandomState(rng, 1, 20000, 100000));
  auto built = client_internal::RouteIndex::Build(*base);
  ASSERT_TRUE(built.ok());
  const auto& index = **built;
  ASSERT_GE(index.partition_count(), 8u);
  EXPECT_EQ(index.size(), 20000u);

  Change change;
  change.set = {{base->team_ids()[0], Target::Pin(1)}};
  change.unset = {base->team_ids()[1]};
  auto next = base->Apply(change);
  ASSERT_TRUE(next.ok());
  std::vector<int64_t> touched = {change.set[0].first, change.unset[0]};
  std::sort(touched.begin(), touched.end());
  auto updated = client_internal::RouteIndex::Update(index, **next, touched);
  ASSERT_TRUE(updated.ok());
  EXPECT_EQ((*updated)->size(), 19999u);
  size_t shared = 0;
  for (size_t i = 0; i < index.partition_count(); ++i) {
    shared += (*updated)->TEST_SharesPartition(index, i);
  }
  EXPECT_GE(shared, index.partition_count() - 2);
  EXPECT_LT(shared, index.partition_count());
  for (int64_t team : (*next)->team_ids()) {
    ASSERT_EQ((*updated)->Lookup(team).bucket_id(), (*next)->RouteOf(team).bucket_id);
  }
  for (int64_t team : touched) {
    EXPECT_EQ((*updated)->Lookup(team).bucket_id(), (*next)->RouteOf(team).bucket_id);
    EXPECT_EQ((*updated)->Lookup(team).source(), (*next)->RouteOf(team).source);
  }
}

TEST(RouteIndexTest, GrowsAndShrinksThroughUpdates) {
  // Grow a small index far past its initial size, then shrink it again:
  // every remaining team must stay findable through each rebuild.
  MappingState state;
  state.version = 1;
  state.cluster_id = "c";
  state.buckets = {MakeBucket(1), MakeBucket(2)};
  auto snap = MustBuild(state);
  auto index = *client_internal::RouteIndex::Build(*snap);
  std::mt19937_64 rng(9);
  std::set<int64_t> live;
  std::uniform_int_distribution<int64_t> team(1, 3000);
  for (int step = 0; step < 300; ++step) {
    Change change;
    std::map<int64_t, Target> set;
    std::set<int64_t> unset;
    for (int i = 0; i < 20; ++i) {
      const int64_t t = team(rng);
      if (step < 150 || rng() % 3 == 0) {
        set[t] = Target::Pin(1 + static_cast<int32_t>(rng() % 2));
        unset.erase(t);
      } else if (live.count(t)) {
        unset.insert(t);
        set.erase(t);
      }
    }
    change.set.assign(set.begin(), set.end());
    change.unset.assign(unset.begin(), unset.end());
    std::vector<int64_t> touched;
    for (auto& [t, target] : set) {
      touched.push_back(t);
      live.insert(t);
    }
    for (int64_t t : unset) {
      touched.push_back(t);
      live.erase(t);
    }
    std::sort(touched.begin(), touched.end());
    snap = *snap->Apply(change);
    index = *client_internal::RouteIndex::Update(*index, *snap, touched);
    ASSERT_EQ(index->size(), live.size());
    for (int64_t t = 1; t <= 3000; ++t) {
      const RouteResult r = index->Lookup(t);
      ASSERT_EQ(r.source() == RouteSource::kPin, live.count(t) == 1) << t << " step " << step;
      ASSERT_EQ(r.bucket_id(), snap->RouteOf(t).bucket_id);
    }
  }
}

}  // namespace
}  // namespace bucketmap
