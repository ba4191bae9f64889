// Rebalancing end to end (issue 12) on a real server (in-process) and a
// throwaway PostgreSQL: known loads arrive as a producer's load report on
// its watch stream (the real path: aggregator, store, signals reader);
// PlanRebalance brings a skewed pool within target, skipping a team in
// its cooldown and reporting a giant; a stale expected_version is ABORTED
// and changes nothing; ApplyRebalance applies the plan as one version and
// its handoffs complete once the producer ACKs the switch; the bucketctl
// binary prints a plan and applies it. Automatic rebalancing: the leader
// applies one plan under its actor, and the daily churn budget (kept in
// PostgreSQL) stops the next, across a restart.
#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/handoff/handoff_test_util.h"
#include "tests/server/server_fixture.h"
#include "tests/server/watch_client.h"

namespace bucketmap {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kPool[] = "hot";

class RebalanceTest : public ServerFixture {
 protected:
  ServerOptions Options() override {
    ServerOptions options = ServerFixture::Options();
    options.handoff.enabled = true;
    options.handoff.move_cooldown = absl::Hours(1);
    options.handoff.poll_interval = absl::Milliseconds(100);
    options.watch.client_lease = absl::Seconds(1);
    options.watch.client_flush = absl::Milliseconds(100);
    options.load.config.window = absl::Seconds(1);
    options.load.flush_interval = absl::Milliseconds(200);
    return options;
  }

  // Four equal buckets in pool "hot" (the default pool has none, so every
  // team starts unroutable and its first pin opens no handoff and starts
  // no cooldown). Bucket 1 holds teams 1..8 (100 events/s each), buckets
  // 2 and 3 two such teams each, bucket 4 a giant (team 13, 1000/s).
  // Team 1 was pinned to bucket 2 first, then moved to bucket 1 by force:
  // it is in its cooldown.
  void MakeSkewedPool() {
    for (int i = 0; i < 4; ++i) b_[i] = MakeBucket("h" + std::to_string(i + 1), kPool);
    v1::BulkAssignRequest bulk;
    auto pin = [&](int64_t team, int32_t bucket) {
      v1::BulkAssignment* a = bulk.add_assignments();
      a->set_team_id(team);
      a->set_bucket_id(bucket);
    };
    pin(1, b_[1]);
    for (int64_t t = 2; t <= 8; ++t) pin(t, b_[0]);
    pin(9, b_[1]);
    pin(10, b_[1]);
    pin(11, b_[2]);
    pin(12, b_[2]);
    pin(13, b_[3]);
    bulk.set_reason("skewed pool");
    v1::BulkAssignResponse bulked;
    grpc::Status s = admin_->BulkAssign(Ctx().get(), bulk, &bulked);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(bulked.effect().handoffs_size(), 0);
    v1::AssignTeamRequest move;
    move.set_team_id(1);
    move.set_bucket_id(b_[0]);
    move.set_force(true);
    move.set_reason("team 1 moves now: in its cooldown");
    v1::AssignTeamResponse moved;
    s = admin_->AssignTeam(Ctx().get(), move, &moved);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // The producer's one load report: team t's events/s.
  static v1::WatchRequest Report() {
    v1::WatchRequest report;
    v1::WatchRequest::LoadReport* load = report.mutable_load();
    load->set_window_ms(1000);
    for (int64_t t = 1; t <= 13; ++t) {
      load->add_team_ids(t);
      load->add_events(t == 13 ? 1000 : 100);
    }
    return report;
  }

  grpc::Status Plan(const v1::PlanRebalanceRequest& req, v1::PlanRebalanceResponse* plan) {
    return admin_->PlanRebalance(Ctx().get(), req, plan);
  }

  // Plans until the reported window is folded into the rates.
  v1::PlanRebalanceResponse PlanOnceLoaded(const v1::PlanRebalanceRequest& req) {
    v1::PlanRebalanceResponse plan;
    const absl::Time end = absl::Now() + absl::Seconds(15);
    while (absl::Now() < end) {
      plan.Clear();
      grpc::Status s = Plan(req, &plan);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (plan.load_windows() >= 1 && plan.pool_load() > 0) return plan;
      absl::SleepFor(absl::Milliseconds(200));
    }
    ADD_FAILURE() << "no load window folded within 15 s";
    return plan;
  }

  int32_t b_[4] = {};
};

TEST_F(RebalanceTest, PlanBringsASkewedPoolWithinTargetAndItsHandoffsComplete) {
  MakeSkewedPool();
  // A producer reports the loads, then ACKs every push as drained (its
  // acknowledgement passes the handoffs' switch barrier).
  WatchClient producer(mapping_.get());
  producer.Subscribe("producer-1", v1::PRODUCER);
  producer.Send(Report());
  std::atomic<bool> stop{false};
  std::thread acker([&] {
    while (!stop) {
      std::optional<v1::WatchResponse> r = producer.Next(absl::Milliseconds(50));
      if (r.has_value() && r->has_push()) producer.Ack(r->push(), r->push().to_version());
    }
  });
  WaitForClientLeased(admin_.get(), "producer-1");

  v1::PlanRebalanceRequest req;
  req.set_pool(kPool);
  req.mutable_budget()->set_max_load_share(0.25);
  const v1::PlanRebalanceResponse plan = PlanOnceLoaded(req);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(plan.pool(), kPool);
  EXPECT_EQ(plan.metric(), v1::LOAD_METRIC_EVENT_RATE);
  EXPECT_DOUBLE_EQ(plan.budget().max_load_share(), 0.25);
  EXPECT_EQ(plan.budget().max_teams(), 1000);  // the default
  EXPECT_DOUBLE_EQ(plan.budget().target_imbalance(), 1.05);
  EXPECT_EQ(plan.teams_with_load(), 13);
  // Team 1, in its cooldown, is frozen; the giant is reported.
  EXPECT_THAT(plan.frozen_team_ids(), ElementsAre(1));
  ASSERT_EQ(plan.giants_size(), 1);
  EXPECT_EQ(plan.giants(0).team_id(), 13);
  EXPECT_EQ(plan.giants(0).bucket_id(), b_[3]);
  // Bucket 1 holds 800/2200 of the load; the others should hold 400 each
  // of the 1200 the giant's bucket leaves: two teams to each of 2 and 3.
  ASSERT_EQ(plan.buckets_size(), 4);
  const double unit = plan.pool_load() / 22;  // one small team's load
  EXPECT_NEAR(plan.buckets(0).before(), 8 * unit, 1e-6 * unit);
  EXPECT_NEAR(plan.buckets(0).after(), 4 * unit, 1e-6 * unit);
  EXPECT_TRUE(plan.buckets(3).floored());
  EXPECT_GT(plan.imbalance_before(), 1.9);
  EXPECT_LE(plan.imbalance_after(), 1.05);
  EXPECT_TRUE(plan.target_reached());
  EXPECT_EQ(plan.stop_reason(), "target_reached");
  ASSERT_EQ(plan.moves_size(), 4) << plan.DebugString();
  std::set<int32_t> targets;
  for (const v1::RebalanceMove& m : plan.moves()) {
    EXPECT_NE(m.team_id(), 1);
    EXPECT_EQ(m.from_bucket_id(), b_[0]);
    targets.insert(m.to_bucket_id());
  }
  EXPECT_THAT(targets, ElementsAre(b_[1], b_[2]));
  // Exactly the plan docs/rebalancing.md prints for this pool.
  std::vector<std::pair<int64_t, int32_t>> moves;
  for (const v1::RebalanceMove& m : plan.moves()) moves.emplace_back(m.team_id(), m.to_bucket_id());
  EXPECT_THAT(moves, ElementsAre(std::make_pair(2, b_[1]), std::make_pair(3, b_[2]),
                                 std::make_pair(4, b_[1]), std::make_pair(5, b_[2])));
  EXPECT_NEAR(plan.giants(0).limit(), 5.5 * unit, 1e-6 * unit);  // a share: 550 of 2200
  EXPECT_NEAR(plan.share_moved(), 4.0 / 22, 1e-9);
  EXPECT_EQ(plan.version(), Version());

  v1::ApplyRebalanceRequest apply;
  apply.set_pool(kPool);
  *apply.mutable_moves() = plan.moves();
  apply.set_reason("rebalance hot");
  apply.set_request_id("rebalance-1");
  // A stale plan is ABORTED and changes nothing.
  apply.set_expected_version(plan.version() - 1);
  v1::ApplyRebalanceResponse applied;
  grpc::Status s = admin_->ApplyRebalance(Ctx().get(), apply, &applied);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ABORTED) << s.error_message();
  EXPECT_EQ(Version(), plan.version());
  // A dry run answers the effect and commits nothing.
  apply.set_expected_version(plan.version());
  apply.set_dry_run(true);
  s = admin_->ApplyRebalance(Ctx().get(), apply, &applied);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(applied.effect().dry_run());
  EXPECT_EQ(applied.effect().moved_team_count(), 4);
  EXPECT_EQ(Version(), plan.version());

  apply.set_dry_run(false);
  s = admin_->ApplyRebalance(Ctx().get(), apply, &applied);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(applied.version(), plan.version() + 1);
  EXPECT_EQ(applied.effect().moved_team_count(), 4);
  ASSERT_EQ(applied.effect().handoffs_size(), 1);  // one per source bucket
  EXPECT_EQ(applied.effect().handoffs(0).source_bucket_id(), b_[0]);
  EXPECT_EQ(applied.effect().handoffs(0).team_ids_size(), 4);
  const v1::Handoff done = WaitForHandoff(admin_.get(), applied.effect().handoffs(0).id(), Ended);
  EXPECT_EQ(done.state(), v1::HANDOFF_COMPLETED) << done.ShortDebugString();
  // Every planned team routes where the plan said.
  for (const v1::RebalanceMove& m : plan.moves()) {
    v1::GetTeamRequest get;
    get.set_team_id(m.team_id());
    v1::TeamRoute route;
    ASSERT_TRUE(mapping_->GetTeam(Ctx().get(), get, &route).ok());
    EXPECT_EQ(route.bucket_id(), m.to_bucket_id()) << "team " << m.team_id();
  }
  // A replay answers the first result and writes nothing.
  v1::ApplyRebalanceResponse replayed;
  s = admin_->ApplyRebalance(Ctx().get(), apply, &replayed);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(replayed.effect().replayed());
  EXPECT_EQ(replayed.version(), applied.version());
  // The plan, made again at the new version, has nothing left to move:
  // the moved teams are in their cooldown now, and the pool is within
  // target.
  v1::PlanRebalanceResponse again;
  ASSERT_TRUE(Plan(req, &again).ok());
  // (The handoff's completion was a version of its own.)
  EXPECT_EQ(again.version(), done.phase_version());
  EXPECT_EQ(again.moves_size(), 0);
  EXPECT_TRUE(again.target_reached());
  EXPECT_EQ(again.frozen_team_ids_size(), 5);
  stop = true;
  acker.join();
}

// Runs `command` through the shell; returns its exit status and output.
int Shell(const std::string& command, std::string* output) {
  output->clear();
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) output->append(buf, n);
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_F(RebalanceTest, BucketctlPrintsThePlanAndAppliesIt) {
  MakeSkewedPool();
  WatchClient producer(mapping_.get());
  producer.Subscribe("producer-1", v1::PRODUCER);
  producer.Send(Report());
  v1::PlanRebalanceRequest req;
  req.set_pool(kPool);
  const int64_t version = PlanOnceLoaded(req).version();
  ASSERT_FALSE(HasFailure());

  const std::string bucketctl =
      absl::StrCat(BUCKETCTL_BINARY, " --server 127.0.0.1:", server_->port(), " rebalance");
  std::string out;
  ASSERT_EQ(Shell(bucketctl + " --pool hot --max-load-moved 25%", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("imbalance 2.000 -> 1.000 (target 1.05): target_reached"));
  EXPECT_THAT(out, HasSubstr("moves: 4 teams"));
  EXPECT_THAT(out, HasSubstr("frozen (in their move cooldown): 1\n"));
  EXPECT_EQ(Version(), version);  // a plan changes nothing

  ASSERT_EQ(
      Shell(bucketctl + " --pool hot --max-load-moved 25% --apply --reason 'even out hot'", &out),
      0)
      << out;
  EXPECT_THAT(out, HasSubstr(absl::StrCat("applied: 4 teams moved at version ", version + 1,
                                          ", 1 handoffs (request id bucketctl-rebalance-")));
  EXPECT_THAT(out, HasSubstr(absl::StrCat(": bucket ", b_[0], " -> ")));
  v1::GetHistoryRequest history;
  history.set_from_version(version + 1);
  history.set_to_version(version + 1);
  v1::GetHistoryResponse records;
  ASSERT_TRUE(admin_->GetHistory(Ctx().get(), history, &records).ok());
  ASSERT_EQ(records.records_size(), 1);
  EXPECT_EQ(records.records(0).kind(), "ApplyRebalance");
  EXPECT_EQ(records.records(0).reason(), "even out hot");
  // Planned again: within target, nothing to apply.
  ASSERT_EQ(Shell(bucketctl + " --pool hot --max-load-moved 25% --apply", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("nothing to apply"));
}

TEST_F(RebalanceTest, RequestsAreCheckedNamingTheField) {
  MakeBucket("h1", kPool);
  auto plan = [&](const v1::PlanRebalanceRequest& req) {
    v1::PlanRebalanceResponse resp;
    return Plan(req, &resp);
  };
  v1::PlanRebalanceRequest req;
  req.set_pool("nowhere");
  grpc::Status s = plan(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("pool: "));
  req.set_pool("Not A Pool");
  EXPECT_EQ(plan(req).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  req.set_pool(kPool);
  req.set_metric(static_cast<v1::LoadMetric>(7));
  s = plan(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("metric: unknown metric 7"));
  req.set_metric(v1::LOAD_METRIC_PROCESSING_TIME);
  req.mutable_budget()->set_max_load_share(1.5);
  s = plan(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("budget.max_load_share: must be in [0, 1]"));
  req.mutable_budget()->clear_max_load_share();
  req.mutable_budget()->set_max_teams(-1);
  s = plan(req);
  EXPECT_THAT(s.error_message(), HasSubstr("budget.max_teams: must be >= 0"));
  req.mutable_budget()->clear_max_teams();
  req.mutable_budget()->set_target_imbalance(0.5);
  s = plan(req);
  EXPECT_THAT(s.error_message(), HasSubstr("budget.target_imbalance: "));
  req.mutable_budget()->clear_target_imbalance();
  v1::PlanRebalanceResponse idle;
  ASSERT_TRUE(Plan(req, &idle).ok());
  EXPECT_EQ(idle.metric(), v1::LOAD_METRIC_PROCESSING_TIME);
  EXPECT_EQ(idle.moves_size(), 0);

  auto apply = [&](const v1::ApplyRebalanceRequest& r) {
    v1::ApplyRebalanceResponse resp;
    return admin_->ApplyRebalance(Ctx().get(), r, &resp);
  };
  v1::ApplyRebalanceRequest a;
  a.set_pool(kPool);
  a.set_reason("test");
  a.set_expected_version(Version());
  s = apply(a);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("moves: "));
  v1::RebalanceMove* m = a.add_moves();
  m->set_team_id(5);
  m->set_from_bucket_id(idle.buckets(0).bucket_id());
  m->set_to_bucket_id(idle.buckets(0).bucket_id());
  a.set_expected_version(0);
  s = apply(a);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("expected_version: required"));
  a.set_expected_version(Version());
  s = apply(a);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("moves[0]"));
}

}  // namespace
}  // namespace bucketmap

namespace bucketmap {
namespace {

// Automatic rebalancing: a round every 300 ms, a daily churn budget of 3%
// of a pool's load. Pool "hot" holds 40 small teams (10 events/s each) on
// its first bucket and 10 on each of the three others: 32% of the load
// would have to move, each team is 1.4% of it.
class AutoRebalanceTest : public ServerFixture {
 protected:
  ServerOptions Options() override {
    ServerOptions options = ServerFixture::Options();
    options.load.config.window = absl::Seconds(1);
    options.load.flush_interval = absl::Milliseconds(200);
    options.auto_rebalance.interval = absl::Milliseconds(300);
    options.auto_rebalance.daily_load_share = 0.03;
    return options;
  }

  // Records by `actor` in the change log.
  std::vector<v1::ChangeRecord> ChangesBy(const std::string& actor) {
    v1::GetHistoryRequest req;
    req.set_page_size(1000);
    v1::GetHistoryResponse resp;
    grpc::Status s = admin_->GetHistory(Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    std::vector<v1::ChangeRecord> out;
    for (const v1::ChangeRecord& r : resp.records()) {
      if (r.actor() == actor) out.push_back(r);
    }
    return out;
  }

  double Rounds(const std::string& outcome) {
    double total = 0;
    for (const prometheus::MetricFamily& f : server_->metrics().registry().Collect()) {
      if (f.name != "bucketmap_auto_rebalance_rounds_total") continue;
      for (const prometheus::ClientMetric& m : f.metric) {
        for (const prometheus::ClientMetric::Label& l : m.label) {
          if (l.name == "outcome" && l.value == outcome) total += m.counter.value;
        }
      }
    }
    return total;
  }
};

TEST_F(AutoRebalanceTest, TheLeaderAppliesAPlanUnderItsActorAndTheDailyBudgetStopsTheNext) {
  int32_t b[4];
  for (int i = 0; i < 4; ++i) b[i] = MakeBucket("h" + std::to_string(i + 1), "hot");
  v1::BulkAssignRequest bulk;
  v1::WatchRequest report;
  report.mutable_load()->set_window_ms(1000);
  for (int64_t t = 1; t <= 70; ++t) {
    v1::BulkAssignment* a = bulk.add_assignments();
    a->set_team_id(t);
    a->set_bucket_id(t <= 40 ? b[0] : b[1 + (t - 41) / 10]);
    report.mutable_load()->add_team_ids(t);
    report.mutable_load()->add_events(10);
  }
  bulk.set_reason("skewed pool");
  v1::BulkAssignResponse bulked;
  ASSERT_TRUE(admin_->BulkAssign(Ctx().get(), bulk, &bulked).ok());
  // Nothing moves while no load is known.
  absl::SleepFor(absl::Milliseconds(700));
  EXPECT_TRUE(ChangesBy(kAutoRebalanceActor).empty());

  auto producer = std::make_unique<WatchClient>(mapping_.get());
  producer->Subscribe("producer-1", v1::PRODUCER);
  producer->Send(report);
  std::vector<v1::ChangeRecord> changes;
  const absl::Time end = absl::Now() + absl::Seconds(15);
  while (changes.empty() && absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(100));
    changes = ChangesBy(kAutoRebalanceActor);
  }
  ASSERT_EQ(changes.size(), 1u) << "no automatic rebalance within 15 s";
  EXPECT_EQ(changes[0].kind(), "ApplyRebalance");
  EXPECT_THAT(changes[0].reason(), HasSubstr("automatic rebalance of pool hot"));
  // Two teams (2.9% of the load) fit the day's 3%; they left bucket 1.
  EXPECT_EQ(changes[0].assignments_changed(), 2);
  // Later rounds find the pool still over its target, but the day's
  // budget spent: nothing more moves.
  const absl::Time wait = absl::Now() + absl::Seconds(5);
  while (Rounds("budget_spent") < 2 && absl::Now() < wait) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_GE(Rounds("budget_spent"), 2);
  EXPECT_EQ(Rounds("applied"), 1);
  EXPECT_EQ(ChangesBy(kAutoRebalanceActor).size(), 1u);

  // A new leader (the server restarted on the same database; the load
  // rates are in PostgreSQL too) reads the day's churn there: it moves
  // nothing more either.
  producer.reset();
  StopServer();
  StartServer();
  const absl::Time restarted = absl::Now() + absl::Seconds(10);
  while (Rounds("budget_spent") < 2 && absl::Now() < restarted) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_GE(Rounds("budget_spent"), 2);
  EXPECT_EQ(Rounds("applied"), 0);
  EXPECT_EQ(ChangesBy(kAutoRebalanceActor).size(), 1u);
}

}  // namespace
}  // namespace bucketmap
