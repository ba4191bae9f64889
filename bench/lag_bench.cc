// lag_bench: what the lag exporter costs the leader (issue 11).
//
// librdkafka's mock cluster in its helper process holds B bucket topics of
// P partitions each, with M messages per partition; each bucket's group
// has committed half of them. The real exporter (LagExporter over an
// RdKafkaOffsetReader, the production reader) runs rounds against it, on
// an in-memory store, and this reports per round: wall time, CPU time of
// the whole process (librdkafka's threads included), partitions read, and
// the CPU share of one core that rounds every 10 s (--lag_interval's
// default) would take.
//
// Usage: lag_bench [--quick] [--buckets=B] [--partitions=P] [--rounds=N]
// Sanity checks: every reading is up, with the exact remainder and a
// positive age; no time is zero.
#include <librdkafka/rdkafka.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_main.h"
#include "server/kafka/kafka_offsets.h"
#include "server/metrics/metrics.h"
#include "server/signals/lag_exporter.h"
#include "server/state/mapping_manager.h"
#include "spdlog/spdlog.h"
#include "tests/support/fake_store.h"
#include "tests/support/kafka_harness.h"

namespace bucketmap {
namespace {

constexpr int kMessages = 20;  // per partition; the group committed half

double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

double WallSeconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

rd_kafka_t* NewClient(rd_kafka_type_t type, const std::string& bootstrap,
                      const std::string& group) {
  char error[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), error, sizeof(error));
  if (!group.empty()) rd_kafka_conf_set(conf, "group.id", group.c_str(), error, sizeof(error));
  rd_kafka_t* rk = rd_kafka_new(type, conf, error, sizeof(error));
  if (rk == nullptr) Fatal("kafka client: %s", error);
  return rk;
}

// M messages to every partition of `topic`, stamped a minute ago.
void Produce(rd_kafka_t* producer, const std::string& topic, int partitions) {
  const int64_t ts = absl::ToUnixMillis(absl::Now() - absl::Minutes(1));
  for (int p = 0; p < partitions; ++p) {
    for (int i = 0; i < kMessages; ++i) {
      if (rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(p),
                            RD_KAFKA_V_VALUE(const_cast<char*>("e"), 1),
                            RD_KAFKA_V_TIMESTAMP(ts + i), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                            RD_KAFKA_V_END) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        Fatal("produce to %s failed", topic.c_str());
      }
    }
  }
}

// `group` commits half of every partition of `topic`.
void CommitHalf(const std::string& bootstrap, const std::string& group, const std::string& topic,
                int partitions) {
  rd_kafka_t* rk = NewClient(RD_KAFKA_CONSUMER, bootstrap, group);
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(partitions);
  for (int p = 0; p < partitions; ++p) {
    rd_kafka_topic_partition_list_add(list, topic.c_str(), p)->offset = kMessages / 2;
  }
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
  for (int attempt = 0; attempt < 50; ++attempt) {
    if ((err = rd_kafka_commit(rk, list, 0)) == RD_KAFKA_RESP_ERR_NO_ERROR) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) Fatal("commit: %s", rd_kafka_err2str(err));
  rd_kafka_topic_partition_list_destroy(list);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
}

int Main(int argc, char** argv) {
  BenchFlags flags("8 buckets of 4 partitions and 3 rounds instead of 32 of 16 and 5");
  int64_t buckets = 32;
  int64_t partitions = 16;
  int64_t rounds = 5;
  flags.Int("buckets", &buckets, 1, "bucket topics (one group each)");
  flags.Int("partitions", &partitions, 1, "partitions per topic");
  flags.Int("rounds", &rounds, 1, "rounds measured (after one warm-up round)");
  flags.Parse(argc, argv);
  if (flags.quick()) {
    buckets = 8;
    partitions = 4;
    rounds = 3;
  }
  spdlog::set_level(spdlog::level::warn);

  std::vector<std::pair<std::string, int>> topics;
  for (int b = 1; b <= buckets; ++b) topics.emplace_back("events_" + std::to_string(b), partitions);
  auto kafka = KafkaMockProcess::Start(topics);
  if (!kafka.ok()) Fatal("kafka mock: %s", kafka.status().ToString().c_str());
  const std::string bootstrap = (*kafka)->bootstrap();
  rd_kafka_t* producer = NewClient(RD_KAFKA_PRODUCER, bootstrap, "");
  for (const auto& [topic, n] : topics) Produce(producer, topic, n);
  if (rd_kafka_flush(producer, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR) Fatal("flush timed out");
  rd_kafka_destroy(producer);
  for (int b = 1; b <= buckets; ++b) {
    CommitHalf(bootstrap, "g_" + std::to_string(b), topics[b - 1].first, partitions);
  }

  MappingState state;
  state.version = 1;
  state.cluster_id = "bench";
  for (int b = 1; b <= buckets; ++b) {
    Bucket bucket;
    bucket.id = b;
    bucket.name = "b" + std::to_string(b);
    bucket.topics["ingestion"] = topics[b - 1].first;
    bucket.consumer_groups["ingestion"] = "g_" + std::to_string(b);
    state.buckets.push_back(bucket);
  }
  state.next_bucket_id = static_cast<int32_t>(buckets) + 1;
  auto snapshot = Snapshot::Build(state);
  if (!snapshot.ok()) Fatal("%s", snapshot.status().ToString().c_str());
  FakeStore store(*snapshot);
  MappingManager manager(&store);
  if (absl::Status s = manager.Init(); !s.ok()) Fatal("%s", s.ToString().c_str());
  auto reader = RdKafkaOffsetReader::Create(bootstrap);
  if (!reader.ok()) Fatal("%s", reader.status().ToString().c_str());
  Metrics metrics;
  LagOptions options;  // the defaults: 10 s, 5 s per read, 10,000 partitions
  LagExporter exporter(&manager, &store, std::shared_ptr<OffsetReader>(*std::move(reader)),
                       &metrics, options);

  exporter.RunRound();  // warm-up: connections, group coordinators
  {
    // One group's reads, call by call, for where a round's time goes.
    auto probe = RdKafkaOffsetReader::Create(bootstrap);
    if (!probe.ok()) Fatal("%s", probe.status().ToString().c_str());
    const std::string& topic = topics[0].first;
    const int32_t n = static_cast<int32_t>(partitions);
    double t = WallSeconds();
    auto marks = (*probe)->PartitionWatermarks(topic, n, absl::Seconds(5));
    const double marks_ms = (WallSeconds() - t) * 1e3;
    t = WallSeconds();
    auto committed = (*probe)->CommittedOffsets("g_1", topic, n, absl::Seconds(5));
    const double committed_ms = (WallSeconds() - t) * 1e3;
    std::vector<PartitionOffset> at;
    for (int32_t p = 0; p < n; ++p) at.push_back({p, kMessages / 2});
    double ts_ms[2];
    for (double& ms : ts_ms) {
      t = WallSeconds();
      auto ts = (*probe)->MessageTimestamps(topic, at, absl::Seconds(5));
      ms = (WallSeconds() - t) * 1e3;
      Expect(ts.ok(), "timestamps: %s", ts.status().ToString().c_str());
    }
    Expect(marks.ok() && committed.ok(), "watermarks or committed offsets failed");
    std::printf(
        "one group of %d partitions, first reads: watermarks %.1f ms, committed %.1f ms, "
        "timestamps %.1f ms (again: %.1f ms)\n",
        n, marks_ms, committed_ms, ts_ms[0], ts_ms[1]);
  }
  std::vector<double> wall;
  std::vector<double> cpu;
  for (int r = 0; r < rounds; ++r) {
    const double w0 = WallSeconds();
    const double c0 = CpuSeconds();
    const std::vector<LagReading> readings = exporter.RunRound();
    cpu.push_back(CpuSeconds() - c0);
    wall.push_back(WallSeconds() - w0);
    Expect(readings.size() == static_cast<size_t>(buckets), "%zu readings", readings.size());
    for (const LagReading& lag : readings) {
      Expect(lag.up, "bucket %d: %s", lag.bucket_id, lag.error.c_str());
      Expect(lag.messages == partitions * (kMessages - kMessages / 2), "bucket %d: %lld messages",
             lag.bucket_id, static_cast<long long>(lag.messages));
      Expect(lag.seconds > 0, "bucket %d: age %f", lag.bucket_id, lag.seconds);
    }
  }
  std::sort(wall.begin(), wall.end());
  std::sort(cpu.begin(), cpu.end());
  const double wall_ms = wall[wall.size() / 2] * 1e3;
  const double cpu_ms = cpu[cpu.size() / 2] * 1e3;
  Expect(wall_ms > 0 && cpu_ms > 0, "a time is zero");
  std::printf(
      "%lld buckets x %lld partitions (%lld partitions, all lagging): round %.1f ms wall "
      "(slowest %.1f ms), %.1f ms CPU (median of %lld); every 10 s: %.2f%% of one core\n",
      static_cast<long long>(buckets), static_cast<long long>(partitions),
      static_cast<long long>(buckets * partitions), wall_ms, wall.back() * 1e3, cpu_ms,
      static_cast<long long>(rounds), cpu_ms / 100.0);
  return ExitStatus();
}

}  // namespace
}  // namespace bucketmap

int main(int argc, char** argv) { return bucketmap::Main(argc, argv); }
