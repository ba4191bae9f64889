// Handoffs in the client (SPEC §5, §6): the open set kept per version from
// snapshots and deltas, Route()'s handoff bit (listed teams, teams placed
// by a pool whose placement changed, via pool_before), HandoffState(), the
// completion callback, the cache file, and the consumer gate.
#include <cstdio>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

#include "bucketmap/client.h"
#include "bucketmap/handoff_gate.h"
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
using ::bucketmap::client_testing::SnapshotProto;
using ::bucketmap::client_testing::StatusIs;
using ::testing::HasSubstr;

// Buckets 1, 2, 3 in "default"; 4, 5 in "paid". Team 7 pinned to 1, team 8
// assigned to "paid", team 9 pinned to 2.
MappingState BaseState(int64_t version = 1) {
  MappingState state;
  state.version = version;
  state.cluster_id = "cluster-a";
  for (int32_t id = 1; id <= 3; ++id) state.buckets.push_back(MakeBucket(id));
  state.buckets.push_back(MakeBucket(4, "paid"));
  state.buckets.push_back(MakeBucket(5, "paid"));
  state.assignments = {{7, Target::Pin(1)}, {8, Target::Pool("paid")}, {9, Target::Pin(2)}};
  return state;
}

v1::Handoff ListedHandoff(int64_t id, int64_t opened, int32_t source,
                          std::vector<std::pair<int64_t, int32_t>> teams,
                          v1::HandoffPhase phase = v1::HANDOFF_SWITCHING) {
  v1::Handoff h;
  h.set_id(id);
  h.set_opened_version(opened);
  h.set_source_bucket_id(source);
  h.set_state(phase);
  h.set_ordered(true);
  h.set_phase_version(opened);
  for (const auto& [team, to] : teams) {
    h.add_team_ids(team);
    h.add_to_bucket_ids(to);
    if (std::find(h.target_bucket_ids().begin(), h.target_bucket_ids().end(), to) ==
        h.target_bucket_ids().end()) {
      h.add_target_bucket_ids(to);
    }
  }
  return h;
}

v1::Handoff PoolHandoff(int64_t id, int64_t opened, int32_t source, const std::string& pool,
                        std::vector<PlacementMember> before) {
  v1::Handoff h = ListedHandoff(id, opened, source, {});
  h.set_source_pool(pool);
  for (const PlacementMember& m : before) {
    v1::PlacementMember* out = h.add_pool_before();
    out->set_bucket_id(m.bucket_id);
    out->set_weight(m.weight);
  }
  return h;
}

v1::MappingDelta WithHandoffs(v1::MappingDelta delta, std::vector<v1::Handoff> handoffs) {
  for (v1::Handoff& h : handoffs) *delta.add_handoffs() = std::move(h);
  return delta;
}

v1::Handoff Ended(v1::Handoff h, v1::HandoffPhase phase, int64_t version) {
  h.set_state(phase);
  h.set_phase_version(version);
  if (phase != v1::HANDOFF_COMPLETED) h.set_end_reason("test");
  return h;
}

TEST(HandoffTest, PinMoveSetsTheBitUntilCompleted) {
  Client client(ClientOptions{});
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(BaseState())), IsOk());
  EXPECT_FALSE(client.Route(7).handoff());
  EXPECT_FALSE(client.HandoffState(7).open());
  EXPECT_EQ(client.OnHandoffDone(7, [](const HandoffEnd&) {}), 0u);

  Change pin;
  pin.set = {{7, Target::Pin(2)}};
  const v1::Handoff opened = ListedHandoff(1, 2, 1, {{7, 2}});
  ASSERT_THAT(client.ApplyDeltas({WithHandoffs(DeltaProto(pin, 1), {opened})}), IsOk());
  EXPECT_TRUE(client.Route(7).handoff());
  EXPECT_EQ(client.Route(7).bucket_id(), 2);
  EXPECT_FALSE(client.Route(8).handoff());
  EXPECT_FALSE(client.Route(9).handoff());
  const HandoffStatus status = client.HandoffState(7);
  ASSERT_TRUE(status.open());
  ASSERT_EQ(status.handoffs.size(), 1u);
  EXPECT_EQ(status.handoffs[0].handoff_id, 1);
  EXPECT_EQ(status.handoffs[0].source_bucket_id, 1);
  EXPECT_EQ(status.handoffs[0].target_bucket_id, 2);
  EXPECT_EQ(status.handoffs[0].opened_version, 2);
  EXPECT_EQ(status.handoffs[0].phase, v1::HANDOFF_SWITCHING);
  EXPECT_EQ(status.version, 2);

  int calls = 0;
  HandoffEnd end;
  EXPECT_NE(client.OnHandoffDone(7, [&](const HandoffEnd& e) {
    ++calls;
    end = e;
  }), 0u);

  // SWITCHING -> DRAINING: still open; an unrelated change keeps the set.
  v1::Handoff draining = opened;
  draining.set_state(v1::HANDOFF_DRAINING);
  ASSERT_THAT(client.ApplyDeltas({WithHandoffs(DeltaProto(Change{}, 2), {draining})}), IsOk());
  Change other;
  other.set = {{100, Target::Pin(3)}};
  ASSERT_THAT(client.ApplyDeltas({DeltaProto(other, 3)}), IsOk());
  EXPECT_TRUE(client.Route(7).handoff());
  EXPECT_EQ(client.HandoffState(7).handoffs.at(0).phase, v1::HANDOFF_DRAINING);
  EXPECT_FALSE(client.Route(100).handoff());
  EXPECT_EQ(calls, 0);

  ASSERT_THAT(client.ApplyDeltas({WithHandoffs(
                  DeltaProto(Change{}, 4), {Ended(draining, v1::HANDOFF_COMPLETED, 5)})}),
              IsOk());
  EXPECT_FALSE(client.Route(7).handoff());
  EXPECT_EQ(client.Route(7).bucket_id(), 2);
  EXPECT_FALSE(client.HandoffState(7).open());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(end.team_id, 7);
  EXPECT_EQ(end.handoff_id, 1);
  EXPECT_EQ(end.end_state, v1::HANDOFF_COMPLETED);
  EXPECT_EQ(end.version, 5);
  EXPECT_TRUE(client.Current()->OpenHandoffs().empty());

  ASSERT_THAT(client.ApplyDeltas({DeltaProto(other, 5)}), IsOk());
  EXPECT_EQ(calls, 1);  // once only
}

TEST(HandoffTest, DefaultPlacedTeamsOfADrainingBucketUsePoolBefore) {
  Client client(ClientOptions{});
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(BaseState())), IsOk());
  const PlacementTable before = PlacementTable::Build({{1, 100}, {2, 100}, {3, 100}});

  // Bucket 3 starts DRAINING: its default-placed teams move to 1 and 2.
  Change drain;
  drain.buckets = {MakeBucket(3, kDefaultPool, BucketState::kDraining)};
  const v1::Handoff h = PoolHandoff(4, 2, 3, kDefaultPool, {{1, 100}, {2, 100}, {3, 100}});
  ASSERT_THAT(client.ApplyDeltas({WithHandoffs(DeltaProto(drain, 1), {h})}), IsOk());

  int moving = 0;
  for (int64_t team = 10; team < 20000; ++team) {
    const RouteResult r = client.Route(team);
    const bool moved = before.BucketForTeam(team) == 3;
    ASSERT_EQ(r.handoff(), moved) << team;
    ASSERT_NE(r.bucket_id(), 3);
    if (!moved) continue;
    ++moving;
    const HandoffStatus s = client.HandoffState(team);
    ASSERT_EQ(s.handoffs.size(), 1u) << team;
    EXPECT_EQ(s.handoffs[0].source_bucket_id, 3);
    EXPECT_EQ(s.handoffs[0].target_bucket_id, r.bucket_id());
  }
  EXPECT_GT(moving, 4000);  // about a third
  // Pinned teams are not default-placed.
  EXPECT_FALSE(client.Route(7).handoff());
  EXPECT_FALSE(client.Route(9).handoff());

  // An assignment-only delta keeps the default slots (Update path).
  Change other;
  other.set = {{12345, Target::Pin(1)}};
  ASSERT_THAT(client.ApplyDeltas({DeltaProto(other, 2)}), IsOk());
  int64_t moved_team = 10;
  while (before.BucketForTeam(moved_team) != 3) ++moved_team;
  EXPECT_TRUE(client.Route(moved_team).handoff());
  EXPECT_FALSE(client.Route(12345).handoff());

  ASSERT_THAT(client.ApplyDeltas({WithHandoffs(DeltaProto(Change{}, 3),
                                               {Ended(h, v1::HANDOFF_FORCED, 4)})}),
              IsOk());
  for (int64_t team = 10; team < 2000; ++team) ASSERT_FALSE(client.Route(team).handoff()) << team;
}

TEST(HandoffTest, PoolAssignedTeamsMoveWithTheirPool) {
  MappingState state = BaseState();
  // Many teams assigned to "paid" (overrides: entries in the hash table).
  for (int64_t team = 1000; team < 1400; ++team) {
    state.assignments.emplace_back(team, Target::Pool("paid"));
  }
  Client client(ClientOptions{});
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(state)), IsOk());
  // Bucket 6 joins "paid": the teams it wins leave 4 and 5. One handoff
  // per source.
  Change add;
  Bucket six = MakeBucket(6, "paid");
  add.buckets = {six};
  const v1::Handoff from4 = PoolHandoff(1, 2, 4, "paid", {{4, 100}, {5, 100}});
  const v1::Handoff from5 = PoolHandoff(2, 2, 5, "paid", {{4, 100}, {5, 100}});
  ASSERT_THAT(client.ApplyDeltas({WithHandoffs(DeltaProto(add, 1), {from4, from5})}), IsOk());
  int moved = 0;
  for (int64_t team = 1000; team < 1400; ++team) {
    const RouteResult r = client.Route(team);
    ASSERT_EQ(r.handoff(), r.bucket_id() == 6) << team;
    moved += r.handoff();
  }
  EXPECT_GT(moved, 60);
  // Default-placed teams are in another pool.
  for (int64_t team = 10; team < 1000; ++team) ASSERT_FALSE(client.Route(team).handoff());
}

TEST(HandoffTest, AnUnpinnedListedTeamHasTheBitOnItsDefaultRoute) {
  Client client(ClientOptions{});
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(BaseState())), IsOk());
  Change unpin;
  unpin.unset = {9};  // pinned to 2; default placement may give 1, 2 or 3
  const int32_t to = PlacementTable::Build({{1, 100}, {2, 100}, {3, 100}}).BucketForTeam(9);
  ASSERT_THAT(client.ApplyDeltas({WithHandoffs(DeltaProto(unpin, 1),
                                               {ListedHandoff(3, 2, 2, {{9, to}})})}),
              IsOk());
  const RouteResult r = client.Route(9);
  EXPECT_TRUE(r.handoff());
  EXPECT_EQ(r.source(), RouteSource::kDefault);
  EXPECT_EQ(r.bucket_id(), to);
  EXPECT_TRUE(client.HandoffState(9).open());
}

TEST(HandoffTest, SnapshotCarriesOpenHandoffsAndEndsUnseenOnes) {
  MappingState state = BaseState(5);
  state.assignments = {{7, Target::Pin(2)}, {8, Target::Pool("paid")}};
  v1::MappingSnapshot snapshot = SnapshotProto(state);
  *snapshot.add_handoffs() = ListedHandoff(1, 4, 1, {{7, 2}}, v1::HANDOFF_DRAINING);
  Client client(ClientOptions{});
  ASSERT_THAT(client.ApplySnapshot(snapshot), IsOk());
  EXPECT_TRUE(client.Route(7).handoff());
  HandoffEnd end;
  int calls = 0;
  ASSERT_NE(client.OnHandoffDone(7, [&](const HandoffEnd& e) {
    end = e;
    ++calls;
  }), 0u);

  // A resync at 8 no longer lists it: it ended while we were away.
  state.version = 8;
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(state)), IsOk());
  EXPECT_FALSE(client.Route(7).handoff());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(end.handoff_id, 1);
  EXPECT_EQ(end.end_state, v1::HANDOFF_PHASE_UNSPECIFIED);
  EXPECT_EQ(end.version, 8);
}

TEST(HandoffTest, RejectsMalformedHandoffsNamingTheField) {
  v1::MappingSnapshot snapshot = SnapshotProto(BaseState());
  v1::Handoff bad = ListedHandoff(1, 1, 1, {{7, 2}});
  bad.add_team_ids(8);
  *snapshot.add_handoffs() = bad;
  Client client(ClientOptions{});
  EXPECT_THAT(client.ApplySnapshot(snapshot),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("snapshot.handoffs[0].to_bucket_ids")));
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(BaseState())), IsOk());
  v1::Handoff pool = PoolHandoff(2, 2, 1, kDefaultPool, {{1, 100}, {1, 50}});
  EXPECT_THAT(client.ApplyDeltas({WithHandoffs(DeltaProto(Change{}, 1), {pool})}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("deltas[0].handoffs[0].pool_before[1]")));
  EXPECT_EQ(client.version(), 1);
}

// Ended handoffs too: the server refuses every one of these shapes
// (Snapshot::MergeHandoffs), so a push carrying one is not from a server.
// Found by client_delta_fuzzer: a COMPLETED handoff with targets but no
// team ids was accepted.
TEST(HandoffTest, RejectsMalformedEndedAndDuplicatedHandoffs) {
  Client client(ClientOptions{});
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(BaseState())), IsOk());
  v1::Handoff targets_only = Ended(ListedHandoff(3, 1, 1, {}), v1::HANDOFF_COMPLETED, 2);
  targets_only.add_to_bucket_ids(2);
  EXPECT_THAT(client.ApplyDeltas({WithHandoffs(DeltaProto(Change{}, 1), {targets_only})}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("deltas[0].handoffs[0].to_bucket_ids")));
  v1::Handoff unsorted = ListedHandoff(4, 1, 1, {{9, 3}, {7, 2}});
  EXPECT_THAT(
      client.ApplyDeltas({WithHandoffs(DeltaProto(Change{}, 1), {unsorted})}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("deltas[0].handoffs[0].team_ids")));
  v1::Handoff open = ListedHandoff(5, 1, 1, {{7, 2}});
  v1::Handoff ended = Ended(open, v1::HANDOFF_CANCELLED, 2);
  EXPECT_THAT(client.ApplyDeltas({WithHandoffs(DeltaProto(Change{}, 1), {open, ended})}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("deltas[0].handoffs[1].id: handoff 5 appears twice")));
  EXPECT_EQ(client.version(), 1);
  EXPECT_FALSE(client.Route(7).handoff());
  EXPECT_EQ(client.Route(7).bucket_id(), 1);
}

TEST(HandoffTest, CacheFileKeepsOpenHandoffs) {
  char dir[] = "/tmp/handoff_cacheXXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/cache";
  {
    Client client(ClientOptions{});
    ASSERT_THAT(client.ApplySnapshot(SnapshotProto(BaseState())), IsOk());
    Change pin;
    pin.set = {{7, Target::Pin(3)}};
    ASSERT_THAT(client.ApplyDeltas({WithHandoffs(DeltaProto(pin, 1),
                                                 {ListedHandoff(1, 2, 1, {{7, 3}})})}),
                IsOk());
    ASSERT_THAT(client.WriteCache(path), IsOk());
  }
  Client restarted(ClientOptions{});
  ASSERT_THAT(restarted.LoadCache(path), IsOk());
  EXPECT_EQ(restarted.version(), 2);
  EXPECT_TRUE(restarted.Route(7).handoff());
  EXPECT_EQ(restarted.HandoffState(7).handoffs.at(0).target_bucket_id, 3);
  std::remove(path.c_str());
  rmdir(dir);
}

TEST(HandoffGateTest, HoldsTheTargetServesTheSourceAndWaitsForTheStamp) {
  Client client(ClientOptions{});
  HandoffGate gate(&client);
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(BaseState())), IsOk());
  // Nothing moving.
  EXPECT_TRUE(gate.Check(7, 1, 1).process);
  EXPECT_EQ(gate.Check(7, 1, 1).reason, GateDecision::Reason::kNoHandoff);
  EXPECT_TRUE(gate.Check(7, 1, 0).process);  // unstamped
  // A producer already at version 2: the consumer must catch up first.
  GateDecision behind = gate.Check(7, 2, 2);
  EXPECT_TRUE(behind.hold());
  EXPECT_EQ(behind.reason, GateDecision::Reason::kClientBehind);
  EXPECT_EQ(behind.wait_version, 2);

  Change pin;
  pin.set = {{7, Target::Pin(2)}};
  v1::Handoff h = ListedHandoff(1, 2, 1, {{7, 2}});
  ASSERT_THAT(client.ApplyDeltas({WithHandoffs(DeltaProto(pin, 1), {h})}), IsOk());
  GateDecision target = gate.Check(7, 2, 2);
  EXPECT_TRUE(target.hold());
  EXPECT_EQ(target.reason, GateDecision::Reason::kTargetOfOpenHandoff);
  EXPECT_EQ(target.handoff_id, 1);
  // The source keeps serving the team: events stamped before the move.
  GateDecision source = gate.Check(7, 1, 1);
  EXPECT_TRUE(source.process);
  EXPECT_EQ(source.reason, GateDecision::Reason::kSource);
  // Other teams of the target are not held.
  EXPECT_TRUE(gate.Check(9, 2, 2).process);

  ASSERT_THAT(client.ApplyDeltas({WithHandoffs(DeltaProto(Change{}, 2),
                                               {Ended(h, v1::HANDOFF_COMPLETED, 3)})}),
              IsOk());
  EXPECT_TRUE(gate.Check(7, 2, 2).process);
  EXPECT_TRUE(gate.Check(7, 1, 1).process);
}

TEST(HandoffGateTest, AnUnorderedMoveHoldsNothing) {
  Client client(ClientOptions{});
  HandoffGate gate(&client);
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(BaseState())), IsOk());
  Change pin;
  pin.set = {{7, Target::Pin(2)}};
  v1::Handoff h = ListedHandoff(1, 2, 1, {{7, 2}});
  h.set_ordered(false);
  ASSERT_THAT(client.ApplyDeltas({WithHandoffs(DeltaProto(pin, 1), {h})}), IsOk());
  EXPECT_TRUE(client.Route(7).handoff());
  const GateDecision d = gate.Check(7, 2, 2);
  EXPECT_TRUE(d.process);
  EXPECT_EQ(d.reason, GateDecision::Reason::kUnordered);
}

TEST(HandoffGateTest, ParsesTheVersionHeader) {
  EXPECT_EQ(ParseVersionHeader("42"), 42);
  EXPECT_EQ(ParseVersionHeader(""), 0);
  EXPECT_EQ(ParseVersionHeader("x1"), 0);
  EXPECT_EQ(ParseVersionHeader("-3"), 0);
}

}  // namespace
}  // namespace bucketmap
