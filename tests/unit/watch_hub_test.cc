// WatchHub (server/watch/watch_hub.h) over a MappingManager and a
// FakeStore, without gRPC streams: how pushes are assembled from the shared
// frames (deltas from the ACKed version, the snapshot when too far behind
// or after a gap, filtered encodings that keep the handoffs), that a write's
// delta reaches the push as the store encoded it, and how client states
// reach the store (a refused state is dropped, not retried with every
// batch; departed states wait for the store once per client).
#include "server/watch/watch_hub.h"

#include <memory>
#include <string>
#include <vector>

#include "bucketmap/v1/mapping.pb.h"
#include "domain/move_policy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/base/request_checks.h"
#include "server/metrics/metrics.h"
#include "server/state/mapping_manager.h"
#include "tests/support/fake_clock.h"
#include "tests/support/fake_store.h"
#include "tests/unit/unit_test_util.h"

namespace bucketmap {
namespace unit_test {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

v1::WatchResponse::Push Decode(const grpc::ByteBuffer& buffer) {
  v1::WatchResponse response;
  EXPECT_TRUE(ParseRequestBody(buffer, &response));
  EXPECT_TRUE(response.has_push());
  return response.push();
}

class WatchHubTest : public ::testing::Test {
 protected:
  WatchHubTest()
      : store_(new FakeStore(SnapshotOf(1, {RoleBucket(1, "b1", "default", {{"ingestion", "in_1"}}),
                                            RoleBucket(2, "b2", "other", {{"ingestion", "in_2"}})}),
                             &clock_)),
        manager_(store_.get()) {}

  void SetUp() override {
    ASSERT_THAT(manager_.Init(), IsOk());
    WatchOptions options;
    options.max_deltas_per_push = 3;
    options.resume_max_versions = 3;
    options.client_flush = absl::Hours(1);  // flushed by TEST_Flush only
    hub_ = std::make_unique<WatchHub>(&manager_, store_.get(), &metrics_, options, &clock_);
    hub_->Start();
  }
  void TearDown() override { hub_->Stop(); }

  // Pins `team` to `bucket` through the manager; returns the new version.
  int64_t Pin(int64_t team, int32_t bucket) {
    PlanFn plan = [team, bucket](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
      ASSIGN_OR_RETURN(Plan p, PlanAssignments(before, {AssignmentOp{team, Target::Pin(bucket)}}));
      return PlannedWrite{std::move(p), ""};
    };
    absl::StatusOr<WriteResult> written = manager_.Write(Ctx("AssignTeam"), plan);
    EXPECT_THAT(written, IsOk());
    return written.ok() ? written->version : 0;
  }

  v1::WatchResponse::Push Build(int64_t acked, std::vector<int32_t> filter = {},
                                bool snapshot = false) {
    int64_t to = 0;
    return Decode(hub_->BuildPush(acked, filter, /*nonce=*/7, snapshot, /*reset=*/false, &to));
  }

  FakeClock clock_;
  std::unique_ptr<FakeStore> store_;
  MappingManager manager_;
  Metrics metrics_;
  std::unique_ptr<WatchHub> hub_;
};

TEST_F(WatchHubTest, PushesCarryTheDeltasSinceTheAckedVersionOrTheSnapshot) {
  const int64_t v2 = Pin(10, 1);
  const int64_t v3 = Pin(11, 2);
  v1::WatchResponse::Push push = Build(/*acked=*/1);
  EXPECT_EQ(push.from_version(), 1);
  EXPECT_EQ(push.to_version(), v3);
  EXPECT_EQ(push.nonce(), 7u);
  ASSERT_EQ(push.deltas_size(), 2);
  EXPECT_EQ(push.deltas(0).to_version(), v2);
  EXPECT_EQ(push.deltas(1).to_version(), v3);
  EXPECT_FALSE(push.has_snapshot());

  // A first subscription (acked 0), or a forced snapshot, gets the snapshot.
  push = Build(/*acked=*/0);
  EXPECT_TRUE(push.has_snapshot());
  EXPECT_EQ(push.from_version(), 0);
  EXPECT_EQ(push.snapshot().version(), v3);
  EXPECT_TRUE(Build(/*acked=*/v2, {}, /*snapshot=*/true).has_snapshot());

  // Further behind than max_deltas_per_push (3): the snapshot.
  Pin(12, 1);
  Pin(13, 1);
  push = Build(/*acked=*/1);
  EXPECT_TRUE(push.has_snapshot());
  EXPECT_EQ(Build(/*acked=*/v2).deltas_size(), 3);
}

// A write's delta reaches the push byte for byte as the change log holds
// it: encoded once, at the write.
TEST_F(WatchHubTest, APushCarriesTheDeltaAsTheStoreEncodedIt) {
  const int64_t v2 = Pin(10, 1);
  v1::WatchResponse::Push push = Build(/*acked=*/1);
  ASSERT_EQ(push.deltas_size(), 1);
  absl::StatusOr<std::vector<v1::MappingDelta>> stored = store_->LoadDeltas(1, v2);
  ASSERT_THAT(stored, IsOk());
  ASSERT_EQ(stored->size(), 1u);
  EXPECT_EQ(push.deltas(0).SerializeAsString(), (*stored)[0].SerializeAsString());
}

// Filters narrow the assignment rows only: a filtered delta keeps every
// bucket, pool and handoff, and a team leaving the filtered buckets
// arrives as unset.
TEST_F(WatchHubTest, FilteredDeltasKeepBucketsAndHandoffsAndUnsetTeamsLeaving) {
  Pin(10, 1);
  const int64_t v3 = Pin(11, 2);
  // A handoff opened at v4 (as a write with handoffs would record it).
  PlanFn move = [](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
    ASSIGN_OR_RETURN(Plan p, PlanAssignments(before, {AssignmentOp{10, Target::Pin(2)}}));
    MovePolicy policy;
    policy.cooldown = absl::ZeroDuration();
    RETURN_IF_ERROR(ApplyMovePolicy(before, policy, &p));
    return PlannedWrite{std::move(p), ""};
  };
  ASSERT_THAT(manager_.Write(Ctx("AssignTeam"), move), IsOk());
  v1::WatchResponse::Push push = Build(/*acked=*/v3, /*filter=*/{1});
  ASSERT_EQ(push.deltas_size(), 1);
  const v1::MappingDelta& delta = push.deltas(0);
  EXPECT_THAT(delta.set().team_ids(), IsEmpty());        // now pinned outside the filter
  EXPECT_THAT(delta.unset_team_ids(), ElementsAre(10));  // so it leaves the stream's view
  ASSERT_EQ(delta.handoffs_size(), 1);
  EXPECT_EQ(delta.handoffs(0).source_bucket_id(), 1);
}

// Team rules and pool objects travel whole in filtered deltas too: every
// consumer applies the same rules at the same version.
TEST_F(WatchHubTest, FilteredDeltasKeepTeamRulesAndPoolObjects) {
  PlanFn rules = [](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
    TeamRule drop;
    drop.team_id = 10;
    drop.kind = RuleKind::kDrop;
    ASSIGN_OR_RETURN(Plan p, PlanSetTeamRule(before, drop, absl::UnixEpoch()));
    return PlannedWrite{std::move(p), ""};
  };
  ASSERT_THAT(manager_.Write(Ctx("SetTeamRule"), rules), IsOk());
  PlanFn pause = [](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
    PoolUpdate u;
    u.name = "other";
    u.state = BucketState::kPaused;
    ASSIGN_OR_RETURN(Plan p, PlanUpdatePool(before, u));
    return PlannedWrite{std::move(p), ""};
  };
  ASSERT_THAT(manager_.Write(Ctx("UpdatePool"), pause), IsOk());
  PlanFn clear = [](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
    ASSIGN_OR_RETURN(Plan p, PlanClearTeamRules(before, 10, std::nullopt));
    return PlannedWrite{std::move(p), ""};
  };
  ASSERT_THAT(manager_.Write(Ctx("ClearTeamRule"), clear), IsOk());
  v1::WatchResponse::Push push = Build(/*acked=*/1, /*filter=*/{1});
  ASSERT_EQ(push.deltas_size(), 3);
  ASSERT_EQ(push.deltas(0).team_rules_size(), 1);
  EXPECT_EQ(push.deltas(0).team_rules(0).team_id(), 10);
  ASSERT_EQ(push.deltas(1).pool_objects_size(), 1);
  EXPECT_EQ(push.deltas(1).pool_objects(0).state(), v1::PAUSED);
  EXPECT_EQ(push.deltas(1).buckets_size(), 1);  // bucket 2, outside the filter
  ASSERT_EQ(push.deltas(2).cleared_team_rules_size(), 1);
  // The filtered snapshot has them too.
  push = Build(/*acked=*/0, /*filter=*/{1});
  ASSERT_TRUE(push.has_snapshot());
  EXPECT_EQ(push.snapshot().pool_objects_size(), 1);
}

// One client's state that the store refuses (a data error, not the store
// being away) is dropped with a warning; the other clients of the batch
// are still recorded.
TEST_F(WatchHubTest, ARefusedClientStateIsDroppedAndTheOthersAreSaved) {
  ClientState good;
  good.client_id = "good";
  good.role = kProducer;
  good.applied_version = 1;
  ClientState bad = good;
  bad.client_id = "bad";
  hub_->ClientDisconnected(bad);
  hub_->ClientDisconnected(good);
  store_->FailNext(FakeStore::kSaveClients, absl::InvalidArgumentError("refused batch"));
  store_->FailNext(FakeStore::kSaveClients, absl::InvalidArgumentError("refused state"));
  hub_->TEST_Flush();  // the batch fails, then "bad" alone, then "good" alone succeeds
  absl::StatusOr<std::vector<ClientState>> listed = store_->ListClients(clock_.Now());
  ASSERT_THAT(listed, IsOk());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].client_id, "good");
  // Nothing is left to retry: the refused state is not sent again.
  const int64_t calls = store_->calls(FakeStore::kSaveClients);
  hub_->TEST_Flush();
  EXPECT_EQ(store_->calls(FakeStore::kSaveClients), calls);
}

// While the store is away, departed clients wait for it, once each: the
// newest state of a client replaces the older one.
TEST_F(WatchHubTest, DepartedStatesWaitForTheStoreOncePerClient) {
  ClientState state;
  state.client_id = "p";
  state.role = kProducer;
  for (int64_t v = 1; v <= 3; ++v) {
    state.applied_version = v;
    hub_->ClientDisconnected(state);
    store_->FailNext(FakeStore::kSaveClients, absl::UnavailableError("store away"));
    hub_->TEST_Flush();
  }
  hub_->TEST_Flush();
  absl::StatusOr<std::vector<ClientState>> listed = store_->ListClients(clock_.Now());
  ASSERT_THAT(listed, IsOk());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].applied_version, 3);
}

}  // namespace
}  // namespace unit_test
}  // namespace bucketmap
