// fanout_vs_etcd: watch fan-out of bucketmap against etcd 3.4, measured
// the same way in one run (issue 15; docs/benchmarks.md, "Fan-out against
// etcd").
//
//   For each number of watchers N, and for each system in turn, a fresh
//   server: bucketmap-server on a throwaway PostgreSQL (one for the whole
//   run), or etcd on a fresh data directory. N separate watch streams,
//   spread round-robin over --connections gRPC connections from this one
//   process, wait subscribed; then --writes writes, one at a time:
//   AssignTeam of a new team (bucketmap; every watcher gets the version)
//   or Put of the one key every watcher watches (etcd).
//   Latency: from the moment the write is sent to each watcher's receipt of
//   that write (the push carrying its version, the event carrying its
//   revision). For each write, p50 and p99 over the N receipts; reported as
//   the median over the writes.
//   Memory per watcher: the server process's RSS with the N watchers
//   subscribed and idle, minus its RSS before they subscribed (with the
//   connections already open), divided by N. A fresh process per round, so
//   that no round reuses memory an earlier one left in the allocator (Go's
//   heap or glibc's arenas).
//   Server CPU per delivered write: the server's user + system time over
//   the writes (pauses included), divided by N x writes.
//
// bucketmap watchers speak WatchMapping as the clients do: subscribe as a
// consumer and ACK the pushes the server marks (--ack=needed, the C++
// library's ACK_REQUESTED mode), or every push (--ack=every, clients that
// predate ack modes). etcd watchers create one
// watcher on their stream and read its events; etcd's protocol has no ACK.
// The etcd client is generated from a hand-written subset of etcd's public
// v3 API (bench/etcd/).
//
// Usage: fanout_vs_etcd [--quick] [--watchers=N,...] [--writes=N]
//                       [--connections=N] [--ack=needed|every|both]
//                       [--fanout_threads=N,...]
//   (default: 1,000, 5,000 and 10,000 watchers, 11 writes, 50 connections;
//   with --quick: 200 watchers, 5 writes)
// etcd is $BUCKETMAP_ETCD_BIN, else /usr/bin/etcd (Debian's etcd-server).
// Sanity checks: every watcher subscribes; every write gets a new version
// or revision; every watcher receives every write on both systems (within
// 30 s), never before it was sent, and nothing else; no stream ends early;
// the servers' RSS can be read.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
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
#include "etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "tests/support/pg_harness.h"

namespace bucketmap {
namespace {

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

// One etcd Watch stream holding one watcher on `key`.
class EtcdWatcher final
    : public grpc::ClientBidiReactor<etcdserverpb::WatchRequest, etcdserverpb::WatchResponse> {
 public:
  EtcdWatcher(etcdserverpb::Watch::Stub* stub, int index, std::string key, Receipts* receipts)
      : index_(index), key_(std::move(key)), receipts_(receipts) {
    stub->async()->Watch(&ctx_, this);
    request_.mutable_create_request()->set_key(key_);
    StartWrite(&request_);  // the stream's only write
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    const int64_t now = NowNs();
    if (response_.created() && !synced_) {
      synced_ = true;
      receipts_->Synced();
    }
    if (response_.canceled()) receipts_->Unexpected();
    for (const mvccpb::Event& event : response_.events()) {
      if (event.type() != mvccpb::Event::PUT || event.kv().key() != key_) {
        receipts_->Unexpected();
        continue;
      }
      receipts_->Record(event.kv().mod_revision(), index_, now);
    }
    StartRead(&response_);
  }

  void OnWriteDone(bool) override {}
  void OnDone(const grpc::Status&) override { done_.store(true); }

  void Cancel() { ctx_.TryCancel(); }
  bool done() const { return done_.load(); }

 private:
  const int index_;
  const std::string key_;
  Receipts* const receipts_;
  grpc::ClientContext ctx_;
  etcdserverpb::WatchRequest request_;
  etcdserverpb::WatchResponse response_;
  bool synced_ = false;  // only the reactor's read path touches it
  std::atomic<bool> done_{false};
};

// `connections` channels to `target`, each its own TCP connection, all
// connected when this returns (so that their buffers count before the
// watchers, not per watcher).
std::vector<std::shared_ptr<grpc::Channel>> Connect(const std::string& target, int connections) {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int c = 0; c < connections; ++c) {
    grpc::ChannelArguments args;
    args.SetInt("bench.connection", c);  // distinct arguments: no shared subchannel
    channels.push_back(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
  }
  const auto deadline = absl::ToChronoTime(absl::Now() + absl::Seconds(30));
  for (auto& channel : channels) {
    if (!channel->WaitForConnected(deadline)) Fatal("connecting to %s: timed out", target.c_str());
  }
  return channels;
}

// A channel that retries its connection every few milliseconds, so that a
// server's start is not stretched by gRPC's reconnect backoff.
std::shared_ptr<grpc::Channel> ControlChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 5);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 5);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 20);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  ctx->set_wait_for_ready(true);
  return ctx;
}

// Sends SIGTERM and waits up to 30 s for `pid` to exit, then SIGKILL.
void StopProcess(pid_t pid) {
  kill(pid, SIGTERM);
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (waitpid(pid, nullptr, WNOHANG) == 0) {
    if (absl::Now() > give_up) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      return;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
}

// A system under test, restarted for each round. Used from the main
// thread only.
class System {
 public:
  virtual ~System() = default;
  virtual const char* name() const = 0;
  // Starts a fresh server and opens `connections` connections to it;
  // returns once it serves. Exits (Fatal) when it does not.
  virtual void Start(int connections) = 0;
  virtual pid_t pid() const = 0;
  // The newest version (revision): every write produces a higher one.
  virtual int64_t Current() = 0;
  // Opens watcher `index`'s stream, on connection index % connections.
  virtual void AddWatcher(int index, Receipts* receipts) = 0;
  // Sends one write and returns the version (revision) it produced.
  virtual int64_t Write() = 0;
  // How many watchers' streams have ended.
  virtual int Ended() const = 0;
  // Cancels every watcher's stream and waits for each to end.
  virtual void DropWatchers() = 0;
  // Stops the server and closes the connections.
  virtual void Stop() = 0;
};

// Waits for `done` of every watcher after cancelling them all.
template <typename W>
void CancelAll(std::vector<std::unique_ptr<W>>& watchers) {
  for (auto& w : watchers) w->Cancel();
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  for (auto& w : watchers) {
    while (!w->done()) {
      if (absl::Now() > give_up) Fatal("cancelled watch streams did not end within 30 s");
      absl::SleepFor(absl::Milliseconds(1));
    }
  }
  watchers.clear();
}

class BucketmapSystem final : public System {
 public:
  // `next_team` is shared by the systems on one PostgreSQL, so that every
  // write of every round pins a new team.
  // `fanout_threads` > 0 starts the server with --watch_fanout_threads.
  BucketmapSystem(TestPostgres* pg, AckPolicy ack, int fanout_threads, int64_t* next_team)
      : pg_(pg), ack_(ack), fanout_threads_(fanout_threads), next_team_(next_team) {
    name_ = ack_ == AckPolicy::kEvery ? "bucketmap (ACK every push)" : "bucketmap";
    if (fanout_threads_ > 0) {
      absl::StrAppend(&name_, ", ", fanout_threads_, " fan-out thread",
                      fanout_threads_ == 1 ? "" : "s");
    }
  }

  const char* name() const override { return name_.c_str(); }

  void Start(int connections) override {
    const int port = FreePort();
    std::vector<std::string> args = {BUCKETMAP_SERVER_BINARY, "--postgres_url=" + pg_->url(),
                                     absl::StrCat("--grpc_listen=127.0.0.1:", port),
                                     "--metrics_listen="};
    if (fanout_threads_ > 0) {
      args.push_back(absl::StrCat("--watch_fanout_threads=", fanout_threads_));
    }
    pid_ = SpawnServer(args, log());
    const std::string target = absl::StrCat("127.0.0.1:", port);
    admin_ = v1::AdminService::NewStub(ControlChannel(target));
    const absl::Time give_up = absl::Now() + absl::Minutes(1);
    for (;;) {
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
      ctx.set_wait_for_ready(true);
      v1::ListBucketsResponse resp;
      if (admin_->ListBuckets(&ctx, v1::ListBucketsRequest(), &resp).ok()) {
        if (resp.buckets_size() > 0) {
          bucket_id_ = resp.buckets(0).id();
        } else {
          CreateBucket();
        }
        break;
      }
      if (waitpid(pid_, nullptr, WNOHANG) != 0) {
        pid_ = 0;
        Fatal("bucketmap-server exited; its log ends:\n%s", LogTail(log()).c_str());
      }
      if (absl::Now() > give_up) {
        Fatal("bucketmap-server does not serve after a minute; its log ends:\n%s",
              LogTail(log()).c_str());
      }
    }
    for (auto& channel : Connect(target, connections)) {
      stubs_.push_back(v1::MappingService::NewStub(channel));
    }
  }

  pid_t pid() const override { return pid_; }

  int64_t Current() override {
    v1::MappingSnapshot snap;
    Check(stubs_[0]->GetMapping(Ctx().get(), v1::GetMappingRequest(), &snap), "GetMapping");
    return snap.version();
  }

  void AddWatcher(int index, Receipts* receipts) override {
    watchers_.push_back(std::make_unique<MappingWatcher>(stubs_[index % stubs_.size()].get(), index,
                                                         ack_, receipts));
  }

  int64_t Write() override {
    v1::AssignTeamRequest req;
    req.set_team_id((*next_team_)++);  // a new team each time: never a no-op
    req.set_bucket_id(bucket_id_);
    req.set_reason("fanout_vs_etcd");
    v1::AssignTeamResponse resp;
    Check(admin_->AssignTeam(Ctx().get(), req, &resp), "AssignTeam");
    return resp.version();
  }

  int Ended() const override {
    int ended = 0;
    for (const auto& w : watchers_) ended += w->done() ? 1 : 0;
    return ended;
  }

  void DropWatchers() override { CancelAll(watchers_); }

  void Stop() override {
    stubs_.clear();
    admin_.reset();
    if (pid_ > 0) StopProcess(pid_);
    pid_ = 0;
  }

 private:
  void CreateBucket() {
    v1::CreateBucketRequest req;
    req.mutable_bucket()->set_name("fanout");
    (*req.mutable_bucket()->mutable_topics())["ingestion"] = "events_fanout";
    req.set_reason("fanout_vs_etcd");
    v1::CreateBucketResponse resp;
    Check(admin_->CreateBucket(Ctx().get(), req, &resp), "CreateBucket");
    bucket_id_ = resp.bucket().id();
  }

  std::string log() const { return pg_->dir() + "/bucketmap-server.log"; }

  TestPostgres* const pg_;
  const AckPolicy ack_;
  const int fanout_threads_;
  std::string name_;
  pid_t pid_ = 0;
  int32_t bucket_id_ = 0;
  int64_t* const next_team_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
  std::vector<std::unique_ptr<v1::MappingService::Stub>> stubs_;
  std::vector<std::unique_ptr<MappingWatcher>> watchers_;
};

// A single-member etcd cluster on loopback, with its data directory and
// log under `dir` (the throwaway PostgreSQL's directory, which its
// watchdog deletes even when the benchmark dies).
class EtcdSystem final : public System {
 public:
  EtcdSystem(std::string binary, std::string dir)
      : binary_(std::move(binary)), dir_(std::move(dir)) {}

  const char* name() const override { return "etcd"; }

  void Start(int connections) override {
    const int client_port = FreePort();
    int peer_port = FreePort();
    while (peer_port == client_port) peer_port = FreePort();
    const std::string client_url = absl::StrCat("http://127.0.0.1:", client_port);
    const std::string peer_url = absl::StrCat("http://127.0.0.1:", peer_port);
    data_dir_ = absl::StrCat(dir_, "/etcd-", ++starts_);
    pid_ = SpawnServer(
        {binary_, "--name=fanout", "--data-dir=" + data_dir_, "--listen-client-urls=" + client_url,
         "--advertise-client-urls=" + client_url, "--listen-peer-urls=" + peer_url,
         "--initial-advertise-peer-urls=" + peer_url, "--initial-cluster=fanout=" + peer_url,
         "--initial-cluster-state=new", "--logger=zap", "--log-outputs=stderr", "--log-level=warn"},
        log());
    const std::string target = absl::StrCat("127.0.0.1:", client_port);
    kv_ = etcdserverpb::KV::NewStub(ControlChannel(target));
    // The first Put creates the key (later Puts are changes to it) and
    // tells when etcd has elected itself and serves.
    const absl::Time give_up = absl::Now() + absl::Minutes(1);
    for (;;) {
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
      ctx.set_wait_for_ready(true);
      etcdserverpb::PutRequest req;
      req.set_key(key_);
      req.set_value("start");
      etcdserverpb::PutResponse resp;
      if (kv_->Put(&ctx, req, &resp).ok()) {
        revision_ = resp.header().revision();
        break;
      }
      if (waitpid(pid_, nullptr, WNOHANG) != 0) {
        pid_ = 0;
        Fatal("etcd exited; its log ends:\n%s", LogTail(log()).c_str());
      }
      if (absl::Now() > give_up) {
        Fatal("etcd does not serve after a minute; its log ends:\n%s", LogTail(log()).c_str());
      }
    }
    for (auto& channel : Connect(target, connections)) {
      stubs_.push_back(etcdserverpb::Watch::NewStub(channel));
    }
  }

  pid_t pid() const override { return pid_; }

  int64_t Current() override { return revision_; }

  void AddWatcher(int index, Receipts* receipts) override {
    watchers_.push_back(
        std::make_unique<EtcdWatcher>(stubs_[index % stubs_.size()].get(), index, key_, receipts));
  }

  int64_t Write() override {
    etcdserverpb::PutRequest req;
    req.set_key(key_);
    req.set_value(absl::StrCat("write-", revision_ + 1));
    etcdserverpb::PutResponse resp;
    Check(kv_->Put(Ctx().get(), req, &resp), "etcd Put");
    revision_ = resp.header().revision();
    return revision_;
  }

  int Ended() const override {
    int ended = 0;
    for (const auto& w : watchers_) ended += w->done() ? 1 : 0;
    return ended;
  }

  void DropWatchers() override { CancelAll(watchers_); }

  void Stop() override {
    stubs_.clear();
    kv_.reset();
    if (pid_ > 0) StopProcess(pid_);
    pid_ = 0;
    std::error_code ec;
    std::filesystem::remove_all(data_dir_, ec);  // its WAL preallocates 64 MB, on tmpfs
  }

 private:
  std::string log() const { return dir_ + "/etcd.log"; }

  const std::string binary_;
  const std::string dir_;
  const std::string key_ = "fanout";
  std::string data_dir_;
  int starts_ = 0;
  pid_t pid_ = 0;
  int64_t revision_ = 0;
  std::unique_ptr<etcdserverpb::KV::Stub> kv_;
  std::vector<std::unique_ptr<etcdserverpb::Watch::Stub>> stubs_;
  std::vector<std::unique_ptr<EtcdWatcher>> watchers_;
};

struct Config {
  std::vector<int64_t> watchers;
  int writes = 0;
  int connections = 0;
  // --watch_fanout_threads of each bucketmap round; empty: the default.
  std::vector<int64_t> fanout_threads;
};

struct RoundResult {
  double p50_ms = 0;    // median over the writes of each write's p50
  double p99_ms = 0;    // median over the writes of each write's p99
  double write_ms = 0;  // median time until the write's reply
  double kib_per_watcher = 0;
  double rss_before_mb = 0;
  double rss_idle_mb = 0;
  double server_us_per_delivery = 0;
};

// One round: `n` watchers of `system`, then `config.writes` writes.
RoundResult RunRound(System& system, int n, const Config& config) {
  system.Start(config.connections);
  const int64_t base = system.Current();
  // Room for twice the writes, in case a write ever produced more than
  // one version; a write past that is reported (Fatal) below.
  Receipts receipts(base, 2 * static_cast<int64_t>(config.writes) + 2, n);
  RoundResult result;
  result.rss_before_mb = ProcessRssMb(system.pid());
  for (int i = 0; i < n; ++i) system.AddWatcher(i, &receipts);
  const absl::Time sync_deadline = absl::Now() + absl::Minutes(1);
  while (receipts.synced() < n) {
    if (absl::Now() > sync_deadline) {
      Fatal("%s: %ld of %d watchers subscribed in a minute", system.name(),
            static_cast<long>(receipts.synced()), n);
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  absl::SleepFor(absl::Milliseconds(500));  // ACKs land, memory settles
  result.rss_idle_mb = ProcessRssMb(system.pid());
  Expect(result.rss_before_mb > 0 && result.rss_idle_mb > 0,
         "%s: the server's RSS reads %f then %f MB", system.name(), result.rss_before_mb,
         result.rss_idle_mb);
  result.kib_per_watcher = (result.rss_idle_mb - result.rss_before_mb) * 1024 / n;

  std::vector<double> p50s, p99s, write_ms;
  const double cpu_before = ProcessCpuSeconds(system.pid());
  int64_t last = base;
  std::vector<int64_t> written;
  for (int w = 0; w < config.writes; ++w) {
    const int64_t sent = NowNs();
    const int64_t v = system.Write();
    write_ms.push_back((NowNs() - sent) / 1e6);
    if (v <= last || !receipts.Holds(v)) {
      Fatal("%s: write %d produced version %ld after %ld; the watchers expect %ld..%ld",
            system.name(), w, static_cast<long>(v), static_cast<long>(last),
            static_cast<long>(base + 1), static_cast<long>(base + 2 * config.writes + 1));
    }
    last = v;
    written.push_back(v);
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    while (receipts.Count(v) < n && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    int missing = 0;
    int not_after = 0;
    std::vector<double> latencies;
    latencies.reserve(n);
    for (int i = 0; i < n; ++i) {
      const int64_t t = receipts.At(v, i);
      if (t == 0) {
        ++missing;
        latencies.push_back(30000.0);
        continue;
      }
      if (t <= sent) ++not_after;
      latencies.push_back((t - sent) / 1e6);
    }
    Expect(missing == 0, "%s, %d watchers: %d never received version %ld", system.name(), n,
           missing, static_cast<long>(v));
    Expect(not_after == 0,
           "%s, %d watchers: %d received version %ld no later than it was sent (latency <= 0)",
           system.name(), n, not_after, static_cast<long>(v));
    p50s.push_back(Percentile(latencies, 0.5));
    p99s.push_back(Percentile(latencies, 0.99));
    absl::SleepFor(absl::Milliseconds(100));
  }
  result.server_us_per_delivery = (ProcessCpuSeconds(system.pid()) - cpu_before) * 1e6 /
                                  (static_cast<double>(n) * config.writes);
  result.p50_ms = Percentile(p50s, 0.5);
  result.p99_ms = Percentile(p99s, 0.5);
  result.write_ms = Percentile(write_ms, 0.5);

  for (int64_t v = base + 1; receipts.Holds(v); ++v) {
    if (std::find(written.begin(), written.end(), v) == written.end() && receipts.Count(v) > 0) {
      receipts.Unexpected();  // a version (revision) that none of the writes produced
    }
  }
  const int ended = system.Ended();
  Expect(ended == 0, "%s, %d watchers: %d streams ended before the client cancelled them",
         system.name(), n, ended);
  Expect(receipts.unexpected() == 0,
         "%s, %d watchers: %ld unexpected receipts (an event of another key or kind, a "
         "version none of the writes produced, a cancelled watch)",
         system.name(), n, static_cast<long>(receipts.unexpected()));
  system.DropWatchers();
  system.Stop();
  return result;
}

// This process's peak resident set size (VmHWM), in MB.
double PeakRssMb() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "VmHWM:") {
      double kb = 0;
      in >> kb;
      return kb / 1024;
    }
    in.ignore(1 << 20, '\n');
  }
  return -1;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return absl::StrCat(one, " ", five, " ", fifteen);
}

// `acks`: the bucketmap rounds to run, one per ACK policy and each of
// config.fanout_threads.
int Run(const Config& config, const std::vector<AckPolicy>& acks, const std::string& etcd_binary) {
  auto pg = TestPostgres::Start();
  if (!pg.ok()) Fatal("%s", pg.status().ToString().c_str());
  int64_t next_team = 1;
  std::vector<std::unique_ptr<System>> owned;
  const std::vector<int64_t> threads =
      config.fanout_threads.empty() ? std::vector<int64_t>{0} : config.fanout_threads;
  for (AckPolicy ack : acks) {
    for (int64_t t : threads) {
      owned.push_back(
          std::make_unique<BucketmapSystem>(pg->get(), ack, static_cast<int>(t), &next_team));
    }
  }
  owned.push_back(std::make_unique<EtcdSystem>(etcd_binary, (*pg)->dir()));
  const size_t etcd = owned.size() - 1;

  std::printf("%d writes per round, watchers over %d connections; load average at start: %s\n\n",
              config.writes, config.connections, LoadAverage().c_str());
  std::printf(
      "| Watchers | System | p50 from write sent | p99 from write sent | Write reply (median) | "
      "Server RSS per idle watcher | Server CPU per delivered write |\n"
      "|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);
  std::vector<std::vector<RoundResult>> results;
  for (const int64_t size : config.watchers) {
    const int n = static_cast<int>(size);
    std::vector<RoundResult> r(owned.size());
    for (size_t s = 0; s < owned.size(); ++s) {
      r[s] = RunRound(*owned[s], n, config);
      std::printf(
          "| %d | %s | %.2f ms | %.2f ms | %.2f ms | %.1f KiB (RSS %.1f -> %.1f MB) | "
          "%.1f us |\n",
          n, owned[s]->name(), r[s].p50_ms, r[s].p99_ms, r[s].write_ms, r[s].kib_per_watcher,
          r[s].rss_before_mb, r[s].rss_idle_mb, r[s].server_us_per_delivery);
      std::fflush(stdout);
    }
    results.push_back(std::move(r));
  }
  std::printf(
      "\n| Watchers | System | p50 / etcd's | p99 / etcd's | RSS per watcher / etcd's |\n"
      "|---|---|---|---|---|\n");
  auto ratio = [](double x, double y) { return y > 0 ? x / y : 0.0; };
  for (size_t i = 0; i < results.size(); ++i) {
    const RoundResult& e = results[i][etcd];
    for (size_t s = 0; s < etcd; ++s) {
      const RoundResult& b = results[i][s];
      std::printf("| %ld | %s | %.2fx | %.2fx | %.2fx |\n", static_cast<long>(config.watchers[i]),
                  owned[s]->name(), ratio(b.p50_ms, e.p50_ms), ratio(b.p99_ms, e.p99_ms),
                  ratio(b.kib_per_watcher, e.kib_per_watcher));
    }
  }
  std::printf("\nload average at end: %s; this client's peak RSS: %.0f MB\n", LoadAverage().c_str(),
              PeakRssMb());
  return ExitStatus();
}

// Raises the soft limit on open files to at least `needed` (the hard limit
// too, where this process may); exits 2 with what to do when it cannot.
void RaiseFileLimit(rlim_t needed, int connections) {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) Fatal("getrlimit(RLIMIT_NOFILE) failed");
  if (lim.rlim_cur >= needed) return;
  rlimit want = lim;
  want.rlim_cur = needed;
  if (want.rlim_max != RLIM_INFINITY && want.rlim_max < needed) want.rlim_max = needed;
  if (setrlimit(RLIMIT_NOFILE, &want) == 0) return;
  std::fprintf(stderr,
               "%s: %d connections need %lu open files here and in each server; the limit is "
               "%lu (hard %lu) and this process cannot raise it: raise it (ulimit -n %lu) or "
               "use fewer --connections\n",
               BenchName().c_str(), connections, static_cast<unsigned long>(needed),
               static_cast<unsigned long>(lim.rlim_cur), static_cast<unsigned long>(lim.rlim_max),
               static_cast<unsigned long>(needed));
  std::exit(2);
}

}  // namespace
}  // namespace bucketmap

int main(int argc, char** argv) {
  // Debian builds abseil without NDEBUG; its deadlock detector would tax
  // every lock of the benchmark client.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  bucketmap::BenchFlags flags("200 watchers, 5 writes");
  bucketmap::Config config;
  std::string ack = "needed";
  flags.IntList("watchers", &config.watchers, 1,
                "numbers of watchers, one round of each system each (default 1000,5000,10000)");
  flags.Int("writes", &config.writes, 1, "writes per round (default 11)");
  flags.Int("connections", &config.connections, 1,
            "gRPC connections the watchers are spread over (default 50)");
  flags.IntList("fanout_threads", &config.fanout_threads, 1,
                "a bucketmap round per value, its server run with --watch_fanout_threads=N "
                "(default: one round, the server's default)");
  flags.Choice("ack", &ack, {"every", "needed", "both"},
               "which bucketmap pushes are ACKed: only those the server marks (needed, the "
               "default: ack_mode ACK_REQUESTED), every one (clients that predate ack modes), or "
               "both: a round of each, in that order, before etcd's");
  flags.Parse(argc, argv);
  if (config.watchers.empty()) {
    config.watchers =
        flags.quick() ? std::vector<int64_t>{200} : std::vector<int64_t>{1000, 5000, 10000};
  }
  if (config.writes == 0) config.writes = flags.quick() ? 5 : 11;
  if (config.connections == 0) config.connections = 50;
  // Each connection is a socket here and in the server under test (which
  // inherits this limit); the rest is headroom for gRPC, PostgreSQL and
  // etcd's own files.
  bucketmap::RaiseFileLimit(static_cast<rlim_t>(config.connections) + 512, config.connections);
  const char* etcd = std::getenv("BUCKETMAP_ETCD_BIN");
  const std::string etcd_binary = etcd != nullptr && *etcd != '\0' ? etcd : "/usr/bin/etcd";
  if (access(etcd_binary.c_str(), X_OK) != 0) {
    bucketmap::Fatal(
        "etcd not found at %s (scripts/install-deps.sh installs Debian's etcd-server; or set "
        "BUCKETMAP_ETCD_BIN)",
        etcd_binary.c_str());
  }
  std::vector<bucketmap::AckPolicy> acks;
  if (ack != "needed") acks.push_back(bucketmap::AckPolicy::kEvery);
  if (ack != "every") acks.push_back(bucketmap::AckPolicy::kNeeded);
  return bucketmap::Run(config, acks, etcd_binary);
}
