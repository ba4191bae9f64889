// LogLimiter: bounds the log lines that clients can cause.
//
// A watch client that NACKs in a loop, or a caller that sends bodies with
// invalid UTF-8, must not be able to flood the server's log: each such
// line goes through a LogLimiter, which lets at most `per_key` lines per
// key (a client id) and `total` lines in all through per window, and
// counts the rest, so the next line that passes can say how many were
// dropped. Client text in the line itself goes through QuoteUntrusted
// (domain/validation.h), so it cannot forge a line either.
//
// Thread-safe.
#ifndef BUCKETMAP_SERVER_BASE_LOG_LIMIT_H_
#define BUCKETMAP_SERVER_BASE_LOG_LIMIT_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace bucketmap {

class LogLimiter {
 public:
  LogLimiter(int per_key, int total, absl::Duration window)
      : per_key_(per_key), total_(total), window_(window) {}

  // Allow()
  //
  // Whether a line for `key` may be written at `now`. When it may,
  // *suppressed is the number of lines refused since the last one allowed
  // (0 usually), to be mentioned in the line.
  bool Allow(std::string_view key, absl::Time now, int64_t* suppressed) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Keys remembered per window; beyond it, new keys count against `total`
  // only, so a flood of distinct keys cannot grow the map.
  static constexpr size_t kMaxKeys = 1024;

  const int per_key_;
  const int total_;
  const absl::Duration window_;
  absl::Mutex mu_;
  absl::Time window_start_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int allowed_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t suppressed_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, int> per_key_count_ ABSL_GUARDED_BY(mu_);
};

// InstallProtobufLogHandler()
//
// Routes libprotobuf's own log lines (such as the ERROR it prints for every
// request body with invalid UTF-8, before any of our code runs) to spdlog,
// escaped and rate-limited: warnings and errors at warn level, at most a
// few a minute, the rest at debug. Idempotent; process-wide.
void InstallProtobufLogHandler();

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_BASE_LOG_LIMIT_H_
