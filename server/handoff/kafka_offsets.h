// OffsetReader: what the handoff coordinator reads from the bucket topics'
// Kafka cluster (SPEC §5.3): partition counts, end offsets (the drain
// point) and a consumer group's committed offsets. RdKafkaOffsetReader is
// the librdkafka implementation; tests may inject their own.
//
// Thread safety: implementations are thread-safe (RdKafkaOffsetReader
// serialises its calls).
#ifndef BUCKETMAP_SERVER_HANDOFF_KAFKA_OFFSETS_H_
#define BUCKETMAP_SERVER_HANDOFF_KAFKA_OFFSETS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

typedef struct rd_kafka_s rd_kafka_t;

namespace bucketmap {

class OffsetReader {
 public:
  virtual ~OffsetReader() = default;

  // PartitionCounts()
  //
  // Returns the partition count of every topic of the cluster, by name.
  // Unavailable when the cluster does not answer within `timeout`.
  virtual absl::StatusOr<std::map<std::string, int32_t>> PartitionCounts(
      absl::Duration timeout) = 0;

  // EndOffsets()
  //
  // Returns the end offset (high watermark) of partitions 0..partitions-1
  // of `topic`. Unavailable on timeout or a broker error.
  virtual absl::StatusOr<std::vector<int64_t>> EndOffsets(const std::string& topic,
                                                          int32_t partitions,
                                                          absl::Duration timeout) = 0;

  // CommittedOffsets()
  //
  // Returns `group`'s committed offset of partitions 0..partitions-1 of
  // `topic`, -1 where it has committed none. Unavailable on timeout or a
  // broker error.
  virtual absl::StatusOr<std::vector<int64_t>> CommittedOffsets(const std::string& group,
                                                                const std::string& topic,
                                                                int32_t partitions,
                                                                absl::Duration timeout) = 0;
};

// Reads through librdkafka: metadata and watermarks from one handle, and
// committed offsets with rd_kafka_committed from one consumer handle per
// group (carrying that group.id; it never subscribes, so it never joins
// the group), kept for reuse.
class RdKafkaOffsetReader final : public OffsetReader {
 public:
  // `brokers`: bootstrap servers. InvalidArgument when librdkafka rejects
  // the configuration.
  static absl::StatusOr<std::unique_ptr<RdKafkaOffsetReader>> Create(const std::string& brokers);
  ~RdKafkaOffsetReader() override;

  absl::StatusOr<std::map<std::string, int32_t>> PartitionCounts(absl::Duration timeout) override;
  absl::StatusOr<std::vector<int64_t>> EndOffsets(const std::string& topic, int32_t partitions,
                                                  absl::Duration timeout) override;
  absl::StatusOr<std::vector<int64_t>> CommittedOffsets(const std::string& group,
                                                        const std::string& topic,
                                                        int32_t partitions,
                                                        absl::Duration timeout) override;

 private:
  explicit RdKafkaOffsetReader(std::string brokers) : brokers_(std::move(brokers)) {}
  // Returns the consumer handle of `group`, creating it on first use.
  absl::StatusOr<rd_kafka_t*> GroupHandle(const std::string& group)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string brokers_;
  absl::Mutex mu_;
  rd_kafka_t* meta_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::map<std::string, rd_kafka_t*> groups_ ABSL_GUARDED_BY(mu_);
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_HANDOFF_KAFKA_OFFSETS_H_
