#include "client/src/event_rules.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <utility>

namespace bucketmap {
namespace client_internal {
namespace {

constexpr int64_t kTickMs = 10;

uint32_t Fingerprint(uint64_t hash) { return static_cast<uint32_t>(hash >> 32) | 1u; }
uint32_t FingerprintOf(uint64_t word) { return static_cast<uint32_t>(word >> 32); }
uint32_t ExpiryOf(uint64_t word) { return static_cast<uint32_t>(word); }

// Ticks of 10 ms, modulo 2^32 (about 497 days): compared by serial-number
// arithmetic, so an expiry within 248 days of now compares right.
uint32_t Ticks(absl::Time t) { return static_cast<uint32_t>(absl::ToUnixMillis(t) / kTickMs); }
uint32_t TicksUp(absl::Time t) {
  return static_cast<uint32_t>((absl::ToUnixMillis(t) + kTickMs - 1) / kTickMs);
}
bool After(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) > 0; }

}  // namespace

TeamLimiter::TeamLimiter(double events_per_second, int64_t burst, double share)
    : events_per_second_(events_per_second), burst_(burst) {
  const double rate = std::max(events_per_second * share, 1e-9);
  const int64_t tokens =
      std::max<int64_t>(1, static_cast<int64_t>(std::llround(static_cast<double>(burst) * share)));
  const double interval = std::min(1e9 / rate, 1e17);
  interval_ns_ = std::max<int64_t>(1, static_cast<int64_t>(std::llround(interval)));
  const int64_t max_tolerance = std::numeric_limits<int64_t>::max() / 4;
  tolerance_ns_ =
      tokens - 1 > max_tolerance / interval_ns_ ? max_tolerance : (tokens - 1) * interval_ns_;
}

bool TeamLimiter::TryAcquire(int64_t now_ns) {
  int64_t tat = tat_ns_.load(std::memory_order_relaxed);
  for (;;) {
    const int64_t start = std::max(tat, now_ns);
    if (start - now_ns > tolerance_ns_) return false;
    if (tat_ns_.compare_exchange_weak(tat, start + interval_ns_, std::memory_order_relaxed)) {
      return true;
    }
  }
}

void TeamLimiter::StickTeamUntil(int64_t until_ns) {
  int64_t current = team_sticky_until_.load(std::memory_order_relaxed);
  while (current < until_ns &&
         !team_sticky_until_.compare_exchange_weak(current, until_ns, std::memory_order_relaxed)) {
  }
}

StickySet::StickySet(size_t capacity) {
  size_t n = 64;
  while (n < capacity) n *= 2;
  words_ = std::make_unique<std::atomic<uint64_t>[]>(n);
  for (size_t i = 0; i < n; ++i) words_[i].store(0, std::memory_order_relaxed);
  mask_ = n - 1;
}

bool StickySet::Contains(uint64_t hash, absl::Time now) const {
  const uint32_t fp = Fingerprint(hash);
  for (size_t i = 0; i < kProbes; ++i) {
    const uint64_t v = words_[(hash + i) & mask_].load(std::memory_order_acquire);
    if (v == 0) return false;  // words are never cleared: the key is not further on
    if (FingerprintOf(v) == fp) return After(ExpiryOf(v), Ticks(now));
  }
  return false;
}

bool StickySet::Mark(uint64_t hash, absl::Time now, absl::Time until) {
  const uint32_t fp = Fingerprint(hash);
  const uint32_t now_ticks = Ticks(now);
  const uint32_t until_ticks = TicksUp(until);
  const uint64_t word = (uint64_t{fp} << 32) | until_ticks;
  // The key's own word first, so that one key holds one word.
  for (size_t i = 0; i < kProbes; ++i) {
    std::atomic<uint64_t>& w = words_[(hash + i) & mask_];
    uint64_t v = w.load(std::memory_order_acquire);
    if (v == 0) break;
    while (FingerprintOf(v) == fp) {
      if (!After(until_ticks, ExpiryOf(v))) return true;  // marked as long already
      if (w.compare_exchange_weak(v, word, std::memory_order_acq_rel)) return true;
    }
  }
  // Else the first free or expired word of its window.
  for (size_t i = 0; i < kProbes; ++i) {
    std::atomic<uint64_t>& w = words_[(hash + i) & mask_];
    uint64_t v = w.load(std::memory_order_acquire);
    while (v == 0 || FingerprintOf(v) == fp || !After(ExpiryOf(v), now_ticks)) {
      if (w.compare_exchange_weak(v, word, std::memory_order_acq_rel)) return true;
    }
  }
  return false;
}

const std::shared_ptr<const EventRules>& EventRules::Empty() {
  static const auto* const kEmpty =
      new std::shared_ptr<const EventRules>(std::make_shared<const EventRules>());
  return *kEmpty;
}

std::shared_ptr<const EventRules> EventRules::Build(
    const Snapshot& snapshot, double rate_limit_share, absl::Duration sticky_window,
    size_t sticky_capacity, std::map<int64_t, std::shared_ptr<TeamLimiter>>* limiters,
    std::shared_ptr<StickySet>* sticky) {
  if (snapshot.team_rules().empty()) {
    limiters->clear();
    return Empty();
  }
  auto rules = std::make_shared<EventRules>();
  rules->sticky_window_ = sticky_window;
  std::map<int64_t, std::shared_ptr<TeamLimiter>> kept;
  for (const TeamRule& rule : snapshot.team_rules()) {  // ascending by team
    if (rules->teams_.empty() || rules->teams_.back().team_id != rule.team_id) {
      rules->teams_.emplace_back();
      rules->teams_.back().team_id = rule.team_id;
    }
    TeamEventRules& team = rules->teams_.back();
    switch (rule.kind) {
      case RuleKind::kDrop:
        team.drop = true;
        break;
      case RuleKind::kForceOverflow:
        team.force_overflow = true;
        break;
      case RuleKind::kSkipPersonProcessing:
        team.skip_person_processing = true;
        break;
      case RuleKind::kRateLimit: {
        auto it = limiters->find(rule.team_id);
        team.limiter = it != limiters->end() && it->second->Same(rule.events_per_second, rule.burst)
                           ? it->second
                           : std::make_shared<TeamLimiter>(rule.events_per_second, rule.burst,
                                                           rate_limit_share);
        kept[rule.team_id] = team.limiter;
        break;
      }
    }
  }
  *limiters = std::move(kept);
  if (!limiters->empty() && *sticky == nullptr) {
    *sticky = std::make_shared<StickySet>(sticky_capacity);
  }
  rules->sticky_ = *sticky;
  return rules;
}

const TeamEventRules* EventRules::Find(int64_t team_id) const {
  auto it = std::lower_bound(teams_.begin(), teams_.end(), team_id,
                             [](const TeamEventRules& t, int64_t id) { return t.team_id < id; });
  return it != teams_.end() && it->team_id == team_id ? &*it : nullptr;
}

uint64_t StickyHash(int64_t team_id, std::string_view key) {
  return XXH3_64bits_withSeed(key.data(), key.size(), static_cast<uint64_t>(team_id));
}

}  // namespace client_internal
}  // namespace bucketmap
