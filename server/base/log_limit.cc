#include "server/base/log_limit.h"

#include <mutex>

#include "absl/time/clock.h"
#include "domain/validation.h"
#include "google/protobuf/stubs/logging.h"
#include "spdlog/spdlog.h"

namespace bucketmap {

bool LogLimiter::Allow(std::string_view key, absl::Time now, int64_t* suppressed) {
  absl::MutexLock lock(&mu_);
  if (now - window_start_ >= window_) {
    window_start_ = now;
    allowed_ = 0;
    per_key_count_.clear();
  }
  bool allow = allowed_ < total_;
  if (allow) {
    auto it = per_key_count_.find(absl::string_view(key.data(), key.size()));
    if (it == per_key_count_.end() && per_key_count_.size() < kMaxKeys) {
      it = per_key_count_.emplace(std::string(key), 0).first;
    }
    if (it != per_key_count_.end()) {
      allow = it->second < per_key_;
      if (allow) ++it->second;
    }
  }
  if (!allow) {
    ++suppressed_;
    return false;
  }
  ++allowed_;
  *suppressed = suppressed_;
  suppressed_ = 0;
  return true;
}

namespace {

LogLimiter& ProtobufLogLimiter() {
  static LogLimiter* const limiter = new LogLimiter(5, 5, absl::Minutes(1));
  return *limiter;
}

void ProtobufLogHandler(google::protobuf::LogLevel level, const char* filename, int line,
                        const std::string& message) {
  const std::string shown = QuoteUntrusted(message);
  if (level < google::protobuf::LOGLEVEL_WARNING) {
    spdlog::debug("libprotobuf {}:{}: {}", filename, line, shown);
    return;
  }
  int64_t suppressed = 0;
  if (!ProtobufLogLimiter().Allow("", absl::Now(), &suppressed)) {
    spdlog::debug("libprotobuf {}:{}: {}", filename, line, shown);
    return;
  }
  spdlog::warn("libprotobuf {}:{}: {}{}", filename, line, shown,
               suppressed > 0 ? fmt::format(" ({} similar lines suppressed)", suppressed) : "");
}

}  // namespace

void InstallProtobufLogHandler() {
  static std::once_flag once;
  std::call_once(once, [] { google::protobuf::SetLogHandler(&ProtobufLogHandler); });
}

}  // namespace bucketmap
