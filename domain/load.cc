#include "domain/load.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace bucketmap {
namespace {

absl::Status Invalid(const std::string& field, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("load.", field, ": ", why));
}

// Checks one count column against its id column and the per-window bound.
absl::Status CheckColumn(const std::string& name, const std::vector<int64_t>& column, size_t ids,
                         int64_t max_each, int64_t* sum) {
  if (!column.empty() && column.size() != ids) {
    return Invalid(name, absl::StrCat("has ", column.size(), " entries; must be empty or ", ids,
                                      ", parallel to its ids"));
  }
  for (size_t i = 0; i < column.size(); ++i) {
    if (column[i] < 0) return Invalid(absl::StrCat(name, "[", i, "]"), "must not be negative");
    if (column[i] > max_each) {
      return Invalid(
          absl::StrCat(name, "[", i, "]"),
          absl::StrCat(column[i], " is not plausible in the window (at most ", max_each, ")"));
    }
    *sum += column[i];  // <= 1000 * max_each: no overflow
  }
  return absl::OkStatus();
}

template <typename Id>
absl::Status CheckIds(const std::string& name, const std::vector<Id>& ids) {
  if (ids.size() > static_cast<size_t>(kMaxLoadReportTeams)) {
    return Invalid(name, absl::StrCat(ids.size(), " entries; at most ", kMaxLoadReportTeams));
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 1) return Invalid(absl::StrCat(name, "[", i, "]"), "ids are at least 1");
    if (i > 0 && ids[i] <= ids[i - 1]) {
      return Invalid(absl::StrCat(name, "[", i, "]"), "must be ascending and unique");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateLoadReport(const LoadReport& r, LoadReporter reporter) {
  if (r.window_ms < kMinLoadWindowMs || r.window_ms > kMaxLoadWindowMs) {
    return Invalid("window_ms", absl::StrCat(r.window_ms, " is outside ", kMinLoadWindowMs, "..",
                                             kMaxLoadWindowMs));
  }
  const int64_t max_events = r.window_ms * kMaxEventsPerMs;
  const int64_t max_processing_us = r.window_ms * 1000 * kMaxBusyCores;
  if (reporter == LoadReporter::kProducer) {
    if (!r.processing_us.empty() || r.other_processing_us != 0 ||
        !r.other_bucket_processing_us.empty()) {
      return Invalid("processing_us", "producers report events, not processing time");
    }
  } else if (!r.events.empty() || r.other_events != 0 || !r.other_bucket_events.empty()) {
    return Invalid("events", "consumers report processing time, not events");
  }
  if (absl::Status s = CheckIds("team_ids", r.team_ids); !s.ok()) return s;
  if (absl::Status s = CheckIds("other_bucket_ids", r.other_bucket_ids); !s.ok()) return s;
  int64_t events = 0;
  int64_t processing = 0;
  if (absl::Status s = CheckColumn("events", r.events, r.team_ids.size(), max_events, &events);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckColumn("processing_us", r.processing_us, r.team_ids.size(),
                                   max_processing_us, &processing);
      !s.ok()) {
    return s;
  }
  if (r.other_events < 0 || r.other_events > max_events) {
    return Invalid("other_events", "must be 0.." + std::to_string(max_events));
  }
  if (r.other_processing_us < 0 || r.other_processing_us > max_processing_us) {
    return Invalid("other_processing_us", "must be 0.." + std::to_string(max_processing_us));
  }
  int64_t other_events = 0;
  int64_t other_processing = 0;
  if (absl::Status s = CheckColumn("other_bucket_events", r.other_bucket_events,
                                   r.other_bucket_ids.size(), max_events, &other_events);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckColumn("other_bucket_processing_us", r.other_bucket_processing_us,
                                   r.other_bucket_ids.size(), max_processing_us, &other_processing);
      !s.ok()) {
    return s;
  }
  if (other_events > r.other_events) {
    return Invalid("other_bucket_events", "sum above other_events");
  }
  if (other_processing > r.other_processing_us) {
    return Invalid("other_bucket_processing_us", "sum above other_processing_us");
  }
  // The whole window, not only each team, must stay plausible.
  if (events + r.other_events > max_events) {
    return Invalid("events", "the window's total is not plausible");
  }
  if (processing + r.other_processing_us > max_processing_us) {
    return Invalid("processing_us", "the window's total is not plausible");
  }
  return absl::OkStatus();
}

int64_t LoadSlotOf(absl::Time t, absl::Duration window) {
  const int64_t ms = absl::ToUnixMillis(t);
  const int64_t w = std::max<int64_t>(1, absl::ToInt64Milliseconds(window));
  return ms >= 0 ? ms / w : -((-ms + w - 1) / w);
}

absl::Time LoadSlotStart(int64_t slot, absl::Duration window) {
  return absl::FromUnixMillis(slot * absl::ToInt64Milliseconds(window));
}

double LoadDecay(const LoadConfig& config) {
  return std::pow(0.5, absl::FDivDuration(config.window, config.half_life));
}

void ContributionsOf(const LoadReport& r, absl::Duration load_window,
                     std::map<LoadKey, LoadRate>* into) {
  const double seconds =
      std::max(static_cast<double>(r.window_ms) / 1000.0, absl::ToDoubleSeconds(load_window));
  for (size_t i = 0; i < r.team_ids.size(); ++i) {
    LoadRate rate;
    if (!r.events.empty()) rate.events = static_cast<double>(r.events[i]) / seconds;
    if (!r.processing_us.empty()) rate.processing = r.processing_us[i] / 1e6 / seconds;
    (*into)[{LoadKind::kTeam, r.team_ids[i]}] += rate;
  }
  int64_t events_left = r.other_events;
  int64_t processing_left = r.other_processing_us;
  for (size_t i = 0; i < r.other_bucket_ids.size(); ++i) {
    LoadRate rate;
    if (!r.other_bucket_events.empty()) {
      rate.events = static_cast<double>(r.other_bucket_events[i]) / seconds;
      events_left -= r.other_bucket_events[i];
    }
    if (!r.other_bucket_processing_us.empty()) {
      rate.processing = r.other_bucket_processing_us[i] / 1e6 / seconds;
      processing_left -= r.other_bucket_processing_us[i];
    }
    (*into)[{LoadKind::kBucketOther, r.other_bucket_ids[i]}] += rate;
  }
  if (events_left > 0 || processing_left > 0) {
    (*into)[{LoadKind::kUnattributed, 0}] +=
        LoadRate{static_cast<double>(events_left) / seconds, processing_left / 1e6 / seconds};
  }
}

LoadRates RatesOf(const LoadTable& table) {
  LoadRates out;
  out.config = table.config;
  if (table.first_slot < 0 || table.folded_through < table.first_slot) return out;
  out.windows = table.folded_through - table.first_slot + 1;
  out.as_of = LoadSlotStart(table.folded_through + 1, table.config.window);
  const double decay = LoadDecay(table.config);
  const double norm = 1.0 - std::pow(decay, static_cast<double>(out.windows));
  for (const LoadRow& row : table.rows) {
    const double f =
        std::pow(decay,
                 static_cast<double>(std::max<int64_t>(0, table.folded_through - row.slot))) /
        norm;
    const LoadRate rate{row.value.events * f, row.value.processing * f};
    switch (row.key.kind) {
      case LoadKind::kTeam:
        out.teams[row.key.id] += rate;
        break;
      case LoadKind::kBucketOther:
        out.bucket_other[static_cast<int32_t>(row.key.id)] += rate;
        break;
      case LoadKind::kUnattributed:
        out.unattributed += rate;
        break;
    }
  }
  return out;
}

std::vector<BucketLoadView> BucketLoads(const Snapshot& snapshot, const LoadRates& rates,
                                        size_t top_teams, LoadRate* unattributed) {
  *unattributed = rates.unattributed;
  std::map<int32_t, size_t> index;
  std::vector<BucketLoadView> out;
  std::map<std::string, int64_t, std::less<>> pool_weight;
  for (const Bucket& b : snapshot.buckets()) {
    index[b.id] = out.size();
    BucketLoadView view;
    view.bucket_id = b.id;
    out.push_back(std::move(view));
    if (IsPlaceable(b.state)) pool_weight[b.pool] += b.weight;
  }
  std::vector<std::vector<std::pair<int64_t, LoadRate>>> teams(out.size());
  for (const auto& [team, rate] : rates.teams) {
    const Route route = snapshot.RouteOf(team);
    auto it = index.find(route.bucket_id);
    if (!route.routable() || it == index.end()) {
      *unattributed += rate;
      continue;
    }
    out[it->second].rate += rate;
    out[it->second].teams_with_load++;
    teams[it->second].emplace_back(team, rate);
  }
  for (const auto& [bucket, rate] : rates.bucket_other) {
    auto it = index.find(bucket);
    if (it == index.end()) {
      *unattributed += rate;
    } else {
      out[it->second].rate += rate;
    }
  }
  std::map<std::string, double, std::less<>> pool_events;
  for (size_t i = 0; i < out.size(); ++i) {
    pool_events[snapshot.buckets()[i].pool] += out[i].rate.events;
  }
  for (size_t i = 0; i < out.size(); ++i) {
    const Bucket& b = snapshot.buckets()[i];
    if (IsPlaceable(b.state) && pool_weight[b.pool] > 0) {
      out[i].weight_share = static_cast<double>(b.weight) / pool_weight[b.pool];
    }
    const double total = pool_events[b.pool];
    if (total > 0) out[i].event_share = out[i].rate.events / total;
    std::vector<std::pair<int64_t, LoadRate>>& list = teams[i];
    const size_t n = std::min(top_teams, list.size());
    std::partial_sort(list.begin(), list.begin() + n, list.end(), [](const auto& a, const auto& b) {
      if (a.second.events != b.second.events) {
        return a.second.events > b.second.events;
      }
      if (a.second.processing != b.second.processing) {
        return a.second.processing > b.second.processing;
      }
      return a.first < b.first;
    });
    list.resize(n);
    out[i].top_teams = std::move(list);
  }
  return out;
}

}  // namespace bucketmap
