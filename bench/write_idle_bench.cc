// write_idle_bench: how long a healthy write leaves its transaction idle
// while it holds the version row, the figure --idle_in_transaction_timeout
// must stay well above (docs/operations.md).
//
// A write locks bm_meta first, then plans in C++ between statements: from
// PostgreSQL's view its session is "idle in transaction" meanwhile, as a
// frozen replica's is. A sampler polls pg_stat_activity every 2 ms for the
// oldest idle-in-transaction session during each write; the largest age
// seen is the write's longest idle gap (to within the sampling period).
//
// Cases, at 1M assignments (--quick: 100k), each a BulkAssign of 100k teams
// (the --max_bulk_assign default), 5 runs each:
//   re-pinning 100k assigned teams (force), through the server binary
//     (handoffs on: the move policy plans too);
//   the same through PgStore with no cached snapshot, as a write does when
//     another replica wrote since its last catch-up: the mapping is
//     reloaded (COPY, then sorted and indexed in C++) inside the
//     transaction before planning;
//   100k new teams, through the server (the mapping grows 100k per run).
// The server and the store run with the default 2 s timeout: a write idle
// for longer would fail, and the bench with it.
//
// Usage: write_idle_bench [--quick]   (RelWithDebInfo build)
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/bench_main.h"
#include "bench/bench_util.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "domain/planner.h"
#include "grpcpp/create_channel.h"
#include "pqxx/pqxx"
#include "server/store/pg_store.h"
#include "tests/support/pg_harness.h"

namespace bucketmap {
namespace {

constexpr int kBuckets = 8;
constexpr int64_t kBatch = 100000;

// Polls pg_stat_activity while running; max_ms() is the oldest
// idle-in-transaction age seen since the last Reset().
class IdleSampler {
 public:
  explicit IdleSampler(const std::string& url) : conn_(url) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~IdleSampler() {
    stop_ = true;
    thread_.join();
  }
  void Reset() { max_us_ = 0; }
  double max_ms() const { return max_us_.load() / 1000.0; }

 private:
  void Loop() {
    while (!stop_) {
      pqxx::nontransaction tx(conn_);
      const pqxx::row row = tx.exec1(
          "SELECT COALESCE(max((EXTRACT(EPOCH FROM clock_timestamp() - state_change)"
          " * 1000000)::bigint), 0) FROM pg_stat_activity WHERE state = 'idle in transaction'");
      const int64_t us = row[0].as<int64_t>();
      int64_t seen = max_us_.load();
      while (us > seen && !max_us_.compare_exchange_weak(seen, us)) {
      }
      absl::SleepFor(absl::Milliseconds(2));
    }
  }

  pqxx::connection conn_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> max_us_{0};
  std::thread thread_;
};

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  return ctx;
}

// The server binary, stopped when the guard goes (Check() exits: atexit).
class ServerProcessGuard {
 public:
  ServerProcessGuard(std::string url, std::string log, std::vector<std::string> extra)
      : url_(std::move(url)), log_(std::move(log)) {
    Restart(std::move(extra));
  }
  ~ServerProcessGuard() { Stop(); }

  void Restart(std::vector<std::string> extra) {
    Stop();
    port_ = FreePort();
    std::vector<std::string> args = {BUCKETMAP_SERVER_BINARY, "--postgres_url=" + url_,
                                     absl::StrCat("--grpc_listen=127.0.0.1:", port_),
                                     "--metrics_listen=", "--write_timeout=120s"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = Spawn(args, log_);
    running_ = pid_;
    static const bool registered = std::atexit([] {
                                     if (running_ > 0) kill(running_, SIGKILL);
                                   }) == 0;
    (void)registered;
    grpc::ChannelArguments channel_args;
    channel_args.SetMaxReceiveMessageSize(256 << 20);
    channel_args.SetMaxSendMessageSize(256 << 20);
    auto channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port_),
                                             grpc::InsecureChannelCredentials(), channel_args);
    admin_ = v1::AdminService::NewStub(channel);
    auto ctx = Ctx();
    ctx->set_wait_for_ready(true);
    v1::ListBucketsResponse resp;
    Check(admin_->ListBuckets(ctx.get(), {}, &resp), "ListBuckets");
  }

  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
    pid_ = 0;
    running_ = 0;
  }

  v1::AdminService::Stub* admin() const { return admin_.get(); }

 private:
  static inline pid_t running_ = 0;
  std::string url_;
  std::string log_;
  pid_t pid_ = 0;
  int port_ = 0;
  std::unique_ptr<v1::AdminService::Stub> admin_;
};

// Assigns teams [first, first + n): pins spread over the buckets (every
// 10th to the default pool), shifted by `shift` buckets. Returns the time.
absl::Duration Bulk(v1::AdminService::Stub& admin, int64_t first, int64_t n, int shift,
                    bool force) {
  v1::BulkAssignRequest req;
  req.set_reason("bench");
  req.set_force(force);
  for (int64_t team = first; team < first + n; ++team) {
    v1::BulkAssignment* a = req.add_assignments();
    a->set_team_id(team);
    if (team % 10 == 0) {
      a->set_pool("default");
    } else {
      a->set_bucket_id(1 + (team + shift) % kBuckets);
    }
  }
  v1::BulkAssignResponse resp;
  const absl::Time start = absl::Now();
  Check(admin.BulkAssign(Ctx().get(), req, &resp), "BulkAssign");
  return absl::Now() - start;
}

// Runs `write` kRuns times; prints the longest idle gap and the longest
// whole write.
template <typename Fn>
void Measure(IdleSampler& sampler, const std::string& what, Fn write) {
  constexpr int kRuns = 5;
  double idle_ms = 0;
  double write_ms = 0;
  for (int r = 0; r < kRuns; ++r) {
    sampler.Reset();
    const absl::Time start = absl::Now();
    write(r);
    write_ms = std::max(write_ms, absl::ToDoubleMilliseconds(absl::Now() - start));
    absl::SleepFor(absl::Milliseconds(10));  // a last sample
    idle_ms = std::max(idle_ms, sampler.max_ms());
  }
  std::printf("| %s (%d runs) | %.0f ms | %.0f ms |\n", what.c_str(), kRuns, idle_ms, write_ms);
  Expect(write_ms > 0, "%s: no write was timed", what.c_str());
  Expect(idle_ms >= 0 && idle_ms <= write_ms,
         "%s: idle gap %.0f ms is not within the write's %.0f ms", what.c_str(), idle_ms, write_ms);
}

int Main(bool quick) {
  const int64_t mapping = quick ? 100000 : 1000000;
  auto pg = TestPostgres::Start();
  if (!pg.ok()) {
    std::fprintf(stderr, "%s\n", pg.status().ToString().c_str());
    return 1;
  }
  // The server's defaults throughout: with no producer connected, the
  // handoffs the load opens complete in the write that opens them.
  ServerProcessGuard server((*pg)->url(), (*pg)->dir() + "/server.log", {});
  for (int i = 1; i <= kBuckets; ++i) {
    v1::CreateBucketRequest req;
    req.mutable_bucket()->set_name(absl::StrCat("bucket-", i));
    (*req.mutable_bucket()->mutable_topics())["ingestion"] = absl::StrCat("events_", i);
    req.set_reason("bench");
    v1::CreateBucketResponse resp;
    Check(server.admin()->CreateBucket(Ctx().get(), req, &resp), "CreateBucket");
  }
  for (int64_t first = 1; first <= mapping; first += kBatch) {
    Bulk(*server.admin(), first, kBatch, 0, false);
  }
  server.Restart({});
  const std::string size = absl::StrCat(mapping / 1000, "k");

  std::printf("| 100k-team BulkAssign | longest idle gap under the lock | whole write |\n");
  std::printf("|---|---|---|\n");
  IdleSampler sampler((*pg)->url());
  // Loaded teams re-pinned: every one changes bucket.
  Measure(sampler, "re-pinning assigned teams (`force`), server, over " + size,
          [&](int r) { Bulk(*server.admin(), 1 + (r * kBatch) % mapping, kBatch, 1 + r, true); });
  server.Stop();

  // The reload path, through PgStore with no cached snapshot.
  PgStoreOptions options;
  options.url = (*pg)->url();
  options.read_timeout = absl::Seconds(120);
  auto store = PgStore::Open(options);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return 1;
  }
  Measure(sampler, "re-pinning, snapshot reloaded inside the transaction, PgStore, over " + size,
          [&](int r) {
            std::vector<AssignmentOp> ops;
            ops.reserve(kBatch);
            const int64_t first = 1 + (r * kBatch) % mapping;
            for (int64_t team = first; team < first + kBatch; ++team) {
              ops.push_back({team, Target::Pin(1 + (team + 7 + r) % kBuckets)});
            }
            WriteContext ctx;
            ctx.kind = "BulkAssign";
            ctx.actor = "bench";
            ctx.reason = "bench";
            ctx.deadline = absl::Now() + absl::Seconds(120);
            auto written = (*store)->Write(ctx, nullptr, [&](const Snapshot& before) {
              absl::StatusOr<Plan> plan = PlanAssignments(before, ops);
              if (!plan.ok()) return absl::StatusOr<PlannedWrite>(plan.status());
              return absl::StatusOr<PlannedWrite>(PlannedWrite{*std::move(plan), "bench"});
            });
            if (!written.ok()) {
              Fatal("write: %s", written.status().ToString().c_str());
            }
          });
  store->reset();

  // New teams beyond the loaded ones: the mapping grows by 100k per run.
  server.Restart({});
  Measure(sampler, absl::StrCat("new teams, server, over ", size, " growing by 100k per run"),
          [&](int r) { Bulk(*server.admin(), 10'000'001 + r * kBatch, kBatch, 0, false); });
  return ExitStatus();
}

}  // namespace
}  // namespace bucketmap

int main(int argc, char** argv) {
  bucketmap::BenchFlags flags("a mapping of 100k assignments instead of 1M");
  flags.Parse(argc, argv);
  return bucketmap::Main(flags.quick());
}
