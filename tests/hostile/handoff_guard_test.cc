// The open-handoff guard against an admin who tries to get around it
// (defect D9 of issue 17), on a real server (in-process), a throwaway
// PostgreSQL and librdkafka's mock Kafka cluster. Each test keeps a handoff
// open by leaving its source's consumer group behind, then tries every
// path that could move a team of that handoff without draining it: an
// unassign to unroutable, an assignment back from there, a bulk write, and
// bucket changes that would send teams back to the handoff's source. Each
// refusal must be FAILED_PRECONDITION naming the team (or pool) and the
// handoff, must store nothing, and must leave the handoff and the team's
// route as they were.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/outbox/embedded_kafka.h"
#include "tests/handoff/handoff_test_util.h"
#include "tests/handoff/kafka_test_util.h"
#include "tests/server/server_fixture.h"

namespace bucketmap {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;

class HandoffGuardTest : public ServerFixture {
 protected:
  void SetUp() override {
    auto kafka = EmbeddedKafka::Start(1);
    ASSERT_TRUE(kafka.ok()) << kafka.status();
    kafka_ = *std::move(kafka);
    for (const char* t : {"in_src", "in_dst", "in_third", "in_a", "in_b"}) {
      ASSERT_TRUE(kafka_->CreateTopic(t, 2).ok());
    }
    ServerFixture::SetUp();
  }
  void TearDown() override {
    ServerFixture::TearDown();
    kafka_.reset();
  }

  // As the handoff server tests: handoffs on, no cooldown (so that only the
  // open-handoff guard can refuse), a short client lease so the barrier of
  // a handoff without producers passes within a second.
  ServerOptions Options() override {
    ServerOptions options = ServerFixture::Options();
    options.outbox.kafka_brokers = kafka_->bootstraps();
    options.outbox.poll_interval = absl::Milliseconds(100);
    options.outbox.topic_check_timeout = absl::Seconds(5);
    options.outbox.shutdown_flush_timeout = absl::Seconds(1);
    options.handoff.enabled = true;
    options.handoff.grace = absl::Seconds(2);
    options.handoff.max_hold = absl::Minutes(5);
    options.handoff.move_cooldown = absl::ZeroDuration();
    options.handoff.poll_interval = absl::Milliseconds(100);
    options.handoff.kafka_refresh_interval = absl::Milliseconds(300);
    options.watch.client_flush = absl::Milliseconds(100);
    options.watch.client_lease = absl::Seconds(1);
    options.watch.ack_timeout = absl::Seconds(60);
    return options;
  }

  // A bucket with one role, ingestion -> in_<name>, consumed by g_<name>.
  // Waits for any handoff its creation opened to end (nothing has been
  // produced yet, so it completes once the barrier passes).
  int32_t Bucket(const std::string& name, const std::string& pool) {
    v1::CreateBucketRequest req;
    req.mutable_bucket()->set_name(name);
    req.mutable_bucket()->set_pool(pool);
    (*req.mutable_bucket()->mutable_topics())["ingestion"] = "in_" + name;
    (*req.mutable_bucket()->mutable_consumer_groups())["ingestion"] = "g_" + name;
    req.set_reason("test setup");
    v1::CreateBucketResponse resp;
    grpc::Status s = admin_->CreateBucket(Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    for (const v1::Handoff& h : resp.effect().handoffs()) {
      WaitForHandoff(admin_.get(), h.id(), Ended);
    }
    return resp.bucket().id();
  }

  grpc::Status Assign(int64_t team, int32_t bucket, bool force = false, bool ordered = true,
                      v1::AssignTeamResponse* out = nullptr) {
    v1::AssignTeamRequest req;
    req.set_team_id(team);
    req.set_bucket_id(bucket);
    req.set_reason("hostile test");
    req.set_force(force);
    if (!ordered) req.set_ordered(false);
    v1::AssignTeamResponse local;
    return admin_->AssignTeam(Ctx().get(), req, out != nullptr ? out : &local);
  }

  grpc::Status Unassign(int64_t team, bool force = false, bool ordered = true,
                        bool dry_run = false) {
    v1::UnassignTeamRequest req;
    req.set_team_id(team);
    req.set_reason("hostile test");
    req.set_force(force);
    if (!ordered) req.set_ordered(false);
    req.set_dry_run(dry_run);
    v1::UnassignTeamResponse resp;
    return admin_->UnassignTeam(Ctx().get(), req, &resp);
  }

  grpc::Status UpdateBucket(int32_t id, const std::string& path, const v1::Bucket& values,
                            bool force = false, v1::UpdateBucketResponse* out = nullptr) {
    v1::UpdateBucketRequest req;
    *req.mutable_bucket() = values;
    req.mutable_bucket()->set_id(id);
    req.mutable_update_mask()->add_paths(path);
    req.set_reason("hostile test");
    req.set_force(force);
    v1::UpdateBucketResponse local;
    return admin_->UpdateBucket(Ctx().get(), req, out != nullptr ? out : &local);
  }

  grpc::Status GetTeam(int64_t team, v1::TeamRoute* route) {
    v1::GetTeamRequest req;
    req.set_team_id(team);
    return mapping_->GetTeam(Ctx().get(), req, route);
  }

  std::vector<v1::Handoff> HandoffsOfTeam(int64_t team) {
    v1::ListHandoffsRequest req;
    req.set_team_id(team);
    v1::ListHandoffsResponse resp;
    grpc::Status s = admin_->ListHandoffs(Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return {resp.handoffs().begin(), resp.handoffs().end()};
  }

  grpc::Status Cancel(int64_t id) {
    v1::CancelHandoffRequest req;
    req.set_handoff_id(id);
    req.set_reason("operator ends it before the undo");
    v1::CancelHandoffResponse resp;
    return admin_->CancelHandoff(Ctx().get(), req, &resp);
  }

  // Asserts `s` is the open-handoff refusal naming `who` and handoff `id`.
  static void ExpectRefused(const grpc::Status& s, const std::string& who, int64_t id,
                            const std::string& what) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << what;
    EXPECT_THAT(s.error_message(), AllOf(HasSubstr(who), HasSubstr(absl::StrCat("handoff ", id))))
        << what;
  }

  // The coordinator writes handoff `id`'s switch (SWITCHING -> DRAINING) as
  // a version of its own: waiting for it lets a test compare versions
  // against its own writes only. The handoff then stays DRAINING while its
  // source has something unconsumed.
  void Switched(int64_t id) { WaitForHandoff(admin_.get(), id, InState(v1::HANDOFF_DRAINING)); }

  std::unique_ptr<EmbeddedKafka> kafka_;
};

// Buckets src and dst in pool p, and no bucket in the default pool.
class D9Test : public HandoffGuardTest {
 protected:
  void SetUp() override {
    HandoffGuardTest::SetUp();
    src_ = Bucket("src", "p");
    dst_ = Bucket("dst", "p");
    // Something to drain on src: its handoffs stay open until g_src
    // commits.
    Produce(kafka_->bootstraps(), "in_src", 2, 3);
  }

  // Pins `team` to src, then moves it to dst; returns the handoff's id.
  int64_t PinThenMove(int64_t team) {
    v1::AssignTeamResponse pinned;
    EXPECT_TRUE(Assign(team, src_, false, true, &pinned).ok());
    EXPECT_EQ(pinned.effect().handoffs_size(), 0) << "from unroutable: nothing to hand off";
    v1::AssignTeamResponse moved;
    grpc::Status s = Assign(team, dst_, false, true, &moved);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (moved.effect().handoffs_size() != 1) {
      ADD_FAILURE() << "the move opened " << moved.effect().handoffs_size() << " handoffs";
      return 0;
    }
    EXPECT_EQ(moved.effect().handoffs(0).source_bucket_id(), src_);
    const int64_t id = moved.effect().handoffs(0).id();
    Switched(id);
    return id;
  }

  // The handoff is open, lists `team`, and GetTeam routes it to dst.
  void ExpectStillInHandoff(int64_t team, int64_t id) {
    std::vector<v1::Handoff> listed = HandoffsOfTeam(team);
    ASSERT_EQ(listed.size(), 1u);
    EXPECT_EQ(listed[0].id(), id);
    EXPECT_FALSE(Ended(listed[0]));
    EXPECT_THAT(listed[0].team_ids(), Contains(team));
    v1::TeamRoute route;
    grpc::Status s = GetTeam(team, &route);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(route.bucket_id(), dst_);
    EXPECT_EQ(route.handoff().id(), id);
  }

  int32_t src_ = 0;
  int32_t dst_ = 0;
};

// The exact D9 reproduction: unassign (to unroutable) and assign back to
// src were both accepted while src -> dst was open.
TEST_F(D9Test, UnassignAndAssignBackAreRefusedWhileTheHandoffIsOpen) {
  v1::TeamRoute route;
  EXPECT_EQ(GetTeam(7, &route).error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << "no default pool: team 7 starts unroutable";
  const int64_t id = PinThenMove(7);
  ASSERT_NE(id, 0);
  const int64_t version = Version();

  ExpectRefused(Unassign(7), "team 7", id, "unassign");
  ExpectRefused(Unassign(7, /*force=*/true), "team 7", id, "unassign with force");
  ExpectRefused(Unassign(7, false, /*ordered=*/false), "team 7", id, "unassign unordered");
  ExpectRefused(Unassign(7, false, true, /*dry_run=*/true), "team 7", id, "unassign dry run");
  ExpectRefused(Assign(7, src_), "team 7", id, "assign back to src");
  ExpectRefused(Assign(7, src_, /*force=*/true), "team 7", id, "assign back with force");
  EXPECT_EQ(Version(), version) << "a refused write stored nothing";
  ExpectStillInHandoff(7, id);

  // Once src's consumers catch up the handoff completes, and the same
  // writes go through; moves to and from unroutable open no handoff.
  Commit(kafka_->bootstraps(), "g_src", "in_src", 2, 3);
  WaitForHandoff(admin_.get(), id, InState(v1::HANDOFF_COMPLETED));
  ASSERT_TRUE(Unassign(7).ok());
  EXPECT_EQ(GetTeam(7, &route).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  v1::AssignTeamResponse back;
  ASSERT_TRUE(Assign(7, src_, false, true, &back).ok());
  EXPECT_EQ(back.effect().handoffs_size(), 0);
}

TEST_F(D9Test, BulkAssignRefusesAnyEntryThatMovesATeamOfTheOpenHandoff) {
  const int64_t id = PinThenMove(7);
  ASSERT_NE(id, 0);
  const int64_t version = Version();
  auto bulk = [&](bool unassign_7) {
    v1::BulkAssignRequest req;
    req.set_reason("hostile test");
    v1::BulkAssignment* seven = req.add_assignments();
    seven->set_team_id(7);
    if (unassign_7) {
      seven->set_unassign(true);
    } else {
      seven->set_bucket_id(src_);
    }
    v1::BulkAssignment* eight = req.add_assignments();
    eight->set_team_id(8);
    eight->set_bucket_id(src_);
    v1::BulkAssignResponse resp;
    return admin_->BulkAssign(Ctx().get(), req, &resp);
  };
  ExpectRefused(bulk(/*unassign_7=*/true), "team 7", id, "bulk unassign entry");
  ExpectRefused(bulk(/*unassign_7=*/false), "team 7", id, "bulk assignment back to src");
  // Neither batch stored anything, team 8 included.
  EXPECT_EQ(Version(), version);
  v1::TeamRoute route;
  EXPECT_EQ(GetTeam(8, &route).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  ExpectStillInHandoff(7, id);
}

// Pool p = {src, dst} with teams 1..40 assigned to it; raising dst's
// weight moves some of them src -> dst (one handoff, listing them).
TEST_F(D9Test, BucketChangesThatSendListedTeamsBackToTheSourceAreRefused) {
  v1::BulkAssignRequest assign;
  assign.set_reason("test setup");
  for (int64_t t = 1; t <= 40; ++t) {
    v1::BulkAssignment* a = assign.add_assignments();
    a->set_team_id(t);
    a->set_pool("p");
  }
  v1::BulkAssignResponse assigned;
  ASSERT_TRUE(admin_->BulkAssign(Ctx().get(), assign, &assigned).ok());
  v1::Bucket heavier;
  heavier.set_weight(1000);
  v1::UpdateBucketResponse moved;
  ASSERT_TRUE(UpdateBucket(dst_, "weight", heavier, false, &moved).ok());
  ASSERT_EQ(moved.effect().handoffs_size(), 1);
  const v1::Handoff& opened = moved.effect().handoffs(0);
  ASSERT_EQ(opened.source_bucket_id(), src_);
  ASSERT_GT(opened.team_ids_size(), 0);
  const int64_t id = opened.id();
  const int64_t team = opened.team_ids(0);
  const std::string who = absl::StrCat("team ", team);
  Switched(id);
  const int64_t version = Version();

  // DRAINING dst, dst back to its weight, dst out of the pool: each sends
  // the moved teams back to src. force does not help.
  v1::Bucket draining;
  draining.set_state(v1::DRAINING);
  grpc::Status s = UpdateBucket(dst_, "state", draining);
  ExpectRefused(s, who, id, "DRAINING dst");
  EXPECT_THAT(s.error_message(), AllOf(HasSubstr("back to bucket"), HasSubstr("cancel")));
  ExpectRefused(UpdateBucket(dst_, "state", draining, /*force=*/true), who, id, "forced");
  v1::Bucket lighter;
  lighter.set_weight(100);
  ExpectRefused(UpdateBucket(dst_, "weight", lighter), who, id, "weight back");
  v1::Bucket elsewhere;
  elsewhere.set_pool("q");
  ExpectRefused(UpdateBucket(dst_, "pool", elsewhere), who, id, "dst leaves pool p");
  EXPECT_EQ(Version(), version);
  v1::TeamRoute route;
  ASSERT_TRUE(GetTeam(team, &route).ok());
  EXPECT_EQ(route.bucket_id(), dst_);
  EXPECT_EQ(route.handoff().id(), id);

  // A chain is still allowed: a third bucket joins p and takes teams from
  // both (dst -> third while src -> dst is open).
  v1::CreateBucketRequest third;
  third.mutable_bucket()->set_name("third");
  third.mutable_bucket()->set_pool("p");
  third.mutable_bucket()->set_weight(1000);
  (*third.mutable_bucket()->mutable_topics())["ingestion"] = "in_third";
  third.set_reason("chain");
  v1::CreateBucketResponse created;
  s = admin_->CreateBucket(Ctx().get(), third, &created);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_GE(created.effect().handoffs_size(), 1);

  // Cancelled, the handoff no longer stands in the way of the drain.
  ASSERT_TRUE(Cancel(id).ok());
  s = UpdateBucket(dst_, "state", draining);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

// Default-placed teams, known only by their slots: draining bucket b moves
// its teams to a; the undo (DRAINING -> ACTIVE) would send them back while
// that handoff is open. Cancel first, then undo.
TEST_F(HandoffGuardTest, UndoOfADrainWhileItsHandoffIsOpenIsRefusedUntilCancelled) {
  Bucket("a", "default");
  const int32_t b = Bucket("b", "default");
  Produce(kafka_->bootstraps(), "in_b", 2, 2);
  v1::Bucket draining;
  draining.set_state(v1::DRAINING);
  v1::UpdateBucketResponse drained;
  ASSERT_TRUE(UpdateBucket(b, "state", draining, false, &drained).ok());
  ASSERT_EQ(drained.effect().handoffs_size(), 1);
  const int64_t id = drained.effect().handoffs(0).id();
  EXPECT_EQ(drained.effect().handoffs(0).source_bucket_id(), b);
  Switched(id);
  const int64_t version = Version();

  v1::Bucket active;
  active.set_state(v1::ACTIVE);
  grpc::Status s = UpdateBucket(b, "state", active);
  ExpectRefused(s, "pool \"default\"", id, "undo of the drain");
  EXPECT_THAT(s.error_message(),
              AllOf(HasSubstr(absl::StrCat("back to bucket ", b)), HasSubstr("cancel")));
  ExpectRefused(UpdateBucket(b, "state", active, /*force=*/true), "pool \"default\"", id,
                "forced undo");
  EXPECT_EQ(Version(), version);
  std::optional<v1::Handoff> still = FindHandoff(admin_.get(), id);
  ASSERT_TRUE(still.has_value());
  EXPECT_FALSE(Ended(*still));

  ASSERT_TRUE(Cancel(id).ok());
  s = UpdateBucket(b, "state", active);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

}  // namespace
}  // namespace bucketmap
