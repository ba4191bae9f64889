// EventRules: the per-producer state behind MappingView::RouteEvent()
// (docs/rules.md): the team rules of one view in the form an event needs,
// each rate-limited team's token bucket, and the set of (team, key) pairs
// that overflowed recently.
//
// What is per view, and what outlives views:
//   - EventRules is built with each view, under the client's apply lock,
//     and immutable afterwards: per team with rules, the flags of its
//     rules and, for a RATE_LIMIT rule, its TeamLimiter.
//   - A TeamLimiter is mutable (atomics) and kept from view to view while
//     its team keeps the same rate and burst, so a new version does not
//     refill anyone's token bucket. A changed rate starts a new one.
//   - The StickySet is one per client, created with the first rate limit.
//
// Token bucket: GCRA (the "virtual scheduling" form of a token bucket):
// one atomic word, the theoretical arrival time (TAT), advanced by one
// emission interval per event taken; an event is taken while TAT - now
// stays within (burst - 1) intervals. Lock-free (a CAS loop).
//
// Sticky set: a fixed array of 64-bit words, each (32-bit fingerprint of
// hash(team, key), 32-bit expiry in 10 ms ticks), probed linearly over at
// most kStickyProbes words. Words are claimed and refreshed with CAS and
// never cleared, so a probe ends at the first zero word; an expired word is
// claimed by the next key that needs room. When no word of a key's probe
// window is free or expired, the set is full for it: Mark() returns false
// and the caller makes the whole team overflow for one window instead (so
// no key alternates). Memory is capacity x 8 bytes, whatever the keys.
//
// Thread safety: EventRules is immutable; TeamLimiter and StickySet are
// lock-free and safe from any number of threads.
#ifndef BUCKETMAP_CLIENT_SRC_EVENT_RULES_H_
#define BUCKETMAP_CLIENT_SRC_EVENT_RULES_H_

#include <atomic>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/time/time.h"
#include "domain/snapshot.h"

namespace bucketmap {
namespace client_internal {

class TeamLimiter {
 public:
  // A token bucket of `share` x events_per_second and `share` x burst (at
  // least 1 token).
  TeamLimiter(double events_per_second, int64_t burst, double share);

  // Takes a token at `now_ns` (Unix nanoseconds); false when there is
  // none.
  bool TryAcquire(int64_t now_ns);

  // The rule this limiter enforces, to tell whether the next view can keep
  // it.
  bool Same(double events_per_second, int64_t burst) const {
    return events_per_second == events_per_second_ && burst == burst_;
  }

  // The whole team overflows until this time (Unix nanoseconds), set when
  // the sticky set had no room for one of its keys.
  int64_t team_sticky_until() const { return team_sticky_until_.load(std::memory_order_relaxed); }
  void StickTeamUntil(int64_t until_ns);

 private:
  const double events_per_second_;
  const int64_t burst_;
  int64_t interval_ns_;
  int64_t tolerance_ns_;
  std::atomic<int64_t> tat_ns_{std::numeric_limits<int64_t>::min()};
  std::atomic<int64_t> team_sticky_until_{std::numeric_limits<int64_t>::min()};
};

class StickySet {
 public:
  // Words probed per key.
  static constexpr size_t kProbes = 8;
  // `capacity` words, rounded up to a power of two (at least 64).
  explicit StickySet(size_t capacity);

  size_t capacity() const { return static_cast<size_t>(mask_) + 1; }

  // Whether `hash` was marked with an expiry after `now`.
  bool Contains(uint64_t hash, absl::Time now) const;
  // Marks `hash` as overflowed until `until` (rounded up to 10 ms); false
  // when its probe window is full.
  bool Mark(uint64_t hash, absl::Time now, absl::Time until);

 private:
  std::unique_ptr<std::atomic<uint64_t>[]> words_;
  uint64_t mask_;
};

// The rules of one team, in the form an event needs.
struct TeamEventRules {
  int64_t team_id = 0;
  bool drop = false;
  bool force_overflow = false;
  bool skip_person_processing = false;
  // RATE_LIMIT only.
  std::shared_ptr<TeamLimiter> limiter;
};

class EventRules {
 public:
  // The rules of no team, shared.
  static const std::shared_ptr<const EventRules>& Empty();

  // The rules of `snapshot`'s teams. Rate-limited teams keep their
  // limiter from `*limiters` when its rule is unchanged; `*limiters` is
  // replaced by this view's. `*sticky` is created on the first rate limit.
  static std::shared_ptr<const EventRules> Build(
      const Snapshot& snapshot, double rate_limit_share, absl::Duration sticky_window,
      size_t sticky_capacity, std::map<int64_t, std::shared_ptr<TeamLimiter>>* limiters,
      std::shared_ptr<StickySet>* sticky);

  // Returns the rules of `team_id`, or nullptr.
  const TeamEventRules* Find(int64_t team_id) const;
  StickySet* sticky() const { return sticky_.get(); }
  absl::Duration sticky_window() const { return sticky_window_; }

 private:
  std::vector<TeamEventRules> teams_;  // ascending by team_id
  std::shared_ptr<StickySet> sticky_;
  absl::Duration sticky_window_;
};

// The sticky set's hash of (team, key).
uint64_t StickyHash(int64_t team_id, std::string_view key);

}  // namespace client_internal
}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_SRC_EVENT_RULES_H_
