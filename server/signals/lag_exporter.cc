#include "server/signals/lag_exporter.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace bucketmap {
namespace {

// A reading kept from an earlier round stays valid this many intervals.
constexpr int kFreshIntervals = 3;

}  // namespace

LagExporter::LagExporter(MappingManager* manager, Store* store,
                         std::shared_ptr<OffsetReader> offsets, Metrics* metrics,
                         LagOptions options, const Clock* clock)
    : manager_(manager),
      store_(store),
      offsets_(std::move(offsets)),
      metrics_(metrics),
      options_(options),
      clock_(clock) {}

LagExporter::~LagExporter() { Stop(); }

void LagExporter::Start() {
  if (options_.interval <= absl::ZeroDuration()) return;
  absl::MutexLock lock(&mu_);
  if (stop_ != nullptr) return;
  stop_ = std::make_unique<absl::Notification>();
  thread_ = std::thread([this] { Loop(); });
}

void LagExporter::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stop_ == nullptr) return;
    stop_->Notify();
  }
  thread_.join();
  {
    absl::MutexLock lock(&mu_);
    stop_.reset();
  }
  // A replica that no longer leads exports no lag at all.
  last_.clear();
  if (metrics_ != nullptr) metrics_->SetBucketLags({});
}

void LagExporter::Loop() {
  absl::Notification* stop;
  {
    absl::MutexLock lock(&mu_);
    stop = stop_.get();
  }
  while (!stop->HasBeenNotified()) {
    const absl::Time start = clock_->Now();
    RunRound();
    // A round that overran starts the next one at once, never two.
    const absl::Duration wait = options_.interval - (clock_->Now() - start);
    stop->WaitForNotificationWithTimeout(std::max(wait, absl::ZeroDuration()));
  }
}

LagReading LagExporter::Read(const Target& t, int32_t partitions, absl::Time deadline,
                             int64_t* partitions_read) {
  LagReading r;
  r.bucket_id = t.bucket_id;
  r.role = t.role;
  r.consumer_group = t.group;
  auto fail = [&](const absl::Status& s) {
    r.up = false;
    r.error = std::string(s.message());
    r.read_at = clock_->Now();
    return r;
  };
  auto timeout = [&] { return std::min(options_.read_timeout, deadline - clock_->Now()); };
  *partitions_read += partitions;
  absl::StatusOr<std::vector<Watermarks>> marks =
      offsets_->PartitionWatermarks(t.topic, partitions, timeout());
  if (!marks.ok()) return fail(marks.status());
  absl::StatusOr<std::vector<int64_t>> committed =
      offsets_->CommittedOffsets(t.group, t.topic, partitions, timeout());
  if (!committed.ok()) return fail(committed.status());
  int64_t messages = 0;
  std::vector<PartitionOffset> lagging;
  for (int32_t p = 0; p < partitions; ++p) {
    const Watermarks& m = (*marks)[p];
    // Never committed: from the earliest offset kept. Committed below it
    // (retention deleted the rest): what is kept is all that is left.
    const int64_t from = std::max((*committed)[p], m.low);
    if (m.high > from) {
      messages += m.high - from;
      lagging.push_back({p, from});
    }
  }
  double seconds = 0;
  if (!lagging.empty()) {
    absl::StatusOr<std::vector<int64_t>> ts =
        offsets_->MessageTimestamps(t.topic, lagging, timeout());
    if (!ts.ok()) return fail(ts.status());
    const int64_t now_ms = absl::ToUnixMillis(clock_->Now());
    for (size_t i = 0; i < ts->size(); ++i) {
      if ((*ts)[i] < 0) {
        return fail(absl::UnavailableError(absl::StrCat(t.topic, "[", lagging[i].partition, "]@",
                                                        lagging[i].offset, ": no timestamp")));
      }
      seconds = std::max(seconds, static_cast<double>(now_ms - (*ts)[i]) / 1000.0);
    }
    // A positive lag never reads as "no lag", whatever the clocks say.
    seconds = std::max(seconds, 0.001);
  }
  r.up = true;
  r.messages = messages;
  r.seconds = seconds;
  r.read_at = clock_->Now();
  return r;
}

std::vector<LagReading> LagExporter::RunRound() {
  const absl::Time start = clock_->Now();
  const absl::Time deadline = start + options_.interval;
  std::shared_ptr<const ServedSnapshot> served = manager_->Current();
  std::vector<Target> targets;
  for (const Bucket& b : served->snapshot().buckets()) {
    if (b.state == BucketState::kRetired) continue;
    for (const auto& [role, group] : b.consumer_groups) {
      auto topic = b.topics.find(role);
      if (topic == b.topics.end() || group.empty()) continue;
      targets.push_back({b.id, b.name, role, group, topic->second});
    }
  }
  std::map<std::tuple<int32_t, std::string>, LagReading> next;
  int64_t partitions_read = 0;
  absl::Status cluster;
  std::map<std::string, int32_t> counts;
  if (offsets_ == nullptr) {
    cluster = absl::UnavailableError("no Kafka cluster (--kafka_brokers is empty)");
  } else if (!targets.empty()) {
    absl::StatusOr<std::map<std::string, int32_t>> c =
        offsets_->PartitionCounts(std::min(options_.read_timeout, options_.interval));
    if (c.ok()) {
      counts = *std::move(c);
    } else {
      cluster = c.status();
    }
  }
  const size_t n = targets.size();
  size_t read = 0;  // targets taken in turn from cursor_
  for (; read < n && cluster.ok(); ++read) {
    const Target& t = targets[(cursor_ + read) % n];
    auto count = counts.find(t.topic);
    if (count == counts.end()) {
      LagReading r;
      r.bucket_id = t.bucket_id;
      r.role = t.role;
      r.consumer_group = t.group;
      r.error = absl::StrCat("topic ", t.topic, " not found");
      r.read_at = clock_->Now();
      next[{t.bucket_id, t.role}] = r;
      continue;
    }
    // The budget and the deadline end the round; the first group is read
    // whatever its size, so that the rotation always moves.
    if (read > 0 &&
        (partitions_read + count->second > options_.max_partitions || clock_->Now() >= deadline)) {
      break;
    }
    next[{t.bucket_id, t.role}] = Read(t, count->second, deadline, &partitions_read);
  }
  if (n > 0) cursor_ = (cursor_ + read) % n;
  // Groups this round did not reach: their last reading while fresh.
  const absl::Time now = clock_->Now();
  for (const Target& t : targets) {
    const std::tuple<int32_t, std::string> key{t.bucket_id, t.role};
    if (next.count(key) > 0) continue;
    auto last = last_.find(key);
    if (cluster.ok() && last != last_.end() && last->second.consumer_group == t.group &&
        now - last->second.read_at < kFreshIntervals * options_.interval) {
      next[key] = last->second;
      continue;
    }
    LagReading r;
    r.bucket_id = t.bucket_id;
    r.role = t.role;
    r.consumer_group = t.group;
    r.error = cluster.ok() ? "not read: over --lag_max_partitions or the round's deadline"
                           : std::string(cluster.message());
    r.read_at = now;
    next[key] = r;
  }
  last_ = next;
  std::vector<LagReading> readings;
  std::vector<Metrics::BucketLag> lags;
  std::map<int32_t, std::string> names;
  for (const Target& t : targets) names[t.bucket_id] = t.bucket;
  for (const auto& [key, r] : next) {
    readings.push_back(r);
    lags.push_back(
        {r.bucket_id, names[r.bucket_id], r.role, r.consumer_group, r.up, r.messages, r.seconds});
  }
  if (metrics_ != nullptr) {
    metrics_->SetBucketLags(lags);
    metrics_->SetLagRound(clock_->Now() - start, partitions_read);
  }
  if (absl::Status s = store_->SaveLagReadings(readings); !s.ok()) {
    spdlog::warn("lag exporter: saving readings: {}", s.ToString());
  }
  return readings;
}

}  // namespace bucketmap
