#include "server/replica/pg_listener.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <pqxx/pqxx>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "server/store/pg_util.h"
#include "spdlog/spdlog.h"

namespace bucketmap {
namespace {

// Keeps the highest version announced since the last Take().
class VersionReceiver final : public pqxx::notification_receiver {
 public:
  VersionReceiver(pqxx::connection_base& conn, const std::string& channel)
      : pqxx::notification_receiver(conn, channel) {}

  // Payload: "<version> <cluster_id>" (PgStore), or just "<version>".
  void operator()(const std::string& payload, int /*backend_pid*/) override {
    const std::pair<absl::string_view, absl::string_view> parts =
        absl::StrSplit(payload, absl::MaxSplits(' ', 1));
    int64_t version = 0;
    if (!absl::SimpleAtoi(parts.first, &version)) version = 0;  // still a reason to look
    if (version >= max_) {
      max_ = version;
      cluster_id_ = std::string(parts.second);
    }
  }

  // The highest version since the last call (-1 when nothing arrived) and
  // its cluster id.
  int64_t Take(std::string* cluster_id) {
    *cluster_id = std::move(cluster_id_);
    cluster_id_.clear();
    return std::exchange(max_, -1);
  }

 private:
  int64_t max_ = -1;
  std::string cluster_id_;
};

}  // namespace

PgListener::PgListener(PgListenerOptions options, VersionFn on_version, ConnectedFn on_connected,
                       Metrics* metrics)
    : options_(std::move(options)),
      on_version_(std::move(on_version)),
      on_connected_(std::move(on_connected)),
      metrics_(metrics) {
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

void PgListener::SetConnected(bool connected) {
  connected_.store(connected, std::memory_order_release);
  if (metrics_ != nullptr) metrics_->SetVersionListenerConnected(connected);
}

PgListener::~PgListener() {
  Stop();
  if (wake_fd_ >= 0) close(wake_fd_);
}

void PgListener::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void PgListener::Stop() {
  if (stop_.exchange(true)) return;
  const uint64_t one = 1;
  if (wake_fd_ >= 0) (void)!write(wake_fd_, &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
}

bool PgListener::Wait(int fd, absl::Duration timeout) {
  pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {fd, POLLIN, 0}};
  const int n = fd >= 0 ? 2 : 1;
  const int ms = timeout == absl::InfiniteDuration()
                     ? -1
                     : static_cast<int>(absl::ToInt64Milliseconds(timeout));
  int rc = 0;
  do {
    rc = poll(fds, n, ms);
  } while (rc < 0 && errno == EINTR && !stop_.load());
  return !stop_.load();
}

void PgListener::Loop() {
  while (!stop_.load()) {
    if (!ListenOnce()) break;
    if (!Wait(-1, options_.reconnect_delay)) break;
  }
}

bool PgListener::ListenOnce() {
  try {
    pqxx::connection conn(WithConnectionDefaults(options_.url, 2));
    VersionReceiver receiver(conn, options_.channel);
    // The receiver LISTENs on construction, so nothing committed from here
    // on is missed; the owner catches up with what came before.
    SetConnected(true);
    spdlog::info("listening for new versions on channel {}", options_.channel);
    on_connected_();
    for (;;) {
      conn.get_notifs();  // throws once the connection is broken
      std::string cluster_id;
      if (const int64_t version = receiver.Take(&cluster_id); version >= 0) {
        if (metrics_ != nullptr) metrics_->RecordVersionNotification();
        on_version_(version, cluster_id);
      }
      if (!Wait(conn.sock(), absl::InfiniteDuration())) {
        SetConnected(false);
        return false;
      }
    }
  } catch (...) {
    SetConnected(false);
    const absl::Status status = StatusFromCurrentException("version listener");
    if (!stop_.load()) {
      spdlog::warn("{}; reconnecting (the catch-up poll covers the gap)", status.ToString());
    }
    return !stop_.load();
  }
}

}  // namespace bucketmap
