// Harness of the handoff end-to-end test and benchmark (SPEC §5): the real
// bucketmap-server binary against a private PostgreSQL and librdkafka's
// mock cluster in a helper process (Stack), producer sessions that use the
// delivery tracker (Producer), and consumers that follow rules 5 and 6
// through PartitionHold (Consumer), recording what they process (EventLog).
//
// Not gtest-specific: problems inside producer and consumer threads are
// counted by HarnessError (HarnessErrors()) and printed; callers check the
// count.
//
// Thread safety: EventLog and HarnessError are thread-safe; a Producer,
// Consumer or Stack is driven from one thread (each runs its own worker
// thread inside).
#ifndef BUCKETMAP_TESTS_HANDOFF_E2E_HANDOFF_HARNESS_H_
#define BUCKETMAP_TESTS_HANDOFF_E2E_HANDOFF_HARNESS_H_

#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bucketmap/client.h"
#include "bucketmap/delivery_tracker.h"
#include "bucketmap/handoff_gate.h"
#include "bucketmap/kafka_hold.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "bucketmap/watch.h"
#include "grpcpp/create_channel.h"
#include "tests/support/kafka_harness.h"
#include "tests/support/local_process.h"
#include "tests/support/pg_harness.h"

namespace bucketmap {
namespace handoff_harness {

inline std::atomic<int64_t>& HarnessErrorCount() {
  static std::atomic<int64_t> count{0};
  return count;
}
inline int64_t HarnessErrors() { return HarnessErrorCount().load(); }

// Streams a message; on destruction prints it and counts one error.
class HarnessError {
 public:
  HarnessError() = default;
  HarnessError(const HarnessError&) = delete;
  HarnessError& operator=(const HarnessError&) = delete;
  ~HarnessError() {
    HarnessErrorCount().fetch_add(1);
    std::fprintf(stderr, "handoff harness error: %s\n", out_.str().c_str());
  }
  template <typename T>
  HarnessError& operator<<(const T& value) {
    out_ << value;
    return *this;
  }

 private:
  std::ostringstream out_;
};

inline std::string IngestTopic(int32_t bucket) { return absl::StrCat("e2e_ingest_", bucket); }
inline std::string ProcessedTopic(int32_t bucket) { return absl::StrCat("e2e_processed_", bucket); }
inline std::string Group(const std::string& role, int32_t bucket) {
  return absl::StrCat("e2e_", role, "_", bucket);
}

inline std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout = absl::Seconds(10)) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

inline rd_kafka_conf_t* Conf(const std::vector<std::pair<std::string, std::string>>& settings) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char error[512];
  for (const auto& [name, value] : settings) {
    if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), error, sizeof(error)) !=
        RD_KAFKA_CONF_OK) {
      HarnessError() << name << ": " << error;
    }
  }
  return conf;
}

// rd_kafka_new(), with its error counted; nullptr on failure.
inline rd_kafka_t* NewKafka(rd_kafka_type_t type, rd_kafka_conf_t* conf, void* opaque) {
  rd_kafka_conf_set_opaque(conf, opaque);
  char error[512];
  rd_kafka_t* rk = rd_kafka_new(type, conf, error, sizeof(error));
  if (rk == nullptr) {
    rd_kafka_conf_destroy(conf);  // rd_kafka_new() takes it only on success
    HarnessError() << "rd_kafka_new: " << error;
  }
  return rk;
}

// What the final stages processed, in processing order, and when.
class EventLog {
 public:
  struct Sample {
    int64_t team;
    int32_t bucket;
    absl::Time produced;
    absl::Time processed;
  };
  void Record(int64_t team, int64_t seq, int32_t bucket, absl::Time produced) {
    const absl::Time now = absl::Now();
    absl::MutexLock lock(&mu_);
    order_.emplace_back(team, seq);
    samples_.push_back(Sample{team, bucket, produced, now});
  }
  std::vector<Sample> Samples() const {
    absl::MutexLock lock(&mu_);
    return samples_;
  }
  std::vector<std::pair<int64_t, int64_t>> Snapshot() const {
    absl::MutexLock lock(&mu_);
    return order_;
  }
  // Distinct (team, seq) processed.
  size_t Distinct() const {
    absl::MutexLock lock(&mu_);
    std::set<std::pair<int64_t, int64_t>> seen(order_.begin(), order_.end());
    return seen.size();
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::pair<int64_t, int64_t>> order_ ABSL_GUARDED_BY(mu_);
  std::vector<Sample> samples_ ABSL_GUARDED_BY(mu_);
};

// The value of one event, from its team, its sequence number, the topic it
// is produced to and its route version.
using EventFormat = std::function<std::string(int64_t team, int64_t seq, const std::string& topic,
                                              int64_t version)>;

// One producer session: its own client, watch stream, delivery tracker and
// idempotent producer. Sends one event for each of its teams per round to
// the topic of `role` in the team's bucket, then sleeps `round_sleep`.
// Events are "team:seq:produced_unix_us", or what `format` makes.
class Producer {
 public:
  Producer(int index, const std::string& server, const std::string& bootstrap,
           const std::vector<int64_t>& teams, absl::Duration round_sleep = absl::Milliseconds(25),
           std::string role = "ingestion", EventFormat format = nullptr)
      : index_(index),
        round_sleep_(round_sleep),
        role_(std::move(role)),
        format_(std::move(format)),
        client_(Options(index, server)),
        tracker_(&client_) {
    WatchConnectionOptions watch_options;
    watch_options.delivery_tracker = &tracker_;
    watch_options.initial_backoff = absl::Milliseconds(50);
    watch_options.max_backoff = absl::Milliseconds(500);
    watch_ = std::make_unique<WatchConnection>(&client_, watch_options);
    rd_kafka_conf_t* conf = Conf({{"bootstrap.servers", bootstrap},
                                  {"enable.idempotence", "true"},
                                  {"linger.ms", "2"},
                                  {"message.timeout.ms", "0"}});
    rd_kafka_conf_set_dr_msg_cb(conf, &Producer::OnDelivery);
    rk_ = NewKafka(RD_KAFKA_PRODUCER, conf, this);
    for (int64_t team : teams) next_seq_[team] = 0;
  }

  ~Producer() {
    Stop();
    if (rk_ != nullptr) rd_kafka_destroy(rk_);
  }

  void Start() {
    watch_->Start();
    thread_ = std::thread([this] { Run(); });
  }

  // Stops producing, then waits for every delivery report.
  void Stop() {
    if (!thread_.joinable()) return;
    stop_.store(true);
    thread_.join();
    if (rk_ != nullptr && rd_kafka_flush(rk_, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      HarnessError() << "producer " << index_ << ": flush timed out";
    }
    watch_->Stop();
  }

  // Events produced per team (seq 0..n-1), valid after Stop().
  const std::map<int64_t, int64_t>& produced() const { return next_seq_; }
  int64_t failed() const { return failed_.load(); }
  int64_t unroutable() const { return unroutable_.load(); }
  Client& client() { return client_; }
  const DeliveryTracker& tracker() const { return tracker_; }

 private:
  static ClientOptions Options(int index, const std::string& server) {
    ClientOptions options;
    options.addresses = {server};
    options.client_id = absl::StrCat("e2e-producer-", index);
    options.role = v1::PRODUCER;
    return options;
  }

  static void OnDelivery(rd_kafka_t*, const rd_kafka_message_t* message, void* opaque) {
    auto* self = static_cast<Producer*>(opaque);
    TrackDelivery(&self->tracker_, message);
    if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) self->failed_.fetch_add(1);
  }

  void Run() {
    client_.WaitForVersion(1, absl::Seconds(30));
    while (!stop_.load()) {
      for (auto& [team, seq] : next_seq_) {
        // Count the event in flight before reading the route (see
        // delivery_tracker.h), then take the topic from the same view.
        DeliveryTracker::Viewed viewed = tracker_.Current();
        const RouteResult route = viewed.view == nullptr ? RouteResult() : viewed.view->Route(team);
        const std::string* topic =
            route.routable() ? viewed.view->Topic(route.bucket_id(), role_) : nullptr;
        if (topic == nullptr) {
          tracker_.Done(viewed.ticket);
          unroutable_.fetch_add(1);
          continue;
        }
        const std::string key = absl::StrCat(team);
        const std::string value =
            format_ ? format_(team, seq, *topic, route.version())
                    : absl::StrCat(team, ":", seq, ":", absl::ToUnixMicros(absl::Now()));
        const std::string version = absl::StrCat(route.version());
        rd_kafka_resp_err_t err;
        do {
          err = rd_kafka_producev(rk_, RD_KAFKA_V_TOPIC(topic->c_str()),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                  RD_KAFKA_V_KEY(key.data(), key.size()),
                                  RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                                  RD_KAFKA_V_HEADER(kVersionHeader, version.data(), version.size()),
                                  RD_KAFKA_V_OPAQUE(viewed.ticket.ToOpaque()), RD_KAFKA_V_END);
          if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) rd_kafka_poll(rk_, 10);
        } while (err == RD_KAFKA_RESP_ERR__QUEUE_FULL);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
          tracker_.Done(viewed.ticket);
          HarnessError() << "produce: " << rd_kafka_err2str(err);
          continue;  // the same seq is tried again next round
        }
        ++seq;
      }
      rd_kafka_poll(rk_, 0);
      absl::SleepFor(round_sleep_);
    }
  }

  const int index_;
  const absl::Duration round_sleep_;
  const std::string role_;
  const EventFormat format_;
  Client client_;
  DeliveryTracker tracker_;
  std::unique_ptr<WatchConnection> watch_;
  rd_kafka_t* rk_ = nullptr;
  std::map<int64_t, int64_t> next_seq_;  // team -> next seq; the producer thread's
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> failed_{0};
  std::atomic<int64_t> unroutable_{0};
  std::thread thread_;
};

// One consumer group member of one bucket and role.
class Consumer {
 public:
  // With a non-empty `forward_topic`, processing an event means producing
  // it there (its offset is stored on delivery); otherwise recording it.
  // `work` is spent per processed event (a slow consumer).
  Consumer(int32_t bucket, const std::string& role, const std::string& topic,
           std::string forward_topic, const std::string& server, const std::string& bootstrap,
           EventLog* log, absl::Duration work = absl::ZeroDuration())
      : bucket_(bucket),
        topic_(topic),
        forward_topic_(std::move(forward_topic)),
        log_(log),
        work_(work),
        client_(Options(bucket, role, server)) {
    WatchConnectionOptions watch_options;
    watch_options.initial_backoff = absl::Milliseconds(50);
    watch_options.max_backoff = absl::Milliseconds(500);
    watch_ = std::make_unique<WatchConnection>(&client_, watch_options);
    rd_kafka_conf_t* conf = Conf({{"bootstrap.servers", bootstrap},
                                  {"group.id", Group(role, bucket)},
                                  {"auto.offset.reset", "earliest"},
                                  // Rule 6: store offsets only after processing.
                                  {"enable.auto.offset.store", "false"},
                                  {"enable.auto.commit", "true"},
                                  {"auto.commit.interval.ms", "100"},
                                  {"session.timeout.ms", "6000"},
                                  {"heartbeat.interval.ms", "500"},
                                  {"topic.metadata.refresh.interval.ms", "1000"}});
    rd_kafka_conf_set_rebalance_cb(conf, &Consumer::OnRebalance);
    rk_ = NewKafka(RD_KAFKA_CONSUMER, conf, this);
    rd_kafka_poll_set_consumer(rk_);
    hold_ = std::make_unique<PartitionHold>(rk_, &client_);
    if (!forward_topic_.empty()) {
      rd_kafka_conf_t* pconf = Conf({{"bootstrap.servers", bootstrap},
                                     {"enable.idempotence", "true"},
                                     {"linger.ms", "1"},
                                     {"message.timeout.ms", "0"}});
      rd_kafka_conf_set_dr_msg_cb(pconf, &Consumer::OnForwarded);
      forwarder_ = NewKafka(RD_KAFKA_PRODUCER, pconf, this);
    }
  }

  ~Consumer() {
    Stop();
    hold_.reset();
    if (rk_ != nullptr) {
      rd_kafka_consumer_close(rk_);
      rd_kafka_destroy(rk_);
    }
    if (forwarder_ != nullptr) rd_kafka_destroy(forwarder_);
  }

  void Start() {
    watch_->Start();
    rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, topic_.c_str(), RD_KAFKA_PARTITION_UA);
    if (rd_kafka_subscribe(rk_, topics) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      HarnessError() << "subscribe " << topic_;
    }
    rd_kafka_topic_partition_list_destroy(topics);
    thread_ = std::thread([this] { Run(); });
  }

  void Stop() {
    if (!thread_.joinable()) return;
    stop_.store(true);
    thread_.join();
    if (forwarder_ != nullptr) rd_kafka_flush(forwarder_, 30000);
    rd_kafka_commit(rk_, nullptr, /*async=*/0);
    watch_->Stop();
  }

  const PartitionHold::Stats& hold_stats() const { return hold_->stats(); }
  // True once the group gave this consumer partitions (the first join can
  // take seconds on the mock cluster).
  bool assigned() const { return assigned_.load(); }
  int64_t processed() const { return processed_.load(); }

 private:
  static ClientOptions Options(int32_t bucket, const std::string& role, const std::string& server) {
    ClientOptions options;
    options.addresses = {server};
    options.client_id = absl::StrCat("e2e-consumer-", role, "-", bucket);
    options.role = v1::CONSUMER;
    return options;
  }

  static void OnRebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err,
                          rd_kafka_topic_partition_list_t* partitions, void* opaque) {
    auto* self = static_cast<Consumer*>(opaque);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      rd_kafka_assign(rk, partitions);
      if (partitions->cnt > 0) self->assigned_.store(true);
    } else {
      if (self->hold_ != nullptr) self->hold_->Forget(partitions);
      rd_kafka_assign(rk, nullptr);
    }
  }

  // A forwarded event is processed once it is in the next stage's topic:
  // only then is its offset stored, so this role's drain covers the next
  // role's input. Reports come in order per partition (idempotent
  // producer), so stored offsets only grow.
  static void OnForwarded(rd_kafka_t*, const rd_kafka_message_t* message, void* opaque) {
    auto* self = static_cast<Consumer*>(opaque);
    if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      HarnessError() << "forward: " << rd_kafka_err2str(message->err);
    }
    const auto packed = reinterpret_cast<uintptr_t>(message->_private);
    self->StoreOffset(static_cast<int32_t>(packed & 0xff), static_cast<int64_t>(packed >> 8));
  }

  void StoreOffset(int32_t partition, int64_t offset) {
    rd_kafka_topic_partition_list_t* offsets = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(offsets, topic_.c_str(), partition)->offset = offset;
    rd_kafka_offsets_store(rk_, offsets);
    rd_kafka_topic_partition_list_destroy(offsets);
  }

  void Run() {
    client_.WaitForVersion(1, absl::Seconds(30));
    while (!stop_.load()) {
      if (forwarder_ != nullptr) rd_kafka_poll(forwarder_, 0);
      hold_->ResumeReady();
      rd_kafka_message_t* m = rd_kafka_consumer_poll(rk_, 50);
      if (m == nullptr) continue;
      if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) Handle(m);
      rd_kafka_message_destroy(m);
    }
  }

  void Handle(const rd_kafka_message_t* m) {
    const std::string value(static_cast<const char*>(m->payload), m->len);
    std::vector<std::string> parts = absl::StrSplit(value, ':');
    int64_t team = 0, seq = 0, produced_us = 0;
    if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &team) ||
        !absl::SimpleAtoi(parts[1], &seq) || !absl::SimpleAtoi(parts[2], &produced_us)) {
      HarnessError() << "bad event " << value;
      return;
    }
    if (hold_->Admit(m, team, bucket_) != PartitionHold::Admission::kProcess) return;
    processed_.fetch_add(1);
    if (work_ > absl::ZeroDuration()) absl::SleepFor(work_);
    if (forwarder_ != nullptr) {
      const std::string version = absl::StrCat(StampedVersion(m));
      // The source partition and next offset ride along as the opaque.
      const uintptr_t packed =
          (static_cast<uintptr_t>(m->offset + 1) << 8) | static_cast<uintptr_t>(m->partition);
      rd_kafka_resp_err_t err = rd_kafka_producev(
          forwarder_, RD_KAFKA_V_TOPIC(forward_topic_.c_str()),
          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(m->key, m->key_len),
          RD_KAFKA_V_VALUE(m->payload, m->len),
          RD_KAFKA_V_HEADER(kVersionHeader, version.data(), version.size()),
          RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(packed)), RD_KAFKA_V_END);
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR) HarnessError() << "forward: " << rd_kafka_err2str(err);
      return;
    }
    log_->Record(team, seq, bucket_, absl::FromUnixMicros(produced_us));
    StoreOffset(m->partition, m->offset + 1);
  }

  const int32_t bucket_;
  const std::string topic_;
  const std::string forward_topic_;
  EventLog* const log_;
  const absl::Duration work_;
  Client client_;
  std::unique_ptr<WatchConnection> watch_;
  rd_kafka_t* rk_ = nullptr;
  rd_kafka_t* forwarder_ = nullptr;
  std::unique_ptr<PartitionHold> hold_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> assigned_{false};
  std::atomic<int64_t> processed_{0};
  std::thread thread_;
};

// PostgreSQL, the Kafka mock (with `topics` created) and the server binary
// on a fixed port, so that clients reconnect to a restarted server.
class Stack {
 public:
  static absl::StatusOr<std::unique_ptr<Stack>> Start(
      const std::vector<std::pair<std::string, int>>& topics, std::string server_binary) {
    std::unique_ptr<Stack> stack(new Stack());
    stack->binary_ = std::move(server_binary);
    auto pg = TestPostgres::Start();
    if (!pg.ok()) return pg.status();
    stack->pg_ = *std::move(pg);
    stack->log_path_ = stack->pg_->dir() + "/server.log";
    auto kafka = KafkaMockProcess::Start(topics);
    if (!kafka.ok()) return kafka.status();
    stack->kafka_ = *std::move(kafka);
    stack->server_ = absl::StrCat("127.0.0.1:", FreePort());
    return stack;
  }

  ~Stack() { Kill(); }

  // Starts the server and waits until it serves. `extra_flags` come last.
  absl::Status Launch(const std::vector<std::string>& extra_flags = {}) {
    std::vector<std::string> args = {
        binary_,
        "--postgres_url=" + pg_->url(),
        "--grpc_listen=" + server_,
        absl::StrCat("--metrics_listen=127.0.0.1:", FreePort()),
        "--kafka_brokers=" + kafka_->bootstrap(),
        // The helper created the topics; the mock does not answer
        // CreateTopics.
        "--kafka_create_topics=false",
        "--changes_topic=bucketmap_changes",
        "--handoffs=true",
        "--handoff_grace=30s",
        "--max_hold=5m",
        "--move_cooldown=0s",
        // A restarted coordinator waits one lease before judging a barrier.
        "--client_lease=3s",
        "--handoff_poll_interval=100ms",
        "--watch_heartbeat=1s",
    };
    args.insert(args.end(), extra_flags.begin(), extra_flags.end());
    pid_ = Spawn(args, log_path_);
    channel_ = grpc::CreateChannel(server_, grpc::InsecureChannelCredentials());
    admin_ = v1::AdminService::NewStub(channel_);
    auto mapping = v1::MappingService::NewStub(channel_);
    for (int i = 0; i < 300; ++i) {
      auto ctx = Ctx(absl::Seconds(1));
      ctx->set_wait_for_ready(true);
      v1::MappingSnapshot snap;
      if (mapping->GetMapping(ctx.get(), v1::GetMappingRequest(), &snap).ok()) {
        return absl::OkStatus();
      }
      if (waitpid(pid_, nullptr, WNOHANG) != 0) {
        pid_ = 0;
        return absl::InternalError("the server exited; see " + log_path_);
      }
    }
    return absl::DeadlineExceededError("the server does not serve; see " + log_path_);
  }

  // SIGKILL.
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = 0;
  }

  const std::string& server() const { return server_; }
  const std::string& bootstrap() const { return kafka_->bootstrap(); }
  const std::string& log_path() const { return log_path_; }
  v1::AdminService::Stub* admin() { return admin_.get(); }

  // One bucket with an ingestion topic and group and, when
  // `processed_topic` is set, a processed role drained after it.
  absl::StatusOr<int32_t> CreateBucket(const std::string& name, const std::string& pool,
                                       const std::string& ingest_topic,
                                       const std::string& ingest_group,
                                       const std::string& processed_topic = "",
                                       const std::string& processed_group = "") {
    v1::CreateBucketRequest req;
    v1::Bucket* bucket = req.mutable_bucket();
    bucket->set_name(name);
    bucket->set_pool(pool);
    (*bucket->mutable_topics())["ingestion"] = ingest_topic;
    (*bucket->mutable_consumer_groups())["ingestion"] = ingest_group;
    bucket->add_drain_order("ingestion");
    if (!processed_topic.empty()) {
      (*bucket->mutable_topics())["processed"] = processed_topic;
      (*bucket->mutable_consumer_groups())["processed"] = processed_group;
      bucket->add_drain_order("processed");
    }
    req.set_reason("handoff harness");
    v1::CreateBucketResponse resp;
    grpc::Status s = admin_->CreateBucket(Ctx().get(), req, &resp);
    if (!s.ok()) return absl::InternalError("CreateBucket " + name + ": " + s.error_message());
    return resp.bucket().id();
  }

  // Pins `team` to `bucket`; returns the version.
  absl::StatusOr<int64_t> Assign(int64_t team, int32_t bucket) {
    v1::AssignTeamRequest req;
    req.set_team_id(team);
    req.set_bucket_id(bucket);
    req.set_reason("handoff harness");
    v1::AssignTeamResponse resp;
    grpc::Status s = admin_->AssignTeam(Ctx().get(), req, &resp);
    if (!s.ok()) {
      return absl::InternalError(absl::StrCat("AssignTeam ", team, ": ", s.error_message()));
    }
    return resp.version();
  }

  absl::StatusOr<int64_t> SetDraining(int32_t bucket) {
    v1::UpdateBucketRequest req;
    req.mutable_bucket()->set_id(bucket);
    req.mutable_bucket()->set_state(v1::DRAINING);
    req.mutable_update_mask()->add_paths("state");
    req.set_reason("handoff harness");
    v1::UpdateBucketResponse resp;
    grpc::Status s = admin_->UpdateBucket(Ctx().get(), req, &resp);
    if (!s.ok()) return absl::InternalError("UpdateBucket: " + s.error_message());
    return resp.version();
  }

  std::vector<v1::Handoff> Handoffs(bool include_ended) {
    v1::ListHandoffsRequest req;
    req.set_include_ended(include_ended);
    req.set_page_size(1000);
    v1::ListHandoffsResponse resp;
    grpc::Status s = admin_->ListHandoffs(Ctx().get(), req, &resp);
    if (!s.ok()) HarnessError() << "ListHandoffs: " << s.error_message();
    return {resp.handoffs().begin(), resp.handoffs().end()};
  }

  // Waits until no handoff is open; false on timeout, after printing the
  // open handoffs and the clients.
  bool WaitNoOpenHandoffs(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (Handoffs(false).empty()) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    for (const v1::Handoff& h : Handoffs(false)) {
      std::fprintf(stderr, "open: %s\n", h.ShortDebugString().c_str());
    }
    v1::ListClientsResponse clients;
    if (admin_->ListClients(Ctx().get(), v1::ListClientsRequest(), &clients).ok()) {
      for (const auto& c : clients.clients()) {
        std::fprintf(stderr, "client: %s\n", c.ShortDebugString().c_str());
      }
    }
    return false;
  }

 private:
  Stack() = default;

  std::string binary_;
  std::unique_ptr<TestPostgres> pg_;
  std::unique_ptr<KafkaMockProcess> kafka_;
  std::string log_path_;
  std::string server_;
  pid_t pid_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
};

}  // namespace handoff_harness
}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_HANDOFF_E2E_HANDOFF_HARNESS_H_
