// Clock: where the server's components read the time, injected through
// their constructors (or options) so that unit tests can drive deadlines,
// leases, heartbeats and grace periods with a fake clock
// (tests/support/fake_clock.h) instead of sleeping.
//
// Clock::Real() is absl::Now(). Implementations are thread-safe.
#ifndef BUCKETMAP_SERVER_BASE_CLOCK_H_
#define BUCKETMAP_SERVER_BASE_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace bucketmap {

class Clock {
 public:
  virtual ~Clock() = default;

  // Now()
  //
  // The current time by this clock.
  virtual absl::Time Now() const = 0;

  // Real()
  //
  // The process's wall clock. Never null; lives forever.
  static const Clock* Real();
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_BASE_CLOCK_H_
