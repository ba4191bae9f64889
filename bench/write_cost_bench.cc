// write_cost_bench: the cost of a one-team write at a small and at a large
// mapping, in the same run (issue 15, item 4: a write's cost must not grow
// with the mapping).
//
//   Domain: Snapshot::Apply and PlanAssignments of a one-team pin on a
//     snapshot of 1k and of 1M assignments (median of many).
//   Server: AssignTeam of one new team, one client, sequential, through
//     two real server binaries on throwaway PostgreSQLs, one holding 1k
//     assignments and one 1M, the writes alternating between them so that
//     the shared machine's load falls on both alike. Each database is
//     vacuumed and analyzed after its load, so that autovacuum of the
//     freshly loaded table does not run during the writes.
//
//   Group commit: 8 clients writing AssignTeam flat out against the large
//     mapping's server, restarted with --max_write_group=1 (each write
//     commits alone) and with the default, in rounds off, on, on, off.
//
// Usage: write_cost_bench [--quick]   (--quick: 100k instead of 1M, fewer
// writes). Prints Markdown rows with the ratio large ÷ small. Sanity
// checks: every plan and RPC succeeds, every write creates a version after
// the previous one and adds its row, every time is positive.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/bench_util.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "domain/planner.h"
#include "domain/snapshot.h"
#include "grpcpp/create_channel.h"
#include "pqxx/pqxx"
#include "tests/support/pg_harness.h"

namespace bucketmap {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kBuckets = 8;

double Us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

// Teams 1..n, every 10th in the default pool, the others pinned.
std::shared_ptr<const Snapshot> MakeSnapshot(int64_t n) {
  MappingState state;
  state.version = 1;
  state.cluster_id = "bench";
  for (int32_t b = 1; b <= kBuckets; ++b) {
    Bucket bucket;
    bucket.id = b;
    bucket.name = absl::StrCat("bucket-", b);
    bucket.pool = std::string(kDefaultPool);
    state.buckets.push_back(bucket);
  }
  state.assignments.reserve(n);
  for (int64_t team = 1; team <= n; ++team) {
    state.assignments.emplace_back(
        team, team % 10 == 0 ? Target::Pool(std::string(kDefaultPool))
                             : Target::Pin(static_cast<int32_t>(1 + team % kBuckets)));
  }
  auto s = Snapshot::Build(std::move(state));
  if (!s.ok()) Fatal("Build: %s", s.status().ToString().c_str());
  return *std::move(s);
}

struct DomainCost {
  double apply_us;
  double plan_us;
};

// Median cost of applying / planning a one-team pin of a team in the
// middle of the mapping (a different team each time, never a no-op).
DomainCost MeasureDomain(const Snapshot& snapshot, int reps) {
  std::vector<double> apply, plan;
  const int64_t n = static_cast<int64_t>(snapshot.assignment_count());
  for (int i = 0; i < reps; ++i) {
    const int64_t team = n / 2 + 1 + i;
    const int32_t bucket = snapshot.RouteOf(team).bucket_id % kBuckets + 1;
    Change change;
    change.set.emplace_back(team, Target::Pin(bucket));
    auto t0 = Clock::now();
    auto next = snapshot.Apply(change);
    apply.push_back(Us(Clock::now() - t0));
    if (!next.ok() || (*next)->RouteOf(team).bucket_id != bucket) {
      Fatal("Apply of team %ld failed: %s", static_cast<long>(team),
            next.status().ToString().c_str());
    }
    t0 = Clock::now();
    auto planned = PlanAssignments(snapshot, {AssignmentOp{team, Target::Pin(bucket)}});
    plan.push_back(Us(Clock::now() - t0));
    if (!planned.ok()) Fatal("PlanAssignments: %s", planned.status().ToString().c_str());
  }
  const DomainCost cost{Percentile(apply, 0.5), Percentile(plan, 0.5)};
  Expect(cost.apply_us > 0 && cost.plan_us > 0, "a domain write took no time");
  return cost;
}

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  return ctx;
}

// A bucketmap-server process on its own PostgreSQL, killed at the end.
class Deployment {
 public:
  Deployment() {
    auto pg = TestPostgres::Start();
    if (!pg.ok()) Fatal("%s", pg.status().ToString().c_str());
    pg_ = *std::move(pg);
    Spawn({});
  }
  ~Deployment() { Kill(); }
  // Restarts the server on the same database with `flags` added.
  void Restart(const std::vector<std::string>& flags) {
    Kill();
    Spawn(flags);
  }
  v1::AdminService::Stub& admin() { return *admin_; }
  v1::MappingService::Stub& mapping() { return *mapping_; }
  void Vacuum() {
    pqxx::connection conn(pg_->url());
    pqxx::nontransaction tx(conn);
    tx.exec("VACUUM ANALYZE");
  }

 private:
  void Kill() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  void Spawn(const std::vector<std::string>& flags) {
    const int port = FreePort();
    std::vector<std::string> argv = {BUCKETMAP_SERVER_BINARY, "--postgres_url=" + pg_->url(),
                                     absl::StrCat("--grpc_listen=127.0.0.1:", port),
                                     "--metrics_listen="};
    argv.insert(argv.end(), flags.begin(), flags.end());
    pid_ = SpawnServer(argv, pg_->dir() + "/server.log");
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(256 << 20);
    auto channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                             grpc::InsecureChannelCredentials(), args);
    admin_ = v1::AdminService::NewStub(channel);
    mapping_ = v1::MappingService::NewStub(channel);
    auto ctx = Ctx();
    ctx->set_wait_for_ready(true);
    v1::MappingSnapshot snap;
    Check(mapping_->GetMapping(ctx.get(), v1::GetMappingRequest(), &snap), "GetMapping");
  }

  std::unique_ptr<TestPostgres> pg_;
  pid_t pid_ = 0;
  std::unique_ptr<v1::AdminService::Stub> admin_;
  std::unique_ptr<v1::MappingService::Stub> mapping_;
};

// Assigns teams [from, to] as the domain snapshot does, in batches.
void Load(Deployment& d, int64_t from, int64_t to) {
  constexpr int64_t kBatch = 100000;
  for (int64_t first = from; first <= to; first += kBatch) {
    v1::BulkAssignRequest req;
    req.set_reason("bench load");
    for (int64_t team = first; team <= std::min(to, first + kBatch - 1); ++team) {
      v1::BulkAssignment* a = req.add_assignments();
      a->set_team_id(team);
      if (team % 10 == 0) {
        a->set_pool("default");
      } else {
        a->set_bucket_id(static_cast<int32_t>(1 + team % kBuckets));
      }
    }
    v1::BulkAssignResponse resp;
    Check(d.admin().BulkAssign(Ctx().get(), req, &resp), "BulkAssign");
  }
}

// One sequential writer: AssignTeam pins of new teams from `first_team`.
class Writer {
 public:
  Writer(Deployment* d, int64_t first_team) : d_(d), next_team_(first_team) {}
  void Write() {
    v1::AssignTeamRequest req;
    req.set_team_id(next_team_++);
    req.set_bucket_id(static_cast<int32_t>(1 + next_team_ % kBuckets));
    req.set_reason("bench");
    v1::AssignTeamResponse resp;
    const auto t0 = Clock::now();
    Check(d_->admin().AssignTeam(Ctx().get(), req, &resp), "AssignTeam");
    lat_.push_back(Us(Clock::now() - t0));
    Expect(resp.version() > version_, "AssignTeam returned version %ld after %ld",
           static_cast<long>(resp.version()), static_cast<long>(version_));
    version_ = resp.version();
  }
  // The median latency in µs.
  double Median() const {
    const double median = Percentile(lat_, 0.5);
    Expect(median > 0, "an AssignTeam took no time");
    return median;
  }

 private:
  Deployment* d_;
  int64_t next_team_;
  int64_t version_ = 0;
  std::vector<double> lat_;
};

// `clients` threads writing AssignTeam pins of new teams flat out for
// `seconds`, each from its own range after `*next_team`. Returns the
// writes per second; checks that every write succeeds and that each
// client's versions increase.
double Throughput(Deployment& d, int clients, double seconds, int64_t* next_team, int64_t* writes) {
  std::vector<int64_t> done(clients, 0);
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c, first = *next_team + c * 10'000'000] {
      Writer writer(&d, first);
      while (Clock::now() < end) {
        writer.Write();
        ++done[c];
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  *next_team += clients * 10'000'000;
  int64_t total = 0;
  for (int64_t n : done) total += n;
  *writes += total;
  Expect(total > 0, "no write finished in %.1f s", seconds);
  return total / elapsed;
}

int64_t Rows(Deployment& d) {
  v1::MappingSnapshot snap;
  Check(d.mapping().GetMapping(Ctx().get(), v1::GetMappingRequest(), &snap), "GetMapping");
  return snap.assignments().team_ids_size();
}

int Main(bool quick) {
  const int64_t small = 1000;
  const int64_t large = quick ? 100000 : 1000000;
  std::printf("| Benchmark | %ld assignments | %ld assignments | ratio |\n|---|---|---|---|\n",
              static_cast<long>(small), static_cast<long>(large));

  const int reps = quick ? 200 : 2000;
  const DomainCost a = MeasureDomain(*MakeSnapshot(small), reps);
  const DomainCost b = MeasureDomain(*MakeSnapshot(large), reps);
  std::printf("| Snapshot::Apply, one-team pin (median of %d) | %.1f µs | %.1f µs | %.2fx |\n",
              reps, a.apply_us, b.apply_us, b.apply_us / a.apply_us);
  std::printf("| PlanAssignments, one-team pin (median of %d) | %.1f µs | %.1f µs | %.2fx |\n",
              reps, a.plan_us, b.plan_us, b.plan_us / a.plan_us);

  const int writes = quick ? 100 : 400;
  Deployment d_small, d_large;
  for (Deployment* d : {&d_small, &d_large}) {
    for (int32_t i = 1; i <= kBuckets; ++i) {
      v1::CreateBucketRequest req;
      req.mutable_bucket()->set_name(absl::StrCat("bucket-", i));
      (*req.mutable_bucket()->mutable_topics())["ingestion"] = absl::StrCat("events_", i);
      req.set_reason("bench");
      v1::CreateBucketResponse resp;
      Check(d->admin().CreateBucket(Ctx().get(), req, &resp), "CreateBucket");
    }
  }
  Load(d_small, 1, small);
  Load(d_large, 1, large);
  d_small.Vacuum();
  d_large.Vacuum();
  Writer w_small(&d_small, 50'000'000), w_large(&d_large, 50'000'000);
  for (int i = 0; i < writes; ++i) {
    w_small.Write();
    w_large.Write();
  }
  const double server_small = w_small.Median();
  const double server_large = w_large.Median();
  for (auto [d, n] : {std::pair{&d_small, small}, std::pair{&d_large, large}}) {
    const int64_t rows = Rows(*d);
    Expect(rows == n + writes, "the mapping has %ld rows, want %ld", static_cast<long>(rows),
           static_cast<long>(n + writes));
  }
  std::printf("| AssignTeam RPC, 1 client, new team (median of %d) | %.0f µs | %.0f µs | %.2fx |\n",
              writes, server_small, server_large, server_large / server_small);

  // Group commit at the large mapping: 8 clients flat out, each write
  // committed alone (--max_write_group=1) against the default, in rounds
  // off, on, on, off so that drift on the shared machine cancels.
  constexpr int kClients = 8;
  const double seconds = quick ? 1.0 : 4.0;
  int64_t next_team = 100'000'000;
  int64_t concurrent_writes = 0;
  double off = 0, on = 0;
  for (bool grouped : {false, true, true, false}) {
    d_large.Restart(grouped ? std::vector<std::string>{}
                            : std::vector<std::string>{"--max_write_group=1"});
    const double rate = Throughput(d_large, kClients, seconds, &next_team, &concurrent_writes);
    (grouped ? on : off) += rate / 2;
  }
  const int64_t rows = Rows(d_large);
  Expect(rows == large + writes + concurrent_writes, "the mapping has %ld rows, want %ld",
         static_cast<long>(rows), static_cast<long>(large + writes + concurrent_writes));
  std::printf(
      "| AssignTeam, %d clients flat out, %ld assignments (2 rounds of %.0f s each) | "
      "each write alone: %.0f writes/s | group commit: %.0f writes/s | %.2fx |\n",
      kClients, static_cast<long>(large), seconds, off, on, on / off);
  return ExitStatus();
}

}  // namespace
}  // namespace bucketmap

int main(int argc, char** argv) {
  bucketmap::BenchFlags flags("100k instead of 1M assignments, fewer repetitions and writes");
  flags.Parse(argc, argv);
  try {
    return bucketmap::Main(flags.quick());
  } catch (const std::exception& e) {
    bucketmap::Fatal("%s", e.what());
  }
}
