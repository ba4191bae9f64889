// HandoffCoordinator (server/handoff/handoff_coordinator.h) over a
// FakeStore, a FakeOffsetReader and a FakeClock, driven round by round
// (TEST_RunRound) on the test thread: the switch barrier, the drains in
// drain order, max_hold, a partition-count change, retries after Kafka or
// store failures, and the leader-epoch fence. No PostgreSQL, no Kafka, no
// sleeping.
#include "server/handoff/handoff_coordinator.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/state/mapping_manager.h"
#include "server/state/write_path.h"
#include "tests/support/fake_clock.h"
#include "tests/support/fake_offsets.h"
#include "tests/support/fake_store.h"
#include "tests/unit/unit_test_util.h"

namespace bucketmap {
namespace unit_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr int64_t kEpoch = 3;

class HandoffCoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Bucket a drains ingestion (in_a, 2 partitions) then processed
    // (out_a, 2 partitions), each with its group (g_in_a, g_out_a).
    auto offsets = std::make_shared<FakeOffsetReader>();
    offsets_ = offsets.get();  // kept after handing it over
    offsets_->SetTopic("in_a", {5, 5});
    offsets_->SetTopic("out_a", {3, 0});
    offsets_->SetTopic("in_b", {0});
    store_.SetLeaderEpoch(kEpoch);
    ASSERT_THAT(manager_.Init(), IsOk());

    HandoffOptions options;
    options.enabled = true;
    options.grace = absl::Seconds(30);
    options.max_hold = absl::Minutes(30);
    options.client_lease = absl::Seconds(10);
    coordinator_ = std::make_unique<HandoffCoordinator>(&manager_, &store_, std::move(offsets),
                                                        options, nullptr, &clock_);
    coordinator_->TEST_RefreshKafka();  // partition counts for the policy

    // Team 7 moves from a to b: handoff 1 opens at version 2.
    WritePath path(&manager_, &store_, coordinator_.get());
    MoveWrite move;
    move.context = Ctx("AssignTeam");
    move.teams = {7};
    move.plan = [](const Snapshot& before) {
      return PlanAssignments(before, {AssignmentOp{7, Target::Pin(2)}});
    };
    move.respond = [](const Snapshot&, const Plan&, int64_t, bool) { return std::string(); };
    ASSERT_THAT(path.Run(move), IsOk());
    const v1::Handoff opened = Handoff1();
    ASSERT_EQ(opened.state(), v1::HANDOFF_SWITCHING);
    ASSERT_EQ(opened.opened_version(), 2);
    ASSERT_EQ(opened.drains_size(), 2);
    ASSERT_EQ(opened.drains(0).partition_count(), 2);
  }

  // One round as the leader at kEpoch, leading for long enough that the
  // barrier is judged.
  bool Round() { return coordinator_->TEST_RunRound(kEpoch, clock_.Now() - absl::Hours(1)); }

  // Handoff 1 as ListHandoffs shows it, with the coordinator's live view.
  v1::Handoff Handoff1() {
    HandoffQuery q;
    q.include_ended = true;
    absl::StatusOr<std::vector<v1::Handoff>> listed = store_.ListHandoffs(q);
    EXPECT_THAT(listed, IsOk());
    for (v1::Handoff& h : listed.value_or(std::vector<v1::Handoff>{})) {
      if (h.id() != 1) continue;
      if (coordinator_ != nullptr) coordinator_->Decorate(&h);
      return h;
    }
    ADD_FAILURE() << "no handoff 1";
    return v1::Handoff();
  }

  void SaveProducer(const std::string& id, int64_t drained, absl::Time lease_until,
                    int role = kProducer) {
    ClientState c;
    c.client_id = id;
    c.role = role;
    c.replica = "r1";
    c.drained_version = drained;
    c.connected = true;
    ASSERT_THAT(store_.SaveClients({c}, lease_until), IsOk());
  }

  FakeClock clock_;
  FakeStore store_{
      SnapshotOf(1,
                 {RoleBucket(1, "a", "other", {{"ingestion", "in_a"}, {"processed", "out_a"}}),
                  RoleBucket(2, "b", "other", {{"ingestion", "in_b"}})},
                 {{7, 1}}),
      &clock_};
  MappingManager manager_{&store_};
  FakeOffsetReader* offsets_ = nullptr;
  std::unique_ptr<HandoffCoordinator> coordinator_;
};

TEST_F(HandoffCoordinatorTest, SwitchBarrierWaitsForALeasedProducerToDrain) {
  SaveProducer("p1", 1, clock_.Now() + absl::Minutes(1));
  SaveProducer("c1", 0, clock_.Now() + absl::Minutes(1), kConsumer);  // not a producer
  SaveProducer("gone", 0, clock_.Now() - absl::Seconds(1));           // lease over
  ASSERT_TRUE(Round());
  v1::Handoff h = Handoff1();
  EXPECT_EQ(h.state(), v1::HANDOFF_SWITCHING);
  EXPECT_THAT(h.missing_producers(), ElementsAre("p1"));
  EXPECT_EQ(store_.version(), 2);

  SaveProducer("p1", 2, clock_.Now() + absl::Minutes(1));
  ASSERT_TRUE(Round());
  h = Handoff1();
  EXPECT_EQ(h.state(), v1::HANDOFF_DRAINING);
  EXPECT_THAT(h.missing_producers(), IsEmpty());
  EXPECT_EQ(h.drain_index(), 0);
  EXPECT_THAT(h.drains(0).end_offsets(), ElementsAre(5, 5));
  EXPECT_EQ(store_.version(), 3);
}

TEST_F(HandoffCoordinatorTest, BarrierPassesAtGraceNamingTheMissingProducer) {
  SaveProducer("p1", 1, clock_.Now() + absl::Hours(1));
  ASSERT_TRUE(Round());
  clock_.Advance(absl::Seconds(29));
  ASSERT_TRUE(Round());
  EXPECT_EQ(Handoff1().state(), v1::HANDOFF_SWITCHING);

  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(Round());
  v1::Handoff h = Handoff1();
  EXPECT_EQ(h.state(), v1::HANDOFF_DRAINING);
  EXPECT_THAT(h.missing_producers(), ElementsAre("p1"));

  // The drains complete, but the barrier was missed: FORCED.
  offsets_->SetCommitted("g_in_a", "in_a", {5, 5});
  offsets_->SetCommitted("g_out_a", "out_a", {3, 0});
  ASSERT_TRUE(Round());
  ASSERT_TRUE(Round());
  h = Handoff1();
  EXPECT_EQ(h.state(), v1::HANDOFF_FORCED);
  EXPECT_THAT(h.end_reason(), HasSubstr("p1"));
}

TEST_F(HandoffCoordinatorTest, DrainsRoleByRoleInDrainOrder) {
  ASSERT_TRUE(Round());  // no producer: the barrier passes
  v1::Handoff h = Handoff1();
  ASSERT_EQ(h.state(), v1::HANDOFF_DRAINING);
  EXPECT_EQ(h.drains(0).role(), "ingestion");
  EXPECT_THAT(h.drains(1).end_offsets(), IsEmpty());  // not its turn

  offsets_->SetCommitted("g_in_a", "in_a", {5, 4});
  ASSERT_TRUE(Round());
  h = Handoff1();
  EXPECT_EQ(h.drain_index(), 0);
  EXPECT_EQ(h.drains(0).lag(), 1);
  EXPECT_THAT(h.drains(0).committed_offsets(), ElementsAre(5, 4));
  EXPECT_THAT(h.drains(1).end_offsets(), IsEmpty());

  offsets_->SetCommitted("g_in_a", "in_a", {5, 5});
  ASSERT_TRUE(Round());
  h = Handoff1();
  EXPECT_EQ(h.state(), v1::HANDOFF_DRAINING);
  EXPECT_EQ(h.drain_index(), 1);
  EXPECT_TRUE(h.drains(0).drained());
  EXPECT_EQ(h.drains(1).role(), "processed");
  EXPECT_THAT(h.drains(1).end_offsets(), ElementsAre(3, 0));

  offsets_->SetCommitted("g_out_a", "out_a", {2});
  ASSERT_TRUE(Round());
  EXPECT_EQ(Handoff1().drains(1).lag(), 1);
  offsets_->SetCommitted("g_out_a", "out_a", {3});
  ASSERT_TRUE(Round());
  h = Handoff1();
  EXPECT_EQ(h.state(), v1::HANDOFF_COMPLETED);
  EXPECT_THAT(h.drains(1).committed_offsets(), ElementsAre(3, -1));
  EXPECT_THAT(manager_.Current()->snapshot().handoffs(), IsEmpty());
}

TEST_F(HandoffCoordinatorTest, MaxHoldForces) {
  ASSERT_TRUE(Round());
  ASSERT_EQ(Handoff1().state(), v1::HANDOFF_DRAINING);
  clock_.Advance(absl::Minutes(29));
  ASSERT_TRUE(Round());
  EXPECT_EQ(Handoff1().state(), v1::HANDOFF_DRAINING);
  clock_.Advance(absl::Minutes(1));
  ASSERT_TRUE(Round());
  v1::Handoff h = Handoff1();
  EXPECT_EQ(h.state(), v1::HANDOFF_FORCED);
  EXPECT_THAT(h.end_reason(), HasSubstr("max_hold"));
}

TEST_F(HandoffCoordinatorTest, PartitionCountChangeForces) {
  ASSERT_TRUE(Round());
  ASSERT_EQ(Handoff1().state(), v1::HANDOFF_DRAINING);
  offsets_->SetPartitionCount("in_a", 3);
  coordinator_->TEST_RefreshKafka();
  ASSERT_TRUE(Round());
  v1::Handoff h = Handoff1();
  EXPECT_EQ(h.state(), v1::HANDOFF_FORCED);
  EXPECT_THAT(h.end_reason(), HasSubstr("partition count of topic in_a changed from 2 to 3"));
}

TEST_F(HandoffCoordinatorTest, FailuresOfKafkaOrTheStoreAreRetriedNextRound) {
  store_.FailNext(FakeStore::kListClients, absl::UnavailableError("postgres down"));
  ASSERT_TRUE(Round());
  EXPECT_EQ(Handoff1().state(), v1::HANDOFF_SWITCHING);
  ASSERT_TRUE(Round());
  ASSERT_EQ(Handoff1().state(), v1::HANDOFF_DRAINING);

  offsets_->SetCommitted("g_in_a", "in_a", {5, 5});
  offsets_->FailNext(FakeOffsetReader::kCommittedOffsets, absl::UnavailableError("broker"));
  const int64_t version = store_.version();
  ASSERT_TRUE(Round());
  EXPECT_EQ(store_.version(), version);
  EXPECT_EQ(Handoff1().drain_index(), 0);
  ASSERT_TRUE(Round());
  EXPECT_EQ(Handoff1().drain_index(), 1);
  EXPECT_EQ(offsets_->calls(FakeOffsetReader::kCommittedOffsets), 2);
}

TEST_F(HandoffCoordinatorTest, StaleLeaderEpochStopsIt) {
  store_.SetLeaderEpoch(kEpoch + 1);  // another replica took over
  const int64_t writes = store_.calls(FakeStore::kWrite);
  EXPECT_FALSE(Round());
  EXPECT_EQ(store_.calls(FakeStore::kWrite), writes + 1);
  EXPECT_EQ(Handoff1().state(), v1::HANDOFF_SWITCHING);
  EXPECT_EQ(store_.version(), 2);
}

}  // namespace
}  // namespace unit_test
}  // namespace bucketmap
