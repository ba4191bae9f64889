// Pools as objects and per-team rules against a real server and
// PostgreSQL, with real clients watching: a pool's pause is one version in
// which every bucket of it reports PAUSED; rules refuse a bucket without an
// overflow topic (naming it), take effect at their version on every
// connected client, and expire at one version.
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "bucketmap/client.h"
#include "bucketmap/watch.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "tests/server/server_fixture.h"

namespace bucketmap {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Listeners run after version() advanced: wait for what they record.
bool Eventually(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time give_up = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() >= give_up) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

class PoolsRulesTest : public ServerFixture {
 protected:
  ServerOptions Options() override {
    ServerOptions options = ServerFixture::Options();
    options.rules.poll_interval = absl::Milliseconds(50);
    return options;
  }

  // A bucket of `pool` with an ingestion topic and, when asked, an
  // overflow topic.
  int32_t Bucket(const std::string& name, const std::string& pool, bool overflow) {
    v1::CreateBucketRequest req;
    req.mutable_bucket()->set_name(name);
    req.mutable_bucket()->set_pool(pool);
    (*req.mutable_bucket()->mutable_topics())["ingestion"] = "events_" + name;
    if (overflow) (*req.mutable_bucket()->mutable_topics())["overflow"] = "overflow_" + name;
    req.set_reason("test setup");
    v1::CreateBucketResponse resp;
    grpc::Status s = admin_->CreateBucket(Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.bucket().id();
  }

  grpc::Status UpdatePool(const std::string& name, std::optional<v1::BucketState> state,
                          std::optional<int32_t> priority, v1::UpdatePoolResponse* resp) {
    v1::UpdatePoolRequest req;
    req.set_name(name);
    if (state.has_value()) req.set_state(*state);
    if (priority.has_value()) req.set_priority(*priority);
    req.set_reason("pool test");
    return admin_->UpdatePool(Ctx().get(), req, resp);
  }

  grpc::Status SetRule(const v1::SetTeamRuleRequest& req, v1::SetTeamRuleResponse* resp) {
    return admin_->SetTeamRule(Ctx().get(), req, resp);
  }

  static v1::SetTeamRuleRequest RuleRequest(int64_t team, v1::TeamRuleKind kind) {
    v1::SetTeamRuleRequest req;
    req.set_team_id(team);
    req.set_kind(kind);
    req.set_reason("rule test");
    return req;
  }

  std::map<int32_t, v1::BucketState> States() {
    v1::MappingSnapshot snap;
    EXPECT_TRUE(mapping_->GetMapping(Ctx().get(), v1::GetMappingRequest(), &snap).ok());
    std::map<int32_t, v1::BucketState> states;
    for (const v1::Bucket& b : snap.buckets()) states[b.id()] = b.state();
    return states;
  }

  ClientOptions ClientOpts(const std::string& id) {
    ClientOptions options;
    options.addresses = {absl::StrCat("127.0.0.1:", server_->port())};
    options.client_id = id;
    options.role = v1::PRODUCER;
    return options;
  }

  static WatchConnectionOptions Fast() {
    WatchConnectionOptions options;
    options.initial_backoff = absl::Milliseconds(20);
    options.max_backoff = absl::Milliseconds(200);
    options.write_cache = false;
    return options;
  }
};

TEST_F(PoolsRulesTest, PausingAPoolIsOneVersionAndEveryBucketOfItReportsPaused) {
  const int32_t f1 = Bucket("f1", "free", false);
  const int32_t f2 = Bucket("f2", "free", false);
  const int32_t f3 = Bucket("f3", "free", false);
  const int32_t paid = Bucket("p1", "paid", false);
  // f3 is paused on its own first.
  v1::UpdateBucketRequest pause_f3;
  pause_f3.mutable_bucket()->set_id(f3);
  pause_f3.mutable_bucket()->set_state(v1::PAUSED);
  pause_f3.mutable_update_mask()->add_paths("state");
  pause_f3.set_reason("its consumers are broken");
  v1::UpdateBucketResponse paused_f3;
  ASSERT_TRUE(admin_->UpdateBucket(Ctx().get(), pause_f3, &paused_f3).ok());

  Client watcher(ClientOpts("pool-watcher"));
  WatchConnection connection(&watcher, Fast());
  connection.Start();
  const int64_t before = Version();
  ASSERT_TRUE(watcher.WaitForVersion(before, absl::Seconds(10)));
  std::vector<std::pair<int64_t, bool>> f1_paused;  // (version, paused), as the client saw it
  absl::Mutex mu;
  watcher.OnBucketState(f1, [&](const BucketStateChange& c) {
    absl::MutexLock lock(&mu);
    f1_paused.emplace_back(c.version, c.paused());
  });

  v1::UpdatePoolResponse resp;
  grpc::Status s = UpdatePool("free", v1::PAUSED, 10, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.version(), before + 1);
  EXPECT_EQ(resp.pool().state(), v1::PAUSED);
  EXPECT_EQ(resp.pool().priority(), 10);
  EXPECT_EQ(resp.pool().actor(), "test-admin");
  EXPECT_THAT(resp.pool().paused_bucket_ids(), ElementsAre(f1, f2));
  ASSERT_EQ(resp.buckets_size(), 2);
  EXPECT_EQ(Version(), before + 1);
  std::map<int32_t, v1::BucketState> states = States();
  EXPECT_EQ(states[f1], v1::PAUSED);
  EXPECT_EQ(states[f2], v1::PAUSED);
  EXPECT_EQ(states[f3], v1::PAUSED);
  EXPECT_EQ(states[paid], v1::ACTIVE);

  // The history has one version, with both buckets and the pool.
  v1::GetHistoryRequest history;
  history.set_from_version(before + 1);
  history.set_include_delta(true);
  v1::GetHistoryResponse records;
  ASSERT_TRUE(admin_->GetHistory(Ctx().get(), history, &records).ok());
  ASSERT_EQ(records.records_size(), 1);
  EXPECT_EQ(records.records(0).kind(), "UpdatePool");
  EXPECT_EQ(records.records(0).delta().buckets_size(), 2);
  EXPECT_EQ(records.records(0).delta().pool_objects_size(), 1);

  // A watching client sees every bucket paused at that one version.
  ASSERT_TRUE(watcher.WaitForVersion(before + 1, absl::Seconds(10)));
  for (int32_t id : {f1, f2, f3}) EXPECT_EQ(watcher.GetBucketState(id), BucketState::kPaused);
  EXPECT_TRUE(watcher.Current()->PoolOf("free").paused());
  ASSERT_TRUE(Eventually([&] {
    absl::MutexLock lock(&mu);
    return f1_paused.size() >= 2;
  }));
  {
    absl::MutexLock lock(&mu);
    EXPECT_THAT(f1_paused,
                ElementsAre(std::make_pair(before, false), std::make_pair(before + 1, true)));
  }

  // ListPools: state, priority, buckets and teams.
  Pin(5, f1);
  v1::ListPoolsResponse pools;
  ASSERT_TRUE(admin_->ListPools(Ctx().get(), v1::ListPoolsRequest(), &pools).ok());
  std::map<std::string, v1::PoolInfo> by_name;
  for (const v1::PoolInfo& p : pools.pools()) by_name[p.pool().name()] = p;
  ASSERT_EQ(by_name.count("free"), 1u);
  EXPECT_TRUE(by_name["free"].has_object());
  EXPECT_EQ(by_name["free"].pool().state(), v1::PAUSED);
  EXPECT_THAT(by_name["free"].bucket_ids(), ElementsAre(f1, f2, f3));
  EXPECT_EQ(by_name["free"].pinned_teams(), 1);
  EXPECT_FALSE(by_name["paid"].has_object());
  EXPECT_EQ(by_name["paid"].pool().priority(), 100);
  EXPECT_EQ(by_name["paid"].pool().state(), v1::ACTIVE);

  // Resuming one bucket alone is refused; the pool's resume is one version
  // and leaves f3, paused on its own, PAUSED.
  v1::UpdateBucketRequest resume_f1;
  resume_f1.mutable_bucket()->set_id(f1);
  resume_f1.mutable_bucket()->set_state(v1::ACTIVE);
  resume_f1.mutable_update_mask()->add_paths("state");
  resume_f1.set_reason("too early");
  v1::UpdateBucketResponse refused;
  s = admin_->UpdateBucket(Ctx().get(), resume_f1, &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("pool \"free\", which is PAUSED"));
  const int64_t paused_at = Version();
  ASSERT_TRUE(UpdatePool("free", v1::ACTIVE, std::nullopt, &resp).ok());
  EXPECT_EQ(resp.version(), paused_at + 1);
  states = States();
  EXPECT_EQ(states[f1], v1::ACTIVE);
  EXPECT_EQ(states[f2], v1::ACTIVE);
  EXPECT_EQ(states[f3], v1::PAUSED);
  ASSERT_TRUE(Eventually([&] {
    absl::MutexLock lock(&mu);
    return f1_paused.back().first == paused_at + 1;
  }));
  absl::MutexLock lock(&mu);
  EXPECT_EQ(f1_paused.back(), std::make_pair(paused_at + 1, false));
}

TEST_F(PoolsRulesTest, ARateLimitNeedsAnOverflowTopicAndTheErrorNamesTheBucket) {
  const int32_t plain = Bucket("plain", "default", false);
  Pin(42, plain);
  v1::SetTeamRuleRequest req = RuleRequest(42, v1::RATE_LIMIT);
  req.mutable_rate_limit()->set_events_per_second(100);
  v1::SetTeamRuleResponse resp;
  grpc::Status s = SetRule(req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(),
              HasSubstr(absl::StrCat("bucket ", plain, " (plain) has no \"overflow\" topic")));

  // On a bucket with one it is set, and the team cannot move back.
  const int32_t spill = Bucket("spill", "default", true);
  Pin(42, spill);
  s = SetRule(req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.rule().rate_limit().burst(), 100);
  v1::AssignTeamResponse moved;
  s = Pin(42, plain, &moved);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr(absl::StrCat("bucket ", plain, " (plain)")));
}

TEST_F(PoolsRulesTest, WritesOfRulesTakeDryRunExpectedVersionAndRequestId) {
  Bucket("b1", "default", true);
  const int64_t v = Version();
  v1::SetTeamRuleRequest req = RuleRequest(9, v1::DROP);
  req.set_dry_run(true);
  v1::SetTeamRuleResponse resp;
  ASSERT_TRUE(SetRule(req, &resp).ok());
  EXPECT_TRUE(resp.effect().dry_run());
  EXPECT_TRUE(resp.effect().changed());
  EXPECT_EQ(Version(), v);

  req.set_dry_run(false);
  req.set_expected_version(v + 5);
  EXPECT_EQ(SetRule(req, &resp).error_code(), grpc::StatusCode::ABORTED);
  req.set_expected_version(v);
  req.set_request_id("drop-9");
  ASSERT_TRUE(SetRule(req, &resp).ok());
  EXPECT_EQ(resp.version(), v + 1);
  v1::SetTeamRuleResponse again;
  // The same body again (expected_version included): a replay.
  ASSERT_TRUE(SetRule(req, &again).ok());
  EXPECT_TRUE(again.effect().replayed());
  EXPECT_EQ(again.version(), v + 1);
  EXPECT_EQ(Version(), v + 1);

  v1::ListTeamRulesResponse listed;
  ASSERT_TRUE(admin_->ListTeamRules(Ctx().get(), v1::ListTeamRulesRequest(), &listed).ok());
  ASSERT_EQ(listed.rules_size(), 1);
  EXPECT_EQ(listed.rules(0).team_id(), 9);
  EXPECT_EQ(listed.rules(0).actor(), "test-admin");
  EXPECT_EQ(listed.rules(0).reason(), "rule test");

  v1::ClearTeamRuleRequest clear;
  clear.set_team_id(9);
  clear.set_reason("done");
  v1::ClearTeamRuleResponse cleared;
  ASSERT_TRUE(admin_->ClearTeamRule(Ctx().get(), clear, &cleared).ok());
  EXPECT_EQ(cleared.version(), v + 2);
  ASSERT_EQ(cleared.cleared_size(), 1);
  EXPECT_EQ(cleared.cleared(0).kind(), v1::DROP);
  // Clearing again is a no-op.
  ASSERT_TRUE(admin_->ClearTeamRule(Ctx().get(), clear, &cleared).ok());
  EXPECT_FALSE(cleared.effect().changed());
  EXPECT_EQ(Version(), v + 2);
}

// Two producers watch; force_overflow and drop switch both at the
// rule's version, and so does clearing it.
TEST_F(PoolsRulesTest, ForceOverflowAndDropTakeEffectAtTheirVersionOnEveryClient) {
  const int32_t b1 = Bucket("b1", "default", true);
  Pin(42, b1);
  Pin(43, b1);
  Client a(ClientOpts("producer-a"));
  Client b(ClientOpts("producer-b"));
  // Per client, per version: where team 42's and 43's events went.
  struct Seen {
    absl::Mutex mu;
    std::map<int64_t, std::pair<std::string, bool>> team42;  // topic, overflowed
    std::map<int64_t, bool> team43_dropped;
  };
  Seen seen_a, seen_b;
  auto record = [](Seen* seen) {
    return [seen](const ChangeEvent& e) {
      const EventRoute r42 = e.view->RouteEvent(42, "person-1", absl::Now());
      const EventRoute r43 = e.view->RouteEvent(43, "person-1", absl::Now());
      absl::MutexLock lock(&seen->mu);
      seen->team42[e.new_version] = {r42.topic() ? *r42.topic() : "", r42.overflowed()};
      seen->team43_dropped[e.new_version] = r43.dropped();
    };
  };
  a.OnChange(record(&seen_a));
  b.OnChange(record(&seen_b));
  WatchConnection ca(&a, Fast());
  WatchConnection cb(&b, Fast());
  ca.Start();
  cb.Start();
  const int64_t v0 = Version();
  ASSERT_TRUE(a.WaitForVersion(v0, absl::Seconds(10)));
  ASSERT_TRUE(b.WaitForVersion(v0, absl::Seconds(10)));

  v1::SetTeamRuleResponse forced;
  ASSERT_TRUE(SetRule(RuleRequest(42, v1::FORCE_OVERFLOW), &forced).ok());
  v1::SetTeamRuleResponse dropped;
  ASSERT_TRUE(SetRule(RuleRequest(43, v1::DROP), &dropped).ok());
  v1::ClearTeamRuleRequest clear;
  clear.set_team_id(42);
  clear.set_reason("back to normal");
  v1::ClearTeamRuleResponse cleared;
  ASSERT_TRUE(admin_->ClearTeamRule(Ctx().get(), clear, &cleared).ok());
  const int64_t v_forced = forced.version();
  const int64_t v_dropped = dropped.version();
  const int64_t v_cleared = cleared.version();
  ASSERT_EQ(v_dropped, v_forced + 1);
  ASSERT_EQ(v_cleared, v_forced + 2);
  for (Seen* seen : {&seen_a, &seen_b}) {
    ASSERT_TRUE(Eventually([seen, v_cleared] {
      absl::MutexLock lock(&seen->mu);
      return seen->team42.count(v_cleared) > 0;
    }));
  }

  for (Seen* seen : {&seen_a, &seen_b}) {
    absl::MutexLock lock(&seen->mu);
    // Each client published v0 and each later version (or a batch of
    // them); at every version it published, the answer is that version's.
    for (const auto& [version, where] : seen->team42) {
      const bool forced_now = version >= v_forced && version < v_cleared;
      EXPECT_EQ(where.first, forced_now ? "overflow_b1" : "events_b1") << version;
      EXPECT_EQ(where.second, forced_now) << version;
    }
    for (const auto& [version, is_dropped] : seen->team43_dropped) {
      EXPECT_EQ(is_dropped, version >= v_dropped) << version;
    }
    EXPECT_EQ(seen->team42.rbegin()->first, v_cleared);
  }
  // The current views agree, on both clients.
  for (Client* c : {&a, &b}) {
    EXPECT_EQ(*c->Current()->RouteEvent(42, "k", absl::Now()).topic(), "events_b1");
    EXPECT_TRUE(c->Current()->RouteEvent(43, "k", absl::Now()).dropped());
    EXPECT_EQ(c->Current()->RouteEvent(43, "k", absl::Now()).topic(), nullptr);
  }
}

// The leader removes an expired rule at one version, which every client
// applies: until it, both keep the rule, whatever their clocks say.
TEST_F(PoolsRulesTest, ExpiryRemovesARuleAtOneVersionOnEveryClient) {
  const int32_t b1 = Bucket("b1", "default", true);
  Pin(42, b1);
  Client a(ClientOpts("producer-a"));
  Client b(ClientOpts("producer-b"));
  struct Seen {
    absl::Mutex mu;
    std::map<int64_t, bool> forced;  // by version
  };
  Seen seen_a, seen_b;
  auto record = [](Seen* seen) {
    return [seen](const ChangeEvent& e) {
      absl::MutexLock lock(&seen->mu);
      seen->forced[e.new_version] = !e.view->RulesOf(42).empty();
    };
  };
  a.OnChange(record(&seen_a));
  b.OnChange(record(&seen_b));
  WatchConnection ca(&a, Fast());
  WatchConnection cb(&b, Fast());
  ca.Start();
  cb.Start();

  v1::SetTeamRuleRequest req = RuleRequest(42, v1::FORCE_OVERFLOW);
  *req.mutable_ttl() = google::protobuf::util::TimeUtil::MillisecondsToDuration(1500);
  v1::SetTeamRuleResponse set;
  ASSERT_TRUE(SetRule(req, &set).ok());
  ASSERT_TRUE(set.rule().has_expire_time());
  const int64_t v_set = set.version();
  for (Seen* seen : {&seen_a, &seen_b}) {
    ASSERT_TRUE(Eventually(
        [seen, v_set] {
          absl::MutexLock lock(&seen->mu);
          return seen->forced.count(v_set + 1) > 0;
        },
        absl::Seconds(15)));
  }
  EXPECT_EQ(Version(), v_set + 1);

  v1::GetHistoryRequest history;
  history.set_from_version(v_set + 1);
  v1::GetHistoryResponse records;
  ASSERT_TRUE(admin_->GetHistory(Ctx().get(), history, &records).ok());
  ASSERT_EQ(records.records_size(), 1);
  EXPECT_EQ(records.records(0).kind(), "ExpireTeamRules");
  EXPECT_EQ(records.records(0).actor(), "rule-expiry");
  // Removed no earlier than its expire_time.
  EXPECT_GE(
      google::protobuf::util::TimeUtil::TimestampToMicroseconds(records.records(0).create_time()),
      google::protobuf::util::TimeUtil::TimestampToMicroseconds(set.rule().expire_time()));
  for (Seen* seen : {&seen_a, &seen_b}) {
    absl::MutexLock lock(&seen->mu);
    ASSERT_EQ(seen->forced.count(v_set + 1), 1u);
    EXPECT_FALSE(seen->forced[v_set + 1]);
    for (const auto& [version, forced] : seen->forced) {
      EXPECT_EQ(forced, version == v_set) << version;
    }
  }
}

}  // namespace
}  // namespace bucketmap
