// Kafka test support: librdkafka's mock cluster in a child process
// (KafkaMockProcess), and a real librdkafka consumer that reads a topic
// back (ReadAllChangeEvents).
//
// The mock runs in its own process (tests/support/kafka_mock_helper.cc)
// because tests that SIGKILL or restart bucketmap-server need a cluster
// that outlives the server; an in-process mock dies with its host.
//
// Thread safety: a KafkaMockProcess is used from one thread.
// ReadAllChangeEvents is reentrant (each call has its own consumer).
#ifndef BUCKETMAP_TESTS_SUPPORT_KAFKA_HARNESS_H_
#define BUCKETMAP_TESTS_SUPPORT_KAFKA_HARNESS_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace bucketmap {

class KafkaMockProcess {
 public:
  // Starts the helper with `topics` (name, partitions) already created and
  // waits for its bootstrap address. `helper` defaults to the binary built
  // by this tree. Internal when it does not start within 10 s.
  static absl::StatusOr<std::unique_ptr<KafkaMockProcess>> Start(
      const std::vector<std::pair<std::string, int>>& topics, std::string helper = "");

  // Stops the helper (SIGTERM, then SIGKILL after 5 s).
  ~KafkaMockProcess();
  KafkaMockProcess(const KafkaMockProcess&) = delete;
  KafkaMockProcess& operator=(const KafkaMockProcess&) = delete;

  // `127.0.0.1:PORT`: pass it as `--kafka_brokers`.
  const std::string& bootstrap() const { return bootstrap_; }
  pid_t pid() const { return pid_; }

  // Takes the broker down (it stops answering) or brings it back up.
  // Internal when the helper does not confirm within 5 s.
  absl::Status SetBrokerDown(bool down);

 private:
  KafkaMockProcess() = default;

  pid_t pid_ = 0;
  int to_child_ = -1;    // the helper's stdin: closing it stops the helper
  int from_child_ = -1;  // its stdout
  std::string bootstrap_;
};

// One consumed message.
struct KafkaRecord {
  int32_t partition = 0;
  int64_t offset = 0;
  std::string key;
  // The `bucketmap-version` header parsed as a decimal; -1 when it is
  // missing or not a number.
  int64_t version = -1;
  std::string value;
  // When this consumer received it (for delivery-latency measurements).
  absl::Time received;
};

// Reads `topic` on `bootstrap` from the beginning of every partition with a
// real librdkafka consumer (no consumer group, no commits) and returns the
// records in the order received (per partition: offset order).
//
// Returns once every partition has been read to its end and, when
// `until_version` > 0, a record with version >= `until_version` has been
// seen; or when `timeout` passes, returning what was read so far (the
// caller checks for completeness). NotFound when a real cluster reports
// that the topic does not exist (librdkafka's mock instead creates any topic
// a client names, so there it reads as empty); Unavailable when the cluster
// cannot be reached within `timeout`.
absl::StatusOr<std::vector<KafkaRecord>> ReadAllChangeEvents(const std::string& bootstrap,
                                                             const std::string& topic,
                                                             absl::Duration timeout,
                                                             int64_t until_version = 0);

}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_SUPPORT_KAFKA_HARNESS_H_
