// Load signals (SPEC §9, docs/autoscaling.md): what clients report about
// the events they route and the time they spend processing, and the
// per-team and per-bucket rates the server derives from it.
//
// The pipeline, server side:
//   1. A watch stream receives a LoadReport (one client's window); it is
//      validated here (ValidateLoadReport) and turned into contributions
//      (ContributionsOf): each count divided by max(report window, load
//      window), added to the load window ("slot") the report arrived in.
//   2. Replicas add their slots' contributions into PostgreSQL; a slot is
//      folded into an exponentially weighted moving average once every
//      replica had time to add to it: value = decay * value + (1 - decay) *
//      slot, with decay = 0.5 ^ (window / half_life).
//   3. RatesOf() reads the averages back, bias-corrected for the windows
//      folded since load was first seen (so one window after the start the
//      rate is that window's, not a fraction of it); BucketLoads() sums
//      teams into buckets at a mapping version and ranks the top teams.
//
// Pure functions on values; thread-safe.
#ifndef BUCKETMAP_DOMAIN_LOAD_H_
#define BUCKETMAP_DOMAIN_LOAD_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "domain/model.h"
#include "domain/snapshot.h"

namespace bucketmap {

// Report shape limits (the LoadReport message's comments).
inline constexpr int kMaxLoadReportTeams = 1000;
inline constexpr int64_t kMinLoadWindowMs = 1000;
inline constexpr int64_t kMaxLoadWindowMs = 600000;
// Plausibility bounds, per report: at most 10^9 events per second per
// client (far beyond any single producer), and at most 4,096 cores busy
// processing. They keep sums far from overflow; within them a client's
// counts cannot be checked (docs/autoscaling.md, "What the server can and
// cannot check").
inline constexpr int64_t kMaxEventsPerMs = 1000000;
inline constexpr int64_t kMaxBusyCores = 4096;

// The server's defaults (--load_window, --load_half_life), and the
// client library's report window, which matches the server's so that each
// client lands once in every window.
inline constexpr absl::Duration kDefaultLoadWindow = absl::Seconds(10);
inline constexpr absl::Duration kDefaultLoadHalfLife = absl::Minutes(10);

// One client's window, as bucketmap.v1.WatchRequest.LoadReport carries it
// (codec/ converts).
struct LoadReport {
  int64_t window_ms = 0;
  std::vector<int64_t> team_ids;
  std::vector<int64_t> events;
  std::vector<int64_t> processing_us;
  int64_t other_events = 0;
  int64_t other_processing_us = 0;
  std::vector<int32_t> other_bucket_ids;
  std::vector<int64_t> other_bucket_events;
  std::vector<int64_t> other_bucket_processing_us;
};

// Who reports: producers count events, consumers processing time.
enum class LoadReporter { kProducer, kConsumer };

// ValidateLoadReport()
//
// Returns OK or InvalidArgument naming the field ("load.team_ids: ..."):
// window_ms in [kMinLoadWindowMs, kMaxLoadWindowMs]; at most
// kMaxLoadReportTeams teams, ascending and unique, each >= 1; count
// columns empty or parallel to their id column; counts >= 0 and within the
// plausibility bounds over the window; a producer sends no processing
// time, a consumer no events; other_bucket_ids ascending, unique, >= 1,
// at most kMaxLoadReportTeams, their sums not above other_*.
absl::Status ValidateLoadReport(const LoadReport& report, LoadReporter reporter);

// A rate: events per second, and processing seconds per second.
struct LoadRate {
  double events = 0;
  double processing = 0;

  LoadRate& operator+=(const LoadRate& o) {
    events += o.events;
    processing += o.processing;
    return *this;
  }
};

// What a rate is kept for.
enum class LoadKind : int {
  kTeam = 0,          // id: team id
  kBucketOther = 1,   // id: bucket id; teams a client did not list
  kUnattributed = 2,  // id: 0; neither team nor bucket known
};

struct LoadKey {
  LoadKind kind = LoadKind::kTeam;
  int64_t id = 0;
  friend bool operator<(const LoadKey& a, const LoadKey& b) {
    return std::make_pair(static_cast<int>(a.kind), a.id) <
           std::make_pair(static_cast<int>(b.kind), b.id);
  }
  friend bool operator==(const LoadKey& a, const LoadKey& b) {
    return a.kind == b.kind && a.id == b.id;
  }
};

// The window length and half-life of the average.
struct LoadConfig {
  absl::Duration window = kDefaultLoadWindow;
  absl::Duration half_life = kDefaultLoadHalfLife;
};

// The slot (window index) that time `t` falls in: floor(unix ms / window).
int64_t LoadSlotOf(absl::Time t, absl::Duration window);
// The start of `slot`.
absl::Time LoadSlotStart(int64_t slot, absl::Duration window);
// The decay per window: 0.5 ^ (window / half_life).
double LoadDecay(const LoadConfig& config);

// ContributionsOf()
//
// Adds a validated report's rates to `into`: each count divided by
// max(window_ms, the load window), so that a client reporting once per
// load window adds its rate, and one reporting more often adds its counts
// spread over the window. Other totals beyond other_bucket_* go to
// kUnattributed.
void ContributionsOf(const LoadReport& report, absl::Duration load_window,
                     std::map<LoadKey, LoadRate>* into);

// One kept average, as stored: its (uncorrected) value as of `slot`.
struct LoadRow {
  LoadKey key;
  LoadRate value;
  int64_t slot = 0;
};

// The stored averages of every kind.
struct LoadTable {
  LoadConfig config;
  // The first slot folded, and the last; -1 when none was.
  int64_t first_slot = -1;
  int64_t folded_through = -1;
  std::vector<LoadRow> rows;
};

// Bias-corrected rates as of the end of the last folded window.
struct LoadRates {
  LoadConfig config;
  // Windows folded since load was first seen; 0: nothing is known.
  int64_t windows = 0;
  absl::Time as_of = absl::InfinitePast();
  std::map<int64_t, LoadRate> teams;
  std::map<int32_t, LoadRate> bucket_other;
  LoadRate unattributed;
};

// RatesOf()
//
// Decays every row to folded_through and divides by 1 - decay^windows.
LoadRates RatesOf(const LoadTable& table);

// One bucket's load at a mapping version (GetLoad's BucketLoad without
// the lag).
struct BucketLoadView {
  int32_t bucket_id = 0;
  LoadRate rate;
  // weight / sum of the pool's placeable weights; 0 when not placeable.
  double weight_share = 0;
  // rate.events / the pool's total events; 0 when the pool has none.
  double event_share = 0;
  int64_t teams_with_load = 0;
  // Descending by events, then processing, then ascending team id.
  std::vector<std::pair<int64_t, LoadRate>> top_teams;
};

// BucketLoads()
//
// Sums each team's rate into the bucket it routes to in `snapshot` (teams
// unroutable there go to *unattributed, which starts as
// rates.unattributed), adds each bucket's kBucketOther rate, and ranks each
// bucket's `top_teams` teams. One entry per bucket of `snapshot`, in its
// order.
std::vector<BucketLoadView> BucketLoads(const Snapshot& snapshot, const LoadRates& rates,
                                        size_t top_teams, LoadRate* unattributed);

}  // namespace bucketmap

#endif  // BUCKETMAP_DOMAIN_LOAD_H_
