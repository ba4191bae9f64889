// Route() against the domain library's Snapshot::RouteOf(), the function
// the server answers GetTeam with: the client must agree bit for bit.
#include <random>
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

using ::bucketmap::client_testing::IsOk;
using ::bucketmap::client_testing::MakeBucket;
using ::bucketmap::client_testing::MustBuild;
using ::bucketmap::client_testing::RandomState;
using ::bucketmap::client_testing::SnapshotProto;
using ::bucketmap::client_testing::StatusIs;
using ::bucketmap::client_testing::ToProto;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

// Checks one team's client route against the domain's.
void ExpectSameRoute(const Snapshot& expected, const MappingView& view, const RouteResult& got,
                     int64_t team) {
  const Route want = expected.RouteOf(team);
  SCOPED_TRACE(::testing::Message() << "team " << team << " at version " << expected.version());
  EXPECT_EQ(got.version(), expected.version());
  EXPECT_EQ(got.bucket_id(), want.bucket_id);
  EXPECT_EQ(got.source(), want.source);
  if (want.source == RouteSource::kPin) {
    EXPECT_EQ(got.pool_index(), -1);
  } else {
    EXPECT_EQ(view.PoolName(got.pool_index()), want.pool);
  }
  if (want.routable()) {
    EXPECT_EQ(got.status(), RouteStatus::kOk);
    EXPECT_EQ(got.bucket_state(), expected.FindBucket(want.bucket_id)->state);
  } else {
    EXPECT_EQ(got.status(), RouteStatus::kNoPlaceableBucket);
    EXPECT_EQ(got.bucket_state(), BucketState{});
  }
  EXPECT_FALSE(got.handoff());
}

void ExpectRoutesMatch(const Snapshot& expected, const Client& client, std::mt19937_64& rng,
                       int64_t max_team, int samples) {
  const std::shared_ptr<const MappingView> view = client.Current();
  ASSERT_NE(view, nullptr);
  for (int64_t team : expected.team_ids()) {
    ExpectSameRoute(expected, *view, client.Route(team), team);
    ExpectSameRoute(expected, *view, view->Route(team), team);
  }
  std::uniform_int_distribution<int64_t> any(1, max_team * 2);
  for (int i = 0; i < samples; ++i) {
    const int64_t team = any(rng);
    ExpectSameRoute(expected, *view, client.Route(team), team);
  }
}

TEST(ClientRouteTest, NoMappingIsExplicit) {
  Client client({});
  const RouteResult r = client.Route(42);
  EXPECT_EQ(r.status(), RouteStatus::kNoMapping);
  EXPECT_FALSE(r.routable());
  EXPECT_EQ(r.bucket_id(), 0);
  EXPECT_EQ(r.version(), 0);
  EXPECT_EQ(client.Current(), nullptr);
  EXPECT_EQ(client.version(), 0);
  EXPECT_EQ(client.cluster_id(), "");
  EXPECT_EQ(client.GetBucketState(1), std::nullopt);
  EXPECT_FALSE(client.Owns(1, 42));
  EXPECT_THAT(client.TeamsInBucket(1), IsEmpty());
}

TEST(ClientRouteTest, MatchesDomainOnRandomSnapshots) {
  std::mt19937_64 rng(20240601);
  for (int round = 0; round < 30; ++round) {
    SCOPED_TRACE(round);
    // Vary the size so that partitioning (1 to 16 partitions) is exercised.
    const size_t teams = round % 3 == 0 ? 20 : (round % 3 == 1 ? 2000 : 15000);
    MappingState state = RandomState(rng, 100 + round, teams, 50000);
    auto expected = MustBuild(state);
    Client client({});
    ASSERT_THAT(client.ApplySnapshot(ToProto(*expected)), IsOk());
    EXPECT_EQ(client.version(), 100 + round);
    ExpectRoutesMatch(*expected, client, rng, 50000, 3000);
  }
}

TEST(ClientRouteTest, MatchesPlacementVectorTeams) {
  // Default placement over weighted members, checked against the domain's
  // PlacementTable directly (the committed vector pins the table itself).
  MappingState state;
  state.version = 7;
  state.cluster_id = "c";
  state.buckets = {MakeBucket(1, "default", BucketState::kActive, 100),
                   MakeBucket(2, "default", BucketState::kPaused, 300),
                   MakeBucket(3, "default", BucketState::kDraining, 500),
                   MakeBucket(5, "default", BucketState::kActive, 50)};
  auto expected = MustBuild(state);
  Client client({});
  ASSERT_THAT(client.ApplySnapshot(ToProto(*expected)), IsOk());
  const PlacementTable& table = expected->PoolTable("default");
  for (int64_t team = 1; team <= 200000; team += 7) {
    const RouteResult r = client.Route(team);
    ASSERT_EQ(r.bucket_id(), table.BucketForSlot(TeamSlot(team))) << team;
    ASSERT_NE(r.bucket_id(), 3) << "a DRAINING bucket is out of placement";
    ASSERT_EQ(r.source(), RouteSource::kDefault);
    ASSERT_EQ(r.paused(), r.bucket_id() == 2);
  }
}

TEST(ClientRouteTest, UnroutablePoolsAreExplicit) {
  MappingState state;
  state.version = 3;
  state.cluster_id = "c";
  // "default" has no placeable bucket: a fresh install.
  state.buckets = {MakeBucket(1, "paid"), MakeBucket(2, "default", BucketState::kDraining)};
  state.assignments = {{10, Target::Pin(1)},
                       {11, Target::Pool("paid")},
                       {12, Target::Pool("ghost")},
                       {13, Target::Pool("default")}};
  Client client({});
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(state)), IsOk());
  auto view = client.Current();

  EXPECT_EQ(client.Route(10).status(), RouteStatus::kOk);
  EXPECT_EQ(client.Route(10).source(), RouteSource::kPin);
  EXPECT_EQ(client.Route(11).bucket_id(), 1);
  EXPECT_EQ(client.Route(11).source(), RouteSource::kPool);

  const RouteResult ghost = client.Route(12);
  EXPECT_EQ(ghost.status(), RouteStatus::kNoPlaceableBucket);
  EXPECT_EQ(ghost.bucket_id(), 0);
  EXPECT_EQ(ghost.source(), RouteSource::kPool);
  EXPECT_EQ(view->PoolName(ghost.pool_index()), "ghost");
  EXPECT_EQ(ghost.version(), 3);

  const RouteResult assigned_default = client.Route(13);
  EXPECT_EQ(assigned_default.status(), RouteStatus::kNoPlaceableBucket);
  EXPECT_EQ(assigned_default.source(), RouteSource::kPool);

  const RouteResult by_default = client.Route(99);
  EXPECT_EQ(by_default.status(), RouteStatus::kNoPlaceableBucket);
  EXPECT_EQ(by_default.source(), RouteSource::kDefault);
  EXPECT_EQ(view->PoolName(by_default.pool_index()), "default");
  EXPECT_FALSE(by_default.routable());

  EXPECT_EQ(client.Route(0).status(), RouteStatus::kInvalidTeam);
  EXPECT_EQ(client.Route(-5).status(), RouteStatus::kInvalidTeam);
}

TEST(ClientRouteTest, ViewExposesStringsAndStates) {
  MappingState state;
  state.version = 4;
  state.cluster_id = "c";
  state.buckets = {MakeBucket(1), MakeBucket(2, "free", BucketState::kPaused)};
  state.buckets[1].topics["clickhouse"] = "clickhouse_events_json_2";
  state.assignments = {{5, Target::Pin(2)}};
  Client client({});
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(state)), IsOk());
  auto view = client.Current();
  EXPECT_EQ(view->version(), 4);
  EXPECT_EQ(view->cluster_id(), "c");
  ASSERT_NE(view->Topic(2, "clickhouse"), nullptr);
  EXPECT_EQ(*view->Topic(2, "clickhouse"), "clickhouse_events_json_2");
  EXPECT_EQ(*view->Topic(2, "ingestion"), "events_plugin_ingestion_2");
  EXPECT_EQ(view->Topic(2, "nope"), nullptr);
  EXPECT_EQ(view->Topic(9, "ingestion"), nullptr);
  EXPECT_EQ(view->FindBucket(2)->name, "b2");
  EXPECT_THAT(view->pools(), ElementsAre("default", "free"));
  EXPECT_EQ(view->PoolName(-1), "");
  EXPECT_EQ(view->PoolName(7), "");
  EXPECT_EQ(client.GetBucketState(2), BucketState::kPaused);
  EXPECT_EQ(client.GetBucketState(1), BucketState::kActive);
  EXPECT_EQ(client.GetBucketState(3), std::nullopt);
  EXPECT_TRUE(client.Route(5).paused());
  EXPECT_EQ(client.cluster_id(), "c");
}

TEST(ClientRouteTest, TeamsInBucketAndOwns) {
  MappingState state;
  state.version = 9;
  state.cluster_id = "c";
  state.buckets = {MakeBucket(1), MakeBucket(2), MakeBucket(3, "paid")};
  state.assignments = {{100, Target::Pin(1)},
                       {101, Target::Pin(2)},
                       {102, Target::Pin(1)},
                       {103, Target::Pool("paid")},
                       {104, Target::Pool("ghost")}};
  auto expected = MustBuild(state);
  Client client({});
  ASSERT_THAT(client.ApplySnapshot(ToProto(*expected)), IsOk());
  EXPECT_THAT(client.TeamsInBucket(1), ElementsAre(100, 102));
  EXPECT_THAT(client.TeamsInBucket(2), ElementsAre(101));
  // A pool assignment is an override too; its bucket is the placement's.
  EXPECT_THAT(client.TeamsInBucket(3), ElementsAre(103));
  EXPECT_THAT(client.TeamsInBucket(4), IsEmpty());

  EXPECT_TRUE(client.Owns(1, 100));
  EXPECT_FALSE(client.Owns(2, 100));
  EXPECT_TRUE(client.Owns(3, 103));
  EXPECT_FALSE(client.Owns(0, 104)) << "an unroutable team is owned by nobody";
  // Default-placed teams are covered by Owns() though not listed.
  int owned_by_1 = 0, owned_by_2 = 0;
  for (int64_t team = 1000; team < 3000; ++team) {
    const int32_t b = expected->RouteOf(team).bucket_id;
    EXPECT_TRUE(client.Owns(b, team));
    EXPECT_FALSE(client.Owns(b == 1 ? 2 : 1, team));
    owned_by_1 += client.Owns(1, team);
    owned_by_2 += client.Owns(2, team);
  }
  EXPECT_EQ(owned_by_1 + owned_by_2, 2000);
  EXPECT_GT(owned_by_1, 800);
  EXPECT_GT(owned_by_2, 800);
}

TEST(ClientRouteTest, RejectsMalformedSnapshots) {
  Client client({});
  v1::MappingSnapshot s = SnapshotProto([] {
    MappingState state;
    state.version = 1;
    state.cluster_id = "c";
    state.buckets = {MakeBucket(1)};
    state.assignments = {{5, Target::Pin(1)}, {6, Target::Pool("default")}};
    return state;
  }());
  {
    v1::MappingSnapshot bad = s;
    bad.mutable_assignments()->add_team_ids(9);
    EXPECT_THAT(client.ApplySnapshot(bad),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         ::testing::StartsWith("snapshot.assignments.targets")));
  }
  {
    v1::MappingSnapshot bad = s;
    bad.mutable_assignments()->set_targets(1, -7);
    EXPECT_THAT(client.ApplySnapshot(bad),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         ::testing::StartsWith("snapshot.assignments.targets[1]")));
  }
  {
    v1::MappingSnapshot bad = s;
    bad.mutable_assignments()->set_targets(0, 0);
    EXPECT_THAT(client.ApplySnapshot(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("targets[0]")));
  }
  {
    v1::MappingSnapshot bad = s;
    bad.mutable_assignments()->set_targets(0, 42);  // pin to a missing bucket
    EXPECT_THAT(client.ApplySnapshot(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, ::testing::StartsWith("snapshot.")));
  }
  {
    v1::MappingSnapshot bad = s;
    bad.mutable_buckets(0)->set_state(v1::BUCKET_STATE_UNSPECIFIED);
    EXPECT_THAT(client.ApplySnapshot(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("state")));
  }
  {
    v1::MappingSnapshot bad = s;
    bad.clear_cluster_id();
    EXPECT_THAT(client.ApplySnapshot(bad), StatusIs(absl::StatusCode::kInvalidArgument,
                                                    ::testing::StartsWith("snapshot.cluster_id")));
  }
  EXPECT_EQ(client.Current(), nullptr) << "nothing half-applied";
  EXPECT_THAT(client.ApplySnapshot(s), IsOk());
}

}  // namespace
}  // namespace bucketmap
