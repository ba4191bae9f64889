// MappingView::RouteEvent(): team rules applied by a producer (docs/rules.md).
// A team without rules gets its route and the event role's topic; a rate
// limit sends the excess to the overflow topic, and overflow sticks to a
// (team, key) for the window; force_overflow, drop and skip person
// processing; token buckets survive new versions; the sticky set stays
// bounded. Time is passed in, so every run is exact.
#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bucketmap/client.h"
#include "client_test_util.h"
#include "codec/codec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bucketmap {
namespace client_testing {
namespace {

using ::testing::ElementsAre;

const absl::Time kT0 = absl::FromUnixSeconds(1800000000);

Bucket WithOverflow(Bucket b) {
  b.topics["overflow"] = absl::StrCat("overflow_", b.id);
  return b;
}

TeamRule Rule(int64_t team, RuleKind kind, double eps = 0, int64_t burst = 0) {
  TeamRule r;
  r.team_id = team;
  r.kind = kind;
  r.events_per_second = eps;
  r.burst = burst;
  return r;
}

// Buckets 1 (with overflow) and 2 (without) in the default pool, bucket 3
// in pool "empty" DRAINING; team 7 pinned to 1, team 8 to 2, team 9 in
// "empty" (unroutable).
MappingState State(std::vector<TeamRule> rules) {
  MappingState s;
  s.version = 3;
  s.cluster_id = "c";
  s.buckets = {WithOverflow(MakeBucket(1)), MakeBucket(2),
               MakeBucket(3, "empty", BucketState::kDraining)};
  s.assignments = {{7, Target::Pin(1)}, {8, Target::Pin(2)}, {9, Target::Pool("empty")}};
  s.rules = std::move(rules);
  return s;
}

std::unique_ptr<Client> Loaded(MappingState state, ClientOptions options = {}) {
  auto client = std::make_unique<Client>(std::move(options));
  EXPECT_THAT(client->ApplySnapshot(SnapshotProto(std::move(state))), IsOk());
  return client;
}

v1::MappingDelta Delta(const Change& change, int64_t from) {
  v1::MappingDelta d;
  ToProto(change, from + 1, &d);
  return d;
}

TEST(RouteEventTest, ATeamWithoutRulesGetsItsRouteAndTheEventRolesTopic) {
  ClientOptions options;
  auto client = Loaded(State({}), options);
  auto view = client->Current();
  for (int64_t team : {7, 8, 12345}) {
    const EventRoute e = view->RouteEvent(team, "k", kT0);
    EXPECT_EQ(e.route().bucket_id(), client->Route(team).bucket_id()) << team;
    EXPECT_EQ(e.route().version(), 3);
    EXPECT_FALSE(e.route().has_rules());
    ASSERT_NE(e.topic(), nullptr);
    EXPECT_EQ(*e.topic(), *view->Topic(e.route().bucket_id(), "ingestion"));
    EXPECT_FALSE(e.dropped() || e.overflowed() || e.skip_person_processing());
  }
  // Unroutable: no topic, never a guess.
  const EventRoute lost = view->RouteEvent(9, "k", kT0);
  EXPECT_EQ(lost.route().status(), RouteStatus::kNoPlaceableBucket);
  EXPECT_EQ(lost.topic(), nullptr);
  EXPECT_EQ(view->RouteEvent(0, "k", kT0).topic(), nullptr);

  // Another event role; a bucket without it gives no topic.
  options.event_role = "clickhouse";
  MappingState state = State({});
  state.buckets[0].topics["clickhouse"] = "ch_1";
  auto other = Loaded(state, options);
  EXPECT_EQ(*other->Current()->RouteEvent(7, "k", kT0).topic(), "ch_1");
  EXPECT_EQ(other->Current()->RouteEvent(8, "k", kT0).topic(), nullptr);
}

// Bucket ids far sparser than the server's 1, 2, ... (a malformed or
// hostile snapshot; the fuzzer sent id 2^31 - 1) route as any other, without
// a table sized by the largest id.
TEST(RouteEventTest, SparseBucketIdsGetTheirTopicsWithoutATableById) {
  MappingState s;
  s.version = 3;
  s.cluster_id = "c";
  s.buckets = {WithOverflow(MakeBucket(1)), WithOverflow(MakeBucket(2147483647))};
  s.assignments = {{7, Target::Pin(1)}, {8, Target::Pin(2147483647)}};
  s.rules = {Rule(8, RuleKind::kForceOverflow)};
  auto client = Loaded(std::move(s));
  auto view = client->Current();
  const EventRoute one = view->RouteEvent(7, "k", kT0);
  ASSERT_NE(one.topic(), nullptr);
  EXPECT_EQ(*one.topic(), *view->Topic(1, "ingestion"));
  const EventRoute max = view->RouteEvent(8, "k", kT0);
  EXPECT_EQ(max.route().bucket_id(), 2147483647);
  ASSERT_NE(max.topic(), nullptr);
  EXPECT_EQ(*max.topic(), "overflow_2147483647");
  EXPECT_TRUE(max.overflowed());
  EXPECT_EQ(view->RouteEvent(9, "k", kT0).topic(),
            view->Topic(view->Route(9).bucket_id(), "ingestion"));
}

TEST(RouteEventTest, ForceOverflowDropAndSkipPersonProcessing) {
  auto client =
      Loaded(State({Rule(7, RuleKind::kForceOverflow), Rule(7, RuleKind::kSkipPersonProcessing),
                    Rule(8, RuleKind::kDrop), Rule(8, RuleKind::kSkipPersonProcessing),
                    Rule(9, RuleKind::kDrop), Rule(500, RuleKind::kSkipPersonProcessing)}));
  auto view = client->Current();
  EXPECT_TRUE(client->Route(7).has_rules());
  EXPECT_TRUE(client->Route(500).has_rules());  // default-placed, with an entry of its own
  EXPECT_EQ(client->Route(500).bucket_id(), view->snapshot().RouteOf(500).bucket_id);
  EXPECT_FALSE(client->Route(501).has_rules());

  const EventRoute forced = view->RouteEvent(7, "k", kT0);
  ASSERT_NE(forced.topic(), nullptr);
  EXPECT_EQ(*forced.topic(), "overflow_1");
  EXPECT_TRUE(forced.overflowed());
  EXPECT_TRUE(forced.skip_person_processing());
  EXPECT_FALSE(forced.dropped());

  const EventRoute dropped = view->RouteEvent(8, "k", kT0);
  EXPECT_TRUE(dropped.dropped());
  EXPECT_EQ(dropped.topic(), nullptr);
  EXPECT_EQ(dropped.route().bucket_id(), 2);

  const EventRoute skipped = view->RouteEvent(500, "k", kT0);
  ASSERT_NE(skipped.topic(), nullptr);
  EXPECT_EQ(*skipped.topic(), *view->Topic(skipped.route().bucket_id(), "ingestion"));
  EXPECT_TRUE(skipped.skip_person_processing());
  EXPECT_FALSE(skipped.overflowed());

  // Unroutable stays unroutable, rules or not.
  EXPECT_EQ(view->RouteEvent(9, "k", kT0).topic(), nullptr);
  EXPECT_FALSE(view->RouteEvent(9, "k", kT0).dropped());
}

// The test: a producer sends 3x a team's limit. The excess goes to
// the overflow topic, and no key goes back to the main topic within the
// window of its overflow.
TEST(RouteEventTest, ThreeTimesTheLimitOverflowsTheExcessAndNoKeyAlternatesInsideTheWindow) {
  constexpr double kLimit = 100;  // events/s, burst 100
  constexpr int kSeconds = 10;
  // Not a multiple of 3: without stickiness, the tokens (every third
  // event) would go to each key in turn.
  constexpr int kKeys = 31;
  const absl::Duration window = absl::Seconds(1);
  ClientOptions options;
  options.overflow_sticky_window = window;
  auto client = Loaded(State({Rule(7, RuleKind::kRateLimit, kLimit, 100)}), options);
  auto view = client->Current();

  struct Event {
    absl::Time t;
    bool overflowed;
  };
  std::map<std::string, std::vector<Event>> by_key;
  int64_t main = 0, overflow = 0;
  const int events = static_cast<int>(3 * kLimit * kSeconds);
  for (int i = 0; i < events; ++i) {
    const absl::Time t = kT0 + absl::Seconds(i / (3 * kLimit));
    const std::string key = absl::StrCat("person-", i % kKeys);
    const EventRoute e = view->RouteEvent(7, key, t);
    ASSERT_NE(e.topic(), nullptr);
    EXPECT_EQ(*e.topic(), e.overflowed() ? "overflow_1" : "events_plugin_ingestion_1");
    (e.overflowed() ? overflow : main)++;
    by_key[key].push_back({t, e.overflowed()});
  }
  // The main topic gets the limit (plus the burst), the rest overflows.
  EXPECT_LE(main, kLimit * kSeconds + 100 + 1);
  EXPECT_GE(main, kLimit * kSeconds * 0.8);
  EXPECT_EQ(main + overflow, events);
  EXPECT_GE(overflow, events - kLimit * kSeconds - 101);

  // No alternation: once a key overflows at t, it is not on the main topic
  // again before t + window.
  int episodes = 0;
  for (const auto& [key, list] : by_key) {
    absl::Time marked = absl::InfinitePast();
    bool previous_overflowed = false;
    for (const Event& e : list) {
      if (e.overflowed && !previous_overflowed) {
        marked = e.t;
        ++episodes;
      }
      if (!e.overflowed) {
        EXPECT_GE(e.t, marked + window) << key << " went back to main inside the window";
      }
      previous_overflowed = e.overflowed;
    }
  }
  EXPECT_GT(episodes, 0);
}

TEST(RouteEventTest, TheSharesOfNProducersAddUpToTheLimit) {
  ClientOptions options;
  options.rate_limit_share = 0.25;  // one of four producers
  auto client = Loaded(State({Rule(7, RuleKind::kRateLimit, 400, 400)}), options);
  auto view = client->Current();
  int64_t main = 0;
  // 2 s at 1,000 events/s, each event its own key.
  for (int i = 0; i < 2000; ++i) {
    const EventRoute e = view->RouteEvent(7, absl::StrCat(i), kT0 + absl::Milliseconds(i));
    if (!e.overflowed()) ++main;
  }
  // 100/s and a burst of 100 for this producer.
  EXPECT_GE(main, 280);
  EXPECT_LE(main, 301);
}

TEST(RouteEventTest, TokenBucketsSurviveNewVersionsUntilTheirRuleChanges) {
  ClientOptions options;
  options.overflow_sticky_window = absl::Milliseconds(10);
  auto client = Loaded(State({Rule(7, RuleKind::kRateLimit, 1, 5)}), options);
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(client->Current()->RouteEvent(7, absl::StrCat(i), kT0).overflowed()) << i;
  }
  EXPECT_TRUE(client->Current()->RouteEvent(7, "x", kT0).overflowed());
  // An unrelated version: the bucket stays empty.
  Change pin;
  pin.set = {{100, Target::Pin(1)}};
  ASSERT_THAT(client->ApplyDeltas({Delta(pin, 3)}), IsOk());
  EXPECT_TRUE(client->Current()->RouteEvent(7, "y", kT0).overflowed());
  // A new rate: a new, full bucket.
  Change faster;
  faster.rules = {Rule(7, RuleKind::kRateLimit, 2, 5)};
  ASSERT_THAT(client->ApplyDeltas({Delta(faster, 4)}), IsOk());
  EXPECT_FALSE(client->Current()->RouteEvent(7, "z", kT0).overflowed());
  // Cleared: everything on the main topic, at that version.
  Change cleared;
  cleared.cleared_rules = {{7, RuleKind::kRateLimit}};
  ASSERT_THAT(client->ApplyDeltas({Delta(cleared, 5)}), IsOk());
  EXPECT_FALSE(client->Route(7).has_rules());
  for (int i = 0; i < 20; ++i) {
    EXPECT_FALSE(client->Current()->RouteEvent(7, "x", kT0).overflowed());
  }
}

// A sticky set with no room left for a key makes the whole team overflow
// for one window: memory stays bounded and still no key alternates.
TEST(RouteEventTest, AFullStickySetOverflowsTheWholeTeamForOneWindow) {
  ClientOptions options;
  options.overflow_sticky_capacity = 64;
  options.overflow_sticky_window = absl::Seconds(5);
  auto client = Loaded(State({Rule(7, RuleKind::kRateLimit, 1, 1)}), options);
  auto view = client->Current();
  EXPECT_FALSE(view->RouteEvent(7, "first", kT0).overflowed());
  // Thousands of keys over the limit: far more than 64 words.
  for (int i = 0; i < 5000; ++i) {
    EXPECT_TRUE(
        view->RouteEvent(7, absl::StrCat("k", i), kT0 + absl::Milliseconds(i / 100)).overflowed());
  }
  // Tokens are back after a few seconds, but the team still overflows for
  // the window of the key that found no room.
  EXPECT_TRUE(view->RouteEvent(7, "fresh", kT0 + absl::Seconds(4)).overflowed());
  // After it, keys are judged one by one again.
  EXPECT_FALSE(view->RouteEvent(7, "later", kT0 + absl::Seconds(11)).overflowed());
}

// Readers share one token bucket without locks: with time standing still,
// exactly `burst` events get through, whatever the threads.
TEST(RouteEventTest, ConcurrentProducersTakeExactlyTheBurst) {
  auto client = Loaded(State({Rule(7, RuleKind::kRateLimit, 1, 1000)}));
  std::atomic<int64_t> main{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i) {
        const EventRoute e = client->Current()->RouteEvent(7, absl::StrCat(t, "-", i), kT0);
        if (!e.overflowed()) main.fetch_add(1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(main.load(), 1000);
}

TEST(RouteEventTest, RulesAndPoolObjectsTravelInTheCacheFile) {
  MappingState state = State({Rule(7, RuleKind::kForceOverflow), Rule(500, RuleKind::kDrop)});
  Pool free;
  free.name = "free";
  free.state = BucketState::kPaused;
  free.priority = 7;
  state.pool_objects = {free};
  auto client = Loaded(state);
  const std::string path = ::testing::TempDir() + "/rules.cache";
  ASSERT_THAT(client->WriteCache(path), IsOk());
  Client reader{ClientOptions{}};
  ASSERT_THAT(reader.LoadCache(path), IsOk());
  auto view = reader.Current();
  EXPECT_EQ(view->team_rules().size(), 2u);
  EXPECT_TRUE(view->PoolOf("free").paused());
  EXPECT_EQ(view->PoolOf("free").priority, 7);
  EXPECT_TRUE(view->RouteEvent(500, "k", kT0).dropped());
  EXPECT_TRUE(view->RouteEvent(7, "k", kT0).overflowed());
}

TEST(OnBucketStateTest, TellsTheCurrentStateThenEveryChange) {
  auto client = Loaded(State({}));
  std::vector<std::pair<int64_t, bool>> seen;  // (version, paused)
  client->OnBucketState(1, [&](const BucketStateChange& c) {
    EXPECT_EQ(c.bucket_id, 1);
    seen.emplace_back(c.version, c.paused());
  });
  ASSERT_THAT(seen, ElementsAre(std::make_pair(3, false)));  // at once
  Change pin;
  pin.set = {{100, Target::Pin(1)}};
  ASSERT_THAT(client->ApplyDeltas({Delta(pin, 3)}), IsOk());
  EXPECT_EQ(seen.size(), 1u);  // no change of state
  Change pause;
  Bucket paused = WithOverflow(MakeBucket(1));
  paused.state = BucketState::kPaused;
  pause.buckets = {paused};
  ASSERT_THAT(client->ApplyDeltas({Delta(pause, 4)}), IsOk());
  Change resume;
  resume.buckets = {WithOverflow(MakeBucket(1))};
  ASSERT_THAT(client->ApplyDeltas({Delta(resume, 5)}), IsOk());
  EXPECT_THAT(seen, ElementsAre(std::make_pair(3, false), std::make_pair(5, true),
                                std::make_pair(6, false)));

  // Registered before any mapping: told at the first one.
  Client fresh{ClientOptions{}};
  std::vector<std::optional<BucketState>> states;
  const Client::ListenerId id =
      fresh.OnBucketState(2, [&](const BucketStateChange& c) { states.push_back(c.state); });
  EXPECT_TRUE(states.empty());
  ASSERT_THAT(fresh.ApplySnapshot(SnapshotProto(State({}))), IsOk());
  EXPECT_THAT(states, ElementsAre(std::optional<BucketState>(BucketState::kActive)));
  fresh.RemoveBucketStateListener(id);
  ASSERT_THAT(fresh.ApplyDeltas({Delta(pause, 3)}), IsOk());
  EXPECT_EQ(states.size(), 1u);
}

}  // namespace
}  // namespace client_testing
}  // namespace bucketmap
