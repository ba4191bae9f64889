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
// Usage: watch_bench [N ...]   (default: 100 1000 5000 10000)
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/bench_util.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "tests/support/pg_harness.h"

namespace bucketmap {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kConnections = 50;
constexpr int kWrites = 11;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// Receipt times: receipts[version][watcher], in steady-clock ns.
struct Receipts {
  std::vector<std::vector<std::atomic<int64_t>>> at;
  std::atomic<int64_t> synced{0};
};

class Watcher final : public grpc::ClientBidiReactor<v1::WatchRequest, v1::WatchResponse> {
 public:
  Watcher(v1::MappingService::Stub* stub, int index, Receipts* receipts)
      : index_(index), receipts_(receipts) {
    stub->async()->WatchMapping(&ctx_, this);
    v1::WatchRequest::Subscribe* sub = request_.mutable_subscribe();
    sub->set_client_id(absl::StrCat("bench-", index));
    sub->set_role(v1::CONSUMER);
    writing_ = true;
    StartWrite(&request_);
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (response_.has_sync()) receipts_->synced.fetch_add(1);
    if (response_.has_push()) {
      const int64_t now = NowNs();
      const v1::WatchResponse::Push& push = response_.push();
      for (int64_t v = std::max<int64_t>(1, push.from_version() + 1); v <= push.to_version();
           ++v) {
        if (v < static_cast<int64_t>(receipts_->at.size())) {
          receipts_->at[v][index_].store(now, std::memory_order_relaxed);
        }
      }
      v1::WatchRequest ack;
      ack.mutable_ack()->set_nonce(push.nonce());
      ack.mutable_ack()->set_applied_version(push.to_version());
      Write(std::move(ack));
    }
    StartRead(&response_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (ok && pending_.has_value()) {
      request_ = *std::move(pending_);
      pending_.reset();
      writing_ = true;
      StartWrite(&request_);
    }
  }

  void OnDone(const grpc::Status&) override { done_.store(true); }

  void Cancel() { ctx_.TryCancel(); }
  bool done() const { return done_.load(); }

 private:
  void Write(v1::WatchRequest request) {
    absl::MutexLock lock(&mu_);
    if (writing_) {
      pending_ = std::move(request);  // only the newest ACK matters
      return;
    }
    request_ = std::move(request);
    writing_ = true;
    StartWrite(&request_);
  }

  const int index_;
  Receipts* const receipts_;
  grpc::ClientContext ctx_;
  v1::WatchResponse response_;
  absl::Mutex mu_;
  v1::WatchRequest request_;
  std::optional<v1::WatchRequest> pending_;
  bool writing_ = false;
  std::atomic<bool> done_{false};
};

// CPU time (user + system) of a process, in seconds, from /proc.
double ProcessCpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string field;
  double ticks = 0;
  for (int i = 1; in >> field && i <= 15; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);
  }
  return ticks / sysconf(_SC_CLK_TCK);
}

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

int Run(const std::vector<int>& sizes) {
  auto pg = TestPostgres::Start();
  if (!pg.ok()) {
    std::fprintf(stderr, "%s\n", pg.status().ToString().c_str());
    return 1;
  }
  const int port = FreePort();
  const pid_t server = Spawn({BUCKETMAP_SERVER_BINARY, "--postgres_url=" + (*pg)->url(),
                              absl::StrCat("--grpc_listen=127.0.0.1:", port), "--metrics_listen=",
                              "--watch_heartbeat=10s"},
                             (*pg)->dir() + "/server.log");
  std::vector<std::unique_ptr<v1::MappingService::Stub>> stubs;
  for (int c = 0; c < kConnections; ++c) {
    grpc::ChannelArguments args;
    args.SetInt("bench.connection", c);  // a distinct channel (and TCP connection) each
    stubs.push_back(v1::MappingService::NewStub(grpc::CreateCustomChannel(
        absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials(), args)));
  }
  auto admin = v1::AdminService::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
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
  std::printf("| Watchers | Propagation p50 (median of %d writes) | p99 (median of %d writes) | "
              "Server RSS per idle watcher | CPU per delivered push: server / clients |\n"
              "|---|---|---|---|---|\n",
              kWrites, kWrites);
  int64_t team = 1;
  for (int n : sizes) {
    int64_t version = 1;
    {
      grpc::ClientContext c;
      v1::MappingSnapshot snap;
      Check(stubs[0]->GetMapping(&c, v1::GetMappingRequest(), &snap), "GetMapping");
      version = snap.version();
    }
    Receipts receipts;
    receipts.at = std::vector<std::vector<std::atomic<int64_t>>>(version + kWrites + 2);
    for (auto& row : receipts.at) row = std::vector<std::atomic<int64_t>>(n);
    const double rss_before = ProcessRssMb(server);
    std::vector<std::unique_ptr<Watcher>> watchers;
    for (int i = 0; i < n; ++i) {
      watchers.push_back(std::make_unique<Watcher>(stubs[i % kConnections].get(), i, &receipts));
    }
    while (receipts.synced.load() < n) absl::SleepFor(absl::Milliseconds(10));
    absl::SleepFor(absl::Milliseconds(500));  // ACKs land, memory settles
    const double rss_idle = ProcessRssMb(server);

    std::vector<double> p50s, p99s;
    const double server_cpu_before = ProcessCpuSeconds(server);
    const double client_cpu_before = SelfCpuSeconds();
    for (int w = 0; w < kWrites; ++w) {
      v1::AssignTeamRequest req;
      req.set_team_id(team++);
      req.set_bucket_id(1);
      req.set_reason("bench");
      v1::AssignTeamResponse resp;
      Check(admin->AssignTeam(ctx().get(), req, &resp), "AssignTeam");
      const int64_t replied = NowNs();
      const int64_t v = resp.version();
      std::vector<double> lat;
      const absl::Time give_up = absl::Now() + absl::Seconds(30);
      for (int i = 0; i < n; ++i) {
        int64_t t;
        while ((t = receipts.at[v][i].load(std::memory_order_relaxed)) == 0 &&
               absl::Now() < give_up) {
          absl::SleepFor(absl::Microseconds(200));
        }
        // A push can arrive before the reply; it then counts as 0.
        lat.push_back(t == 0 ? 30000.0 : std::max(0.0, (t - replied) / 1e6));
      }
      p50s.push_back(Percentile(lat, 0.5));
      p99s.push_back(Percentile(lat, 0.99));
      absl::SleepFor(absl::Milliseconds(100));
    }
    // Includes the 100 ms pauses between writes, when little runs.
    const double pushes = static_cast<double>(n) * kWrites;
    const double server_us = (ProcessCpuSeconds(server) - server_cpu_before) * 1e6 / pushes;
    const double client_us = (SelfCpuSeconds() - client_cpu_before) * 1e6 / pushes;
    std::printf("| %d | %.2f ms | %.2f ms | %.1f KiB (RSS %.0f -> %.0f MB) | %.1f us / %.1f us |\n",
                n, Percentile(p50s, 0.5), Percentile(p99s, 0.5),
                (rss_idle - rss_before) * 1024 / n, rss_before, rss_idle, server_us, client_us);
    std::fflush(stdout);
    for (auto& w : watchers) w->Cancel();
    for (auto& w : watchers) {
      while (!w->done()) absl::SleepFor(absl::Milliseconds(1));
    }
    watchers.clear();
    absl::SleepFor(absl::Seconds(1));
  }
  kill(server, SIGTERM);
  waitpid(server, nullptr, 0);
  return 0;
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
  std::vector<int> sizes;
  for (int i = 1; i < argc; ++i) sizes.push_back(std::atoi(argv[i]));
  if (sizes.empty()) sizes = {100, 1000, 5000, 10000};
  return bucketmap::Run(sizes);
}
