#include "server/handoff/handoff_coordinator.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "bucketmap/v1/types.pb.h"
#include "domain/status_macros.h"
#include "server/metrics/metrics.h"
#include "spdlog/spdlog.h"

namespace bucketmap {
namespace {

constexpr int kProducerRole = 1;  // bucketmap.v1.CLIENT_ROLE_PRODUCER
constexpr char kActor[] = "handoff-coordinator";

// Messages left between `committed` and `end` (committed -1: none yet).
int64_t LagOf(const std::vector<int64_t>& end, const std::vector<int64_t>& committed) {
  int64_t lag = 0;
  for (size_t p = 0; p < end.size(); ++p) {
    const int64_t c = p < committed.size() ? std::max<int64_t>(committed[p], 0) : 0;
    lag += std::max<int64_t>(0, end[p] - c);
  }
  return lag;
}

bool AllZero(const std::vector<int64_t>& v) {
  return std::all_of(v.begin(), v.end(), [](int64_t x) { return x == 0; });
}

}  // namespace

HandoffCoordinator::HandoffCoordinator(MappingManager* manager, Store* store,
                                       std::shared_ptr<OffsetReader> offsets,
                                       HandoffOptions options, Metrics* metrics, const Clock* clock)
    : manager_(manager),
      store_(store),
      offsets_(std::move(offsets)),
      options_(options),
      metrics_(metrics),
      clock_(clock) {}

HandoffCoordinator::~HandoffCoordinator() {
  Stop();
  {
    absl::MutexLock lock(&mu_);
    stop_monitor_ = true;
  }
  if (monitor_.joinable()) monitor_.join();
}

void HandoffCoordinator::StartMonitor() {
  monitor_ = std::thread([this] { MonitorLoop(); });
}

void HandoffCoordinator::Start(int64_t epoch) {
  Stop();
  {
    absl::MutexLock lock(&mu_);
    stop_leader_ = false;
    live_.clear();
  }
  spdlog::info(
      "handoff coordinator: leading at epoch {}; while a producer lease is alive, barriers are "
      "judged after one client lease ({})",
      epoch, absl::FormatDuration(options_.client_lease));
  const absl::Time since = clock_->Now();
  leader_ = std::thread([this, epoch, since] { CoordinatorLoop(epoch, since); });
}

void HandoffCoordinator::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_leader_ = true;
  }
  if (leader_.joinable()) leader_.join();
  absl::MutexLock lock(&mu_);
  live_.clear();
}

void HandoffCoordinator::RetryLater(const char* format, int64_t id, const std::string& why) {
  // Kafka or PostgreSQL being down fails every round; one line per
  // handoff every 30 s is enough to see it.
  const absl::Time now = clock_->Now();
  absl::Time& last = last_warning_[id];
  if (now - last < absl::Seconds(30)) return;
  last = now;
  spdlog::warn(fmt::runtime(format), id, why);
}

bool HandoffCoordinator::Stopping() const {
  absl::MutexLock lock(&mu_);
  return stop_leader_;
}

MovePolicy HandoffCoordinator::Policy(MoveScope scope, bool ordered, bool force) const {
  MovePolicy p;
  p.open_handoffs = options_.enabled;
  p.scope = scope;
  p.ordered = ordered;
  p.force = force;
  p.now = clock_->Now();
  p.grace = options_.grace;
  p.max_hold = options_.max_hold;
  p.cooldown = options_.move_cooldown;
  p.max_move_lag = options_.max_move_lag;
  {
    absl::MutexLock lock(&mu_);
    p.partition_count = [counts = partitions_](const std::string& topic) -> int32_t {
      auto it = counts.find(topic);
      return it == counts.end() ? 0 : it->second;
    };
    p.source_lag = [lags = lags_](int32_t bucket) -> int64_t {
      auto it = lags.find(bucket);
      return it == lags.end() ? -1 : it->second;
    };
  }
  return p;
}

void HandoffCoordinator::Decorate(v1::Handoff* h) const {
  absl::MutexLock lock(&mu_);
  auto it = live_.find(h->id());
  if (it == live_.end()) return;
  const Live& live = it->second;
  if (h->state() == v1::HANDOFF_SWITCHING) {
    h->clear_missing_producers();
    for (const std::string& p : live.missing_producers) h->add_missing_producers(p);
  }
  if (h->state() == v1::HANDOFF_DRAINING && live.drain_index == h->drain_index() &&
      live.drain_index >= 0 && live.drain_index < h->drains_size()) {
    v1::RoleDrain* d = h->mutable_drains(live.drain_index);
    d->clear_committed_offsets();
    for (int64_t c : live.committed) d->add_committed_offsets(c);
    d->set_lag(live.lag);
  }
}

int32_t HandoffCoordinator::CachedPartitions(const std::string& topic) const {
  absl::MutexLock lock(&mu_);
  auto it = partitions_.find(topic);
  return it == partitions_.end() ? 0 : it->second;
}

void HandoffCoordinator::MonitorLoop() {
  absl::Time next_kafka = absl::InfinitePast();
  for (;;) {
    if (clock_->Now() >= next_kafka) {
      RefreshKafka();
      next_kafka = clock_->Now() + options_.kafka_refresh_interval;
    }
    ExportMetrics();
    absl::MutexLock lock(&mu_);
    auto stop = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_monitor_; };
    mu_.AwaitWithTimeout(absl::Condition(&stop), options_.poll_interval);
    if (stop_monitor_) return;
  }
}

void HandoffCoordinator::RefreshKafka() {
  if (offsets_ == nullptr || !options_.enabled) return;
  absl::StatusOr<std::map<std::string, int32_t>> counts =
      offsets_->PartitionCounts(options_.kafka_timeout);
  if (!counts.ok()) {
    spdlog::warn("handoff monitor: {}", counts.status().ToString());
    return;
  }
  std::map<int32_t, int64_t> lags;
  if (options_.max_move_lag > 0) {
    std::shared_ptr<const ServedSnapshot> current = manager_->Current();
    for (const Bucket& b : current->snapshot().buckets()) {
      if (!IsPlaceable(b.state) && b.state != BucketState::kDraining) continue;
      int64_t lag = 0;
      bool known = false;
      for (const auto& [role, group] : b.consumer_groups) {
        auto topic = b.topics.find(role);
        if (topic == b.topics.end()) continue;
        auto n = counts->find(topic->second);
        if (n == counts->end()) continue;
        auto end = offsets_->EndOffsets(topic->second, n->second, options_.kafka_timeout);
        if (!end.ok()) continue;
        auto committed =
            offsets_->CommittedOffsets(group, topic->second, n->second, options_.kafka_timeout);
        if (!committed.ok()) continue;
        lag += LagOf(*end, *committed);
        known = true;
      }
      if (known) lags[b.id] = lag;
    }
  }
  absl::MutexLock lock(&mu_);
  partitions_ = *std::move(counts);
  if (options_.max_move_lag > 0) lags_ = std::move(lags);
}

void HandoffCoordinator::ExportMetrics() {
  if (metrics_ == nullptr) return;
  std::shared_ptr<const ServedSnapshot> current = manager_->Current();
  if (current == nullptr) return;
  int64_t switching = 0;
  int64_t draining = 0;
  absl::Time oldest = absl::InfiniteFuture();
  for (const Handoff& h : current->snapshot().handoffs()) {
    (h.state == HandoffPhase::kSwitching ? switching : draining)++;
    oldest = std::min(oldest, h.open_time);
  }
  const absl::Duration age = oldest == absl::InfiniteFuture()
                                 ? absl::ZeroDuration()
                                 : std::max(absl::ZeroDuration(), clock_->Now() - oldest);
  metrics_->SetHandoffs(switching, draining, age);
}

bool HandoffCoordinator::RunRound(int64_t epoch, absl::Time leader_since) {
  std::shared_ptr<const ServedSnapshot> current = manager_->Current();
  std::optional<std::vector<ClientState>> clients;  // read once per round, when needed
  for (const Handoff& h : current->snapshot().handoffs()) {
    if (Stopping()) return true;  // CoordinatorLoop sees stop_leader_ at once
    if (!Advance(h, epoch, leader_since, &clients)) return false;
  }
  return true;
}

void HandoffCoordinator::CoordinatorLoop(int64_t epoch, absl::Time leader_since) {
  for (;;) {
    if (!RunRound(epoch, leader_since)) {
      spdlog::warn("handoff coordinator: no longer the leader (epoch {}); stopping", epoch);
      return;
    }
    absl::MutexLock lock(&mu_);
    auto stop = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_leader_; };
    mu_.AwaitWithTimeout(absl::Condition(&stop), options_.poll_interval);
    if (stop_leader_) return;
  }
}

bool HandoffCoordinator::Advance(const Handoff& h, int64_t epoch, absl::Time leader_since,
                                 std::optional<std::vector<ClientState>>* clients) {
  const absl::Time now = clock_->Now();
  Handoff next = h;
  next.phase_time = now;
  if (now >= h.hold_deadline) {
    next.state = HandoffPhase::kForced;
    next.end_reason = absl::StrCat("max_hold: still ", HandoffPhaseName(h.state), " at ",
                                   absl::FormatTime(h.hold_deadline), " (--max_hold ",
                                   absl::FormatDuration(options_.max_hold), ")");
    return Commit(next, h.state, epoch, next.end_reason);
  }

  if (h.state == HandoffPhase::kSwitching) {
    if (!clients->has_value()) {
      absl::StatusOr<std::vector<ClientState>> listed = store_->ListClients(now);
      if (!listed.ok()) {
        RetryLater("handoff {}: cannot read the producers: {}", h.id, listed.status().ToString());
        return true;
      }
      *clients = *std::move(listed);
    }
    std::vector<std::string> missing;
    bool producer_leased = false;
    for (const ClientState& c : **clients) {
      if (c.role != kProducerRole) continue;
      producer_leased = true;
      if (c.drained_version < h.opened_version) missing.push_back(c.client_id);
    }
    // Just after taking over, a leased producer's last ACK may not be
    // flushed yet: judge nothing for one lease while any producer lease is
    // alive (see the header).
    if (producer_leased && now < leader_since + options_.client_lease) return true;
    std::sort(missing.begin(), missing.end());
    {
      absl::MutexLock lock(&mu_);
      live_[h.id].missing_producers = missing;
    }
    if (!missing.empty() && now < h.grace_deadline) return true;
    next.state = HandoffPhase::kDraining;
    next.missing_producers = missing;
    next.drain_index = 0;
    std::string reason =
        missing.empty() ? "every producer drained"
                        : absl::StrCat("grace deadline passed; producers missing the barrier: ",
                                       absl::StrJoin(missing, ", "));
    if (absl::Status s = StartRole(&next, now); !s.ok()) {
      RetryLater("handoff {}: cannot start draining: {}", h.id, s.ToString());
      return true;  // retried on the next round
    }
    return Commit(next, HandoffPhase::kSwitching, epoch,
                  absl::StrCat("handoff ", h.id, ": switch barrier passed (", reason, ")"));
  }

  // DRAINING
  if (next.drain_index >= static_cast<int32_t>(next.drains.size())) {
    Finish(&next, now);
    return Commit(next, HandoffPhase::kDraining, epoch,
                  absl::StrCat("handoff ", h.id, ": every role drained"));
  }
  RoleDrain& d = next.drains[next.drain_index];
  if (d.end_offsets.empty()) {
    if (absl::Status s = StartRole(&next, now); !s.ok()) {
      RetryLater("handoff {}: cannot read the drain point: {}", h.id, s.ToString());
      return true;
    }
    return Commit(next, HandoffPhase::kDraining, epoch,
                  absl::StrCat("handoff ", h.id, ": drain point of role ", d.role));
  }
  if (offsets_ == nullptr) {
    next.state = HandoffPhase::kForced;
    next.end_reason = "no kafka: no cluster is configured (--kafka_brokers); drains not verified";
    return Commit(next, HandoffPhase::kDraining, epoch, next.end_reason);
  }
  const int32_t now_partitions = CachedPartitions(d.topic);
  if (now_partitions > 0 && d.partition_count > 0 && now_partitions != d.partition_count) {
    next.state = HandoffPhase::kForced;
    next.end_reason =
        absl::StrCat("partition count of topic ", d.topic, " changed from ", d.partition_count,
                     " to ", now_partitions, " during the handoff");
    return Commit(next, HandoffPhase::kDraining, epoch, next.end_reason);
  }
  absl::StatusOr<std::vector<int64_t>> committed = offsets_->CommittedOffsets(
      d.consumer_group, d.topic, static_cast<int32_t>(d.end_offsets.size()),
      options_.kafka_timeout);
  if (!committed.ok()) {
    RetryLater("handoff {}: {}", h.id, committed.status().ToString());
    return true;
  }
  const int64_t lag = LagOf(d.end_offsets, *committed);
  {
    absl::MutexLock lock(&mu_);
    Live& live = live_[h.id];
    live.drain_index = next.drain_index;
    live.committed = *committed;
    live.lag = lag;
  }
  if (lag > 0) return true;
  d.committed_offsets = *committed;
  d.lag = 0;
  d.drained = true;
  const std::string role = d.role;
  ++next.drain_index;
  if (absl::Status s = StartRole(&next, now); !s.ok()) {
    RetryLater("handoff {}: cannot read the next drain point: {}", h.id, s.ToString());
    return true;
  }
  return Commit(next, HandoffPhase::kDraining, epoch,
                absl::StrCat("handoff ", h.id, ": role ", role, " drained"));
}

absl::Status HandoffCoordinator::StartRole(Handoff* next, absl::Time now) {
  while (next->drain_index < static_cast<int32_t>(next->drains.size())) {
    RoleDrain& d = next->drains[next->drain_index];
    if (d.consumer_group.empty()) {
      d.drained = true;  // no group: nothing to wait for
      ++next->drain_index;
      continue;
    }
    if (offsets_ == nullptr) {
      next->state = HandoffPhase::kForced;
      next->end_reason =
          "no kafka: no cluster is configured (--kafka_brokers); drains not verified";
      return absl::OkStatus();
    }
    int32_t n = CachedPartitions(d.topic);
    if (n == 0) {
      absl::StatusOr<std::map<std::string, int32_t>> counts =
          offsets_->PartitionCounts(options_.kafka_timeout);
      if (!counts.ok()) return counts.status();
      auto it = counts->find(d.topic);
      n = it == counts->end() ? 0 : it->second;
      absl::MutexLock lock(&mu_);
      partitions_ = *counts;
    }
    if (d.partition_count == 0) d.partition_count = n;
    if (n > 0 && n != d.partition_count) {
      next->state = HandoffPhase::kForced;
      next->end_reason = absl::StrCat("partition count of topic ", d.topic, " changed from ",
                                      d.partition_count, " to ", n, " during the handoff");
      return absl::OkStatus();
    }
    if (n == 0) {
      d.drained = true;  // the topic does not exist: nothing was produced
      ++next->drain_index;
      continue;
    }
    ASSIGN_OR_RETURN(d.end_offsets, offsets_->EndOffsets(d.topic, n, options_.kafka_timeout));
    if (AllZero(d.end_offsets)) {
      d.drained = true;
      d.committed_offsets.assign(n, -1);
      ++next->drain_index;
      continue;
    }
    d.lag = -1;  // unknown until the group's offsets are read
    return absl::OkStatus();
  }
  Finish(next, now);
  return absl::OkStatus();
}

void HandoffCoordinator::Finish(Handoff* next, absl::Time now) {
  next->phase_time = now;
  if (next->missing_producers.empty()) {
    next->state = HandoffPhase::kCompleted;
    return;
  }
  next->state = HandoffPhase::kForced;
  next->end_reason = absl::StrCat("grace: producers missed the switch barrier: ",
                                  absl::StrJoin(next->missing_producers, ", "));
}

bool HandoffCoordinator::Commit(const Handoff& next, HandoffPhase expected, int64_t epoch,
                                const std::string& reason) {
  WriteContext ctx;
  ctx.kind = "Handoff";
  ctx.actor = kActor;
  ctx.reason = reason.size() > 1024 ? reason.substr(0, 1024) : reason;
  ctx.leader_epoch = epoch;
  ctx.deadline = clock_->Now() + absl::Seconds(10);
  absl::StatusOr<WriteResult> result =
      manager_->Write(ctx, [&](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
        ASSIGN_OR_RETURN(Plan plan, PlanHandoffUpdate(before, next, expected));
        return PlannedWrite{std::move(plan), ""};
      });
  if (result.ok()) {
    spdlog::info("handoff {}: {} at version {} ({})", next.id, HandoffPhaseName(next.state),
                 result->version, reason);
    if (!next.open()) last_warning_.erase(next.id);
    absl::MutexLock lock(&mu_);
    if (!next.open()) live_.erase(next.id);
    return true;
  }
  const absl::Status& s = result.status();
  if (s.code() == absl::StatusCode::kFailedPrecondition &&
      absl::StrContains(s.message(), "not the leader")) {
    return false;
  }
  // Another writer moved it on (phase fence), or a transient failure: the
  // next round looks again.
  spdlog::warn("handoff {}: {} not committed: {}", next.id, HandoffPhaseName(next.state),
               s.ToString());
  return true;
}

}  // namespace bucketmap
