// Load with real parts (issue 11): two bucketmap-server replicas on one
// PostgreSQL, three example-producer processes with known per-team rates
// (two on replica A, one on replica B), each counting its events with the
// client library's LoadCounter and reporting them on its watch stream.
//
// After the first load window, GetLoad on either replica reports every
// team within 5% of its true rate (the sum over the producers), and each
// bucket's rate is the sum of its teams'. Then hostile load reports: each
// refusal names its field and ends the stream; a report sooner than half
// its window after the last is dropped and counted, and the stream goes on.
#include <signal.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/watch_client.h"
#include "tests/support/local_process.h"
#include "tests/support/pg_harness.h"
#include "tests/support/server_process.h"

namespace bucketmap {
namespace {

using ::testing::HasSubstr;

// A producer: teams 1..teams round-robin at `rate` events per second.
struct ProducerSpec {
  int teams;
  int rate;
  bool on_b;
};
constexpr ProducerSpec kProducers[] = {{2, 2000, false}, {4, 2000, false}, {5, 1000, true}};
constexpr int kSeconds = 8;

class LoadProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = TestPostgres::Start();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
    const std::vector<std::string> flags = {"--load_window=1s", "--shutdown_grace=1s"};
    a_ = std::make_unique<ServerProcess>(BUCKETMAP_SERVER_BINARY, pg_->dir() + "/a.log");
    ASSERT_TRUE(a_->Launch(pg_->url(), flags).ok()) << a_->log();
    b_ = std::make_unique<ServerProcess>(BUCKETMAP_SERVER_BINARY, pg_->dir() + "/b.log");
    ASSERT_TRUE(b_->Launch(pg_->url(), flags).ok()) << b_->log();
  }

  void TearDown() override {
    for (pid_t pid : producers_) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
  }

  void CreateBucket(const std::string& name) {
    v1::CreateBucketRequest req;
    req.mutable_bucket()->set_name(name);
    (*req.mutable_bucket()->mutable_topics())["ingestion"] = "events_" + name;
    req.set_reason("load test");
    v1::CreateBucketResponse resp;
    grpc::Status s =
        a_->admin()->CreateBucket(ContextWithTimeout(absl::Seconds(10)).get(), req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // GetLoad on `server`, after the first window is folded.
  v1::GetLoadResponse FirstWindow(ServerProcess* server) {
    v1::GetLoadResponse load;
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      v1::GetLoadRequest req;
      req.set_top_teams(10);
      load.Clear();
      grpc::Status s =
          server->mapping()->GetLoad(ContextWithTimeout(absl::Seconds(5)).get(), req, &load);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (load.windows() >= 1) return load;
      absl::SleepFor(absl::Milliseconds(100));
    }
    ADD_FAILURE() << "no load window folded within 20 s\n" << a_->log();
    return load;
  }

  // ListPools' load of the default pool (both buckets) is the sum of
  // GetLoad's bucket rates, compared at one folded window: a GetLoad
  // before and after the ListPools that saw the same window count.
  void ExpectPoolLoadIsTheSumOfItsBuckets(ServerProcess* server) {
    for (int attempt = 0; attempt < 10; ++attempt) {
      const v1::GetLoadResponse before = FirstWindow(server);
      v1::ListPoolsResponse pools;
      grpc::Status s = server->admin()->ListPools(ContextWithTimeout(absl::Seconds(5)).get(),
                                                  v1::ListPoolsRequest(), &pools);
      ASSERT_TRUE(s.ok()) << s.error_message();
      const v1::GetLoadResponse after = FirstWindow(server);
      ASSERT_EQ(pools.pools_size(), 1);
      const v1::PoolInfo& pool = pools.pools(0);
      if (before.windows() != pool.load_windows() || after.windows() != pool.load_windows()) {
        continue;  // a window was folded in between: ask again
      }
      ASSERT_TRUE(pool.has_rate());
      double sum = 0;
      for (const v1::BucketLoad& b : after.buckets()) sum += b.rate().events_per_second();
      EXPECT_GT(sum, 0);
      EXPECT_NEAR(pool.rate().events_per_second(), sum, 1e-9 * sum);
      return;
    }
    ADD_FAILURE() << "a load window was folded during each of 10 ListPools";
  }

  std::unique_ptr<TestPostgres> pg_;
  std::unique_ptr<ServerProcess> a_;
  std::unique_ptr<ServerProcess> b_;
  std::vector<pid_t> producers_;
};

TEST_F(LoadProcessTest, ThreeProducersRatesWithinFivePercentAfterOneWindow) {
  CreateBucket("b1");
  CreateBucket("b2");
  // The truth: each producer sends rate / teams events per second to each
  // of its teams.
  std::map<int64_t, double> truth;
  for (const ProducerSpec& p : kProducers) {
    for (int t = 1; t <= p.teams; ++t) truth[t] += static_cast<double>(p.rate) / p.teams;
  }
  // They start together, so that their first windows end in the same load
  // window: 2 s from now, when all three have their mapping.
  const int64_t start_ms = absl::ToUnixMillis(absl::Now() + absl::Seconds(2));
  int n = 0;
  for (const ProducerSpec& p : kProducers) {
    ServerProcess* server = p.on_b ? b_.get() : a_.get();
    producers_.push_back(
        Spawn({BUCKETMAP_EXAMPLE_PRODUCER, "--servers=" + server->address(),
               absl::StrCat("--client_id=producer-", ++n), absl::StrCat("--teams=", p.teams),
               absl::StrCat("--rate=", p.rate), absl::StrCat("--events=", p.rate * kSeconds),
               "--load_window=1s", absl::StrCat("--start_at_unix_ms=", start_ms)},
              pg_->dir() + "/producers.log"));
  }

  for (ServerProcess* server : {a_.get(), b_.get()}) {
    SCOPED_TRACE(server == a_.get() ? "replica A" : "replica B");
    const v1::GetLoadResponse load = FirstWindow(server);
    ASSERT_GE(load.windows(), 1) << ReadFile(pg_->dir() + "/producers.log");
    EXPECT_EQ(load.window_seconds(), 1);
    std::map<int64_t, double> reported;
    double buckets_total = 0;
    for (const v1::BucketLoad& b : load.buckets()) {
      double teams_sum = 0;
      for (const v1::TeamLoad& t : b.top_teams()) {
        reported[t.team_id()] = t.rate().events_per_second();
        teams_sum += t.rate().events_per_second();
        // The team is where the mapping routes it.
        v1::GetTeamRequest get;
        get.set_team_id(t.team_id());
        v1::TeamRoute route;
        ASSERT_TRUE(server->mapping()
                        ->GetTeam(ContextWithTimeout(absl::Seconds(5)).get(), get, &route)
                        .ok());
        EXPECT_EQ(route.bucket_id(), b.bucket_id()) << "team " << t.team_id();
      }
      // Every team is listed (5 < top_teams), and nothing was reported
      // for the bucket without naming the team: the sums add up.
      EXPECT_NEAR(b.rate().events_per_second(), teams_sum, 1e-6 * teams_sum + 1e-9);
      EXPECT_EQ(b.teams_with_load(), b.top_teams_size());
      buckets_total += b.rate().events_per_second();
      EXPECT_DOUBLE_EQ(b.weight_share(), 0.5);
    }
    double shares = 0;
    for (const v1::BucketLoad& b : load.buckets()) shares += b.event_share();
    EXPECT_NEAR(shares, 1.0, 1e-9);
    double truth_total = 0;
    for (const auto& [team, rate] : truth) {
      truth_total += rate;
      ASSERT_EQ(reported.count(team), 1u) << "team " << team;
      EXPECT_NEAR(reported[team], rate, 0.05 * rate) << "team " << team;
      std::printf("team %lld: %.1f events/s reported, %.1f true (%+.2f%%)\n",
                  static_cast<long long>(team), reported[team], rate,
                  100 * (reported[team] - rate) / rate);
    }
    EXPECT_NEAR(buckets_total, truth_total, 0.05 * truth_total);
    EXPECT_EQ(load.unattributed().events_per_second(), 0);
    ExpectPoolLoadIsTheSumOfItsBuckets(server);
  }
  const std::string metrics = HttpGet(a_->metrics_port(), "/metrics");
  EXPECT_THAT(metrics, HasSubstr("bucketmap_load_reports_total{result=\"accepted\"}"));
}

TEST_F(LoadProcessTest, HostileReportsAreRefusedNamingTheFieldOrDropped) {
  auto refused = [&](v1::ClientRole role, const v1::WatchRequest& report) {
    WatchClient stream(a_->mapping());
    stream.Subscribe("hostile", role);
    stream.Send(report);
    return stream.Finish();
  };
  v1::WatchRequest unsorted;
  unsorted.mutable_load()->set_window_ms(10000);
  unsorted.mutable_load()->add_team_ids(5);
  unsorted.mutable_load()->add_team_ids(3);
  grpc::Status s = refused(v1::PRODUCER, unsorted);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("load.team_ids[1]: must be ascending"));

  v1::WatchRequest ragged;
  ragged.mutable_load()->set_window_ms(10000);
  ragged.mutable_load()->add_team_ids(1);
  ragged.mutable_load()->add_events(1);
  ragged.mutable_load()->add_events(2);
  s = refused(v1::PRODUCER, ragged);
  EXPECT_THAT(s.error_message(), HasSubstr("load.events: has 2 entries"));

  v1::WatchRequest negative;
  negative.mutable_load()->set_window_ms(10000);
  negative.mutable_load()->add_team_ids(1);
  negative.mutable_load()->add_processing_us(-1);
  s = refused(v1::CONSUMER, negative);
  EXPECT_THAT(s.error_message(), HasSubstr("load.processing_us[0]: must not be negative"));

  v1::WatchRequest window;
  window.mutable_load()->set_window_ms(50);
  s = refused(v1::PRODUCER, window);
  EXPECT_THAT(s.error_message(), HasSubstr("load.window_ms: 50 is outside"));

  v1::WatchRequest fine;
  fine.mutable_load()->set_window_ms(10000);
  fine.mutable_load()->add_team_ids(1);
  fine.mutable_load()->add_events(10);
  s = refused(v1::OBSERVER, fine);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("load: only producers and consumers"));

  // Too many teams, and a message far beyond any valid report.
  v1::WatchRequest big;
  big.mutable_load()->set_window_ms(10000);
  for (int t = 1; t <= 1001; ++t) big.mutable_load()->add_team_ids(t);
  s = refused(v1::PRODUCER, big);
  EXPECT_THAT(s.error_message(), HasSubstr("load.team_ids: 1001 entries; at most 1000"));
  v1::WatchRequest huge;
  huge.mutable_load()->set_window_ms(10000);
  for (int t = 1; t <= 120000; ++t) huge.mutable_load()->add_team_ids(t);  // ~350 KB
  s = refused(v1::PRODUCER, huge);
  EXPECT_THAT(s.error_message(), HasSubstr("request: "));

  // One report per window: the second, sent at once, is dropped; the
  // stream goes on.
  WatchClient stream(a_->mapping());
  stream.Subscribe("eager", v1::PRODUCER);
  stream.Send(fine);
  stream.Send(fine);
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_FALSE(stream.done());
  const std::string metrics = HttpGet(a_->metrics_port(), "/metrics");
  EXPECT_EQ(MetricValue(metrics, "bucketmap_load_reports_total{result=\"too_frequent\"}"), 1);
  EXPECT_EQ(MetricValue(metrics, "bucketmap_load_reports_total{result=\"accepted\"}"), 1);
  EXPECT_EQ(MetricValue(metrics, "bucketmap_load_reports_total{result=\"invalid\"}"), 6);
}

}  // namespace
}  // namespace bucketmap
