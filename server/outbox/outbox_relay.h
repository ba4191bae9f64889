// OutboxRelay: publishes the change log (the transactional outbox) to the
// changes topic, in version order, and marks rows published once Kafka
// acknowledged them.
//
// One thread loads unpublished rows in version order, encodes each as a
// bucketmap.v1.ChangeEvent (protobuf or JSON) and hands it to the
// EventPublisher. Delivery reports advance a `delivered` watermark: the
// last version such that it and every version sent before it were
// acknowledged. The watermark is written back with Store::MarkPublished in
// batches (every `mark_interval` or `mark_batch` versions), so a crash
// re-sends at most the versions delivered but not yet marked: duplicates of
// published versions only, which consumers drop by version. A delivery
// error (a fatal error of the idempotent producer) resets the publisher and
// resends from the first version after the watermark: nothing is skipped.
//
// The relay is woken by Notify() (a listener on every new version) and
// polls every `poll_interval` for versions committed by other replicas or
// missed while the store was down.
//
// Ownership: the store, publisher and metrics are borrowed and must
// outlive the relay; Stop() it before Close()-ing the publisher.
// Thread safety: all public methods are thread-safe.
#ifndef BUCKETMAP_SERVER_OUTBOX_OUTBOX_RELAY_H_
#define BUCKETMAP_SERVER_OUTBOX_OUTBOX_RELAY_H_

#include <cstdint>
#include <deque>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/base/clock.h"
#include "server/metrics/metrics.h"
#include "server/outbox/event_publisher.h"
#include "server/store/store.h"

namespace bucketmap {

enum class ChangesFormat { kProtobuf, kJson };

// Parses "protobuf" or "json". InvalidArgument otherwise.
absl::StatusOr<ChangesFormat> ParseChangesFormat(const std::string& text);

struct OutboxRelayOptions {
  ChangesFormat format = ChangesFormat::kProtobuf;
  // Written into every ChangeEvent.
  std::string cluster_id;
  // Rows loaded per query.
  int batch_size = 500;
  // Records handed to the publisher and not yet acknowledged, at most.
  int max_in_flight = 10000;
  // The catch-up poll.
  absl::Duration poll_interval = absl::Seconds(1);
  // MarkPublished runs when this much time passed since the last one, or
  // `mark_batch` versions are waiting, whichever comes first.
  absl::Duration mark_interval = absl::Milliseconds(100);
  int mark_batch = 500;
  // The leader epoch this relay runs under (server/leader.h): fences
  // MarkPublished. 0: not fenced (a single replica).
  int64_t leader_epoch = 0;
  // Wait after a failed store call or publisher reset before retrying.
  absl::Duration retry_delay = absl::Milliseconds(500);
};

// Encodes one outbox row as a ChangeEvent in `format`. InvalidArgument
// when the stored delta does not parse.
absl::StatusOr<std::string> EncodeChangeEvent(const OutboxRow& row, const std::string& cluster_id,
                                              ChangesFormat format);

// The content-type header value of `format`.
const char* ContentType(ChangesFormat format);

class OutboxRelay {
 public:
  // `metrics` may be null.
  OutboxRelay(Store* store, EventPublisher* publisher, Metrics* metrics, OutboxRelayOptions options,
              const Clock* clock = Clock::Real());
  ~OutboxRelay();  // Stop()s
  OutboxRelay(const OutboxRelay&) = delete;
  OutboxRelay& operator=(const OutboxRelay&) = delete;

  // Starts the relay thread. Call once.
  void Start();

  // Wakes the relay: a new version was committed. Cheap; never blocks on I/O.
  void Notify();

  // Stops the thread: waits up to `flush_timeout` for outstanding
  // deliveries, then marks what was delivered. Idempotent.
  void Stop(absl::Duration flush_timeout = absl::Seconds(5));

  // The delivered watermark (0 before any delivery in this process).
  int64_t delivered_version() const;
  // The last version this relay marked published.
  int64_t marked_version() const;

 private:
  struct Sent {
    int64_t version;
    bool delivered;
  };

  void Loop();
  // One pass: loads and publishes what fits in flight. Returns true when
  // more rows may be waiting.
  bool PublishSome();
  void OnDelivery(uint64_t generation, int64_t version, const absl::Status& status);
  void MaybeMark(bool force);
  void RefreshStats();

  Store* const store_;
  EventPublisher* const publisher_;
  Metrics* const metrics_;
  const Clock* const clock_;
  const OutboxRelayOptions options_;

  mutable absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  bool reset_needed_ ABSL_GUARDED_BY(mu_) = false;
  bool more_ ABSL_GUARDED_BY(mu_) = false;
  // Bumped on every publisher reset: reports of older sessions are ignored.
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  // Sent and not yet below the watermark, in send (= version) order.
  std::deque<Sent> in_flight_ ABSL_GUARDED_BY(mu_);
  // The last version handed to the publisher, -1 until the start point is
  // known.
  int64_t sent_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t delivered_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t marked_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_mark_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Duration flush_timeout_ ABSL_GUARDED_BY(mu_) = absl::Seconds(5);
  absl::Time next_stats_ = absl::InfinitePast();  // relay thread only
  std::thread thread_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_OUTBOX_OUTBOX_RELAY_H_
