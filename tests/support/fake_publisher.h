// FakePublisher: an EventPublisher (server/outbox/event_publisher.h) in
// memory, for unit tests of the outbox relay without Kafka. Integration
// tests publish to librdkafka's mock cluster instead.
//
// It keeps the publisher's contract: records are reported in the order
// they were published, each exactly once; after a failed report nothing is
// delivered until Reset(), which fails every record still outstanding
// (Aborted) before it returns; Close() fails those left after its timeout,
// and Publish is FailedPrecondition afterwards.
//
// Delivery reports are under the test's control:
//   * kImmediate (the default): each record is acknowledged as soon as it
//     is published, on the publishing thread, before Publish returns;
//   * kHold: records wait until Deliver(n) releases the first n of them;
//   * FailDelivery(version, status) / FailNextDelivery(status): that
//     record's report, when it comes, is `status` (and the publisher stops
//     delivering until Reset()).
// FailNext(method, status) makes a call itself fail (Publish:
// ResourceExhausted for a full queue, FailedPrecondition for a fatal
// error; Flush; Reset), with no other effect; calls() counts the calls.
//
// Reports run on the thread of the call that releases them (Publish,
// Deliver, Reset, Close), never under the fake's lock, one at a time and
// in order.
//
// Thread safety: all methods are thread-safe. Header-only.
#ifndef BUCKETMAP_TESTS_SUPPORT_FAKE_PUBLISHER_H_
#define BUCKETMAP_TESTS_SUPPORT_FAKE_PUBLISHER_H_

#include <algorithm>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/outbox/event_publisher.h"
#include "tests/support/fake_calls.h"

namespace bucketmap {

class FakePublisher final : public EventPublisher {
 public:
  enum Method { kPublish, kFlush, kReset, kClose };
  enum class Delivery { kImmediate, kHold };

  // A record as Publish received it.
  struct Record {
    int64_t version = 0;
    std::string key;
    std::string value;
    std::vector<EventHeader> headers;
  };

  FakePublisher() = default;
  FakePublisher(const FakePublisher&) = delete;
  FakePublisher& operator=(const FakePublisher&) = delete;

  // EventPublisher.
  absl::Status Publish(int64_t version, std::string key, std::string value,
                       std::vector<EventHeader> headers, DeliveryCallback on_delivery) override {
    if (absl::Status s = calls_.Enter(kPublish); !s.ok()) return s;
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return absl::FailedPreconditionError("publisher closed");
      records_.push_back(Record{version, std::move(key), std::move(value), std::move(headers)});
      pending_.push_back(Pending{version, std::move(on_delivery)});
    }
    Pump();
    return absl::OkStatus();
  }

  // Waits (real time) up to `timeout` for every record's report;
  // DeadlineExceeded when some are held or undeliverable until Reset().
  absl::Status Flush(absl::Duration timeout) override {
    if (absl::Status s = calls_.Enter(kFlush); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    if (!mu_.AwaitWithTimeout(absl::Condition(this, &FakePublisher::IdleLocked), timeout)) {
      return absl::DeadlineExceededError(
          absl::StrCat(pending_.size(), " records still outstanding"));
    }
    return absl::OkStatus();
  }

  absl::Status Reset() override {
    if (absl::Status s = calls_.Enter(kReset); !s.ok()) return s;
    std::deque<Pending> dropped;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &FakePublisher::NotPumpingLocked));
      dropped.swap(pending_);
      broken_ = false;
      release_ = 0;
    }
    for (Pending& p : dropped) p.on_delivery(absl::AbortedError("purged by Reset()"));
    return absl::OkStatus();
  }

  void Close(absl::Duration timeout) override {
    (void)calls_.Enter(kClose);
    std::deque<Pending> dropped;
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(this, &FakePublisher::IdleLocked), timeout);
      mu_.Await(absl::Condition(this, &FakePublisher::NotPumpingLocked));
      dropped.swap(pending_);
      closed_ = true;
    }
    for (Pending& p : dropped) p.on_delivery(absl::AbortedError("dropped by Close()"));
  }

  // Test controls.

  // How records are reported from now on. Switching to kImmediate
  // delivers the held records too.
  void set_delivery(Delivery delivery) {
    {
      absl::MutexLock lock(&mu_);
      delivery_ = delivery;
    }
    Pump();
  }

  // Deliver()
  //
  // Releases the first `n` records held now (all by default), in order.
  // Their reports are made before Deliver returns, unless another thread
  // is making reports already (then that thread makes them).
  void Deliver(size_t n = std::numeric_limits<size_t>::max()) {
    {
      absl::MutexLock lock(&mu_);
      release_ = std::min(pending_.size(), release_ + std::min(n, pending_.size()));
    }
    Pump();
  }

  // The report of `version`, the next time it is published, is `status`.
  void FailDelivery(int64_t version, absl::Status status) {
    absl::MutexLock lock(&mu_);
    fail_versions_[version] = std::move(status);
  }
  // The next report made is `status`, whatever its version.
  void FailNextDelivery(absl::Status status) {
    absl::MutexLock lock(&mu_);
    fail_next_ = std::move(status);
  }

  // The next `times` calls of `method` (or of any method) fail with
  // `status` and do nothing else.
  void FailNext(Method method, absl::Status status, int times = 1) {
    calls_.FailNext(method, std::move(status), times);
  }
  void FailNext(absl::Status status, int times = 1) { calls_.FailNext(std::move(status), times); }
  int64_t calls(Method method) const { return calls_.calls(method); }

  // Every record Publish accepted, in order (resent ones again).
  std::vector<Record> records() const {
    absl::MutexLock lock(&mu_);
    return records_;
  }
  // The versions acknowledged (reported OK), in report order.
  std::vector<int64_t> delivered() const {
    absl::MutexLock lock(&mu_);
    return delivered_;
  }
  // The versions whose report was an injected failure.
  std::vector<int64_t> failed() const {
    absl::MutexLock lock(&mu_);
    return failed_;
  }
  // Records published and not reported yet.
  size_t outstanding() const {
    absl::MutexLock lock(&mu_);
    return pending_.size();
  }

  // Waits (real time) up to `timeout` until at least `n` records were
  // acknowledged, or published (accepted by Publish). Returns whether
  // they were.
  bool AwaitDelivered(size_t n, absl::Duration timeout) const {
    absl::MutexLock lock(&mu_);
    auto done = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return delivered_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  }
  bool AwaitPublished(size_t n, absl::Duration timeout) const {
    absl::MutexLock lock(&mu_);
    auto done = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return records_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  }

 private:
  struct Pending {
    int64_t version;
    DeliveryCallback on_delivery;
  };

  bool IdleLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return pending_.empty() && !pumping_;
  }
  bool NotPumpingLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !pumping_; }

  // Makes every report that may be made now, in order, one at a time and
  // outside the lock; a no-op when another thread is making them.
  void Pump() ABSL_LOCKS_EXCLUDED(mu_) {
    mu_.Lock();
    if (pumping_) {
      mu_.Unlock();
      return;
    }
    pumping_ = true;
    for (;;) {
      if (pending_.empty() || broken_) break;
      if (delivery_ == Delivery::kHold && release_ == 0) break;
      if (release_ > 0) --release_;
      Pending p = std::move(pending_.front());
      pending_.pop_front();
      absl::Status status;
      if (auto it = fail_versions_.find(p.version); it != fail_versions_.end()) {
        status = std::move(it->second);
        fail_versions_.erase(it);
      } else if (fail_next_.has_value()) {
        status = *std::move(fail_next_);
        fail_next_.reset();
      }
      if (status.ok()) {
        delivered_.push_back(p.version);
      } else {
        failed_.push_back(p.version);
        broken_ = true;  // nothing is delivered after a failure until Reset()
      }
      mu_.Unlock();
      p.on_delivery(status);
      mu_.Lock();
    }
    pumping_ = false;
    mu_.Unlock();
  }

  FakeCalls<Method> calls_;
  mutable absl::Mutex mu_;
  Delivery delivery_ ABSL_GUARDED_BY(mu_) = Delivery::kImmediate;
  std::deque<Pending> pending_ ABSL_GUARDED_BY(mu_);
  size_t release_ ABSL_GUARDED_BY(mu_) = 0;  // held records Deliver() released
  bool pumping_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::map<int64_t, absl::Status> fail_versions_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> fail_next_ ABSL_GUARDED_BY(mu_);
  std::vector<Record> records_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> delivered_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> failed_ ABSL_GUARDED_BY(mu_);
};

}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_SUPPORT_FAKE_PUBLISHER_H_
