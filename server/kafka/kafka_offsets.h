// OffsetReader: what the server reads from the bucket topics' Kafka
// cluster: partition counts, end offsets (the handoff drain point, SPEC
// §5.3), a consumer group's committed offsets, and for the lag exporter
// (server/signals/lag_exporter.h, SPEC §9) the low watermarks and the
// timestamps of the messages at given offsets. RdKafkaOffsetReader is the
// librdkafka implementation; tests may inject their own
// (tests/support/fake_offsets.h).
//
// Thread safety: implementations are thread-safe (RdKafkaOffsetReader
// serialises its calls).
#ifndef BUCKETMAP_SERVER_KAFKA_KAFKA_OFFSETS_H_
#define BUCKETMAP_SERVER_KAFKA_KAFKA_OFFSETS_H_

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

// A partition's offsets: the first kept (low watermark) and one past the
// last written (high watermark, the end offset).
struct Watermarks {
  int64_t low = 0;
  int64_t high = 0;
};

// One partition at one offset, for MessageTimestamps().
struct PartitionOffset {
  int32_t partition = 0;
  int64_t offset = 0;
};

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

  // PartitionWatermarks()
  //
  // Returns the low and high watermarks of partitions 0..partitions-1 of
  // `topic`. Unavailable on timeout or a broker error. The default is
  // Unimplemented (readers that serve only the handoff coordinator).
  virtual absl::StatusOr<std::vector<Watermarks>> PartitionWatermarks(const std::string& topic,
                                                                      int32_t partitions,
                                                                      absl::Duration timeout) {
    return absl::UnimplementedError("PartitionWatermarks");
  }

  // MessageTimestamps()
  //
  // Returns, for each entry of `at` (in that order), the timestamp of the
  // message of `topic` at that partition and offset, in milliseconds since
  // the Unix epoch (producer create time or broker log-append time, as the
  // topic keeps it); -1 for a message without one. Each offset must hold a
  // message (below the high watermark, at or above the low one): a message
  // not read within `timeout` makes the whole call Unavailable. Reads at
  // most one small fetch per partition. The default is Unimplemented.
  virtual absl::StatusOr<std::vector<int64_t>> MessageTimestamps(
      const std::string& topic, const std::vector<PartitionOffset>& at, absl::Duration timeout) {
    return absl::UnimplementedError("MessageTimestamps");
  }
};

// Reads through librdkafka: metadata and watermarks from one handle,
// committed offsets with rd_kafka_committed from one consumer handle per
// group (carrying that group.id; it never subscribes, so it never joins
// the group), kept for reuse, and message timestamps from one more
// consumer handle (group.id "bucketmap-lag-timestamps", which it never
// joins nor commits to: librdkafka's assign() wants a group name) that
// assigns the asked partitions at the asked offsets, takes the first
// message of each, and unassigns.
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
  absl::StatusOr<std::vector<Watermarks>> PartitionWatermarks(const std::string& topic,
                                                              int32_t partitions,
                                                              absl::Duration timeout) override;
  absl::StatusOr<std::vector<int64_t>> MessageTimestamps(const std::string& topic,
                                                         const std::vector<PartitionOffset>& at,
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
  // MessageTimestamps' consumer; created on first use.
  rd_kafka_t* fetch_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_KAFKA_KAFKA_OFFSETS_H_
