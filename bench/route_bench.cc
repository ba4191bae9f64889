// route_bench: the client library's read path (issue 3, benchmarks).
//
//   1. Route() ns/op at 1k, 100k and 1M teams (half with an override, two
//      thirds of those pins and one third pool assignments; half placed by
//      default), against a bare absl::flat_hash_map<int64_t, int32_t> that
//      holds every queried team's final route, with the same random query
//      sequence in the same run. Target: at most 1.5x at 100k and 1M.
//   2. Route() throughput with 2 reader threads against 1 while a new
//      version is published every 10 ms, counting allocations on the
//      reader threads. Target: at least 1.8x, zero allocations.
//   3. What a publication costs the writer at 1M teams (for reference).
//   4. MappingView::RouteEvent() for teams without rules against
//      Client::Route(), same queries, at 100k teams of which 1% have a
//      rule (issue 16). Target: at most 1.2x, zero allocations. A
//      rate-limited team's RouteEvent() is reported beside it.
//
// Usage: route_bench [--quick | --only=TEAMS]
//   --quick: smaller and shorter, for CI; --only: one comparison, for profiling.
// A plain timing program: each number is the median of several runs, and
// the two sides of a comparison run interleaved in one process.
// Sanity checks: Route() answers what the map holds, no time is zero, the
// read path allocates nothing, every publication advances the version,
// RouteEvent() routes as Route() does and overflows a rate-limited team.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "bench/alloc_counter.h"
#include "bench/bench_main.h"
#include "bucketmap/client.h"
#include "codec/codec.h"
#include "domain/snapshot.h"

namespace bucketmap {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

void Die(const absl::Status& s, const char* what) {
  if (s.ok()) return;
  Fatal("%s: %s", what, s.ToString().c_str());
}

Bucket MakeBucket(int32_t id, const std::string& pool, int32_t weight) {
  Bucket b;
  b.id = id;
  b.name = "b" + std::to_string(id);
  b.pool = pool;
  b.weight = weight;
  b.topics = {{"ingestion", "events_plugin_ingestion_" + std::to_string(id)},
              {"clickhouse", "clickhouse_events_json_" + std::to_string(id)},
              {"overflow", "events_overflow_" + std::to_string(id)}};
  return b;
}

struct Mapping {
  std::shared_ptr<const Snapshot> snapshot;
  std::vector<int64_t> teams;  // every team the queries draw from
};

// `n` teams with distinct random ids; half get an override. The first
// `with_rules` of `teams` get a rule (a rate limit, or every tenth a drop).
Mapping MakeMapping(size_t n, uint64_t seed, size_t with_rules = 0) {
  std::mt19937_64 rng(seed);
  MappingState state;
  state.version = 1;
  state.cluster_id = "bench";
  int32_t id = 1;
  for (int i = 0; i < 16; ++i) state.buckets.push_back(MakeBucket(id++, "default", 100));
  for (int i = 0; i < 8; ++i) state.buckets.push_back(MakeBucket(id++, "paid", 50 + 10 * i));
  for (int i = 0; i < 4; ++i) state.buckets.push_back(MakeBucket(id++, "free", 100));
  std::vector<int64_t> teams;
  teams.reserve(n);
  {
    std::uniform_int_distribution<int64_t> any(1, static_cast<int64_t>(n) * 20);
    std::vector<int64_t> drawn;
    while (teams.size() < n) {
      drawn.clear();
      for (size_t i = teams.size(); i < n; ++i) drawn.push_back(any(rng));
      teams.insert(teams.end(), drawn.begin(), drawn.end());
      std::sort(teams.begin(), teams.end());
      teams.erase(std::unique(teams.begin(), teams.end()), teams.end());
    }
  }
  std::shuffle(teams.begin(), teams.end(), rng);
  std::vector<std::pair<int64_t, Target>> assignments;
  std::uniform_int_distribution<int32_t> pin(1, id - 1);
  for (size_t i = 0; i < n / 2; ++i) {
    if (i % 3 == 2) {
      assignments.emplace_back(teams[i], Target::Pool(i % 2 ? "paid" : "free"));
    } else {
      assignments.emplace_back(teams[i], Target::Pin(pin(rng)));
    }
  }
  std::sort(assignments.begin(), assignments.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  state.assignments = std::move(assignments);
  for (size_t i = 0; i < with_rules; ++i) {
    TeamRule rule;
    rule.team_id = teams[i];
    rule.kind = i % 10 == 9 ? RuleKind::kDrop : RuleKind::kRateLimit;
    if (rule.kind == RuleKind::kRateLimit) {
      rule.events_per_second = 1000;
      rule.burst = 1000;
    }
    state.rules.push_back(rule);
  }
  auto built = Snapshot::Build(std::move(state));
  Die(built.status(), "Snapshot::Build");
  return Mapping{*built, std::move(teams)};
}

std::unique_ptr<Client> LoadedClient(const Snapshot& snapshot) {
  auto client = std::make_unique<Client>(ClientOptions{});
  v1::MappingSnapshot proto;
  ToProto(snapshot, &proto);
  Die(client->ApplySnapshot(proto), "ApplySnapshot");
  return client;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// ---- 1. Route() against a flat_hash_map ----

void CompareWithHashMap(size_t n, size_t queries, int runs) {
  const Mapping m = MakeMapping(n, 1000 + n);
  std::unique_ptr<Client> client = LoadedClient(*m.snapshot);
  absl::flat_hash_map<int64_t, int32_t> baseline;
  baseline.reserve(n);
  for (int64_t team : m.teams) baseline[team] = m.snapshot->RouteOf(team).bucket_id;

  std::mt19937_64 rng(7 + n);
  std::uniform_int_distribution<size_t> pick(0, n - 1);
  std::vector<int64_t> q(queries);
  for (int64_t& t : q) t = m.teams[pick(rng)];
  // Same answers, or the comparison means nothing.
  for (size_t i = 0; i < std::min<size_t>(queries, 200000); ++i) {
    if (client->Route(q[i]).bucket_id() != baseline.find(q[i])->second) {
      Fatal("Route() and the map disagree on team %lld", static_cast<long long>(q[i]));
    }
  }

  std::vector<double> route_ns, map_ns;
  route_ns.reserve(runs);
  map_ns.reserve(runs);
  int64_t sink = 0;
  const int64_t allocs_before = t_allocations;
  for (int r = 0; r < runs; ++r) {
    auto t0 = Clock::now();
    for (int64_t team : q) sink += client->Route(team).bucket_id();
    auto t1 = Clock::now();
    for (int64_t team : q) sink += baseline.find(team)->second;
    auto t2 = Clock::now();
    route_ns.push_back(Seconds(t1 - t0) * 1e9 / queries);
    map_ns.push_back(Seconds(t2 - t1) * 1e9 / queries);
  }
  const int64_t route_allocs = t_allocations - allocs_before;
  const double r = Median(route_ns), b = Median(map_ns);
  Expect(r > 0 && b > 0, "%zu teams: Route() %f ns/op, map %f ns/op", n, r, b);
  Expect(route_allocs == 0, "%zu teams: %lld allocations while timing", n,
         static_cast<long long>(route_allocs));
  std::printf("%-8zu %10zu %12.1f %16.1f %8.2fx %10lld%s\n", n, m.snapshot->assignment_count(), r,
              b, r / b, static_cast<long long>(route_allocs), sink == 42 ? " " : "");
}

// ---- 2. Reader scaling while publishing every 10 ms ----

struct ScalingResult {
  double ops_per_sec = 0;
  int64_t allocations = 0;
  int64_t publications = 0;
  double publish_ms_max = 0;
  double publish_ms_total = 0;
};

ScalingResult RunReaders(int readers, double seconds, const Mapping& m) {
  std::unique_ptr<Client> client = LoadedClient(*m.snapshot);
  std::atomic<bool> stop{false};
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<int64_t> ops{0};
  std::atomic<int64_t> allocations{0};

  std::vector<std::thread> threads;
  for (int r = 0; r < readers; ++r) {
    threads.emplace_back([&, r] {
      std::mt19937_64 rng(99 + r);
      std::uniform_int_distribution<size_t> pick(0, m.teams.size() - 1);
      std::vector<int64_t> q(1 << 16);
      for (int64_t& t : q) t = m.teams[pick(rng)];
      client->Route(1);  // registers the thread with liburcu
      ready++;
      while (!go.load()) std::this_thread::yield();
      const int64_t before = t_allocations;
      int64_t n = 0, sink = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        for (int64_t t : q) sink += client->Route(t).bucket_id();
        n += static_cast<int64_t>(q.size());
      }
      allocations += t_allocations - before;
      ops += n + (sink == 42);
    });
  }
  while (ready.load() < readers) std::this_thread::yield();

  // The writer: every 10 ms a delta re-pinning 16 teams, like a stream of
  // AssignTeam calls. (Bucket changes rebuild the index and the domain's
  // placement table; their cost is reported apart, in part 3.)
  ScalingResult result;
  std::mt19937_64 rng(5);
  std::uniform_int_distribution<size_t> pick(0, m.teams.size() - 1);
  go = true;
  const int64_t first_version = client->version();
  const auto start = Clock::now();
  auto next = start;
  while (Seconds(Clock::now() - start) < seconds) {
    next += std::chrono::milliseconds(10);
    std::this_thread::sleep_until(next);
    Change change;
    std::map<int64_t, Target> set;
    for (int i = 0; i < 16; ++i) set[m.teams[pick(rng)]] = Target::Pin(1 + (i % 16));
    change.set.assign(set.begin(), set.end());
    v1::MappingDelta delta;
    delta.set_from_version(client->version());
    delta.set_to_version(client->version() + 1);
    for (const auto& [team, target] : change.set) {
      delta.mutable_set()->add_team_ids(team);
      delta.mutable_set()->add_targets(target.bucket_id);
    }
    const auto t0 = Clock::now();
    Die(client->ApplyDeltas({delta}), "ApplyDeltas");
    const double ms = Seconds(Clock::now() - t0) * 1e3;
    result.publish_ms_max = std::max(result.publish_ms_max, ms);
    result.publish_ms_total += ms;
    ++result.publications;
  }
  stop = true;
  const double elapsed = Seconds(Clock::now() - start);
  for (auto& t : threads) t.join();
  result.ops_per_sec = static_cast<double>(ops.load()) / elapsed;
  result.allocations = allocations.load();
  Expect(result.ops_per_sec > 0, "%d reader(s): no Route() call completed", readers);
  Expect(result.allocations == 0, "%d reader(s): %lld allocations on the reader threads", readers,
         static_cast<long long>(result.allocations));
  Expect(result.publications > 0 && client->version() == first_version + result.publications,
         "%lld publications took the client from version %lld to %lld",
         static_cast<long long>(result.publications), static_cast<long long>(first_version),
         static_cast<long long>(client->version()));
  return result;
}

// The same readers over a bare flat_hash_map, with no publication: how
// well this machine scales memory-bound lookups on two threads at all.
double RunMapReaders(int readers, double seconds, const Mapping& m,
                     const absl::flat_hash_map<int64_t, int32_t>& map) {
  std::atomic<bool> stop{false};
  std::atomic<int64_t> ops{0};
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (int r = 0; r < readers; ++r) {
    threads.emplace_back([&, r] {
      std::mt19937_64 rng(99 + r);
      std::uniform_int_distribution<size_t> pick(0, m.teams.size() - 1);
      std::vector<int64_t> q(1 << 16);
      for (int64_t& t : q) t = m.teams[pick(rng)];
      int64_t n = 0, sink = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        for (int64_t t : q) sink += map.find(t)->second;
        n += static_cast<int64_t>(q.size());
      }
      ops += n + (sink == 42);
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  const double elapsed = Seconds(Clock::now() - start);
  for (auto& t : threads) t.join();
  const double per_sec = static_cast<double>(ops.load()) / elapsed;
  Expect(per_sec > 0, "%d map reader(s): no lookup completed", readers);
  return per_sec;
}

// ---- 3. Publication cost at 1M teams ----

void PublishCost(size_t n) {
  const Mapping m = MakeMapping(n, 31);
  v1::MappingSnapshot proto;
  ToProto(*m.snapshot, &proto);
  Client client({});
  auto t0 = Clock::now();
  Die(client.ApplySnapshot(proto), "ApplySnapshot");
  const double snapshot_ms = Seconds(Clock::now() - t0) * 1e3;

  auto one_delta = [&](bool bucket_change) {
    v1::MappingDelta d;
    d.set_from_version(client.version());
    d.set_to_version(client.version() + 1);
    d.mutable_set()->add_team_ids(m.teams[client.version() % n]);
    d.mutable_set()->add_targets(1);
    if (bucket_change) {
      Bucket b = *m.snapshot->FindBucket(3);
      b.weight = 100 + static_cast<int32_t>(client.version() % 50);
      ToProto(b, d.add_buckets());
    }
    const auto s = Clock::now();
    Die(client.ApplyDeltas({d}), "ApplyDeltas");
    return Seconds(Clock::now() - s) * 1e3;
  };
  std::vector<double> assign_ms, bucket_ms;
  for (int i = 0; i < 9; ++i) assign_ms.push_back(one_delta(false));
  for (int i = 0; i < 5; ++i) bucket_ms.push_back(one_delta(true));
  Expect(snapshot_ms > 0 && Median(assign_ms) > 0 && Median(bucket_ms) > 0,
         "a publication took no time");
  Expect(client.version() == m.snapshot->version() + 14,
         "14 deltas took the client to version %lld", static_cast<long long>(client.version()));
  std::printf(
      "publication at %zu teams (%zu overrides): snapshot %.1f ms; one-assignment delta "
      "%.2f ms (median of 9); bucket-change delta %.1f ms (median of 5)\n",
      n, m.snapshot->assignment_count(), snapshot_ms, Median(assign_ms), Median(bucket_ms));
}

// ---- 4. RouteEvent() against Route() ----

void CompareRouteEvent(size_t n, size_t queries, int runs) {
  const size_t with_rules = n / 100;
  const Mapping m = MakeMapping(n, 4242 + n, with_rules);
  std::unique_ptr<Client> client = LoadedClient(*m.snapshot);
  const std::shared_ptr<const MappingView> view = client->Current();
  Expect(view->team_rules().size() == with_rules, "%zu teams: %zu rules loaded, not %zu", n,
         view->team_rules().size(), with_rules);

  // Teams without rules only (the rules went to teams[0, with_rules)).
  std::mt19937_64 rng(17 + n);
  std::uniform_int_distribution<size_t> pick(with_rules, n - 1);
  std::vector<int64_t> q(queries);
  for (int64_t& t : q) t = m.teams[pick(rng)];
  const absl::Time now = absl::FromUnixSeconds(1800000000);
  const std::string key = "018c5f0e-7a3b-7cde-9f01-23456789abcd";  // a distinct_id
  for (size_t i = 0; i < std::min<size_t>(queries, 200000); ++i) {
    const EventRoute e = view->RouteEvent(q[i], key, now);
    if (e.route().bucket_id() != client->Route(q[i]).bucket_id() || e.overflowed() || e.dropped() ||
        e.topic() == nullptr) {
      Fatal("RouteEvent() and Route() disagree on team %lld", static_cast<long long>(q[i]));
    }
  }

  std::vector<double> event_ns, route_ns;
  event_ns.reserve(runs);
  route_ns.reserve(runs);
  int64_t sink = 0;
  const int64_t allocs_before = t_allocations;
  // Local sums and a local view pointer: a store through a captured
  // reference would make the compiler reload the view's fields per event.
  auto time_event = [&] {
    const MappingView* v = view.get();
    int64_t sum = 0;
    const auto t0 = Clock::now();
    for (int64_t team : q) sum += v->RouteEvent(team, key, now).topic() != nullptr;
    event_ns.push_back(Seconds(Clock::now() - t0) * 1e9 / queries);
    sink += sum;
  };
  auto time_route = [&] {
    const Client* c = client.get();
    int64_t sum = 0;
    const auto t0 = Clock::now();
    for (int64_t team : q) sum += c->Route(team).bucket_id();
    route_ns.push_back(Seconds(Clock::now() - t0) * 1e9 / queries);
    sink += sum;
  };
  // Each side goes first in every other run: whichever runs second finds
  // the table warmer.
  for (int r = 0; r < runs; ++r) {
    if (r % 2 == 0) {
      time_event();
      time_route();
    } else {
      time_route();
      time_event();
    }
  }
  const int64_t allocs = t_allocations - allocs_before;

  // For reference: one rate-limited team (1000/s, burst 1000), 10,000
  // distinct keys, events 100 us apart (10x its limit).
  const int64_t limited = m.teams[0];
  std::vector<std::string> keys;
  for (int i = 0; i < 10000; ++i) keys.push_back("person-" + std::to_string(i));
  const int64_t limited_allocs_before = t_allocations;
  int64_t overflowed = 0;
  const size_t limited_queries = std::min<size_t>(queries, 1000000);
  auto t0 = Clock::now();
  for (size_t i = 0; i < limited_queries; ++i) {
    overflowed += view->RouteEvent(limited, keys[i % keys.size()],
                                   now + absl::Microseconds(100 * static_cast<int64_t>(i)))
                      .overflowed();
  }
  const double limited_ns = Seconds(Clock::now() - t0) * 1e9 / limited_queries;
  const int64_t limited_allocs = t_allocations - limited_allocs_before;

  const double e = Median(event_ns), r = Median(route_ns);
  Expect(e > 0 && r > 0 && limited_ns > 0, "%zu teams: a time is zero", n);
  Expect(allocs == 0 && limited_allocs == 0, "%zu teams: %lld and %lld allocations while timing", n,
         static_cast<long long>(allocs), static_cast<long long>(limited_allocs));
  Expect(overflowed > 0 && overflowed < static_cast<int64_t>(limited_queries),
         "the rate-limited team overflowed %lld of %zu events", static_cast<long long>(overflowed),
         limited_queries);
  std::printf("%-8zu %6zu %14.1f %12.1f %8.2fx %10lld %18.1f %10.1f%%%s\n", n, with_rules, e, r,
              e / r, static_cast<long long>(allocs + limited_allocs), limited_ns,
              100.0 * static_cast<double>(overflowed) / static_cast<double>(limited_queries),
              sink == 42 ? " " : "");
}

}  // namespace
}  // namespace bucketmap

int main(int argc, char** argv) {
  using namespace bucketmap;
  BenchFlags flags("1k and 100k teams, 1M queries, 3 runs; scaling in 3 rounds of 0.5 s");
  int64_t only = 0;
  flags.Int("only", &only, 1, "just the hash-map comparison at this many teams (for profiling)");
  flags.Parse(argc, argv);
  const bool quick = flags.quick();
  if (only > 0) {
    CompareWithHashMap(static_cast<size_t>(only), 5000000, 7);
    return ExitStatus();
  }
  std::printf(
      "== Route() vs absl::flat_hash_map<int64_t,int32_t>, same queries, ns/op "
      "(median of %d runs) ==\n",
      quick ? 3 : 7);
  std::printf("%-8s %10s %12s %16s %9s %10s\n", "teams", "overrides", "Route() ns",
              "flat_hash_map ns", "ratio", "allocs");
  const size_t queries = quick ? 1000000 : 5000000;
  CompareWithHashMap(1000, queries, quick ? 3 : 7);
  CompareWithHashMap(100000, queries, quick ? 3 : 7);
  if (!quick) CompareWithHashMap(1000000, queries, 7);

  const double seconds = quick ? 0.5 : 2.0;
  const int rounds = quick ? 3 : 5;
  std::printf(
      "\n== Route() throughput, 1 vs 2 reader threads, a publication every 10 ms, "
      "100k teams, %.1f s each, median of %d ==\n",
      seconds, rounds);
  const Mapping m = MakeMapping(100000, 77);
  std::vector<double> one, two;
  ScalingResult last1, last2;
  for (int i = 0; i < rounds; ++i) {
    last1 = RunReaders(1, seconds, m);
    last2 = RunReaders(2, seconds, m);
    one.push_back(last1.ops_per_sec);
    two.push_back(last2.ops_per_sec);
    for (const ScalingResult* res : {&last1, &last2}) {
      std::printf(
          "run %d, %d reader(s): %.1f Mops/s; reader allocations %lld; %lld publications, "
          "mean %.2f ms, max %.2f ms\n",
          i, res == &last1 ? 1 : 2, res->ops_per_sec / 1e6,
          static_cast<long long>(res->allocations), static_cast<long long>(res->publications),
          res->publish_ms_total / static_cast<double>(std::max<int64_t>(1, res->publications)),
          res->publish_ms_max);
    }
  }
  std::printf("scaling: %.2fx (2 readers %.1f Mops/s / 1 reader %.1f Mops/s)\n",
              Median(two) / Median(one), Median(two) / 1e6, Median(one) / 1e6);

  {
    absl::flat_hash_map<int64_t, int32_t> map;
    for (int64_t team : m.teams) map[team] = m.snapshot->RouteOf(team).bucket_id;
    std::vector<double> map1, map2;
    for (int i = 0; i < rounds; ++i) {
      map1.push_back(RunMapReaders(1, seconds, m, map));
      map2.push_back(RunMapReaders(2, seconds, m, map));
    }
    std::printf(
        "control, bare flat_hash_map, no publication: %.2fx (2 threads %.1f Mops/s / 1 thread "
        "%.1f Mops/s)\n",
        Median(map2) / Median(map1), Median(map2) / 1e6, Median(map1) / 1e6);
  }

  std::printf(
      "\n== RouteEvent() for teams without rules vs Client::Route(), same queries, ns/op "
      "(median of %d runs); a rate-limited team at 10x its limit ==\n",
      quick ? 3 : 7);
  std::printf("%-8s %6s %14s %12s %9s %10s %18s %11s\n", "teams", "rules", "RouteEvent ns",
              "Route() ns", "ratio", "allocs", "rate-limited ns", "overflowed");
  CompareRouteEvent(100000, queries, quick ? 3 : 7);
  if (!quick) CompareRouteEvent(1000000, queries, 7);

  if (!quick) {
    std::printf("\n== Publication cost (writer side) ==\n");
    PublishCost(1000000);
  }
  return ExitStatus();
}
