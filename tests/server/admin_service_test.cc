// End-to-end tests of AdminService and MappingService over gRPC, against a
// real PostgreSQL.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/metric_family.h"
#include "tests/server/server_fixture.h"

namespace bucketmap {
namespace {

using ::testing::HasSubstr;

class AdminServiceTest : public ServerFixture {};

TEST_F(AdminServiceTest, CreateBucketFillsDefaultsAndBumpsVersion) {
  EXPECT_EQ(Version(), 0);
  v1::CreateBucketRequest req;
  req.mutable_bucket()->set_name("b1");
  (*req.mutable_bucket()->mutable_topics())["ingestion"] = "events_plugin_ingestion_1";
  (*req.mutable_bucket()->mutable_consumer_groups())["ingestion"] = "ingestion-1";
  req.mutable_bucket()->add_drain_order("ingestion");
  req.set_reason("first bucket");
  v1::CreateBucketResponse resp;
  ASSERT_TRUE(admin_->CreateBucket(Ctx().get(), req, &resp).ok());
  EXPECT_EQ(resp.version(), 1);
  EXPECT_EQ(resp.bucket().id(), 1);
  EXPECT_EQ(resp.bucket().state(), v1::ACTIVE);
  EXPECT_EQ(resp.bucket().weight(), 100);
  EXPECT_EQ(resp.bucket().pool(), "default");
  EXPECT_EQ(resp.bucket().created_version(), 1);
  EXPECT_TRUE(resp.effect().changed());

  v1::ListBucketsResponse list;
  ASSERT_TRUE(admin_->ListBuckets(Ctx().get(), v1::ListBucketsRequest(), &list).ok());
  ASSERT_EQ(list.buckets_size(), 1);
  EXPECT_EQ(list.buckets(0).name(), "b1");
  EXPECT_EQ(list.buckets(0).topics().at("ingestion"), "events_plugin_ingestion_1");
  EXPECT_EQ(list.version(), 1);

  // Ids are never reused, and names are unique.
  EXPECT_EQ(MakeBucket("b2"), 2);
  v1::CreateBucketResponse dup;
  grpc::Status s = admin_->CreateBucket(Ctx().get(), req, &dup);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
  EXPECT_EQ(Version(), 2);
}

TEST_F(AdminServiceTest, BadInputIsRejectedWithTheFieldNamedAndChangesNothing) {
  MakeBucket("b1");
  const int64_t before = Version();
  struct Case {
    std::function<void(v1::CreateBucketRequest*)> mutate;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](auto* r) { r->mutable_bucket()->set_name("Bad Name"); }, "bucket.name"},
      {[](auto* r) { r->mutable_bucket()->set_name(""); }, "bucket.name"},
      {[](auto* r) { (*r->mutable_bucket()->mutable_topics())["ingestion"] = "a topic"; },
       "bucket.topics"},
      {[](auto* r) { (*r->mutable_bucket()->mutable_topics())["ingestion"] = ".."; },
       "bucket.topics"},
      {[](auto* r) { r->mutable_bucket()->set_weight(1001); }, "bucket.weight"},
      {[](auto* r) { r->mutable_bucket()->set_weight(-1); }, "bucket.weight"},
      {[](auto* r) { r->mutable_bucket()->set_id(7); }, "bucket.id"},
      {[](auto* r) { r->mutable_bucket()->set_pool("No Pool"); }, "bucket.pool"},
      {[](auto* r) { r->mutable_bucket()->set_state(v1::RETIRED); }, "bucket.state"},
      {[](auto* r) { r->mutable_bucket()->add_drain_order("missing-role"); }, "bucket.drain_order"},
      {[](auto* r) { r->set_reason(""); }, "reason"},
      {[](auto* r) { r->set_reason(std::string(1025, 'x')); }, "reason"},
      {[](auto* r) { r->set_expected_version(-3); }, "expected_version"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    v1::CreateBucketRequest req;
    req.mutable_bucket()->set_name("b9");
    (*req.mutable_bucket()->mutable_topics())["ingestion"] = "events_b9";
    req.set_reason("bad input test");
    cases[i].mutate(&req);
    v1::CreateBucketResponse resp;
    grpc::Status s = admin_->CreateBucket(Ctx().get(), req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << "case " << i;
    EXPECT_THAT(s.error_message(), HasSubstr(cases[i].field)) << "case " << i;
  }

  v1::AssignTeamRequest assign;
  assign.set_team_id(0);
  assign.set_bucket_id(1);
  assign.set_reason("r");
  v1::AssignTeamResponse assign_resp;
  grpc::Status s = admin_->AssignTeam(Ctx().get(), assign, &assign_resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("team_id"));
  assign.set_team_id(5);
  assign.clear_target();
  s = admin_->AssignTeam(Ctx().get(), assign, &assign_resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("target"));

  v1::UpdateBucketRequest update;
  update.mutable_bucket()->set_id(1);
  update.mutable_update_mask()->add_paths("name");
  update.set_reason("r");
  v1::UpdateBucketResponse update_resp;
  s = admin_->UpdateBucket(Ctx().get(), update, &update_resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("update_mask.paths"));

  v1::ListAssignmentsRequest list;
  list.set_page_size(100000);
  v1::ListAssignmentsResponse list_resp;
  s = admin_->ListAssignments(Ctx().get(), list, &list_resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("page_size"));

  EXPECT_EQ(Version(), before);
}

// The writes taken by group commits so far (bucketmap_write_group_size:
// its sample count, the groups, and sum, the writes).
std::pair<uint64_t, double> WriteGroups(BucketmapServer& server) {
  for (const prometheus::MetricFamily& family : server.metrics().registry().Collect()) {
    if (family.name != "bucketmap_write_group_size" || family.metric.empty()) continue;
    return {family.metric[0].histogram.sample_count, family.metric[0].histogram.sample_sum};
  }
  ADD_FAILURE() << "no bucketmap_write_group_size";
  return {0, 0};
}

// Concurrent writers through the server (group commit): each write gets
// its own version, gapless over all of them and increasing for each
// writer; each request_id replays its own write; every write is in the
// change log once.
TEST_F(AdminServiceTest, ConcurrentWritersEachGetTheirOwnVersion) {
  const int32_t b1 = MakeBucket("b1");
  const int64_t before = Version();
  const auto [groups_before, writes_before] = WriteGroups(*server_);
  constexpr int kClients = 8;
  constexpr int kWrites = 25;
  std::vector<std::vector<int64_t>> versions(kClients);
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      for (int i = 0; i < kWrites; ++i) {
        v1::AssignTeamRequest req;
        req.set_team_id(1000 * (c + 1) + i);
        req.set_bucket_id(b1);
        req.set_reason("concurrent");
        if (i % 2 == 0) req.set_request_id(absl::StrCat("c", c, "-", i));
        v1::AssignTeamResponse resp;
        grpc::Status s = admin_->AssignTeam(Ctx().get(), req, &resp);
        ASSERT_TRUE(s.ok()) << s.error_message();
        EXPECT_FALSE(resp.effect().replayed());
        versions[c].push_back(resp.version());
        if (i % 2 == 0) {
          v1::AssignTeamResponse replay;
          ASSERT_TRUE(admin_->AssignTeam(Ctx().get(), req, &replay).ok());
          EXPECT_TRUE(replay.effect().replayed());
          EXPECT_EQ(replay.version(), resp.version());
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();

  std::vector<int64_t> all;
  for (const std::vector<int64_t>& mine : versions) {
    EXPECT_TRUE(std::is_sorted(mine.begin(), mine.end()));
    all.insert(all.end(), mine.begin(), mine.end());
  }
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), static_cast<size_t>(kClients * kWrites));
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], before + 1 + static_cast<int64_t>(i));
  EXPECT_EQ(Version(), before + kClients * kWrites);
  v1::GetHistoryRequest history;
  history.set_from_version(before + 1);
  history.set_page_size(1000);
  v1::GetHistoryResponse page;
  ASSERT_TRUE(admin_->GetHistory(Ctx().get(), history, &page).ok());
  EXPECT_EQ(page.records_size(), kClients * kWrites);

  // Every write and replay went through a group; how many shared one
  // depends on timing.
  const auto [groups_after, writes_after] = WriteGroups(*server_);
  const int replays = kClients * ((kWrites + 1) / 2);
  EXPECT_EQ(writes_after - writes_before, kClients * kWrites + replays);
  EXPECT_LE(groups_after - groups_before, static_cast<uint64_t>(kClients * kWrites + replays));
  std::printf("%d writes and replays in %lu groups\n", kClients * kWrites + replays,
              static_cast<unsigned long>(groups_after - groups_before));
}

TEST_F(AdminServiceTest, AssignPinPoolAndDefaultRoutes) {
  // A fresh install has no bucket: the default pool is unroutable.
  v1::GetTeamRequest get;
  get.set_team_id(42);
  v1::TeamRoute route;
  grpc::Status s = mapping_->GetTeam(Ctx().get(), get, &route);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("\"default\""));

  const int32_t b1 = MakeBucket("b1");
  const int32_t b2 = MakeBucket("b2");
  const int32_t e1 = MakeBucket("e1", "enterprise");
  ASSERT_TRUE(mapping_->GetTeam(Ctx().get(), get, &route).ok());
  EXPECT_EQ(route.source(), "default");
  EXPECT_TRUE(route.bucket_id() == b1 || route.bucket_id() == b2);
  EXPECT_EQ(route.version(), 3);
  EXPECT_FALSE(route.topics().empty());

  v1::AssignTeamResponse pinned;
  ASSERT_TRUE(Pin(42, b2, &pinned).ok());
  EXPECT_EQ(pinned.version(), 4);
  EXPECT_EQ(pinned.bucket_id(), b2);
  EXPECT_EQ(pinned.source(), "pin");
  EXPECT_EQ(pinned.previous_source(), "default");
  ASSERT_TRUE(mapping_->GetTeam(Ctx().get(), get, &route).ok());
  EXPECT_EQ(route.bucket_id(), b2);
  EXPECT_EQ(route.source(), "pin");
  EXPECT_EQ(route.topics().at("ingestion"), "events_b2");

  v1::AssignTeamRequest to_pool;
  to_pool.set_team_id(42);
  to_pool.set_pool("enterprise");
  to_pool.set_reason("vip");
  v1::AssignTeamResponse pooled;
  ASSERT_TRUE(admin_->AssignTeam(Ctx().get(), to_pool, &pooled).ok());
  EXPECT_EQ(pooled.bucket_id(), e1);
  EXPECT_EQ(pooled.source(), "pool:enterprise");
  EXPECT_EQ(pooled.previous_bucket_id(), b2);

  // A pool without a placeable bucket cannot take teams.
  to_pool.set_pool("free");
  s = admin_->AssignTeam(Ctx().get(), to_pool, &pooled);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("free"));
  // Pins to missing buckets are NOT_FOUND.
  s = Pin(43, 99);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);

  v1::UnassignTeamRequest unassign;
  unassign.set_team_id(42);
  unassign.set_reason("back to default");
  v1::UnassignTeamResponse unassigned;
  ASSERT_TRUE(admin_->UnassignTeam(Ctx().get(), unassign, &unassigned).ok());
  EXPECT_EQ(unassigned.source(), "default");
  EXPECT_EQ(unassigned.previous_source(), "pool:enterprise");
  // Again: the team has no override left, so it is a no-op (issue 17:
  // one rule for UnassignTeam and BulkAssign's unassign).
  const int64_t before_again = unassigned.version();
  s = admin_->UnassignTeam(Ctx().get(), unassign, &unassigned);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(unassigned.effect().changed());
  EXPECT_EQ(unassigned.version(), before_again);
}

TEST_F(AdminServiceTest, BucketStateMachineAndPoolInvariants) {
  const int32_t b1 = MakeBucket("b1");
  auto update = [&](int32_t id, v1::BucketState state) {
    v1::UpdateBucketRequest req;
    req.mutable_bucket()->set_id(id);
    req.mutable_bucket()->set_state(state);
    req.mutable_update_mask()->add_paths("state");
    req.set_reason("state change");
    v1::UpdateBucketResponse resp;
    return admin_->UpdateBucket(Ctx().get(), req, &resp);
  };
  // The last placeable bucket of "default" cannot leave placement.
  grpc::Status s = update(b1, v1::DRAINING);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("default"));
  EXPECT_TRUE(update(b1, v1::PAUSED).ok());
  EXPECT_TRUE(update(b1, v1::ACTIVE).ok());

  const int32_t b2 = MakeBucket("b2");
  ASSERT_TRUE(Pin(7, b2).ok());
  EXPECT_TRUE(update(b2, v1::DRAINING).ok());
  // No new pins to a DRAINING bucket.
  s = Pin(8, b2);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  // Retiring needs the pins gone.
  s = update(b2, v1::RETIRED);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  ASSERT_TRUE(Pin(7, b1).ok());
  EXPECT_TRUE(update(b2, v1::RETIRED).ok());
  // RETIRED is terminal.
  s = update(b2, v1::ACTIVE);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  // Topics are immutable while the bucket holds teams.
  v1::UpdateBucketRequest topics;
  topics.mutable_bucket()->set_id(b1);
  (*topics.mutable_bucket()->mutable_topics())["ingestion"] = "renamed";
  topics.mutable_update_mask()->add_paths("topics");
  topics.set_reason("rename");
  v1::UpdateBucketResponse resp;
  s = admin_->UpdateBucket(Ctx().get(), topics, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  // A weight change is a placement change; by name works too.
  v1::UpdateBucketRequest weight;
  weight.mutable_bucket()->set_name("b1");
  weight.mutable_bucket()->set_weight(300);
  weight.mutable_update_mask()->add_paths("weight");
  weight.set_reason("heavier");
  ASSERT_TRUE(admin_->UpdateBucket(Ctx().get(), weight, &resp).ok());
  EXPECT_EQ(resp.bucket().weight(), 300);
  EXPECT_EQ(resp.bucket().updated_version(), resp.version());
}

TEST_F(AdminServiceTest, ExpectedVersionConflictIsAbortedAndWritesNothing) {
  const int32_t b1 = MakeBucket("b1");
  v1::AssignTeamRequest req;
  req.set_team_id(1);
  req.set_bucket_id(b1);
  req.set_reason("cas");
  req.set_expected_version(99);
  v1::AssignTeamResponse resp;
  grpc::Status s = admin_->AssignTeam(Ctx().get(), req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ABORTED) << s.error_message();
  EXPECT_EQ(Version(), 1);
  req.set_expected_version(1);
  ASSERT_TRUE(admin_->AssignTeam(Ctx().get(), req, &resp).ok());
  EXPECT_EQ(resp.version(), 2);
}

TEST_F(AdminServiceTest, RequestIdReplayReturnsFirstResultAndReuseIsRejected) {
  const int32_t b1 = MakeBucket("b1");
  const int32_t b2 = MakeBucket("b2");
  v1::AssignTeamRequest req;
  req.set_team_id(5);
  req.set_bucket_id(b1);
  req.set_reason("idempotent");
  req.set_request_id("req-1");
  v1::AssignTeamResponse first;
  ASSERT_TRUE(admin_->AssignTeam(Ctx().get(), req, &first).ok());
  EXPECT_FALSE(first.effect().replayed());
  ASSERT_TRUE(Pin(5, b2).ok());  // the state moves on
  const int64_t version = Version();

  v1::AssignTeamResponse replay;
  ASSERT_TRUE(admin_->AssignTeam(Ctx().get(), req, &replay).ok());
  EXPECT_TRUE(replay.effect().replayed());
  EXPECT_EQ(replay.version(), first.version());
  EXPECT_EQ(replay.bucket_id(), b1);
  EXPECT_EQ(Version(), version);

  req.set_bucket_id(b2);
  grpc::Status s = admin_->AssignTeam(Ctx().get(), req, &replay);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("request_id"));

  // A failed attempt is not remembered: the id stays free.
  v1::AssignTeamRequest failing;
  failing.set_team_id(6);
  failing.set_bucket_id(99);
  failing.set_reason("fails");
  failing.set_request_id("req-2");
  EXPECT_EQ(admin_->AssignTeam(Ctx().get(), failing, &replay).error_code(),
            grpc::StatusCode::NOT_FOUND);
  failing.set_bucket_id(b1);
  ASSERT_TRUE(admin_->AssignTeam(Ctx().get(), failing, &replay).ok());
  EXPECT_FALSE(replay.effect().replayed());
}

// A server whose store, for the first write with request_id "late", sleeps
// past the write's deadline just before COMMIT (TEST_before_commit): every
// statement has run and the version row is held; only COMMIT remains.
class LateCommitServerTest : public ServerFixture {
 protected:
  PgStoreOptions StoreOptions() override {
    PgStoreOptions options = ServerFixture::StoreOptions();
    options.TEST_before_commit = [this](const WriteContext& ctx, absl::Time deadline) {
      if (ctx.request_id != "late" || late_left_.fetch_sub(1) <= 0) return;
      absl::SleepFor(deadline - absl::Now() + absl::Milliseconds(1));
    };
    return options;
  }

  // The records of GetHistory with `request_id`.
  int HistoryRows(const std::string& request_id) {
    v1::GetHistoryRequest req;
    req.set_page_size(1000);
    v1::GetHistoryResponse resp;
    grpc::Status s = admin_->GetHistory(Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    int rows = 0;
    for (const v1::ChangeRecord& r : resp.records()) rows += r.request_id() == request_id ? 1 : 0;
    return rows;
  }

  std::atomic<int> late_left_{1};
};

TEST_F(LateCommitServerTest, WriteWhoseDeadlinePassesBeforeCommitIsRolledBackAndItsRetryWrites) {
  const int32_t b1 = MakeBucket("b1");
  ASSERT_TRUE(Pin(1, b1).ok());
  const int64_t before = Version();
  v1::AssignTeamRequest req;
  req.set_team_id(5);
  req.set_bucket_id(b1);
  req.set_reason("late commit");
  req.set_request_id("late");
  v1::AssignTeamResponse resp;
  grpc::Status s = admin_->AssignTeam(Ctx(absl::Seconds(1)).get(), req, &resp);
  EXPECT_THAT(s.error_code(),
              ::testing::AnyOf(grpc::StatusCode::DEADLINE_EXCEEDED, grpc::StatusCode::UNAVAILABLE))
      << s.error_message();
  // Writes of one replica are serialised: once this no-op (team 1 has that
  // pin already) returns, the late write has ended.
  ASSERT_TRUE(Pin(1, b1).ok());
  EXPECT_EQ(late_left_.load(), 0) << "the late write did not reach the hook";
  EXPECT_EQ(Version(), before);
  EXPECT_EQ(HistoryRows("late"), 0);
  v1::GetHistoryRequest by_team;
  by_team.set_team_id(5);
  v1::GetHistoryResponse team_history;
  ASSERT_TRUE(admin_->GetHistory(Ctx().get(), by_team, &team_history).ok());
  EXPECT_EQ(team_history.records_size(), 0);

  // The caller retries with the same request_id: the write happens, once.
  ASSERT_TRUE(admin_->AssignTeam(Ctx().get(), req, &resp).ok());
  EXPECT_FALSE(resp.effect().replayed());
  EXPECT_EQ(resp.version(), before + 1);
  v1::AssignTeamResponse replay;
  ASSERT_TRUE(admin_->AssignTeam(Ctx().get(), req, &replay).ok());
  EXPECT_TRUE(replay.effect().replayed());
  EXPECT_EQ(replay.version(), before + 1);
  EXPECT_EQ(Version(), before + 1);
  EXPECT_EQ(HistoryRows("late"), 1);
}

TEST_F(AdminServiceTest, DryRunReportsMovesAndCommitsNothing) {
  const int32_t b1 = MakeBucket("b1");
  MakeBucket("b2");
  v1::BulkAssignRequest bulk;
  for (int team = 1; team <= 50; ++team) {
    v1::BulkAssignment* a = bulk.add_assignments();
    a->set_team_id(team);
    a->set_pool("default");
  }
  bulk.set_reason("pool everyone");
  v1::BulkAssignResponse bulk_resp;
  ASSERT_TRUE(admin_->BulkAssign(Ctx().get(), bulk, &bulk_resp).ok());
  const int64_t version = Version();

  v1::UpdateBucketRequest drain;
  drain.mutable_bucket()->set_id(b1);
  drain.mutable_bucket()->set_state(v1::DRAINING);
  drain.mutable_update_mask()->add_paths("state");
  drain.set_reason("what if");
  drain.set_dry_run(true);
  v1::UpdateBucketResponse resp;
  ASSERT_TRUE(admin_->UpdateBucket(Ctx().get(), drain, &resp).ok());
  EXPECT_TRUE(resp.effect().dry_run());
  EXPECT_EQ(resp.bucket().state(), v1::DRAINING);
  EXPECT_GT(resp.effect().moved_team_count(), 0);
  for (const v1::TeamMove& move : resp.effect().moved_teams()) {
    EXPECT_EQ(move.from_bucket_id(), b1);
  }
  ASSERT_EQ(resp.effect().pool_shifts_size(), 1);
  EXPECT_EQ(resp.effect().pool_shifts(0).pool(), "default");
  EXPECT_NEAR(resp.effect().pool_shifts(0).share_moved(), 0.5, 0.05);
  EXPECT_EQ(Version(), version);

  v1::ListBucketsResponse list;
  ASSERT_TRUE(admin_->ListBuckets(Ctx().get(), v1::ListBucketsRequest(), &list).ok());
  EXPECT_EQ(list.buckets(0).state(), v1::ACTIVE);
}

TEST_F(AdminServiceTest, BulkAssignIsAtomicAndOneVersion) {
  const int32_t b1 = MakeBucket("b1");
  v1::BulkAssignRequest bulk;
  bulk.set_reason("bulk");
  for (int team = 1; team <= 1000; ++team) {
    v1::BulkAssignment* a = bulk.add_assignments();
    a->set_team_id(team);
    a->set_bucket_id(b1);
  }
  bulk.add_assignments()->set_team_id(5000);
  bulk.mutable_assignments(1000)->set_bucket_id(77);  // missing bucket: all or nothing
  v1::BulkAssignResponse resp;
  grpc::Status s = admin_->BulkAssign(Ctx().get(), bulk, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  EXPECT_EQ(Version(), 1);

  bulk.mutable_assignments()->RemoveLast();
  ASSERT_TRUE(admin_->BulkAssign(Ctx().get(), bulk, &resp).ok());
  EXPECT_EQ(resp.version(), 2);
  EXPECT_EQ(resp.effect().assignments_changed(), 1000);

  // Duplicates are named.
  bulk.add_assignments()->set_team_id(1);
  bulk.mutable_assignments(1000)->set_unassign(true);
  s = admin_->BulkAssign(Ctx().get(), bulk, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("assignments[1000]"));

  v1::MappingSnapshot snap;
  ASSERT_TRUE(mapping_->GetMapping(Ctx().get(), v1::GetMappingRequest(), &snap).ok());
  EXPECT_EQ(snap.version(), 2);
  EXPECT_EQ(snap.assignments().team_ids_size(), 1000);
  EXPECT_EQ(snap.assignments().targets(999), b1);
  EXPECT_FALSE(snap.cluster_id().empty());
}

TEST_F(AdminServiceTest, ListAssignmentsPagesAndFilters) {
  const int32_t b1 = MakeBucket("b1");
  const int32_t b2 = MakeBucket("b2");
  v1::BulkAssignRequest bulk;
  bulk.set_reason("bulk");
  for (int team = 1; team <= 25; ++team) {
    v1::BulkAssignment* a = bulk.add_assignments();
    a->set_team_id(team);
    if (team % 5 == 0) {
      a->set_pool("default");
    } else {
      a->set_bucket_id(team % 2 == 0 ? b2 : b1);
    }
  }
  v1::BulkAssignResponse bulk_resp;
  ASSERT_TRUE(admin_->BulkAssign(Ctx().get(), bulk, &bulk_resp).ok());

  std::vector<int64_t> seen;
  v1::ListAssignmentsRequest req;
  req.set_page_size(7);
  for (int page = 0; page < 10; ++page) {
    v1::ListAssignmentsResponse resp;
    ASSERT_TRUE(admin_->ListAssignments(Ctx().get(), req, &resp).ok());
    for (const auto& a : resp.assignments()) seen.push_back(a.team_id());
    if (resp.next_page_token().empty()) break;
    req.set_page_token(resp.next_page_token());
  }
  ASSERT_EQ(seen.size(), 25u);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));

  v1::ListAssignmentsRequest by_bucket;
  by_bucket.set_bucket_id(b2);
  v1::ListAssignmentsResponse resp;
  ASSERT_TRUE(admin_->ListAssignments(Ctx().get(), by_bucket, &resp).ok());
  EXPECT_EQ(resp.assignments_size(), 10);  // even teams not divisible by 5
  for (const auto& a : resp.assignments()) EXPECT_EQ(a.bucket_id(), b2);
  EXPECT_TRUE(resp.next_page_token().empty());

  v1::ListAssignmentsRequest by_pool;
  by_pool.set_pool("default");
  ASSERT_TRUE(admin_->ListAssignments(Ctx().get(), by_pool, &resp).ok());
  EXPECT_EQ(resp.assignments_size(), 5);
  EXPECT_EQ(resp.assignments(0).pool(), "default");

  by_bucket.set_bucket_id(99);
  EXPECT_EQ(admin_->ListAssignments(Ctx().get(), by_bucket, &resp).error_code(),
            grpc::StatusCode::NOT_FOUND);
  req.set_page_token("garbage");
  grpc::Status s = admin_->ListAssignments(Ctx().get(), req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("page_token"));
}

TEST_F(AdminServiceTest, HistoryRecordsActorReasonAndPagesByTeamAndRange) {
  const int32_t b1 = MakeBucket("b1");
  const int32_t b2 = MakeBucket("b2");
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Pin(10, i % 2 == 0 ? b1 : b2).ok());
  ASSERT_TRUE(Pin(11, b1).ok());

  v1::GetHistoryRequest by_team;
  by_team.set_team_id(10);
  by_team.set_page_size(2);
  by_team.set_include_delta(true);
  std::vector<int64_t> versions;
  for (int page = 0; page < 10; ++page) {
    v1::GetHistoryResponse resp;
    ASSERT_TRUE(admin_->GetHistory(Ctx().get(), by_team, &resp).ok());
    for (const auto& r : resp.records()) {
      versions.push_back(r.version());
      EXPECT_EQ(r.kind(), "AssignTeam");
      EXPECT_EQ(r.actor(), "test-admin");
      EXPECT_EQ(r.reason(), "pin for test");
      EXPECT_GT(r.create_time().seconds(), 0);
      EXPECT_EQ(r.delta().set().team_ids(0), 10);
    }
    if (resp.next_page_token().empty()) break;
    by_team.set_page_token(resp.next_page_token());
  }
  EXPECT_EQ(versions, (std::vector<int64_t>{3, 4, 5, 6, 7}));

  // Filtered by team, a bulk write's delta holds only that team's row.
  v1::BulkAssignRequest bulk;
  bulk.set_reason("bulk");
  for (int64_t team : {9, 10, 12}) {
    v1::BulkAssignment* a = bulk.add_assignments();
    a->set_team_id(team);
    a->set_bucket_id(b2);  // team 10 is on b1 now
  }
  v1::BulkAssignResponse bulk_resp;
  ASSERT_TRUE(admin_->BulkAssign(Ctx().get(), bulk, &bulk_resp).ok());
  v1::GetHistoryRequest latest;
  latest.set_team_id(10);
  latest.set_from_version(bulk_resp.version());
  latest.set_include_delta(true);
  v1::GetHistoryResponse trimmed;
  ASSERT_TRUE(admin_->GetHistory(Ctx().get(), latest, &trimmed).ok());
  ASSERT_EQ(trimmed.records_size(), 1);
  EXPECT_EQ(trimmed.records(0).assignments_changed(), 3);
  ASSERT_EQ(trimmed.records(0).delta().set().team_ids_size(), 1);
  EXPECT_EQ(trimmed.records(0).delta().set().team_ids(0), 10);

  v1::GetHistoryRequest range;
  range.set_from_version(2);
  range.set_to_version(4);
  v1::GetHistoryResponse resp;
  ASSERT_TRUE(admin_->GetHistory(Ctx().get(), range, &resp).ok());
  ASSERT_EQ(resp.records_size(), 3);
  EXPECT_EQ(resp.records(0).version(), 2);
  EXPECT_EQ(resp.records(0).kind(), "CreateBucket");
  EXPECT_EQ(resp.records(2).version(), 4);

  range.set_from_version(5);
  range.set_to_version(4);
  EXPECT_EQ(admin_->GetHistory(Ctx().get(), range, &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(AdminServiceTest, VersionsStayGaplessUnderEightConcurrentWriters) {
  const int32_t b1 = MakeBucket("b1");
  const int32_t b2 = MakeBucket("b2");
  constexpr int kWriters = 8;
  constexpr int kWritesEach = 25;
  std::vector<std::vector<int64_t>> versions(kWriters);
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < kWritesEach; ++i) {
        v1::AssignTeamResponse resp;
        grpc::Status s = Pin(1000 * (w + 1) + i, i % 2 == 0 ? b1 : b2, &resp);
        ASSERT_TRUE(s.ok()) << s.error_message();
        versions[w].push_back(resp.version());
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<int64_t> all;
  for (const auto& v : versions) all.insert(v.begin(), v.end());
  ASSERT_EQ(all.size(), static_cast<size_t>(kWriters * kWritesEach));
  EXPECT_EQ(*all.begin(), 3);
  EXPECT_EQ(*all.rbegin(), 2 + kWriters * kWritesEach);
  EXPECT_EQ(Version(), 2 + kWriters * kWritesEach);
  // The change log has each version exactly once.
  auto count = pg_->Psql("SELECT count(*), count(DISTINCT version), max(version) FROM change_log");
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(*count, "202|202|202");
}

TEST_F(AdminServiceTest, RestartKeepsDataVersionAndClusterId) {
  const int32_t b1 = MakeBucket("b1");
  ASSERT_TRUE(Pin(9, b1).ok());
  v1::MappingSnapshot before;
  ASSERT_TRUE(mapping_->GetMapping(Ctx().get(), v1::GetMappingRequest(), &before).ok());
  StopServer();
  ASSERT_TRUE(pg_->Restart().ok());
  StartServer();
  v1::MappingSnapshot after;
  ASSERT_TRUE(mapping_->GetMapping(Ctx().get(), v1::GetMappingRequest(), &after).ok());
  EXPECT_EQ(after.version(), before.version());
  EXPECT_EQ(after.cluster_id(), before.cluster_id());
  EXPECT_EQ(after.assignments().team_ids(0), 9);
  EXPECT_EQ(after.buckets(0).name(), "b1");
  v1::AssignTeamResponse resp;
  ASSERT_TRUE(Pin(10, b1, &resp).ok());
  EXPECT_EQ(resp.version(), before.version() + 1);
}

TEST_F(AdminServiceTest, MinVersionAheadOfCommittedIsUnavailable) {
  MakeBucket("b1");
  v1::GetMappingRequest req;
  req.set_min_version(1);
  v1::MappingSnapshot snap;
  ASSERT_TRUE(mapping_->GetMapping(Ctx().get(), req, &snap).ok());
  EXPECT_EQ(snap.version(), 1);
  req.set_min_version(5);
  grpc::Status s = mapping_->GetMapping(Ctx().get(), req, &snap);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(s.error_message(), HasSubstr("min_version"));
}

TEST_F(AdminServiceTest, PostgresDownWritesUnavailableReadsServeThenRecover) {
  const int32_t b1 = MakeBucket("b1");
  ASSERT_TRUE(Pin(1, b1).ok());
  ASSERT_TRUE(pg_->Stop().ok());

  const absl::Time start = absl::Now();
  grpc::Status s = Pin(2, b1);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // Reads keep serving the last snapshot.
  EXPECT_EQ(Version(), 2);
  v1::GetTeamRequest get;
  get.set_team_id(1);
  v1::TeamRoute route;
  ASSERT_TRUE(mapping_->GetTeam(Ctx().get(), get, &route).ok());
  EXPECT_EQ(route.bucket_id(), b1);

  ASSERT_TRUE(pg_->StartAgain().ok());
  // Writes recover without a restart of the server.
  grpc::Status recovered;
  for (int i = 0; i < 50; ++i) {
    recovered = Pin(2, b1);
    if (recovered.ok()) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(recovered.ok()) << recovered.error_message();
  EXPECT_EQ(Version(), 3);
}

}  // namespace
}  // namespace bucketmap
