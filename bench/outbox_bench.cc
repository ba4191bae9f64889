// outbox_bench: what publishing change events to Kafka costs, measured
// against the real server binary on a throwaway PostgreSQL, with Kafka
// being librdkafka's mock cluster in a helper process
// (tests/support/kafka_mock_helper.cc).
//
//   Sustained AssignTeam throughput, 8 concurrent clients for 10 s, with
//     publishing on (--kafka_brokers=<mock>) and off (empty), in the same
//     run, in the order off, on, on, off so that drift cancels; each round
//     on a fresh PostgreSQL (a server with publishing off leaves its
//     versions unpublished, which a later relay would publish) and, with
//     publishing on, a fresh mock cluster. A consumer then checks that
//     every version arrived and when the last one did.
//   Latency from commit (the AssignTeam reply reaching the client) to Kafka
//     delivery (a librdkafka consumer receiving that version), p50 and p99:
//     one client pacing writes 10 ms apart, and 8 clients writing flat out.
//
// Usage: outbox_bench [--quick] [--seconds=N] [--pace_ms=N]
//   --seconds: throughput round length (default 10; 2 with --quick)
//   --pace_ms: gap between the single client's writes (default 10)
//   --quick: also 100 and 8 x 25 writes for latency, instead of 300 and 8 x 100
// Prints Markdown rows for docs/benchmarks.md. Sanity checks: every write
// succeeds, every round writes and uses server CPU, every version of an
// "on" round reaches the topic, every latency write is delivered, and the
// median latency is positive.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/bench_util.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "tests/support/kafka_harness.h"
#include "tests/support/local_process.h"
#include "tests/support/pg_harness.h"

namespace bucketmap {
namespace {

constexpr char kTopic[] = "bucketmap_changes";
constexpr int kBuckets = 8;

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

// User plus system CPU time a process has used so far, in seconds; 0 when
// it cannot be read.
double CpuSeconds(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  // Fields after the command name, from field 3 (state): utime is the
  // 14th field of the line and stime the 15th.
  std::vector<std::string> fields = absl::StrSplit(stat.substr(paren + 2), ' ');
  if (fields.size() < 13) return 0;
  double utime = 0;
  double stime = 0;
  if (!absl::SimpleAtod(fields[11], &utime) || !absl::SimpleAtod(fields[12], &stime)) return 0;
  return (utime + stime) / sysconf(_SC_CLK_TCK);
}

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  return ctx;
}

// A bucketmap-server process on its own PostgreSQL, publishing to
// `brokers` (empty: publishing off).
class Deployment {
 public:
  static std::unique_ptr<Deployment> Start(const std::string& brokers) {
    auto pg = TestPostgres::Start();
    if (!pg.ok()) Fatal("%s", pg.status().ToString().c_str());
    auto d = std::unique_ptr<Deployment>(new Deployment());
    d->pg_ = *std::move(pg);
    const int port = FreePort();
    d->metrics_port_ = FreePort();
    std::vector<std::string> args = {BUCKETMAP_SERVER_BINARY, "--postgres_url=" + d->pg_->url(),
                                     absl::StrCat("--grpc_listen=127.0.0.1:", port),
                                     absl::StrCat("--metrics_listen=127.0.0.1:", d->metrics_port_),
                                     "--kafka_brokers=" + brokers};
    if (!brokers.empty()) {
      // The helper created the topic; the mock does not answer CreateTopics.
      args.push_back("--kafka_create_topics=false");
      args.push_back(absl::StrCat("--changes_topic=", kTopic));
    }
    const std::string log = d->pg_->dir() + "/server.log";
    d->pid_ = SpawnServer(args, log);
    d->channel_ =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
    d->admin_ = v1::AdminService::NewStub(d->channel_);
    auto mapping = v1::MappingService::NewStub(d->channel_);
    for (int i = 0;; ++i) {
      auto ctx = Ctx();
      ctx->set_wait_for_ready(true);
      ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
      v1::MappingSnapshot snap;
      if (mapping->GetMapping(ctx.get(), v1::GetMappingRequest(), &snap).ok()) break;
      if (i > 60 || waitpid(d->pid_, nullptr, WNOHANG) != 0) {
        Fatal("the server does not serve; its log ends:\n%s", LogTail(log).c_str());
      }
    }
    for (int b = 1; b <= kBuckets; ++b) {
      v1::CreateBucketRequest req;
      req.mutable_bucket()->set_name(absl::StrCat("bucket-", b));
      (*req.mutable_bucket()->mutable_topics())["ingestion"] =
          absl::StrCat("events_plugin_ingestion_", b);
      req.set_reason("bench");
      v1::CreateBucketResponse resp;
      Check(d->admin_->CreateBucket(Ctx().get(), req, &resp), "CreateBucket");
    }
    return d;
  }

  // Nothing is measured after this: SIGKILL spares the seconds a graceful
  // stop takes (the PostgreSQL goes with it).
  ~Deployment() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }

  // An unlabelled metric's value; -1 when absent.
  double Metric(const std::string& name) {
    const std::string exposition = HttpGet(metrics_port_, "/metrics");
    for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
      if (!absl::ConsumePrefix(&line, name) || !absl::ConsumePrefix(&line, " ")) continue;
      double value = 0;
      if (absl::SimpleAtod(line, &value)) return value;
    }
    return -1;
  }

  pid_t pid() const { return pid_; }

  // Writes one assignment; returns the new version.
  int64_t Assign(int64_t team) {
    v1::AssignTeamRequest req;
    req.set_team_id(team);
    req.set_bucket_id(1 + team % kBuckets);
    req.set_reason("bench");
    v1::AssignTeamResponse resp;
    Check(admin_->AssignTeam(Ctx().get(), req, &resp), "AssignTeam");
    return resp.version();
  }

 private:
  Deployment() = default;

  std::unique_ptr<TestPostgres> pg_;
  pid_t pid_ = 0;
  int metrics_port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
};

struct Throughput {
  double writes_per_s = 0;
  double max_backlog = 0;   // largest bucketmap_outbox_backlog sampled
  double drain_ms = 0;      // from the last reply until its event reached a consumer
  double server_cores = 0;  // server CPU during the round, in cores
  double kafka_cores = 0;   // the mock cluster's CPU during the round, in cores
};

// 8 clients write flat out for `seconds`, publishing to a mock cluster of
// its own or not at all.
Throughput RunThroughput(bool publishing, int seconds) {
  std::unique_ptr<KafkaMockProcess> kafka;
  if (publishing) {
    auto started = KafkaMockProcess::Start({{kTopic, 1}});
    if (!started.ok()) Fatal("%s", started.status().ToString().c_str());
    kafka = *std::move(started);
  }
  const std::string brokers = publishing ? kafka->bootstrap() : "";
  auto d = Deployment::Start(brokers);
  constexpr int kClients = 8;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> writes{0};
  std::atomic<int64_t> last_version{0};
  Throughput result;
  // Scrapes /metrics in both modes, so that both pay for it.
  std::thread sampler([&] {
    while (!stop.load()) {
      result.max_backlog = std::max(result.max_backlog, d->Metric("bucketmap_outbox_backlog"));
      absl::SleepFor(absl::Milliseconds(250));
    }
  });
  std::vector<std::thread> clients;
  const absl::Time start = absl::Now();
  const double server_cpu0 = CpuSeconds(d->pid());
  const double kafka_cpu0 = publishing ? CpuSeconds(kafka->pid()) : 0;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int64_t i = 0; !stop.load(); ++i) {
        const int64_t version = d->Assign(1 + c * 10'000'000 + i);
        writes.fetch_add(1);
        int64_t seen = last_version.load();
        while (version > seen && !last_version.compare_exchange_weak(seen, version)) {
        }
      }
    });
  }
  absl::SleepFor(absl::Seconds(seconds));
  stop = true;
  for (auto& t : clients) t.join();
  const absl::Time end = absl::Now();
  const double elapsed_s = absl::ToDoubleSeconds(end - start);
  result.server_cores = (CpuSeconds(d->pid()) - server_cpu0) / elapsed_s;
  if (publishing) result.kafka_cores = (CpuSeconds(kafka->pid()) - kafka_cpu0) / elapsed_s;
  sampler.join();
  result.writes_per_s = writes.load() / elapsed_s;
  const char* mode = publishing ? "on" : "off";
  Expect(writes.load() > 0 && last_version.load() >= writes.load(),
         "publishing %s: %ld writes, the last at version %ld", mode,
         static_cast<long>(writes.load()), static_cast<long>(last_version.load()));
  Expect(result.server_cores > 0, "publishing %s: the server used no CPU", mode);
  if (publishing) {
    auto records = ReadAllChangeEvents(brokers, kTopic, absl::Seconds(120), last_version.load());
    if (!records.ok()) Fatal("consumer: %s", records.status().ToString().c_str());
    std::set<int64_t> versions;
    absl::Time delivered = end;
    for (const KafkaRecord& r : *records) {
      if (r.version > last_version.load()) continue;  // a later version of the server's own
      versions.insert(r.version);
      if (r.version == last_version.load()) delivered = r.received;
    }
    if (static_cast<int64_t>(versions.size()) != last_version.load() || *versions.begin() != 1) {
      Fatal("the topic holds %zu distinct versions up to %ld, want 1..%ld", versions.size(),
            static_cast<long>(last_version.load()), static_cast<long>(last_version.load()));
    }
    result.drain_ms = std::max(0.0, absl::ToDoubleMilliseconds(delivered - end));
  }
  return result;
}

// Commit-to-delivery latency: `clients` clients each make `per_client`
// writes, `pace` apart; a consumer tails the topic meanwhile.
void RunLatency(const std::string& brokers, int clients, int per_client, absl::Duration pace) {
  auto d = Deployment::Start(brokers);
  const int64_t first = kBuckets + 1;
  const int64_t last = kBuckets + static_cast<int64_t>(clients) * per_client;
  absl::StatusOr<std::vector<KafkaRecord>> consumed;
  std::thread consumer(
      [&] { consumed = ReadAllChangeEvents(brokers, kTopic, absl::Seconds(120), last); });
  // Let the consumer reach the end of the topic before the first write, so
  // that its start-up is not measured.
  absl::SleepFor(absl::Seconds(1));
  absl::Mutex mu;
  std::map<int64_t, absl::Time> replied;
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      for (int i = 0; i < per_client; ++i) {
        const int64_t version = d->Assign(20'000'000 + c * 1'000'000 + i);
        const absl::Time now = absl::Now();
        {
          absl::MutexLock lock(&mu);
          replied[version] = now;
        }
        if (pace > absl::ZeroDuration()) absl::SleepFor(pace);
      }
    });
  }
  for (auto& t : threads) t.join();
  consumer.join();
  if (!consumed.ok()) Fatal("consumer: %s", consumed.status().ToString().c_str());
  const int64_t last_written = replied.empty() ? 0 : replied.rbegin()->first;
  int64_t last_read = 0;
  std::vector<double> ms;
  for (const KafkaRecord& r : *consumed) {
    last_read = std::max(last_read, r.version);
    if (r.version < first) continue;
    auto it = replied.find(r.version);
    if (it == replied.end()) continue;
    // The event can reach the consumer before the reply reaches the client;
    // that shows as a negative latency, kept as measured.
    ms.push_back(absl::ToDoubleMilliseconds(r.received - it->second));
    replied.erase(it);  // a duplicate is not a second delivery
  }
  if (!replied.empty()) {
    // The consumer stops at version `last`: writes numbered past it mean
    // the server made versions of its own in between.
    Fatal(
        "%zu of %d writes were never delivered (the consumer read up to version %ld; the "
        "writes reached version %ld, %ld expected)",
        replied.size(), clients * per_client, static_cast<long>(last_read),
        static_cast<long>(last_written), static_cast<long>(last));
  }
  Expect(Percentile(ms, 0.5) > 0, "%d client(s): commit to delivery p50 is %f ms", clients,
         Percentile(ms, 0.5));
  std::printf(
      "| Commit to Kafka delivery, %d client(s)%s, %zu writes | p50 %.2f ms, p99 %.2f ms, "
      "max %.2f ms |\n",
      clients,
      pace > absl::ZeroDuration()
          ? absl::StrCat(", one write every ", absl::FormatDuration(pace)).c_str()
          : " writing flat out",
      ms.size(), Percentile(ms, 0.5), Percentile(ms, 0.99), Percentile(ms, 1.0));
}

int Main(int seconds, int pace_ms, bool quick) {
  std::printf("| Benchmark | Result |\n|---|---|\n");
  // Off, on, on, off, so that drift (other load, PostgreSQL warming up)
  // cancels out of the comparison.
  std::vector<double> off;
  std::vector<double> on;
  std::vector<Throughput> on_rounds;
  for (bool publishing : {false, true, true, false}) {
    Throughput t = RunThroughput(publishing, seconds);
    (publishing ? on : off).push_back(t.writes_per_s);
    if (publishing) on_rounds.push_back(t);
    std::printf(
        "| Round, publishing %s | %.0f writes/s; server CPU %.2f cores, mock Kafka CPU %.2f "
        "cores |\n",
        publishing ? "on" : "off", t.writes_per_s, t.server_cores, t.kafka_cores);
  }
  const double off_mean = (off[0] + off[1]) / 2;
  const double on_mean = (on[0] + on[1]) / 2;
  std::printf(
      "| AssignTeam throughput, 8 clients, %d s rounds, publishing off | %.0f, %.0f: mean "
      "%.0f writes/s |\n",
      seconds, off[0], off[1], off_mean);
  std::printf(
      "| AssignTeam throughput, 8 clients, %d s rounds, publishing on | %.0f, %.0f: mean "
      "%.0f writes/s (%+.1f%%); largest backlog sampled %.0f and %.0f versions; the last "
      "version reached the consumer %.0f and %.0f ms after its reply |\n",
      seconds, on[0], on[1], on_mean, 100 * (on_mean - off_mean) / off_mean,
      on_rounds[0].max_backlog, on_rounds[1].max_backlog, on_rounds[0].drain_ms,
      on_rounds[1].drain_ms);

  // Each latency run has a cluster of its own: versions restart at 1 with
  // every fresh PostgreSQL.
  auto kafka2 = KafkaMockProcess::Start({{kTopic, 1}});
  if (!kafka2.ok()) Fatal("%s", kafka2.status().ToString().c_str());
  RunLatency((*kafka2)->bootstrap(), 1, quick ? 100 : 300, absl::Milliseconds(pace_ms));
  auto kafka3 = KafkaMockProcess::Start({{kTopic, 1}});
  if (!kafka3.ok()) Fatal("%s", kafka3.status().ToString().c_str());
  RunLatency((*kafka3)->bootstrap(), 8, quick ? 25 : 100, absl::ZeroDuration());
  return ExitStatus();
}

}  // namespace
}  // namespace bucketmap

int main(int argc, char** argv) {
  bucketmap::BenchFlags flags(
      "2 s throughput rounds unless --seconds is given; 100 and 8 x 25 latency writes");
  int seconds = 0;
  int pace_ms = 10;
  flags.Int("seconds", &seconds, 1, "throughput round length, s (10)");
  flags.Int("pace_ms", &pace_ms, 1, "gap between the single client's writes, ms (10)");
  flags.Parse(argc, argv);
  if (seconds == 0) seconds = flags.quick() ? 2 : 10;
  return bucketmap::Main(seconds, pace_ms, flags.quick());
}
