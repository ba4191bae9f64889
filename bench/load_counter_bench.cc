// load_counter_bench: what LoadCounter adds to an event's send path
// (issue 11; target: at most 10 ns per event).
//
//   1. One thread routes events of 10,000 teams (Zipf-like: a few heavy
//      teams, a long tail) with Client::Route(), with and without
//      LoadCounter::CountEvent() after it, interleaved in one process; the
//      difference per event is the counting's cost. Median of the rounds.
//   2. The same with 2 threads at once, both counting into one counter,
//      against 2 threads routing only.
//   3. TakeReport(): one report of a full window (draining every slot,
//      ranking the top 1,000 teams) on the reporting thread, for reference.
//
// Usage: load_counter_bench [--quick] [--events=N]
// Sanity checks: every event counted shows in the reports (no event lost
// or counted twice), CountEvent allocates nothing, no time is zero.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <random>
#include <thread>
#include <vector>

#include "bench/alloc_counter.h"
#include "bench/bench_main.h"
#include "bucketmap/client.h"
#include "bucketmap/load_counter.h"
#include "codec/codec.h"
#include "domain/snapshot.h"

namespace bucketmap {
namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr int kTeams = 10000;

double Seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

// Team ids with a heavy head: team k is drawn with weight 1/k.
std::vector<int64_t> Workload(size_t n, uint64_t seed) {
  std::vector<double> cdf(kTeams);
  double sum = 0;
  for (int k = 0; k < kTeams; ++k) cdf[k] = (sum += 1.0 / (k + 1));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, sum);
  std::vector<int64_t> out(n);
  for (int64_t& team : out) {
    team = (std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin()) + 1;
  }
  return out;
}

std::unique_ptr<Client> MakeClient() {
  MappingState state;
  state.version = 1;
  state.cluster_id = "bench";
  for (int i = 1; i <= 8; ++i) {
    Bucket b;
    b.id = i;
    b.name = "b" + std::to_string(i);
    b.topics["ingestion"] = "events_" + std::to_string(i);
    state.buckets.push_back(b);
  }
  state.next_bucket_id = 9;
  auto snapshot = Snapshot::Build(state);
  if (!snapshot.ok()) Fatal("snapshot: %s", snapshot.status().ToString().c_str());
  v1::MappingSnapshot proto;
  ToProto(**snapshot, &proto);
  ClientOptions options;
  options.client_id = "bench";
  auto client = std::make_unique<Client>(options);
  if (absl::Status s = client->ApplySnapshot(proto); !s.ok()) Fatal("%s", s.ToString().c_str());
  return client;
}

// Routes every event of `teams`, counting it when `counter` is set;
// returns seconds. The checksum keeps the routes from being optimised away.
double RunPath(const Client& client, LoadCounter* counter, const std::vector<int64_t>& teams,
               int64_t* checksum) {
  const auto start = SteadyClock::now();
  int64_t sum = 0;
  for (int64_t team : teams) {
    const RouteResult route = client.Route(team);
    sum += route.bucket_id();
    if (counter != nullptr) counter->CountEvent(team);
  }
  *checksum += sum;
  return Seconds(SteadyClock::now() - start);
}

int64_t Drain(LoadCounter* counter, absl::Time* now) {
  LoadReport report;
  int64_t total = 0;
  *now += absl::Seconds(10);
  if (counter->TakeReport(*now, nullptr, false, &report)) {
    for (int64_t e : report.events) total += e;
    total += report.other_events;
  }
  return total;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Main(int argc, char** argv) {
  BenchFlags flags("2M events per round and 5 rounds instead of 20M and 9");
  int64_t events = 20000000;
  flags.Int("events", &events, 1000, "events per round");
  flags.Parse(argc, argv);
  const int rounds = flags.quick() ? 5 : 9;
  if (flags.quick()) events = std::min<int64_t>(events, 2000000);

  std::unique_ptr<Client> client = MakeClient();
  const std::vector<int64_t> teams = Workload(static_cast<size_t>(events), 42);
  LoadCounter counter;
  int64_t checksum = 0;
  // Warm up: the thread's reader record, the counter's slots.
  RunPath(*client, &counter, teams, &checksum);
  // The reports' clock starts after the first event (which the counter
  // stamps with the wall clock), so that the first Drain() ends the first
  // window: taken before it, a millisecond boundary crossed in between
  // left that window open and the warm-up's events in the next round.
  absl::Time now = absl::Now();
  int64_t counted = Drain(&counter, &now);
  Expect(counted == events, "warm-up: %lld counted of %lld", static_cast<long long>(counted),
         static_cast<long long>(events));

  // 1. One thread: route, and route + count, interleaved.
  std::vector<double> base;
  std::vector<double> with;
  for (int r = 0; r < rounds; ++r) {
    base.push_back(RunPath(*client, nullptr, teams, &checksum));
    const int64_t before = t_allocations;
    const double seconds = RunPath(*client, &counter, teams, &checksum);
    Expect(t_allocations == before, "CountEvent allocated %lld times",
           static_cast<long long>(t_allocations - before));
    with.push_back(seconds);
    counted = Drain(&counter, &now);
    Expect(counted == events, "round %d: %lld counted of %lld", r, static_cast<long long>(counted),
           static_cast<long long>(events));
  }
  const double base_ns = Median(base) / events * 1e9;
  const double with_ns = Median(with) / events * 1e9;
  Expect(base_ns > 0 && with_ns > 0, "a time is zero");
  std::printf(
      "1 thread: Route() %.2f ns/event, Route()+CountEvent() %.2f ns/event: +%.2f ns "
      "per event (target <= 10)\n",
      base_ns, with_ns, with_ns - base_ns);

  // 2. Two threads at once, routing only and routing + counting into the
  // same counter, interleaved: the difference is counting's cost when
  // threads share the counter (and the machine's two cores).
  auto two_threads = [&](LoadCounter* into) {
    std::atomic<int> ready{0};
    double secs[2] = {0, 0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) {
      threads.emplace_back([&, t] {
        int64_t local = 0;
        RunPath(*client, nullptr, teams, &local);  // the thread's first Route()
        ready.fetch_add(1);
        while (ready.load() < 2) {
        }
        secs[t] = RunPath(*client, into, teams, &local);
        if (local == 42) std::fputc(' ', stderr);
      });
    }
    for (std::thread& th : threads) th.join();
    return std::max(secs[0], secs[1]);
  };
  std::vector<double> two_base;
  std::vector<double> two_with;
  for (int r = 0; r < rounds; ++r) {
    two_base.push_back(two_threads(nullptr));
    two_with.push_back(two_threads(&counter));
    counted = Drain(&counter, &now);
    Expect(counted == 2 * events, "2 threads, round %d: %lld counted of %lld", r,
           static_cast<long long>(counted), static_cast<long long>(2 * events));
  }
  const double two_base_ns = Median(two_base) / events * 1e9;
  const double two_with_ns = Median(two_with) / events * 1e9;
  Expect(two_base_ns > 0 && two_with_ns > 0, "a time is zero");
  std::printf(
      "2 threads: Route() %.2f ns/event, Route()+CountEvent() %.2f ns/event per thread: "
      "+%.2f ns per event\n",
      two_base_ns, two_with_ns, two_with_ns - two_base_ns);

  // 3. The report of a full window.
  std::vector<double> report;
  for (int r = 0; r < rounds; ++r) {
    RunPath(*client, &counter, teams, &checksum);
    LoadReport out;
    now += absl::Seconds(10);
    std::shared_ptr<const MappingView> view = client->Current();
    const auto start = SteadyClock::now();
    counter.TakeReport(now, view.get(), false, &out);
    report.push_back(Seconds(SteadyClock::now() - start));
    Expect(out.team_ids.size() == static_cast<size_t>(kMaxLoadReportTeams),
           "report lists %zu teams", out.team_ids.size());
  }
  std::printf("TakeReport() of %d teams (top %d listed): %.1f us\n", kTeams, kMaxLoadReportTeams,
              Median(report) * 1e6);
  std::printf("(checksum %lld)\n", static_cast<long long>(checksum % 1000));
  return ExitStatus();
}

}  // namespace
}  // namespace bucketmap

int main(int argc, char** argv) { return bucketmap::Main(argc, argv); }
