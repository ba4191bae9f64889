#include "bucketmap/load_counter.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/time/clock.h"
#include "bucketmap/client.h"

namespace bucketmap {
namespace {

size_t RoundUpPow2(size_t n, size_t min = 16) {
  size_t p = min;
  while (p < n) p <<= 1;
  return p;
}

int Log2(size_t p) {
  int bits = 0;
  while ((size_t{1} << bits) < p) ++bits;
  return bits;
}

}  // namespace

LoadCounter::LoadCounter() : LoadCounter(Options()) {}

LoadCounter::LoadCounter(Options options)
    : options_(options),
      mask_(RoundUpPow2(options.capacity) - 1),
      shift_(64 - Log2(RoundUpPow2(options.capacity))),
      stripe_mask_(RoundUpPow2(options.stripes, 1) - 1),
      slots_(new Slot[RoundUpPow2(options.capacity) * (stripe_mask_ + 1)]),
      idle_(RoundUpPow2(options.capacity) * (stripe_mask_ + 1), 0) {}

uint32_t LoadCounter::NewStripe() {
  static std::atomic<uint32_t> next{0};
  // Never 0: that means "not given yet".
  return (next.fetch_add(1, std::memory_order_relaxed) & 0xffff) + 1;
}

absl::Time LoadCounter::Now() const {
  return options_.clock != nullptr ? options_.clock() : absl::Now();
}

void LoadCounter::MarkStarted() {
  // The first thread here sets the time; the flag is set after it. Both
  // sequentially consistent (this runs once per thread at most, before
  // the flag is seen): a reporter that sees the flag sees the time.
  int64_t unset = 0;
  first_event_ms_.compare_exchange_strong(unset, absl::ToUnixMillis(Now()));
  started_.store(true);
}

absl::Time LoadCounter::NextReport(absl::Time after) const {
  const int64_t w = std::max<int64_t>(1, absl::ToInt64Milliseconds(options_.window));
  int64_t earliest = absl::ToUnixMillis(after);
  if (window_start_ == absl::InfinitePast() && started_.load()) {
    // The first window lasts at least one window from the first event.
    earliest = std::max(earliest, first_event_ms_.load() + w);
  }
  // The first t >= earliest + 1 ms with t mod w == w / 2.
  int64_t t = ((earliest - w / 2) / w) * w + w / 2;
  while (t <= earliest) t += w;
  return absl::FromUnixMillis(t);
}

bool LoadCounter::TakeReport(absl::Time now, const MappingView* view, bool consumer,
                             LoadReport* out) {
  struct Counted {
    int64_t team;
    int64_t events;
    int64_t processing_us;
  };
  if (window_start_ == absl::InfinitePast() && started_.load() &&
      now < absl::FromUnixMillis(first_event_ms_.load()) + options_.window) {
    // The first window is not over: it lasts at least one window from the
    // first event (a reporter may have been asked before that event).
    return false;
  }
  std::vector<Counted> counted;
  for (size_t i = 0; i < idle_.size(); ++i) {
    Slot& slot = slots_[i];
    const int64_t team = slot.team.load(std::memory_order_relaxed);
    if (team == 0) continue;
    const int64_t e = slot.events.exchange(0, std::memory_order_relaxed);
    const int64_t p = slot.processing_us.exchange(0, std::memory_order_relaxed);
    if (e != 0 || p != 0) {
      counted.push_back({team, e, p});
      idle_[i] = 0;
      continue;
    }
    if (++idle_[i] < 2) continue;
    // Idle for two windows: give the slot back. What a racing thread adds
    // between the exchange above and this is picked up here.
    idle_[i] = 0;
    slot.team.store(0, std::memory_order_relaxed);
    const int64_t late_e = slot.events.exchange(0, std::memory_order_relaxed);
    const int64_t late_p = slot.processing_us.exchange(0, std::memory_order_relaxed);
    if (late_e != 0 || late_p != 0) counted.push_back({team, late_e, late_p});
  }
  int64_t other_events = other_events_.exchange(0, std::memory_order_relaxed);
  int64_t other_processing = other_processing_us_.exchange(0, std::memory_order_relaxed);
  if (counted.empty() && other_events == 0 && other_processing == 0) {
    // Nothing in this window: the next one starts now (or, before the
    // first event, at it).
    if (started_.load()) window_start_ = now;
    return false;
  }
  if (window_start_ == absl::InfinitePast()) {
    // Something was counted, so its thread had set the time just before;
    // should the store not be visible yet (the counts are relaxed), one
    // window is the best guess.
    const int64_t first = started_.load() ? first_event_ms_.load() : 0;
    window_start_ = first > 0 ? absl::FromUnixMillis(first) : now - options_.window;
  }
  // A team drained twice above (its slot given back with a late count)
  // is merged.
  std::sort(counted.begin(), counted.end(),
            [](const Counted& a, const Counted& b) { return a.team < b.team; });
  size_t merged = 0;
  for (size_t i = 0; i < counted.size(); ++i) {
    if (merged > 0 && counted[merged - 1].team == counted[i].team) {
      counted[merged - 1].events += counted[i].events;
      counted[merged - 1].processing_us += counted[i].processing_us;
    } else {
      counted[merged++] = counted[i];
    }
  }
  counted.resize(merged);
  const size_t top =
      std::min<size_t>(counted.size(), std::clamp(options_.top_teams, 0, kMaxLoadReportTeams));
  auto heavier = [consumer](const Counted& a, const Counted& b) {
    const int64_t x = consumer ? a.processing_us : a.events;
    const int64_t y = consumer ? b.processing_us : b.events;
    return x != y ? x > y : a.team < b.team;
  };
  if (top < counted.size()) {
    std::nth_element(counted.begin(), counted.begin() + top, counted.end(), heavier);
  }
  std::map<int32_t, std::pair<int64_t, int64_t>> by_bucket;
  for (size_t i = top; i < counted.size(); ++i) {
    other_events += counted[i].events;
    other_processing += counted[i].processing_us;
    if (view == nullptr) continue;
    const RouteResult route = view->Route(counted[i].team);
    if (!route.routable()) continue;
    std::pair<int64_t, int64_t>& sums = by_bucket[route.bucket_id()];
    sums.first += counted[i].events;
    sums.second += counted[i].processing_us;
  }
  counted.resize(top);
  std::sort(counted.begin(), counted.end(),
            [](const Counted& a, const Counted& b) { return a.team < b.team; });

  *out = LoadReport();
  out->window_ms = std::clamp<int64_t>(absl::ToInt64Milliseconds(now - window_start_),
                                       kMinLoadWindowMs, kMaxLoadWindowMs);
  window_start_ = now;
  for (const Counted& c : counted) {
    out->team_ids.push_back(c.team);
    if (consumer) {
      out->processing_us.push_back(c.processing_us);
    } else {
      out->events.push_back(c.events);
    }
  }
  if (consumer) {
    out->other_processing_us = other_processing;
  } else {
    out->other_events = other_events;
  }
  for (const auto& [bucket, sums] : by_bucket) {
    out->other_bucket_ids.push_back(bucket);
    if (consumer) {
      out->other_bucket_processing_us.push_back(sums.second);
    } else {
      out->other_bucket_events.push_back(sums.first);
    }
  }
  return true;
}

}  // namespace bucketmap
