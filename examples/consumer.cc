// example-consumer: consumes one bucket's topic with librdkafka, and stops
// consuming while the bucket is PAUSED (SPEC §2: PAUSED tells a bucket's
// consumers to stop; a pool's pause pauses every bucket of it in one
// version).
//
// It is written as a model for a consumer that embeds the library:
//   1. a Client (role CONSUMER, filtered to its bucket) holds the mapping,
//      and a WatchConnection keeps it current;
//   2. the bucket's topic and consumer group for our role come from the
//      mapping;
//   3. Client::OnBucketState() tells the consumer when its bucket is
//      paused or resumed; the poll loop then pauses or resumes every
//      partition assigned to it (rd_kafka_pause_partitions), so the broker
//      keeps the backlog. A message that was fetched before the pause took
//      effect is not processed: its partition is sought back to it, and it
//      is delivered again after the resume;
//   4. offsets are stored only after processing (enable.auto.offset.store
//      is false), so a restart never skips an unprocessed message.
//
// Usage:
//   example-consumer --servers=localhost:50051 --kafka_brokers=localhost:9092
//       --bucket=b1 [--role=ingestion] [--group=G]
// It runs until SIGINT or SIGTERM. It prints one line per state change
// ("bucket 3 PAUSED at version 12"), "consumed N" after each processed
// message, and a summary at the end.
//
// Exit status: 0 on a clean stop; 2 when no mapping arrived within
// --wait_for_mapping, or on a setup error.
#include <librdkafka/rdkafka.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "bucketmap/client.h"
#include "bucketmap/watch.h"

ABSL_FLAG(std::string, servers, "localhost:50051",
          "Comma-separated bucketmap server addresses (host:port), tried in turn.");
ABSL_FLAG(std::string, client_id, "",
          "This consumer's id in ListClients; default example-consumer-<pid>.");
ABSL_FLAG(std::string, kafka_brokers, "localhost:9092", "Kafka bootstrap servers.");
ABSL_FLAG(std::string, bucket, "", "The bucket to consume, by name or id.");
ABSL_FLAG(std::string, role, "ingestion", "The role whose topic is consumed.");
ABSL_FLAG(std::string, group, "",
          "Consumer group; default the bucket's consumer group for the role.");
ABSL_FLAG(int32_t, wait_for_mapping, 10, "Seconds to wait for the first mapping.");

namespace {

constexpr int kExitSetup = 2;

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

// Prints a line at once: tests read the output while the consumer runs.
template <typename... Args>
void Say(const absl::FormatSpec<Args...>& format, const Args&... args) {
  absl::PrintF(format, args...);
  std::fflush(stdout);
}

using KafkaConsumer = std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)>;

KafkaConsumer NewConsumer(const std::string& brokers, const std::string& group,
                          std::string* error_text) {
  const std::pair<const char*, std::string> settings[] = {
      {"bootstrap.servers", brokers},
      {"group.id", group},
      {"auto.offset.reset", "earliest"},
      // Offsets are stored after processing only (SPEC §5 rule 6).
      {"enable.auto.offset.store", "false"},
  };
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char error[512];
  for (const auto& [name, value] : settings) {
    if (rd_kafka_conf_set(conf, name, value.c_str(), error, sizeof(error)) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      *error_text = absl::StrCat(name, ": ", error);
      return KafkaConsumer(nullptr, rd_kafka_destroy);
    }
  }
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, error, sizeof(error));
  if (rk == nullptr) {
    rd_kafka_conf_destroy(conf);
    *error_text = error;
    return KafkaConsumer(nullptr, rd_kafka_destroy);
  }
  rd_kafka_poll_set_consumer(rk);
  return KafkaConsumer(rk, rd_kafka_destroy);
}

// Pauses or resumes every partition assigned now; returns how many.
int SetAssignmentPaused(rd_kafka_t* rk, bool paused) {
  rd_kafka_topic_partition_list_t* assignment = nullptr;
  if (rd_kafka_assignment(rk, &assignment) != RD_KAFKA_RESP_ERR_NO_ERROR) return 0;
  const int count = assignment->cnt;
  if (count > 0) {
    if (paused) {
      rd_kafka_pause_partitions(rk, assignment);
    } else {
      rd_kafka_resume_partitions(rk, assignment);
    }
  }
  rd_kafka_topic_partition_list_destroy(assignment);
  return count;
}

// Seeks `message`'s partition back to it, so that it is delivered again
// once the partition is resumed, and pauses the partition.
void PutBack(rd_kafka_t* rk, const rd_kafka_message_t* message) {
  rd_kafka_topic_partition_list_t* one = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(one, rd_kafka_topic_name(message->rkt), message->partition)
      ->offset = message->offset;
  rd_kafka_pause_partitions(rk, one);
  if (rd_kafka_error_t* error = rd_kafka_seek_partitions(rk, one, 5000)) {
    absl::FPrintF(stderr, "seek back: %s\n", rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
  }
  rd_kafka_topic_partition_list_destroy(one);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string bucket_arg = absl::GetFlag(FLAGS_bucket);
  const std::string role = absl::GetFlag(FLAGS_role);
  if (bucket_arg.empty()) {
    absl::FPrintF(stderr, "--bucket is required\n");
    return kExitSetup;
  }

  bucketmap::ClientOptions options;
  options.addresses = absl::StrSplit(absl::GetFlag(FLAGS_servers), ',', absl::SkipEmpty());
  options.client_id = absl::GetFlag(FLAGS_client_id);
  if (options.client_id.empty()) options.client_id = absl::StrCat("example-consumer-", getpid());
  options.role = bucketmap::v1::CONSUMER;
  bucketmap::Client client(std::move(options));
  bucketmap::WatchConnection watch(&client);
  watch.Start();
  if (!client.WaitForVersion(1, absl::Seconds(absl::GetFlag(FLAGS_wait_for_mapping)))) {
    absl::FPrintF(stderr, "no mapping from %s within %ds\n", absl::GetFlag(FLAGS_servers),
                  absl::GetFlag(FLAGS_wait_for_mapping));
    return kExitSetup;
  }

  // The bucket, its topic and its group, from the mapping.
  const std::shared_ptr<const bucketmap::MappingView> view = client.Current();
  const bucketmap::Bucket* bucket = nullptr;
  int32_t id = 0;
  if (absl::SimpleAtoi(bucket_arg, &id)) {
    bucket = view->FindBucket(id);
  } else {
    bucket = view->snapshot().FindBucketByName(bucket_arg);
  }
  if (bucket == nullptr) {
    absl::FPrintF(stderr, "no bucket %s at version %d\n", bucket_arg, view->version());
    return kExitSetup;
  }
  const int32_t bucket_id = bucket->id;
  const std::string* topic = view->Topic(bucket_id, role);
  if (topic == nullptr) {
    absl::FPrintF(stderr, "bucket %d has no topic for role %s\n", bucket_id, role);
    return kExitSetup;
  }
  std::string group = absl::GetFlag(FLAGS_group);
  if (group.empty()) {
    auto it = bucket->consumer_groups.find(role);
    group = it != bucket->consumer_groups.end() ? it->second
                                                : absl::StrCat("example-consumer-", bucket_id);
  }

  // The bucket's state, as the client library reports it: the listener
  // runs on the watch thread (and once now); the poll loop below acts.
  std::atomic<bool> paused{false};
  std::atomic<bool> changed{true};
  const bucketmap::Client::ListenerId listener =
      client.OnBucketState(bucket_id, [&](const bucketmap::BucketStateChange& change) {
        paused.store(change.paused());
        changed.store(true);
        Say("bucket %d %s at version %d\n", change.bucket_id,
            change.state.has_value() ? bucketmap::BucketStateName(*change.state) : "GONE",
            change.version);
      });

  std::string error;
  KafkaConsumer consumer = NewConsumer(absl::GetFlag(FLAGS_kafka_brokers), group, &error);
  if (consumer == nullptr) {
    absl::FPrintF(stderr, "kafka consumer: %s\n", error);
    return kExitSetup;
  }
  rd_kafka_t* const rk = consumer.get();
  rd_kafka_topic_partition_list_t* subscription = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(subscription, topic->c_str(), RD_KAFKA_PARTITION_UA);
  const rd_kafka_resp_err_t subscribed = rd_kafka_subscribe(rk, subscription);
  rd_kafka_topic_partition_list_destroy(subscription);
  if (subscribed != RD_KAFKA_RESP_ERR_NO_ERROR) {
    absl::FPrintF(stderr, "subscribe %s: %s\n", *topic, rd_kafka_err2str(subscribed));
    return kExitSetup;
  }
  Say("consuming %s (bucket %d, group %s)\n", *topic, bucket_id, group);

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);

  int64_t consumed = 0;
  int64_t put_back = 0;
  bool partitions_paused = false;
  int assigned = 0;
  while (!g_stop) {
    // Partitions assigned by a rebalance start unpaused: apply the state
    // again whenever it or the assignment changed.
    rd_kafka_topic_partition_list_t* assignment = nullptr;
    int now_assigned = 0;
    if (rd_kafka_assignment(rk, &assignment) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      now_assigned = assignment->cnt;
      rd_kafka_topic_partition_list_destroy(assignment);
    }
    const bool state_changed = changed.exchange(false);
    if (state_changed || now_assigned != assigned) {
      // Only a real change: resuming partitions that are not paused
      // restarts their fetch, and librdkafka may deliver again what it
      // had fetched.
      const bool want_paused = paused.load();
      if (want_paused != partitions_paused || now_assigned != assigned) {
        SetAssignmentPaused(rk, want_paused);
        partitions_paused = want_paused;
      }
      assigned = now_assigned;
    }
    rd_kafka_message_t* message = rd_kafka_consumer_poll(rk, 100);
    if (message == nullptr) continue;
    if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (message->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        absl::FPrintF(stderr, "consume: %s\n", rd_kafka_message_errstr(message));
      }
      rd_kafka_message_destroy(message);
      continue;
    }
    if (paused.load()) {
      // Fetched before the pause took effect: not processed now.
      PutBack(rk, message);
      ++put_back;
      rd_kafka_message_destroy(message);
      continue;
    }
    // "Processing" is counting here; a real consumer runs its pipeline,
    // then stores the offset.
    ++consumed;
    Say("consumed %d\n", consumed);
    rd_kafka_topic_partition_list_t* offsets = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(offsets, rd_kafka_topic_name(message->rkt),
                                      message->partition)
        ->offset = message->offset + 1;
    rd_kafka_offsets_store(rk, offsets);
    rd_kafka_topic_partition_list_destroy(offsets);
    rd_kafka_message_destroy(message);
  }

  client.RemoveBucketStateListener(listener);
  rd_kafka_consumer_close(rk);
  watch.Stop();
  absl::PrintF("consumed: %d\n", consumed);
  absl::PrintF("put back while paused: %d\n", put_back);
  return 0;
}
