// watch_bench: WatchMapping propagation and per-watcher memory, against
// the real server binary on a throwaway PostgreSQL.
//
//   Propagation from AssignTeam's reply to each watcher's receipt of the
//   push carrying that version, with N watchers over 50 connections; for
//   each write, p50 and p99 over all receipts; reported as the median over
//   the writes. Clients and server share this machine.
//   Server memory per idle watcher: the server's RSS growth while N
//   subscribed, caught-up watchers sit idle, divided by N.
//
// Usage: watch_bench [--quick] [N ...]
//   (default: 100 1000 5000 10000; with --quick: 100 1000)
// Sanity checks: every watcher syncs, every version advances, every
// watcher receives every write (within 30 s) and never before it was
// sent, no stream ends early, the server's RSS can be read.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/bench_util.h"
#include "bench/mapping_watcher.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "tests/support/pg_harness.h"

namespace bucketmap {
namespace {

constexpr int kConnections = 50;
constexpr int kWrites = 11;

double SelfCpuSeconds() {
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
         (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

int Run(const std::vector<int64_t>& sizes) {
  auto pg = TestPostgres::Start();
  if (!pg.ok()) Fatal("%s", pg.status().ToString().c_str());
  const int port = FreePort();
  const pid_t server = SpawnServer({BUCKETMAP_SERVER_BINARY, "--postgres_url=" + (*pg)->url(),
                                    absl::StrCat("--grpc_listen=127.0.0.1:", port),
                                    "--metrics_listen=", "--watch_heartbeat=10s"},
                                   (*pg)->dir() + "/server.log");
  std::vector<std::unique_ptr<v1::MappingService::Stub>> stubs;
  for (int c = 0; c < kConnections; ++c) {
    grpc::ChannelArguments args;
    args.SetInt("bench.connection", c);  // a distinct channel (and TCP connection) each
    stubs.push_back(v1::MappingService::NewStub(grpc::CreateCustomChannel(
        absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials(), args)));
  }
  auto admin = v1::AdminService::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  auto ctx = [] {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    c->set_wait_for_ready(true);
    return c;
  };
  {
    v1::CreateBucketRequest req;
    req.mutable_bucket()->set_name("b1");
    (*req.mutable_bucket()->mutable_topics())["ingestion"] = "events_1";
    req.set_reason("bench");
    v1::CreateBucketResponse resp;
    Check(admin->CreateBucket(ctx().get(), req, &resp), "CreateBucket");
  }
  std::printf(
      "| Watchers | Propagation p50 (median of %d writes) | p99 (median of %d writes) | "
      "Server RSS per idle watcher | CPU per delivered push: server / clients |\n"
      "|---|---|---|---|---|\n",
      kWrites, kWrites);
  int64_t team = 1;
  int64_t last_version = 0;
  for (const int64_t size : sizes) {
    const int n = static_cast<int>(size);
    int64_t version = 1;
    {
      grpc::ClientContext c;
      v1::MappingSnapshot snap;
      Check(stubs[0]->GetMapping(&c, v1::GetMappingRequest(), &snap), "GetMapping");
      version = snap.version();
    }
    Receipts receipts(version, kWrites + 2, n);
    const double rss_before = ProcessRssMb(server);
    std::vector<std::unique_ptr<MappingWatcher>> watchers;
    for (int i = 0; i < n; ++i) {
      watchers.push_back(std::make_unique<MappingWatcher>(stubs[i % kConnections].get(), i,
                                                          AckPolicy::kEvery, &receipts));
    }
    const absl::Time sync_deadline = absl::Now() + absl::Minutes(1);
    while (receipts.synced() < n) {
      if (absl::Now() > sync_deadline) {
        Fatal("%ld of %d watchers synced in a minute", static_cast<long>(receipts.synced()), n);
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    absl::SleepFor(absl::Milliseconds(500));  // ACKs land, memory settles
    const double rss_idle = ProcessRssMb(server);
    Expect(rss_before > 0 && rss_idle > 0, "the server's RSS reads %f then %f MB", rss_before,
           rss_idle);

    std::vector<double> p50s, p99s;
    const double server_cpu_before = ProcessCpuSeconds(server);
    const double client_cpu_before = SelfCpuSeconds();
    for (int w = 0; w < kWrites; ++w) {
      v1::AssignTeamRequest req;
      req.set_team_id(team++);
      req.set_bucket_id(1);
      req.set_reason("bench");
      v1::AssignTeamResponse resp;
      const int64_t sent = NowNs();
      Check(admin->AssignTeam(ctx().get(), req, &resp), "AssignTeam");
      const int64_t replied = NowNs();
      const int64_t v = resp.version();
      if (v <= last_version || !receipts.Holds(v)) {
        Fatal("AssignTeam returned version %ld after %ld; the watchers were set up for %ld..%ld",
              static_cast<long>(v), static_cast<long>(last_version), static_cast<long>(version + 1),
              static_cast<long>(version + kWrites + 1));
      }
      last_version = v;
      int missing = 0;
      int early = 0;
      std::vector<double> lat;
      const absl::Time give_up = absl::Now() + absl::Seconds(30);
      while (receipts.Count(v) < n && absl::Now() < give_up) {
        absl::SleepFor(absl::Milliseconds(1));
      }
      for (int i = 0; i < n; ++i) {
        const int64_t t = receipts.At(v, i);
        if (t == 0) ++missing;
        if (t != 0 && t < sent) ++early;
        // A push can arrive before the reply; it then counts as 0.
        lat.push_back(t == 0 ? 30000.0 : std::max(0.0, (t - replied) / 1e6));
      }
      Expect(missing == 0, "%d watchers: %d never received version %ld", n, missing,
             static_cast<long>(v));
      Expect(early == 0, "%d watchers: %d received version %ld before it was written", n, early,
             static_cast<long>(v));
      p50s.push_back(Percentile(lat, 0.5));
      p99s.push_back(Percentile(lat, 0.99));
      absl::SleepFor(absl::Milliseconds(100));
    }
    // Includes the 100 ms pauses between writes, when little runs.
    const double pushes = static_cast<double>(n) * kWrites;
    const double server_us = (ProcessCpuSeconds(server) - server_cpu_before) * 1e6 / pushes;
    const double client_us = (SelfCpuSeconds() - client_cpu_before) * 1e6 / pushes;
    std::printf("| %d | %.2f ms | %.2f ms | %.1f KiB (RSS %.0f -> %.0f MB) | %.1f us / %.1f us |\n",
                n, Percentile(p50s, 0.5), Percentile(p99s, 0.5), (rss_idle - rss_before) * 1024 / n,
                rss_before, rss_idle, server_us, client_us);
    std::fflush(stdout);
    int ended = 0;
    for (auto& w : watchers) ended += w->done() ? 1 : 0;
    Expect(ended == 0, "%d watchers: %d streams ended before the client cancelled them", n, ended);
    for (auto& w : watchers) w->Cancel();
    for (auto& w : watchers) {
      while (!w->done()) absl::SleepFor(absl::Milliseconds(1));
    }
    watchers.clear();
    absl::SleepFor(absl::Seconds(1));
  }
  // Nothing is measured any more: SIGKILL spares a graceful stop's seconds.
  kill(server, SIGKILL);
  waitpid(server, nullptr, 0);
  return ExitStatus();
}

}  // namespace
}  // namespace bucketmap

int main(int argc, char** argv) {
  // Debian builds abseil without NDEBUG; its deadlock detector would tax
  // every lock of the benchmark client.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // The streams share 50 connections; the limit is raised only for headroom.
  rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  bucketmap::BenchFlags flags("100 and 1,000 watchers by default");
  std::vector<int64_t> sizes;
  flags.Positional("N", &sizes, 1, "numbers of watchers, one round each");
  flags.Parse(argc, argv);
  if (sizes.empty()) {
    sizes = flags.quick() ? std::vector<int64_t>{100, 1000}
                          : std::vector<int64_t>{100, 1000, 5000, 10000};
  }
  return bucketmap::Run(sizes);
}
