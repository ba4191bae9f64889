// LoadCounter: a producer's or consumer's per-team load, counted on the
// send path and reported to the server once per window on the watch stream
// (SPEC §9, docs/client.md "Reporting load", docs/autoscaling.md).
//
// Use (examples/producer.cc does it):
//   bucketmap::LoadCounter load;                        // one per process
//   WatchConnectionOptions watch_options;
//   watch_options.load_counter = &load;                 // reports each window
//   ...
//   // Producers, per event routed (after Route() said it is routable):
//   load.CountEvent(team_id);
//   // Consumers, per event or batch processed:
//   load.CountProcessing(team_id, elapsed);
//
// The send path. CountEvent() and CountProcessing() take no lock, never
// allocate, and never wait: a multiplicative hash picks a slot of a fixed
// open-addressing table (Options::capacity slots, allocated once; one
// copy per stripe of threads), a team's first event claims a free slot
// with one compare-and-swap, and every event is one relaxed fetch_add. bench/load_counter_bench
// measures the cost (docs/benchmarks.md). A team that finds no slot within 16 probes (the table is
// full) is counted as "other" without a team.
//
// The report path. TakeReport(), on the reporting thread (the
// WatchConnection's), drains every slot with an atomic exchange, so each
// event lands in exactly one report; lists the top `top_teams` teams by
// count (the stripes merged), and sums the others per bucket of the given
// view. A slot whose
// team counted nothing for two windows is given back (its key cleared),
// so the table follows the teams that are active; an event of that team
// racing with the give-back (a thread stalled between reading the slot's
// key and adding to it, for the few nanoseconds around the reclaim) can be
// counted as "other".
//
// Windows. Reports go out at wall-clock times t with t mod window =
// window / 2, so a server whose --load_window equals `window` (both
// default to 10 s) gets exactly one report per window from each client,
// mid-window, whatever the skew between clocks up to window / 2. The
// first window starts at the first event counted and lasts between one and
// two windows, so that its rate is the rate since then; after a window
// with nothing counted, the next starts when that one ended. A window with
// no stream to report on is kept and reported with the next (its
// window_ms clamped to the protocol's 600 s).
//
// Thread safety: CountEvent/CountProcessing from any number of threads;
// TakeReport from one thread at a time.
#ifndef BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_LOAD_COUNTER_H_
#define BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_LOAD_COUNTER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/attributes.h"
#include "absl/time/time.h"
#include "domain/load.h"

namespace bucketmap {

class MappingView;

class LoadCounter {
 public:
  struct Options {
    // Table slots (rounded up to a power of two): the teams one window
    // and the next may count before new teams become "other".
    size_t capacity = 16384;
    // Copies of the table (rounded up to a power of two), each thread
    // counting into one of them in turn, so that threads counting the same
    // heavy team do not fight over one cache line. Memory: capacity *
    // stripes * 32 bytes (2 MiB by default).
    size_t stripes = 4;
    // The report window; keep it equal to the server's --load_window.
    absl::Duration window = kDefaultLoadWindow;
    // Teams listed per report (at most 1,000, the protocol's bound).
    int top_teams = kMaxLoadReportTeams;
    // Where "now" comes from (tests); absl::Now by default.
    absl::Time (*clock)() = nullptr;
  };

  LoadCounter();
  explicit LoadCounter(Options options);
  LoadCounter(const LoadCounter&) = delete;
  LoadCounter& operator=(const LoadCounter&) = delete;

  // CountEvent()
  //
  // Counts `n` events routed for `team_id` (>= 1; others are ignored).
  // Lock-free and allocation-free.
  ABSL_ATTRIBUTE_ALWAYS_INLINE void CountEvent(int64_t team_id, int64_t n = 1) {
    Add(team_id, n, 0);
  }

  // CountProcessing()
  //
  // Counts time spent processing `team_id`'s events. Lock-free and
  // allocation-free.
  void CountProcessing(int64_t team_id, absl::Duration spent) {
    Add(team_id, 0, absl::ToInt64Microseconds(spent));
  }

  // NextReport()
  //
  // When the report due after `after` goes out: the first time t > after
  // with t mod window = window / 2, and at least one window after the
  // first event counted.
  absl::Time NextReport(absl::Time after) const;

  // TakeReport()
  //
  // Drains the counts since the last TakeReport (or since construction)
  // into `out`, a report valid for ValidateLoadReport: window_ms is the
  // time since then (clamped to 1 s..600 s), the top teams by events (or,
  // for a consumer, by processing time) ascending by id, and the rest as
  // other_*, per bucket of `view` (null: no bucket). `consumer` selects
  // the columns: events for a producer, processing_us for a consumer.
  // Returns false, and drains nothing, when nothing was counted (no report
  // is due), or when the first window is not over yet (less than one
  // window since the first event).
  bool TakeReport(absl::Time now, const MappingView* view, bool consumer, LoadReport* out);

 private:
  struct alignas(32) Slot {
    std::atomic<int64_t> team{0};
    std::atomic<int64_t> events{0};
    std::atomic<int64_t> processing_us{0};
  };
  static constexpr int kMaxProbes = 16;

  ABSL_ATTRIBUTE_ALWAYS_INLINE void Add(int64_t team_id, int64_t events, int64_t processing_us) {
    if (ABSL_PREDICT_FALSE(team_id < 1)) return;
    // One relaxed load of a flag that is written once.
    if (ABSL_PREDICT_FALSE(!started_.load(std::memory_order_relaxed))) MarkStarted();
    // This thread's stripe: threads counting the same team add to
    // different cache lines.
    Slot* const table = slots_.get() + (ThreadStripe() & stripe_mask_) * (mask_ + 1);
    size_t i =
        static_cast<size_t>((static_cast<uint64_t>(team_id) * 0x9e3779b97f4a7c15ull) >> shift_);
    for (int probe = 0; probe < kMaxProbes; ++probe, i = (i + 1) & mask_) {
      Slot& slot = table[i];
      int64_t key = slot.team.load(std::memory_order_relaxed);
      if (ABSL_PREDICT_FALSE(key != team_id)) {
        if (key != 0) continue;
        // Claim the free slot; another thread may claim it first, for this
        // team or another.
        if (!slot.team.compare_exchange_strong(key, team_id, std::memory_order_relaxed) &&
            key != team_id) {
          continue;
        }
      }
      if (events != 0) slot.events.fetch_add(events, std::memory_order_relaxed);
      if (processing_us != 0)
        slot.processing_us.fetch_add(processing_us, std::memory_order_relaxed);
      return;
    }
    if (events != 0) other_events_.fetch_add(events, std::memory_order_relaxed);
    if (processing_us != 0)
      other_processing_us_.fetch_add(processing_us, std::memory_order_relaxed);
  }

  // A number per thread, given out in turn at the thread's first event.
  static uint32_t ThreadStripe() {
    static thread_local uint32_t stripe = 0;
    if (ABSL_PREDICT_FALSE(stripe == 0)) stripe = NewStripe();
    return stripe;
  }
  static uint32_t NewStripe();

  absl::Time Now() const;
  // The first event: the first window starts now.
  void MarkStarted();

  const Options options_;
  const size_t mask_;
  const int shift_;
  const size_t stripe_mask_;
  std::unique_ptr<Slot[]> slots_;
  std::atomic<bool> started_{false};
  std::atomic<int64_t> first_event_ms_{0};
  std::atomic<int64_t> other_events_{0};
  std::atomic<int64_t> other_processing_us_{0};
  // The reporting thread's: windows each slot counted nothing, and when
  // the current window started (InfinitePast: at the first event).
  std::vector<uint8_t> idle_;
  absl::Time window_start_ = absl::InfinitePast();
};

}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_LOAD_COUNTER_H_
