// FakeClock: a Clock (server/base/clock.h) that moves only when a test
// moves it, so deadlines, leases, grace periods and cooldowns can be
// driven without sleeping.
//
// It starts at a fixed time (kStart) unless told otherwise, so tests are
// reproducible. Time may be Set() backwards: nothing here forbids it, as
// nothing forbids a wall clock from stepping back.
//
// Thread safety: all methods are thread-safe; Now() may be called from the
// threads of the component under test while the test thread moves it.
// Header-only.
#ifndef BUCKETMAP_TESTS_SUPPORT_FAKE_CLOCK_H_
#define BUCKETMAP_TESTS_SUPPORT_FAKE_CLOCK_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/base/clock.h"

namespace bucketmap {

class FakeClock final : public Clock {
 public:
  // 2023-11-14T22:13:20Z: an arbitrary, round start.
  static constexpr int64_t kStartUnixSeconds = 1700000000;

  FakeClock() : now_(absl::FromUnixSeconds(kStartUnixSeconds)) {}
  explicit FakeClock(absl::Time start) : now_(start) {}

  // Now()
  //
  // The time last Set(), plus every Advance() since.
  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }

  // Advance()
  //
  // Moves the clock by `d` (which may be negative) and returns the new time.
  absl::Time Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
    return now_;
  }

  // Set()
  //
  // Moves the clock to `t`.
  void Set(absl::Time t) {
    absl::MutexLock lock(&mu_);
    now_ = t;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_SUPPORT_FAKE_CLOCK_H_
