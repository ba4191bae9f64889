// foundation_bench: the foundation's performance figures, measured against
// the real server binary on a throwaway PostgreSQL.
//
//   GetMapping until the caller holds the parsed snapshot, at 1k, 100k and
//     1M assignments, against reading the same rows straight from
//     PostgreSQL with libpqxx (the naive alternative), in the same run.
//   AssignTeam latency (p50, p99) and throughput, 1 and 8 clients.
//   BulkAssign of 1M teams in batches of 100k.
//   Server RSS with 1M assignments, and cold start until serving.
//
// Usage: foundation_bench [--quick]   (--quick: 100k instead of 1M)
// Prints Markdown rows for docs/benchmarks.md. The server runs with its
// defaults (handoffs on). Sanity checks: every RPC succeeds (the server's
// error otherwise), every GetMapping and libpqxx read returns every row,
// every write's version advances, every latency is positive, and a
// restarted server serves what was written.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "bench/bench_util.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "pqxx/pqxx"
#include "tests/support/pg_harness.h"

namespace bucketmap {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

double Median(std::vector<double> v) { return Percentile(std::move(v), 0.5); }

// A bucketmap-server process on its own PostgreSQL.
class Deployment {
 public:
  explicit Deployment(std::unique_ptr<TestPostgres> pg) : pg_(std::move(pg)) {}
  // Nothing is measured after this: SIGKILL, which spares the seconds a
  // graceful stop takes (the PostgreSQL goes with it).
  ~Deployment() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }

  void Start() {
    port_ = FreePort();
    started_ = Clock::now();
    pid_ = SpawnServer({BUCKETMAP_SERVER_BINARY, "--postgres_url=" + pg_->url(),
                        absl::StrCat("--grpc_listen=127.0.0.1:", port_), "--metrics_listen="},
                       log());
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(256 << 20);
    // Retry the connection every few ms while the server starts, so cold
    // start measures the server, not gRPC's reconnect backoff.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 5);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 5);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 20);
    channel_ = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port_),
                                         grpc::InsecureChannelCredentials(), args);
    admin_ = v1::AdminService::NewStub(channel_);
    mapping_ = v1::MappingService::NewStub(channel_);
  }

  // Waits until GetMapping answers; returns the time since Start(). Exits
  // when the server exits or does not serve within a minute.
  double WaitServingMs() {
    for (;;) {
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
      ctx.set_wait_for_ready(true);
      v1::MappingSnapshot snap;
      if (mapping_->GetMapping(&ctx, v1::GetMappingRequest(), &snap).ok()) {
        return Ms(Clock::now() - started_);
      }
      if (waitpid(pid_, nullptr, WNOHANG) != 0) {
        pid_ = 0;
        Fatal("the server exited; its log ends:\n%s", LogTail(log()).c_str());
      }
      if (Clock::now() - started_ > std::chrono::minutes(1)) {
        Fatal("the server does not serve after a minute; its log ends:\n%s",
              LogTail(log()).c_str());
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
  }

  // SIGTERM, and waits for the server to exit: the stop before a cold start.
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
    pid_ = 0;
  }

  double RssMb() const { return ProcessRssMb(pid_); }
  std::string log() const { return pg_->dir() + "/server.log"; }
  TestPostgres& pg() { return *pg_; }
  v1::AdminService::Stub& admin() { return *admin_; }
  v1::MappingService::Stub& mapping() { return *mapping_; }

 private:
  std::unique_ptr<TestPostgres> pg_;
  pid_t pid_ = 0;
  int port_ = 0;
  Clock::time_point started_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
  std::unique_ptr<v1::MappingService::Stub> mapping_;
};

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  return ctx;
}

void CreateBuckets(Deployment& d, int n) {
  for (int i = 1; i <= n; ++i) {
    v1::CreateBucketRequest req;
    req.mutable_bucket()->set_name(absl::StrCat("bucket-", i));
    (*req.mutable_bucket()->mutable_topics())["ingestion"] =
        absl::StrCat("events_plugin_ingestion_", i);
    req.set_reason("bench");
    v1::CreateBucketResponse resp;
    Check(d.admin().CreateBucket(Ctx().get(), req, &resp), "CreateBucket");
  }
}

// Pins teams 1..n (every 10th to a pool instead) in batches; returns ms.
double BulkLoad(Deployment& d, int64_t n, int buckets) {
  const auto start = Clock::now();
  int64_t version = 0;
  constexpr int64_t kBatch = 100000;
  for (int64_t first = 1; first <= n; first += kBatch) {
    v1::BulkAssignRequest req;
    req.set_reason("bench load");
    for (int64_t team = first; team < std::min(n + 1, first + kBatch); ++team) {
      v1::BulkAssignment* a = req.add_assignments();
      a->set_team_id(team);
      if (team % 10 == 0) {
        a->set_pool("default");
      } else {
        a->set_bucket_id(1 + team % buckets);
      }
    }
    v1::BulkAssignResponse resp;
    Check(d.admin().BulkAssign(Ctx().get(), req, &resp), "BulkAssign");
    Expect(resp.version() > version, "BulkAssign of teams %ld.. returned version %ld after %ld",
           static_cast<long>(first), static_cast<long>(resp.version()), static_cast<long>(version));
    Expect(resp.effect().assignments_changed() == req.assignments_size(),
           "BulkAssign of %d teams changed %ld assignments", req.assignments_size(),
           static_cast<long>(resp.effect().assignments_changed()));
    version = resp.version();
  }
  const double ms = Ms(Clock::now() - start);
  Expect(ms > 0, "BulkAssign of %ld teams took %f ms", static_cast<long>(n), ms);
  return ms;
}

// GetMapping until the parsed snapshot is in hand; median of `reps`.
double GetMappingMs(Deployment& d, int reps, int64_t expect_rows) {
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    const auto start = Clock::now();
    v1::MappingSnapshot snap;
    Check(d.mapping().GetMapping(Ctx().get(), v1::GetMappingRequest(), &snap), "GetMapping");
    times.push_back(Ms(Clock::now() - start));
    if (snap.assignments().team_ids_size() != expect_rows) {
      Fatal("GetMapping returned %d rows, want %ld", snap.assignments().team_ids_size(),
            static_cast<long>(expect_rows));
    }
  }
  const double median = Median(times);
  Expect(median > 0, "GetMapping of %ld rows took %f ms", static_cast<long>(expect_rows), median);
  return median;
}

// The naive alternative: every row straight from PostgreSQL into memory.
double PqxxReadMs(Deployment& d, int reps, int64_t expect_rows) {
  std::vector<double> times;
  pqxx::connection conn(d.pg().url());
  for (int i = 0; i < reps; ++i) {
    const auto start = Clock::now();
    std::vector<int64_t> teams;
    std::vector<int32_t> buckets;
    std::vector<std::string> pools;
    pqxx::work tx(conn);
    pqxx::result rows =
        tx.exec("SELECT team_id, bucket_id, pool FROM assignments ORDER BY team_id");
    teams.reserve(rows.size());
    for (const auto& row : rows) {
      teams.push_back(row[0].as<int64_t>());
      buckets.push_back(row[1].is_null() ? 0 : row[1].as<int32_t>());
      pools.push_back(row[2].is_null() ? std::string() : row[2].as<std::string>());
    }
    tx.commit();
    times.push_back(Ms(Clock::now() - start));
    if (static_cast<int64_t>(teams.size()) != expect_rows) {
      Fatal("libpqxx read %zu rows, want %ld", teams.size(), static_cast<long>(expect_rows));
    }
  }
  const double median = Median(times);
  Expect(median > 0, "libpqxx read of %ld rows took %f ms", static_cast<long>(expect_rows), median);
  return median;
}

// `clients` clients each pin `per_client` new teams (from `first_team`),
// one write at a time; returns the versions the writes created.
std::vector<int64_t> AssignLatency(Deployment& d, int64_t first_team, int clients, int per_client,
                                   int buckets) {
  std::vector<std::vector<double>> lat(clients);
  std::vector<std::vector<int64_t>> versions(clients);
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      for (int i = 0; i < per_client; ++i) {
        v1::AssignTeamRequest req;
        req.set_team_id(first_team + c * 100000 + i);
        req.set_bucket_id(1 + i % buckets);
        req.set_reason("bench");
        v1::AssignTeamResponse resp;
        const auto t0 = Clock::now();
        Check(d.admin().AssignTeam(Ctx().get(), req, &resp), "AssignTeam");
        lat[c].push_back(Ms(Clock::now() - t0));
        versions[c].push_back(resp.version());
      }
    });
  }
  for (auto& t : threads) t.join();
  const double total_s = Ms(Clock::now() - start) / 1000;
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  // Each write a version of its own, later than the client's previous one.
  absl::flat_hash_set<int64_t> distinct;
  std::vector<int64_t> all_versions;
  for (const auto& client : versions) {
    for (size_t i = 0; i < client.size(); ++i) {
      if (i > 0) {
        Expect(client[i] > client[i - 1], "AssignTeam returned version %ld after %ld",
               static_cast<long>(client[i]), static_cast<long>(client[i - 1]));
      }
      distinct.insert(client[i]);
      all_versions.push_back(client[i]);
    }
  }
  Expect(distinct.size() == all.size(), "%zu writes returned %zu distinct versions", all.size(),
         distinct.size());
  Expect(*std::min_element(all.begin(), all.end()) > 0, "an AssignTeam latency is not positive");
  std::printf(
      "| AssignTeam, %d client(s), %zu writes | p50 %.2f ms, p99 %.2f ms, %.0f writes/s |\n",
      clients, all.size(), Percentile(all, 0.5), Percentile(all, 0.99), all.size() / total_s);
  return all_versions;
}

// The mapping the server serves: at least `min_version`, with `rows`
// assignments.
void ExpectMapping(Deployment& d, int64_t min_version, int64_t rows, const char* when) {
  v1::MappingSnapshot snap;
  Check(d.mapping().GetMapping(Ctx().get(), v1::GetMappingRequest(), &snap), "GetMapping");
  Expect(snap.version() >= min_version, "%s: the mapping is at version %ld, want >= %ld", when,
         static_cast<long>(snap.version()), static_cast<long>(min_version));
  Expect(snap.assignments().team_ids_size() == rows, "%s: the mapping has %d assignments, want %ld",
         when, snap.assignments().team_ids_size(), static_cast<long>(rows));
}

int Main(bool quick) {
  std::printf("| Benchmark | Result |\n|---|---|\n");
  const std::vector<int64_t> sizes =
      quick ? std::vector<int64_t>{1000, 100000} : std::vector<int64_t>{1000, 100000, 1000000};
  constexpr int kBuckets = 8;
  for (int64_t n : sizes) {
    auto pg = TestPostgres::Start();
    if (!pg.ok()) Fatal("%s", pg.status().ToString().c_str());
    Deployment d(*std::move(pg));
    d.Start();
    d.WaitServingMs();
    CreateBuckets(d, kBuckets);
    const double load_ms = BulkLoad(d, n, kBuckets);
    const int reps = n >= 1000000 ? 9 : quick ? 9 : 25;
    const double grpc_ms = GetMappingMs(d, reps, n);
    const double pqxx_ms = PqxxReadMs(d, reps, n);
    std::printf(
        "| GetMapping, %ld assignments (median of %d) | %.2f ms vs libpqxx read %.2f ms: "
        "%.1fx faster |\n",
        static_cast<long>(n), reps, grpc_ms, pqxx_ms, pqxx_ms / grpc_ms);
    if (n == sizes.back()) {
      std::printf("| BulkAssign of %ld teams in batches of 100k | %.0f ms |\n",
                  static_cast<long>(n), load_ms);
      const double rss = d.RssMb();
      Expect(rss > 0, "the server's RSS reads %f MB", rss);
      std::printf("| Server RSS with %ld assignments (after GetMapping) | %.1f MB |\n",
                  static_cast<long>(n), rss);
      // Teams no earlier write pinned, so that every write changes the mapping.
      std::vector<int64_t> versions = AssignLatency(d, 5'000'000, 1, quick ? 100 : 500, kBuckets);
      const std::vector<int64_t> concurrent =
          AssignLatency(d, 6'000'000, 8, quick ? 25 : 100, kBuckets);
      versions.insert(versions.end(), concurrent.begin(), concurrent.end());
      const int64_t last = *std::max_element(versions.begin(), versions.end());
      const int64_t rows = n + static_cast<int64_t>(versions.size());
      ExpectMapping(d, last, rows, "after the writes");
      d.Stop();
      const int cold_starts = quick ? 3 : 5;
      std::vector<double> starts;
      for (int i = 0; i < cold_starts; ++i) {
        d.Start();
        starts.push_back(d.WaitServingMs());
        d.Stop();
      }
      Expect(*std::min_element(starts.begin(), starts.end()) > 0, "a cold start took no time");
      d.Start();
      d.WaitServingMs();
      ExpectMapping(d, last, rows, "after a restart");
      std::printf(
          "| Cold start with %ld assignments, until GetMapping answers (median of %d) | "
          "%.0f ms; RSS after start %.1f MB |\n",
          static_cast<long>(n), cold_starts, Median(starts), d.RssMb());
    }
  }
  return ExitStatus();
}

}  // namespace
}  // namespace bucketmap

int main(int argc, char** argv) {
  bucketmap::BenchFlags flags(
      "100k assignments at most instead of 1M, 9 repetitions, 300 writes, 3 cold starts");
  flags.Parse(argc, argv);
  try {
    return bucketmap::Main(flags.quick());
  } catch (const std::exception& e) {
    bucketmap::Fatal("%s", e.what());
  }
}
