// EventPublisher: where the outbox relay sends change events (an
// interface; KafkaPublisher implements it with librdkafka, tests may fake
// it).
//
// A publisher sends records to one topic, in the order Publish() is
// called, and reports each record's fate exactly once through its
// DeliveryCallback, on a thread of the publisher. Implementations must
// never let one record overtake another: a record is either delivered
// after every record published before it, or fails, and after a failure
// nothing is delivered until Reset().
//
// Thread safety: all methods are thread-safe, but callbacks run on the
// publisher's own thread: they must not block and must not call Reset(),
// Flush() or Close() (those wait for that thread).
#ifndef BUCKETMAP_SERVER_OUTBOX_EVENT_PUBLISHER_H_
#define BUCKETMAP_SERVER_OUTBOX_EVENT_PUBLISHER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace bucketmap {

// Header names the relay sets on every record.
inline constexpr char kVersionHeader[] = "bucketmap-version";
inline constexpr char kContentTypeHeader[] = "content-type";
inline constexpr char kChangesKey[] = "mapping";

struct EventHeader {
  std::string name;
  std::string value;
};

// OK once the broker has acknowledged the record (acks=all); otherwise why
// it will never be delivered by this session.
using DeliveryCallback = std::function<void(const absl::Status& status)>;

class EventPublisher {
 public:
  virtual ~EventPublisher() = default;

  // Publish()
  //
  // Queues one record; `on_delivery` is called exactly once, later, unless
  // Publish returns an error (then it is never called).
  //   ResourceExhausted: the local queue is full; retry after deliveries.
  //   FailedPrecondition: the publisher hit a fatal error or was closed;
  //     Reset() it.
  virtual absl::Status Publish(int64_t version, std::string key, std::string value,
                               std::vector<EventHeader> headers, DeliveryCallback on_delivery) = 0;

  // Flush()
  //
  // Waits up to `timeout` for every queued record's delivery report.
  // DeadlineExceeded if some are still outstanding.
  virtual absl::Status Flush(absl::Duration timeout) = 0;

  // Reset()
  //
  // Drops every record not yet delivered (their callbacks run with an
  // error before Reset returns) and starts a new producer session, so
  // publishing can resume from the first undelivered record. Unavailable
  // if the new session cannot be created (try again later).
  virtual absl::Status Reset() = 0;

  // Close()
  //
  // Waits up to `timeout` for outstanding deliveries, then drops the rest
  // (their callbacks run with an error). Publish fails afterwards.
  virtual void Close(absl::Duration timeout) = 0;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_OUTBOX_EVENT_PUBLISHER_H_
