#include "server/signals/load_signals.h"

#include <algorithm>
#include <utility>

#include "spdlog/spdlog.h"

namespace bucketmap {
namespace {

// A lag reading older than this many exporter intervals is unknown.
constexpr int kFreshLagIntervals = 3;

}  // namespace

LoadAggregator::LoadAggregator(Store* store, Metrics* metrics, LoadOptions options,
                               const Clock* clock)
    : store_(store), metrics_(metrics), options_(options), clock_(clock) {}

LoadAggregator::~LoadAggregator() { Stop(); }

void LoadAggregator::Start() {
  absl::MutexLock lock(&thread_mu_);
  if (stop_ != nullptr) return;
  stop_ = std::make_unique<absl::Notification>();
  thread_ = std::thread([this] { Loop(); });
}

void LoadAggregator::Stop() {
  {
    absl::MutexLock lock(&thread_mu_);
    if (stop_ == nullptr) return;
    stop_->Notify();
  }
  thread_.join();
  {
    absl::MutexLock lock(&thread_mu_);
    stop_.reset();
  }
  if (absl::Status s = Flush(); !s.ok()) {
    spdlog::warn("load: last flush at shutdown failed: {}", s.ToString());
  }
}

void LoadAggregator::Loop() {
  absl::Notification* stop;
  {
    absl::MutexLock lock(&thread_mu_);
    stop = stop_.get();
  }
  while (!stop->WaitForNotificationWithTimeout(options_.flush_interval)) {
    if (absl::Status s = Flush(); !s.ok()) {
      spdlog::debug("load: flush failed (retried with the next): {}", s.ToString());
    }
  }
}

void LoadAggregator::Add(const LoadReport& report) {
  std::map<LoadKey, LoadRate> rates;
  ContributionsOf(report, options_.config.window, &rates);
  const int64_t slot = LoadSlotOf(clock_->Now(), options_.config.window);
  absl::MutexLock lock(&mu_);
  std::map<LoadKey, LoadRate>& window = pending_[slot];
  for (const auto& [key, rate] : rates) {
    auto it = window.find(key);
    if (it != window.end()) {
      it->second += rate;
    } else if (pending_keys_ < options_.max_pending_keys) {
      window.emplace(key, rate);
      ++pending_keys_;
    } else {
      // Full: the rate still counts, for no team.
      auto [other, added] = window.try_emplace(LoadKey{LoadKind::kUnattributed, 0});
      other->second += rate;
      if (added) ++pending_keys_;
    }
  }
}

absl::Status LoadAggregator::Flush() {
  absl::MutexLock flush(&flush_mu_);
  LoadSlots slots;
  {
    absl::MutexLock lock(&mu_);
    slots.swap(pending_);
    pending_keys_ = 0;
  }
  const int64_t fold_through =
      LoadSlotOf(clock_->Now() - 2 * options_.flush_interval, options_.config.window) - 1;
  absl::Status s = store_->AddLoad(options_.config, slots, fold_through, options_.min_rate);
  if (s.ok()) return s;
  if (metrics_ != nullptr) metrics_->RecordLoadFlushError();
  // Keep them for the next flush; what arrived meanwhile merges in.
  absl::MutexLock lock(&mu_);
  for (auto& [slot, rates] : slots) {
    std::map<LoadKey, LoadRate>& window = pending_[slot];
    for (const auto& [key, rate] : rates) {
      auto [it, added] = window.try_emplace(key);
      it->second += rate;
      if (added) ++pending_keys_;
    }
  }
  return s;
}

SignalsReader::SignalsReader(Store* store, SignalsOptions options, const Clock* clock)
    : store_(store), options_(options), clock_(clock) {}

absl::StatusOr<std::shared_ptr<const LoadRates>> SignalsReader::Rates() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  if (rates_ != nullptr && now - rates_at_ < options_.cache_ttl) return rates_;
  absl::StatusOr<LoadTable> table = store_->LoadLoadTable();
  if (!table.ok()) return table.status();
  rates_ = std::make_shared<const LoadRates>(RatesOf(*table));
  rates_at_ = now;
  return rates_;
}

absl::StatusOr<std::shared_ptr<const std::vector<LagReading>>> SignalsReader::Lag() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  if (lag_ != nullptr && now - lag_at_ < options_.cache_ttl) return lag_;
  absl::StatusOr<std::vector<LagReading>> readings = store_->LoadLagReadings();
  if (!readings.ok()) return readings.status();
  for (LagReading& r : *readings) {
    if (r.up && now - r.read_at > kFreshLagIntervals * options_.lag_interval) {
      // The leader stopped reading (gone, or cut off from Kafka and the
      // database): the last numbers are not the lag now.
      r.up = false;
      r.error = "stale: no reading in the last " +
                absl::FormatDuration(kFreshLagIntervals * options_.lag_interval);
    }
  }
  lag_ = std::make_shared<const std::vector<LagReading>>(*std::move(readings));
  lag_at_ = now;
  return lag_;
}

}  // namespace bucketmap
