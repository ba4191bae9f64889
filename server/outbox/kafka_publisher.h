// KafkaPublisher: the EventPublisher on librdkafka (C API), plus the
// changes-topic check made at start.
//
// The producer is idempotent with the gapless guarantee, acks=all and
// message.timeout.ms=0: a record is retried until the broker takes it and
// can never be overtaken by a later one; if the idempotent session breaks
// anyway, librdkafka raises a fatal error, every undelivered record fails,
// and the owner Reset()s the publisher to start a new session. A poll
// thread per session serves delivery reports.
//
// No librdkafka error crashes the process or leaves this class: every
// failure is an absl::Status or a failed delivery report.
//
// Thread safety: as EventPublisher. Delivery callbacks run on the poll
// thread (or on a thread inside Flush/Reset/Close).
#ifndef BUCKETMAP_SERVER_OUTBOX_KAFKA_PUBLISHER_H_
#define BUCKETMAP_SERVER_OUTBOX_KAFKA_PUBLISHER_H_

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/outbox/event_publisher.h"

namespace bucketmap {

struct KafkaPublisherOptions {
  // bootstrap.servers: host:port[,host:port...]. Required.
  std::string brokers;
  // The changes topic. Required.
  std::string topic;
  // Extra librdkafka properties (e.g. security settings); they cannot
  // weaken the ordering settings above, which are applied last.
  std::map<std::string, std::string> config;
};

class KafkaPublisher final : public EventPublisher {
 public:
  // Creates the producer (it connects lazily). InvalidArgument for a
  // missing option or a property librdkafka rejects.
  static absl::StatusOr<std::unique_ptr<KafkaPublisher>> Create(KafkaPublisherOptions options);
  ~KafkaPublisher() override;  // Close(0)

  absl::Status Publish(int64_t version, std::string key, std::string value,
                       std::vector<EventHeader> headers, DeliveryCallback on_delivery) override;
  absl::Status Flush(absl::Duration timeout) override;
  absl::Status Reset() override;
  void Close(absl::Duration timeout) override;

  // Raises a fatal error in the current session, as a broken idempotent
  // session would (rd_kafka_test_fatal_error). Tests only.
  absl::Status TEST_RaiseFatalError();

 private:
  class Session;

  explicit KafkaPublisher(KafkaPublisherOptions options);

  const KafkaPublisherOptions options_;
  absl::Mutex mu_;
  // Null once closed (or while a Reset failed to make a new one).
  std::unique_ptr<Session> session_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

// EnsureChangesTopic()
//
// Looks the topic up on `brokers`. If it is missing and `create` is true,
// creates it with one partition (the broker's default replication) through
// the Admin API. Returns the topic's partition count; the caller reports a
// count other than 1 (total order needs one partition).
//   NotFound: missing and `create` is false;
//   Unavailable: the brokers did not answer within `timeout`;
//   Internal: the broker refused to create it.
absl::StatusOr<int> EnsureChangesTopic(const std::string& brokers, const std::string& topic,
                                       bool create, absl::Duration timeout);

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_OUTBOX_KAFKA_PUBLISHER_H_
