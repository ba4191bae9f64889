#include "bucketmap/delivery_tracker.h"

#include <algorithm>
#include <limits>

#include "client/src/tsan.h"

namespace bucketmap {
namespace {

constexpr int64_t kNothingToReport = std::numeric_limits<int64_t>::min();

// Threads take shards round-robin on first use, so a handful of producer
// threads never share one.
std::atomic<uint32_t> g_next_shard{0};
thread_local uint32_t t_shard = std::numeric_limits<uint32_t>::max();

}  // namespace

DeliveryTracker::DeliveryTracker(const Client* client)
    : client_(client), signal_below_(kNothingToReport) {}

uint32_t DeliveryTracker::MyShard() const {
  if (t_shard == std::numeric_limits<uint32_t>::max()) {
    t_shard = g_next_shard.fetch_add(1, std::memory_order_relaxed);
  }
  return t_shard % kShards;
}

void DeliveryTracker::Add(Shard& shard, int64_t version, int64_t n) {
  auto& counts = shard.counts;
  auto it = std::lower_bound(counts.begin(), counts.end(), std::make_pair(version, int64_t{0}),
                             [](const auto& a, const auto& b) { return a.first < b.first; });
  if (it != counts.end() && it->first == version) {
    it->second += n;
    if (it->second <= 0) counts.erase(it);
  } else if (n > 0) {
    counts.insert(it, {version, n});
  }
}

DeliveryTracker::Ticket DeliveryTracker::Begin() {
  const uint32_t s = MyShard();
  Shard& shard = shards_[s];
  int64_t version;
  {
    client_internal::MutexLock lock(&shard.mu);
    // Read under the lock DrainedVersion() takes: see the header.
    version = client_->version();
    Add(shard, version, 1);
  }
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  return Ticket(version, s);
}

void DeliveryTracker::Rebind(Ticket* ticket, int64_t route_version) {
  if (!ticket->valid() || route_version <= ticket->version()) return;
  Shard& shard = shards_[ticket->shard()];
  {
    client_internal::MutexLock lock(&shard.mu);
    Add(shard, route_version, 1);
    Add(shard, ticket->version(), -1);
  }
  *ticket = Ticket(route_version, ticket->shard());
}

DeliveryTracker::Routed DeliveryTracker::Route(int64_t team_id) {
  Routed out;
  out.ticket = Begin();
  out.route = client_->Route(team_id);
  Rebind(&out.ticket, out.route.version());
  return out;
}

DeliveryTracker::Viewed DeliveryTracker::Current() {
  Viewed out;
  out.ticket = Begin();
  out.view = client_->Current();
  if (out.view != nullptr) Rebind(&out.ticket, out.view->version());
  return out;
}

void DeliveryTracker::Done(Ticket ticket) {
  if (!ticket.valid() || ticket.shard() >= kShards) return;
  Shard& shard = shards_[ticket.shard()];
  const int64_t version = ticket.version();
  bool emptied = false;
  {
    client_internal::MutexLock lock(&shard.mu);
    const size_t before = shard.counts.size();
    Add(shard, version, -1);
    emptied = shard.counts.size() < before;
  }
  in_flight_.fetch_sub(1, std::memory_order_relaxed);
  // Only the last event of a version below the reported applied version
  // can move drained_version past what was reported.
  if (emptied && version < signal_below_.load(std::memory_order_acquire)) Signal();
}

int64_t DeliveryTracker::DrainedVersion(int64_t applied_version) const {
  int64_t drained = applied_version;
  for (const Shard& shard : shards_) {
    client_internal::MutexLock lock(&shard.mu);
    if (!shard.counts.empty()) drained = std::min(drained, shard.counts.front().first);
  }
  return drained;
}

void DeliveryTracker::SetReported(int64_t drained_version, int64_t applied_version) {
  signal_below_.store(drained_version < applied_version ? applied_version : kNothingToReport,
                      std::memory_order_release);
  // A Done() that ran between the ACK's DrainedVersion() and this store saw
  // the old threshold: wake the reporter once so it looks again.
  if (drained_version < applied_version) Signal();
}

void DeliveryTracker::Signal() {
  {
    client_internal::MutexLock lock(&progress_mu_);
    ++progress_;
  }
  progress_cv_.SignalAll();
}

void DeliveryTracker::Kick() { Signal(); }

uint64_t DeliveryTracker::WaitForProgress(uint64_t seen, absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  client_internal::MutexLock lock(&progress_mu_);
  while (progress_ == seen) {
    if (client_internal::WaitWithDeadline(&progress_cv_, &progress_mu_, deadline)) break;
  }
  return progress_;
}

}  // namespace bucketmap
