// replica_bench: propagation of a write from one replica to the watchers
// of another (SPEC §7: LISTEN/NOTIFY; target p99 <= 100 ms).
//
// Two bucketmap-server processes (A and B) share one throwaway PostgreSQL.
// W watchers subscribe on B, and as a baseline measured in the same run, W
// on A; one writer adds an override on A every --pace_ms. For each write and each watcher, the
// latency is the time from A's reply to AssignTeam (the commit is then visible) to that watcher's
// receipt of the push carrying the version; the time from sending the
// request is reported too (it adds A's own write path). B's catch-up poll
// is set to 1 h so that only NOTIFY can explain what arrives in time. The
// difference between B's and A's watchers is the cost of the replica hop
// (NOTIFY, loading the delta from PostgreSQL, applying it).
// With --preload N, N teams get an override first (BulkAssign, 100k per
// call), so the mapping B holds is large and the per-write catch-up cost
// shows whether it depends on the mapping's size.
//
// Usage: replica_bench [--quick] [--watchers W] [--writes N] [--pace_ms P] [--preload T]
//        (defaults: 100 watchers per replica, 500 writes, 20 ms, 0; with
//        --quick: 20 watchers per replica, 100 writes)
// Sanity checks: every version advances, every watcher on either replica
// receives every write, never before its request was sent.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/bench_util.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "tests/support/pg_harness.h"

namespace bucketmap {
namespace {

using Clock = std::chrono::steady_clock;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

struct Server {
  pid_t pid = 0;
  int port = 0;
  std::shared_ptr<grpc::Channel> channel;
};

Server Launch(const TestPostgres& pg, const std::string& name, const std::string& refresh) {
  Server s;
  s.port = FreePort();
  std::vector<std::string> args = {
      BUCKETMAP_SERVER_BINARY,
      "--postgres_url=" + pg.url(),
      absl::StrCat("--grpc_listen=127.0.0.1:", s.port),
      "--metrics_listen=",
      "--replica_name=" + name,
      "--refresh_interval=" + refresh,
      "--watch_heartbeat=60s",
  };
  const std::string log = pg.dir() + "/" + name + ".log";
  s.pid = SpawnServer(args, log);
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(256 << 20);
  s.channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", s.port),
                                        grpc::InsecureChannelCredentials(), channel_args);
  auto mapping = v1::MappingService::NewStub(s.channel);
  for (int i = 0; i < 300; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
    ctx.set_wait_for_ready(true);
    v1::MappingSnapshot snap;
    if (mapping->GetMapping(&ctx, v1::GetMappingRequest(), &snap).ok()) return s;
    if (waitpid(s.pid, nullptr, WNOHANG) != 0) break;
  }
  Fatal("server %s does not serve; its log ends:\n%s", name.c_str(), LogTail(log).c_str());
}

// One watcher: a synchronous stream read on its own thread; records the
// receipt time of every version it is pushed.
class Watcher {
 public:
  Watcher(std::shared_ptr<grpc::Channel> channel, int index, int64_t max_version)
      : stub_(v1::MappingService::NewStub(channel)), received_(max_version + 1) {
    for (auto& r : received_) r.store(0);
    stream_ = stub_->WatchMapping(&ctx_);
    v1::WatchRequest req;
    req.mutable_subscribe()->set_client_id(absl::StrCat("bench-watcher-", index));
    req.mutable_subscribe()->set_role(v1::CONSUMER);
    stream_->Write(req);
    thread_ = std::thread([this] { Read(); });
  }

  ~Watcher() {
    ctx_.TryCancel();
    thread_.join();
  }

  bool synced() const { return synced_.load(); }
  // Receipt time of `version` (steady ns); 0 when not (yet) received.
  int64_t received(int64_t version) const { return received_[version].load(); }

 private:
  void Read() {
    v1::WatchResponse resp;
    while (stream_->Read(&resp)) {
      const int64_t now = NowNs();
      if (resp.has_sync()) synced_ = true;
      if (!resp.has_push()) continue;
      const v1::WatchResponse::Push& push = resp.push();
      for (int64_t v = push.from_version() + 1;
           v <= push.to_version() && v < static_cast<int64_t>(received_.size()); ++v) {
        received_[v].store(now);
      }
      v1::WatchRequest ack;
      ack.mutable_ack()->set_nonce(push.nonce());
      ack.mutable_ack()->set_applied_version(push.to_version());
      stream_->Write(ack);
    }
  }

  std::unique_ptr<v1::MappingService::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::WatchRequest, v1::WatchResponse>> stream_;
  std::vector<std::atomic<int64_t>> received_;
  std::atomic<bool> synced_{false};
  std::thread thread_;
};

double Percentile(std::vector<double>& values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t i = std::min(values.size() - 1, static_cast<size_t>(p * values.size()));
  return values[i];
}

int Run(int watchers, int writes, int pace_ms, int64_t preload) {
  auto pg = TestPostgres::Start();
  if (!pg.ok()) Fatal("%s", pg.status().ToString().c_str());
  Server a = Launch(**pg, "a", "1s");
  Server b = Launch(**pg, "b", "1h");
  auto admin = v1::AdminService::NewStub(a.channel);
  auto Ctx = [] {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
    return ctx;
  };
  // One bucket: every team routes to it, so no write moves a team and no
  // handoff ever opens.
  for (int i = 1; i <= 1; ++i) {
    v1::CreateBucketRequest req;
    req.mutable_bucket()->set_name(absl::StrCat("b", i));
    (*req.mutable_bucket()->mutable_topics())["ingestion"] = absl::StrCat("events_", i);
    req.set_reason("replica bench");
    v1::CreateBucketResponse resp;
    Check(admin->CreateBucket(Ctx().get(), req, &resp), "CreateBucket");
  }
  // Overrides that change no route (the default pool), so no handoff opens.
  for (int64_t first = 1; first <= preload; first += 100000) {
    v1::BulkAssignRequest req;
    req.set_reason("replica bench preload");
    for (int64_t t = first; t < first + 100000 && t <= preload; ++t) {
      v1::BulkAssignment* entry = req.add_assignments();
      entry->set_team_id(1000000000 + t);
      entry->set_pool("default");
    }
    v1::BulkAssignResponse resp;
    Check(admin->BulkAssign(Ctx().get(), req, &resp), "BulkAssign");
  }
  int64_t base = 0;
  {
    auto mapping_b = v1::MappingService::NewStub(b.channel);
    v1::GetMappingRequest req;
    v1::MappingSnapshot snap;
    // B catches up (NOTIFY, or this min_version) before the watchers come.
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
    req.set_min_version(1 + (preload + 99999) / 100000);
    Check(mapping_b->GetMapping(&ctx, req, &snap), "GetMapping on B");
    base = snap.version();
  }

  // Even indexes watch B, odd ones A.
  std::vector<std::unique_ptr<Watcher>> watching;
  for (int i = 0; i < 2 * watchers; ++i) {
    watching.push_back(
        std::make_unique<Watcher>(i % 2 == 0 ? b.channel : a.channel, i, base + writes));
  }
  const absl::Time sync_deadline = absl::Now() + absl::Minutes(1);
  for (const auto& w : watching) {
    while (!w->synced()) {
      if (absl::Now() > sync_deadline) Fatal("the watchers did not all sync within a minute");
      absl::SleepFor(absl::Milliseconds(1));
    }
  }

  std::vector<int64_t> sent(writes), replied(writes), version(writes);
  for (int i = 0; i < writes; ++i) {
    v1::AssignTeamRequest req;
    // A new override each time, that moves no route: no handoff opens, so
    // every write costs the same.
    req.set_team_id(1 + i);
    req.set_pool("default");
    req.set_reason("replica bench");
    v1::AssignTeamResponse resp;
    sent[i] = NowNs();
    Check(admin->AssignTeam(Ctx().get(), req, &resp), "AssignTeam");
    replied[i] = NowNs();
    version[i] = resp.version();
    if (version[i] <= (i == 0 ? base : version[i - 1]) || version[i] > base + writes) {
      Fatal("AssignTeam returned version %lld after %lld (the watchers expect %lld..%lld)",
            static_cast<long long>(version[i]),
            static_cast<long long>(i == 0 ? base : version[i - 1]),
            static_cast<long long>(base + 1), static_cast<long long>(base + writes));
    }
    absl::SleepFor(absl::Milliseconds(pace_ms));
  }
  // Let the last pushes land.
  absl::SleepFor(absl::Seconds(2));

  // [0]: watchers on B, [1]: on A.
  std::vector<double> from_reply[2], from_send[2];
  int64_t missing = 0;
  int64_t early = 0;
  for (int i = 0; i < writes; ++i) {
    for (size_t k = 0; k < watching.size(); ++k) {
      const int64_t at = watching[k]->received(version[i]);
      if (at == 0) {
        ++missing;
        continue;
      }
      if (at < sent[i]) ++early;
      from_reply[k % 2].push_back((at - replied[i]) / 1e6);
      from_send[k % 2].push_back((at - sent[i]) / 1e6);
    }
  }
  watching.clear();
  // Nothing is measured any more: SIGKILL spares two graceful stops.
  for (Server* s : {&a, &b}) {
    kill(s->pid, SIGKILL);
    waitpid(s->pid, nullptr, 0);
  }
  std::printf(
      "replica propagation, %d watchers on each of A and B, %d writes on A every %d ms, %lld "
      "preloaded overrides:\n",
      watchers, writes, pace_ms, static_cast<long long>(preload));
  for (int k = 0; k < 2; ++k) {
    const char* on = k == 0 ? "B (other replica)" : "A (baseline)     ";
    std::printf(
        "  watchers on %s  A's reply -> push: p50 %6.2f  p99 %6.2f  max %6.2f ms;"
        "  request sent -> push: p50 %6.2f  p99 %6.2f ms\n",
        on, Percentile(from_reply[k], 0.5), Percentile(from_reply[k], 0.99),
        Percentile(from_reply[k], 1.0), Percentile(from_send[k], 0.5),
        Percentile(from_send[k], 0.99));
  }
  std::printf("  %zu receipts, %lld missing\n", from_reply[0].size() + from_reply[1].size(),
              static_cast<long long>(missing));
  Expect(missing == 0, "%lld of %lld pushes never reached their watcher",
         static_cast<long long>(missing), 2LL * watchers * writes);
  Expect(early == 0, "%lld pushes arrived before their write was sent",
         static_cast<long long>(early));
  return ExitStatus();
}

}  // namespace
}  // namespace bucketmap

int main(int argc, char** argv) {
  bucketmap::BenchFlags flags("20 watchers per replica and 100 writes, unless given");
  int watchers = -1;
  int writes = -1;
  int pace_ms = 20;
  int64_t preload = 0;
  flags.Int("watchers", &watchers, 1, "watchers on each replica (100)");
  flags.Int("writes", &writes, 1, "writes on A (500)");
  flags.Int("pace_ms", &pace_ms, 0, "gap between writes, ms (20)");
  flags.Int("preload", &preload, 0, "overrides loaded before the watchers come (0)");
  flags.Parse(argc, argv);
  if (watchers < 0) watchers = flags.quick() ? 20 : 100;
  if (writes < 0) writes = flags.quick() ? 100 : 500;
  return bucketmap::Run(watchers, writes, pace_ms, preload);
}
