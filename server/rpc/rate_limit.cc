#include "server/rpc/rate_limit.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace bucketmap {
namespace {

// Beyond this many callers, full (idle) buckets are dropped: a full bucket
// is the same as no bucket.
constexpr size_t kMaxIdleBuckets = 10000;

}  // namespace

absl::StatusOr<RateLimit> ParseRateLimit(absl::string_view text, double burst) {
  RateLimit limit;
  if (text.empty() || text == "0") return limit;
  const size_t slash = text.find('/');
  double n = 0;
  if (slash == absl::string_view::npos || !absl::SimpleAtod(text.substr(0, slash), &n) ||
      !(n > 0) || !std::isfinite(n)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--write_rate_limit: \"", text, "\" is not N/s, N/m or N/h with N > 0 (or 0 for none)"));
  }
  const absl::string_view unit = text.substr(slash + 1);
  if (unit == "s") {
    limit.per_second = n;
  } else if (unit == "m") {
    limit.per_second = n / 60;
  } else if (unit == "h") {
    limit.per_second = n / 3600;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--write_rate_limit: unit \"", unit, "\" is not s, m or h"));
  }
  if (burst < 0) return absl::InvalidArgumentError("--write_rate_burst: must not be negative");
  limit.burst = burst > 0 ? burst : std::max(1.0, limit.per_second);
  return limit;
}

WriteRateLimiter::WriteRateLimiter(RateLimit limit, std::function<absl::Time()> clock)
    : limit_(limit), clock_(std::move(clock)) {}

absl::Status WriteRateLimiter::Acquire(const std::string& caller) {
  if (!limit_.enabled()) return absl::OkStatus();
  const absl::Time now = clock_();
  absl::MutexLock lock(&mu_);
  if (buckets_.size() > kMaxIdleBuckets) {
    absl::erase_if(buckets_, [&](const auto& entry) {
      const Bucket& b = entry.second;
      return b.tokens + absl::ToDoubleSeconds(now - b.updated) * limit_.per_second >= limit_.burst;
    });
  }
  auto [it, inserted] = buckets_.try_emplace(caller, Bucket{limit_.burst, now});
  Bucket& bucket = it->second;
  if (!inserted) {
    const double elapsed = std::max(0.0, absl::ToDoubleSeconds(now - bucket.updated));
    bucket.tokens = std::min(limit_.burst, bucket.tokens + elapsed * limit_.per_second);
    bucket.updated = now;
  }
  if (bucket.tokens >= 1) {
    bucket.tokens -= 1;
    return absl::OkStatus();
  }
  const double wait_ms = std::ceil((1 - bucket.tokens) / limit_.per_second * 1000);
  return absl::ResourceExhaustedError(
      absl::StrFormat("--write_rate_limit: \"%s\" exceeds %g writes/s (burst %g); retry in %.0f ms",
                      caller, limit_.per_second, limit_.burst, wait_ms));
}

}  // namespace bucketmap
