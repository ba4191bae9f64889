#include "server/outbox/outbox_relay.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bucketmap/v1/events.pb.h"
#include "google/protobuf/util/json_util.h"
#include "spdlog/spdlog.h"

namespace bucketmap {

absl::StatusOr<ChangesFormat> ParseChangesFormat(const std::string& text) {
  if (text == "protobuf") return ChangesFormat::kProtobuf;
  if (text == "json") return ChangesFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("changes_format: \"", text, "\" is neither protobuf nor json"));
}

const char* ContentType(ChangesFormat format) {
  return format == ChangesFormat::kJson ? "application/json" : "application/x-protobuf";
}

absl::StatusOr<std::string> EncodeChangeEvent(const OutboxRow& row, const std::string& cluster_id,
                                              ChangesFormat format) {
  v1::ChangeEvent event;
  event.set_version(row.version);
  event.set_cluster_id(cluster_id);
  const int64_t micros = absl::ToUnixMicros(row.created_at);
  event.mutable_commit_time()->set_seconds(micros / 1000000);
  event.mutable_commit_time()->set_nanos(static_cast<int32_t>(micros % 1000000) * 1000);
  event.set_kind(row.kind);
  event.set_actor(row.actor);
  event.set_reason(row.reason);
  event.set_request_id(row.request_id);
  v1::MappingDelta delta;
  if (!delta.ParseFromString(row.delta)) {
    return absl::InvalidArgumentError(
        absl::StrCat("delta: stored delta of version ", row.version, " does not parse"));
  }
  if (delta.handoffs_size() > 0) {
    // A handoff opened or changed phase at this version (SPEC §4): the
    // handoffs' full state, with the version's mapping change beside them.
    v1::HandoffChanged* handoff = event.mutable_handoff_changed();
    handoff->mutable_handoffs()->Swap(delta.mutable_handoffs());
    *handoff->mutable_delta() = std::move(delta);
  } else {
    v1::MappingChanged* changed = event.mutable_mapping_changed();
    *changed->mutable_delta() = std::move(delta);
    for (const v1::Bucket& bucket : changed->delta().buckets()) {
      changed->add_changed_bucket_ids(bucket.id());
    }
  }
  std::string out;
  if (format == ChangesFormat::kJson) {
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    const auto status = google::protobuf::util::MessageToJsonString(event, &out, options);
    if (!status.ok()) {
      return absl::InternalError(
          absl::StrCat("version ", row.version, ": JSON encoding failed: ", status.ToString()));
    }
  } else {
    out = event.SerializeAsString();
  }
  return out;
}

OutboxRelay::OutboxRelay(Store* store, EventPublisher* publisher, Metrics* metrics,
                         OutboxRelayOptions options, const Clock* clock)
    : store_(store),
      publisher_(publisher),
      metrics_(metrics),
      clock_(clock),
      options_(std::move(options)) {}

OutboxRelay::~OutboxRelay() { Stop(absl::ZeroDuration()); }

void OutboxRelay::Start() {
  absl::MutexLock lock(&mu_);
  if (started_) return;
  started_ = true;
  thread_ = std::thread([this] { Loop(); });
}

void OutboxRelay::Notify() {
  absl::MutexLock lock(&mu_);
  wake_ = true;
}

void OutboxRelay::Stop(absl::Duration flush_timeout) {
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
    flush_timeout_ = flush_timeout;
  }
  if (thread_.joinable()) thread_.join();
}

int64_t OutboxRelay::delivered_version() const {
  absl::MutexLock lock(&mu_);
  return delivered_;
}

int64_t OutboxRelay::marked_version() const {
  absl::MutexLock lock(&mu_);
  return marked_;
}

void OutboxRelay::OnDelivery(uint64_t generation, int64_t version, const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  if (generation != generation_) return;  // a session already reset
  if (!status.ok()) {
    // Records the publisher drops at Close(): not an error, and nothing
    // will be sent again by this relay.
    if (stop_) return;
    // With the gapless guarantee nothing after this record can be
    // delivered by this session: start over from the watermark.
    if (!reset_needed_) {
      spdlog::warn("outbox: version {} not delivered ({}); resending from version {}", version,
                   status.ToString(), delivered_ + 1);
      if (metrics_ != nullptr) metrics_->RecordOutboxPublishError();
    }
    reset_needed_ = true;
    return;
  }
  // Versions were sent in ascending order; reports normally come in the
  // same order, but the watermark does not depend on it.
  auto it = std::lower_bound(in_flight_.begin(), in_flight_.end(), version,
                             [](const Sent& s, int64_t v) { return s.version < v; });
  if (it == in_flight_.end() || it->version != version) return;
  it->delivered = true;
  while (!in_flight_.empty() && in_flight_.front().delivered) {
    delivered_ = in_flight_.front().version;
    in_flight_.pop_front();
  }
}

void OutboxRelay::Loop() {
  for (;;) {
    bool stopping = false;
    bool reset = false;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || wake_ || reset_needed_ || delivered_ - marked_ >= options_.mark_batch ||
               (more_ && static_cast<int>(in_flight_.size()) < options_.max_in_flight / 2);
      };
      const absl::Duration wait =
          delivered_ > marked_ ? options_.mark_interval : options_.poll_interval;
      mu_.AwaitWithTimeout(absl::Condition(&ready), wait);
      stopping = stop_;
      reset = reset_needed_ && !stopping;
      wake_ = false;
    }
    if (stopping) break;
    if (reset) {
      {
        // First, so the reports of the records Reset() drops are ignored.
        absl::MutexLock lock(&mu_);
        ++generation_;
      }
      absl::Status s = publisher_->Reset();
      absl::MutexLock lock(&mu_);
      if (s.ok()) {
        reset_needed_ = false;
        in_flight_.clear();
        sent_ = delivered_;  // resend everything after the watermark
        wake_ = true;
      } else {
        spdlog::warn("outbox: publisher reset failed: {}", s.ToString());
        mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.retry_delay);
        continue;
      }
    }
    MaybeMark(/*force=*/false);
    bool more = PublishSome();
    {
      absl::MutexLock lock(&mu_);
      more_ = more;
      if (more && static_cast<int>(in_flight_.size()) < options_.max_in_flight) wake_ = true;
    }
    if (clock_->Now() >= next_stats_) RefreshStats();
  }

  // Shutdown: give outstanding records a bounded time, then record what
  // was delivered so a restart resends as little as possible.
  absl::Duration flush_timeout;
  {
    absl::MutexLock lock(&mu_);
    flush_timeout = flush_timeout_;
  }
  if (absl::Status s = publisher_->Flush(flush_timeout); !s.ok()) {
    spdlog::warn("outbox: stopping with records outstanding: {}", s.ToString());
  }
  MaybeMark(/*force=*/true);
}

bool OutboxRelay::PublishSome() {
  int64_t after = 0;
  int room = 0;
  uint64_t generation = 0;
  {
    absl::MutexLock lock(&mu_);
    if (reset_needed_) return false;
    after = sent_;
    room =
        std::min(options_.batch_size, options_.max_in_flight - static_cast<int>(in_flight_.size()));
    generation = generation_;
  }
  if (after < 0) {
    // Start point: after the last published version; earlier rows are
    // all published (they are marked in version order).
    absl::StatusOr<OutboxStats> stats = store_->GetOutboxStats();
    if (!stats.ok()) {
      spdlog::warn("outbox: cannot read the outbox: {}", stats.status().ToString());
      return false;
    }
    absl::MutexLock lock(&mu_);
    sent_ = delivered_ = marked_ = after = stats->last_published_version;
  }
  if (room <= 0) return true;
  absl::StatusOr<std::vector<OutboxRow>> rows = store_->LoadUnpublished(after, room);
  if (!rows.ok()) {
    spdlog::warn("outbox: cannot read the outbox: {}", rows.status().ToString());
    return false;
  }
  for (const OutboxRow& row : *rows) {
    absl::StatusOr<std::string> value =
        EncodeChangeEvent(row, options_.cluster_id, options_.format);
    if (!value.ok()) {
      // Skipping would leave a hole every consumer would wait on forever:
      // stop here, loudly, and try again later.
      spdlog::error("outbox: cannot encode version {}: {}", row.version, value.status().ToString());
      if (metrics_ != nullptr) metrics_->RecordOutboxPublishError();
      return false;
    }
    {
      // Registered before Publish: the report may come before it returns.
      absl::MutexLock lock(&mu_);
      if (generation != generation_ || reset_needed_) return false;
      in_flight_.push_back(Sent{row.version, false});
      sent_ = row.version;
    }
    std::vector<EventHeader> headers = {
        {kVersionHeader, absl::StrCat(row.version)},
        {kContentTypeHeader, ContentType(options_.format)},
    };
    const int64_t version = row.version;
    absl::Status s =
        publisher_->Publish(version, kChangesKey, *std::move(value), std::move(headers),
                            [this, generation, version](const absl::Status& status) {
                              OnDelivery(generation, version, status);
                            });
    if (!s.ok()) {
      absl::MutexLock lock(&mu_);
      if (generation != generation_) return false;
      // Not queued: take it back, and everything is resent from here.
      in_flight_.pop_back();
      sent_ = version - 1;
      if (s.code() == absl::StatusCode::kResourceExhausted) {
        // Local queue full: wait for deliveries and carry on.
        return true;
      }
      spdlog::warn("outbox: cannot publish version {}: {}", version, s.ToString());
      if (metrics_ != nullptr) metrics_->RecordOutboxPublishError();
      reset_needed_ = true;
      return false;
    }
  }
  return static_cast<int>(rows->size()) == room;
}

void OutboxRelay::MaybeMark(bool force) {
  int64_t up_to = 0;
  {
    absl::MutexLock lock(&mu_);
    if (delivered_ <= marked_) return;
    if (!force && delivered_ - marked_ < options_.mark_batch &&
        clock_->Now() - last_mark_ < options_.mark_interval) {
      return;
    }
    up_to = delivered_;
  }
  absl::Status s = store_->MarkPublished(up_to, options_.leader_epoch);
  absl::MutexLock lock(&mu_);
  last_mark_ = clock_->Now();
  if (!s.ok()) {
    // Only costs duplicates if we crash before the next attempt.
    spdlog::warn("outbox: cannot mark versions up to {} published: {}", up_to, s.ToString());
    return;
  }
  marked_ = std::max(marked_, up_to);
  if (metrics_ != nullptr) metrics_->SetOutboxLastPublished(marked_);
}

void OutboxRelay::RefreshStats() {
  next_stats_ = clock_->Now() + std::min(options_.poll_interval, absl::Seconds(1));
  absl::StatusOr<OutboxStats> stats = store_->GetOutboxStats();
  if (!stats.ok() || metrics_ == nullptr) return;
  metrics_->SetOutboxStats(stats->backlog, stats->oldest_age, stats->last_published_version);
}

}  // namespace bucketmap
