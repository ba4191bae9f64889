// handoff_bench: what a coordinated move (SPEC §5) costs, end to end, with
// the real server, PostgreSQL, librdkafka's mock cluster in a helper
// process, and the client library's producer and consumer helpers (the
// harness of tests/handoff_e2e).
//
// Each round uses two fresh buckets: SRC (the moving team and 9 others)
// and DST (10 teams). A producer session sends live events for all 20
// teams and consumers of both buckets run; after a warm-up, a backlog of
// --lags events is written to SRC's topic as fast as the broker takes it
// (the source's consumer lag at the move), and one team is pinned from SRC
// to DST. Reported per round:
//   - move -> COMPLETED: from the AssignTeam call until ListHandoffs shows
//     the handoff COMPLETED (barrier + drain of the backlog + polls);
//   - the hold on DST: partitions paused and for how long;
//   - what the hold costs DST's other teams: produce-to-process latency of
//     their events produced during the handoff, against those produced
//     before the move (p50 / p99).
//
// Usage: handoff_bench [--quick] [--lags=0,10000,50000] [--partitions=3]
//                      [--round_sleep_ms=20] [--src_work_us=0]
//   --quick: one round, at lag 0, unless --lags is given.
// Sanity checks: every write succeeds, both consumer groups get
// partitions, each handoff ends COMPLETED, the target resumes every
// partition it held, the moved team's events reach the target,
// DST's latencies before and during the move were measured and are
// positive, no delivery failed and the harness saw no error.
#include <algorithm>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/bench_main.h"
#include "tests/handoff_e2e/handoff_harness.h"

namespace bucketmap {
namespace {

using handoff_harness::Consumer;
using handoff_harness::EventLog;
using handoff_harness::Group;
using handoff_harness::HarnessErrors;
using handoff_harness::IngestTopic;
using handoff_harness::Producer;
using handoff_harness::Stack;

struct Options {
  std::vector<int64_t> lags;  // {0, 10000, 50000}; {0} with --quick
  int partitions = 3;
  int round_sleep_ms = 20;
  // Work per event on the source's consumer: its drain rate.
  int src_work_us = 0;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// Writes `count` events for `teams` (round-robin) to `topic` as fast as the
// mock takes them; the backlog the source consumer finds at the move.
bool WriteBacklog(const std::string& bootstrap, const std::string& topic,
                  const std::vector<int64_t>& teams, int64_t count) {
  if (count == 0) return true;
  rd_kafka_conf_t* conf = handoff_harness::Conf(
      {{"bootstrap.servers", bootstrap}, {"linger.ms", "20"}, {"batch.num.messages", "10000"}});
  rd_kafka_t* rk = handoff_harness::NewKafka(RD_KAFKA_PRODUCER, conf, nullptr);
  if (rk == nullptr) return false;
  const std::string version = "1";
  for (int64_t i = 0; i < count; ++i) {
    const int64_t team = teams[static_cast<size_t>(i) % teams.size()];
    const std::string key = absl::StrCat(team);
    // A seq far above the live producer's, so the two never collide.
    const std::string value =
        absl::StrCat(team, ":", 1000000000 + i, ":", absl::ToUnixMicros(absl::Now()));
    rd_kafka_resp_err_t err;
    do {
      err = rd_kafka_producev(
          rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
          RD_KAFKA_V_KEY(key.data(), key.size()),
          RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
          RD_KAFKA_V_HEADER(kVersionHeader, version.data(), version.size()), RD_KAFKA_V_END);
      if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) rd_kafka_poll(rk, 10);
    } while (err == RD_KAFKA_RESP_ERR__QUEUE_FULL);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) break;
  }
  const bool ok = rd_kafka_flush(rk, 60000) == RD_KAFKA_RESP_ERR_NO_ERROR;
  rd_kafka_destroy(rk);
  return ok;
}

// Failures past Stack::Launch() return rather than call Fatal(): the
// harness starts the server with Spawn(), so only ~Stack() stops it.
int Run(const Options& o) {
  std::vector<std::pair<std::string, int>> topics = {{"bucketmap_changes", 1}};
  const int rounds = static_cast<int>(o.lags.size());
  // Bucket ids are 1.. in creation order: round r uses 2r+1 (SRC), 2r+2 (DST).
  for (int32_t b = 1; b <= 2 * rounds; ++b) topics.emplace_back(IngestTopic(b), o.partitions);
  auto stack_or = Stack::Start(topics, BUCKETMAP_SERVER_BINARY);
  if (!stack_or.ok()) Fatal("%s", stack_or.status().ToString().c_str());
  std::unique_ptr<Stack> stack = *std::move(stack_or);
  if (absl::Status s = stack->Launch(); !s.ok()) {
    std::fprintf(stderr, "%s: %s\n", BenchName().c_str(), s.ToString().c_str());
    return 1;
  }
  std::printf(
      "partitions %d, live rate %.0f events/s over 20 teams, source work %d us/event\n"
      "%-8s %-12s %-10s %-10s %-14s %-14s %-14s\n",
      o.partitions, o.round_sleep_ms > 0 ? 20 * 1000.0 / o.round_sleep_ms : 0.0, o.src_work_us,
      "lag", "move->done", "holds", "held", "dst p50 before", "dst p50 during", "dst p99 during");
  for (int r = 0; r < rounds; ++r) {
    const int64_t lag = o.lags[static_cast<size_t>(r)];
    // Pools of their own, so earlier rounds' buckets do not matter.
    const std::string pool = absl::StrCat("round", r);
    const int32_t src_id = 2 * r + 1, dst_id = 2 * r + 2;
    for (int32_t b : {src_id, dst_id}) {
      absl::StatusOr<int32_t> id = stack->CreateBucket(absl::StrCat("bench", b), pool,
                                                       IngestTopic(b), Group("ingestion", b));
      if (!id.ok() || *id != b) {
        std::fprintf(stderr, "%s: bucket %d: %s\n", BenchName().c_str(), b,
                     id.status().ToString().c_str());
        return 1;
      }
    }
    std::vector<int64_t> src_teams, dst_teams, all;
    for (int64_t i = 1; i <= 10; ++i) {
      src_teams.push_back(r * 1000 + i);
      dst_teams.push_back(r * 1000 + 100 + i);
    }
    all = src_teams;
    all.insert(all.end(), dst_teams.begin(), dst_teams.end());
    for (int64_t t : all) {
      const bool to_src = std::find(src_teams.begin(), src_teams.end(), t) != src_teams.end();
      if (absl::StatusOr<int64_t> v = stack->Assign(t, to_src ? src_id : dst_id); !v.ok()) {
        std::fprintf(stderr, "%s: %s\n", BenchName().c_str(), v.status().ToString().c_str());
        return 1;
      }
    }
    if (!stack->WaitNoOpenHandoffs(absl::Seconds(30))) {
      std::fprintf(stderr, "%s: the handoffs of the first pins did not end in 30 s\n",
                   BenchName().c_str());
      return 1;
    }

    EventLog log;
    auto src =
        std::make_unique<Consumer>(src_id, "ingestion", IngestTopic(src_id), "", stack->server(),
                                   stack->bootstrap(), &log, absl::Microseconds(o.src_work_us));
    auto dst = std::make_unique<Consumer>(dst_id, "ingestion", IngestTopic(dst_id), "",
                                          stack->server(), stack->bootstrap(), &log);
    auto producer = std::make_unique<Producer>(r, stack->server(), stack->bootstrap(), all,
                                               absl::Milliseconds(o.round_sleep_ms));
    src->Start();
    dst->Start();
    producer->Start();
    // Past the consumer groups' first join, so the "before" latencies are
    // steady.
    const absl::Time joined = absl::Now() + absl::Seconds(30);
    while ((!src->assigned() || !dst->assigned()) && absl::Now() < joined) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    Expect(src->assigned() && dst->assigned(),
           "lag %lld: a consumer group got no partition in 30 s (SRC %d, DST %d)",
           static_cast<long long>(lag), src->assigned(), dst->assigned());
    absl::SleepFor(absl::Seconds(3));
    // The source's lag at the move: a backlog written just before it.
    if (!WriteBacklog(stack->bootstrap(), IngestTopic(src_id), src_teams, lag)) {
      std::fprintf(stderr, "%s: backlog write failed\n", BenchName().c_str());
      return 1;
    }

    const int64_t mover = src_teams[0];
    const absl::Time t0 = absl::Now();
    absl::StatusOr<int64_t> v = stack->Assign(mover, dst_id);
    if (!v.ok()) {
      std::fprintf(stderr, "%s: %s\n", BenchName().c_str(), v.status().ToString().c_str());
      return 1;
    }
    absl::Time t1 = absl::InfinitePast();
    std::string end_state = "timeout";
    const absl::Time deadline = t0 + absl::Minutes(5);
    while (absl::Now() < deadline && t1 == absl::InfinitePast()) {
      for (const v1::Handoff& h : stack->Handoffs(true)) {
        if (h.opened_version() != *v) continue;
        if (h.state() == v1::HANDOFF_SWITCHING || h.state() == v1::HANDOFF_DRAINING) break;
        t1 = absl::Now();
        end_state = v1::HandoffPhase_Name(h.state());
      }
      if (t1 == absl::InfinitePast()) absl::SleepFor(absl::Milliseconds(10));
    }
    absl::SleepFor(absl::Seconds(1));
    producer->Stop();
    absl::SleepFor(absl::Milliseconds(500));
    src->Stop();
    dst->Stop();

    // DST's other teams: events produced before the move, and during it.
    std::vector<double> before, during;
    int64_t mover_at_dst = 0;
    double min_ms = std::numeric_limits<double>::infinity();
    for (const EventLog::Sample& s : log.Samples()) {
      if (s.bucket == dst_id && s.team == mover) ++mover_at_dst;
      if (s.bucket != dst_id || s.team == mover) continue;
      const double ms = absl::ToDoubleMilliseconds(s.processed - s.produced);
      min_ms = std::min(min_ms, ms);
      if (s.produced < t0 && s.produced > t0 - absl::Seconds(1)) before.push_back(ms);
      if (s.produced >= t0 && s.produced < t1) during.push_back(ms);
    }
    const PartitionHold::Stats& hold = dst->hold_stats();
    std::printf("%-8lld %-12s %-10lld %-10s %-14.1f %-14.1f %-14.1f  %s\n",
                static_cast<long long>(lag),
                absl::StrCat(absl::ToDoubleMilliseconds(t1 - t0), "ms").c_str(),
                static_cast<long long>(hold.holds),
                absl::StrCat(absl::ToInt64Milliseconds(hold.held_time), "ms").c_str(),
                Percentile(before, 0.5), Percentile(during, 0.5), Percentile(during, 0.99),
                end_state.c_str());
    std::fflush(stdout);
    const long long l = static_cast<long long>(lag);
    Expect(end_state == "HANDOFF_COMPLETED", "lag %lld: the handoff ended %s", l,
           end_state.c_str());
    Expect(t1 > t0, "lag %lld: move -> done took no time", l);
    // Whether DST holds at all depends on timing: a handoff that ends
    // before the moved team's first event reaches DST holds nothing.
    Expect(hold.resumes == hold.holds, "lag %lld: DST held %lld partitions and resumed %lld", l,
           static_cast<long long>(hold.holds), static_cast<long long>(hold.resumes));
    Expect(mover_at_dst > 0, "lag %lld: no event of the moved team reached DST", l);
    Expect(!before.empty() && !during.empty(),
           "lag %lld: DST's other teams had %zu events before the move, %zu during it", l,
           before.size(), during.size());
    Expect(min_ms > 0, "lag %lld: an event was processed %f ms after it was produced", l, min_ms);
    Expect(producer->failed() == 0, "lag %lld: %lld deliveries failed", l,
           static_cast<long long>(producer->failed()));
  }
  Expect(HarnessErrors() == 0, "the harness counted %lld errors (above)",
         static_cast<long long>(HarnessErrors()));
  return ExitStatus();
}

}  // namespace
}  // namespace bucketmap

int main(int argc, char** argv) {
  bucketmap::Options options;
  bucketmap::BenchFlags flags("one round, at lag 0, unless --lags is given");
  flags.IntList("lags", &options.lags, 0, "the source's backlog at the move, per round");
  flags.Int("partitions", &options.partitions, 1, "partitions per bucket topic (3)");
  flags.Int("round_sleep_ms", &options.round_sleep_ms, 0,
            "the producer's pause between rounds of 20 events (20)");
  flags.Int("src_work_us", &options.src_work_us, 0, "work per event on the source (0)");
  flags.Parse(argc, argv);
  if (options.lags.empty()) {
    options.lags = flags.quick() ? std::vector<int64_t>{0} : std::vector<int64_t>{0, 10000, 50000};
  }
  return bucketmap::Run(options);
}
