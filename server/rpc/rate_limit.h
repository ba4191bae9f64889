// WriteRateLimiter: a token bucket per caller (the auth token's name, or
// the declared actor in development mode), for --write_rate_limit.
//
// Each caller may make `burst` writes at once, refilled at `per_second`.
// A write over the limit is refused with RESOURCE_EXHAUSTED before it
// reaches PostgreSQL, so one runaway tool cannot starve the others of the
// global write lock. Idle buckets are forgotten, so callers that name
// themselves freely (development mode) cannot grow the table without bound.
//
// Thread-safe. The clock is injected for tests.
#ifndef BUCKETMAP_SERVER_RPC_RATE_LIMIT_H_
#define BUCKETMAP_SERVER_RPC_RATE_LIMIT_H_

#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace bucketmap {

struct RateLimit {
  double per_second = 0;  // 0: no limit
  double burst = 0;       // at least 1 when limited
  bool enabled() const { return per_second > 0; }
};

// Parses "N/s", "N/m" or "N/h" (N a positive number), or "0" / "" for no
// limit. `burst` 0 means max(1, one second's worth). InvalidArgument names
// --write_rate_limit.
absl::StatusOr<RateLimit> ParseRateLimit(absl::string_view text, double burst);

class WriteRateLimiter {
 public:
  explicit WriteRateLimiter(RateLimit limit, std::function<absl::Time()> clock = absl::Now);

  // Takes one write from `caller`'s bucket. ResourceExhausted (naming the
  // limit and when to retry) when it is empty; OK always when unlimited.
  absl::Status Acquire(const std::string& caller) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time updated;
  };
  const RateLimit limit_;
  const std::function<absl::Time()> clock_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_RPC_RATE_LIMIT_H_
