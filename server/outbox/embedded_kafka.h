// EmbeddedKafka: librdkafka's mock Kafka cluster, in-process, on loopback
// (`--kafka_brokers=embedded`, and tests).
//
// It is for development and tests: it keeps everything in memory and dies
// with the process. The mock answers no CreateTopics request, so topics
// are created through CreateTopic().
//
// Thread safety: all methods are thread-safe (librdkafka locks the mock).
#ifndef BUCKETMAP_SERVER_OUTBOX_EMBEDDED_KAFKA_H_
#define BUCKETMAP_SERVER_OUTBOX_EMBEDDED_KAFKA_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

// Opaque librdkafka types, kept out of this header.
typedef struct rd_kafka_s rd_kafka_t;
typedef struct rd_kafka_mock_cluster_s rd_kafka_mock_cluster_t;

namespace bucketmap {

class EmbeddedKafka {
 public:
  // Starts a cluster of `brokers` brokers (ids 1..brokers). Internal if
  // librdkafka cannot.
  static absl::StatusOr<std::unique_ptr<EmbeddedKafka>> Start(int brokers = 1);
  ~EmbeddedKafka();
  EmbeddedKafka(const EmbeddedKafka&) = delete;
  EmbeddedKafka& operator=(const EmbeddedKafka&) = delete;

  // The bootstrap servers, "127.0.0.1:port[,...]".
  std::string bootstraps() const;

  // Creates `topic` (replication 1). AlreadyExists, or Internal.
  absl::Status CreateTopic(const std::string& topic, int partitions);

  // Makes a broker stop answering (connections close, new ones are
  // refused) or answer again; for outage tests.
  absl::Status SetBrokerDown(int32_t broker_id);
  absl::Status SetBrokerUp(int32_t broker_id);

 private:
  EmbeddedKafka(rd_kafka_t* host, rd_kafka_mock_cluster_t* cluster)
      : host_(host), cluster_(cluster) {}

  rd_kafka_t* host_;  // a handle that only hosts the cluster
  rd_kafka_mock_cluster_t* cluster_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_OUTBOX_EMBEDDED_KAFKA_H_
