// Load and lag as the rest of the server reads them (SPEC §9; issue 11),
// and the replica's side of merging load reports.
//
//   LoadAggregator  what watch streams hand accepted load reports to: it
//                   adds them to this replica's pending windows in memory
//                   and flushes them to the store every `flush_interval`
//                   (Store::AddLoad), folding the windows that are due. A
//                   replica that dies loses at most its unflushed second;
//                   a client's report on a stream that broke before it
//                   arrived is lost with it: at most one window.
//   SignalsReader   what GetLoad and (issue 12) the rebalancing planner
//                   read: the merged rates of every client of every
//                   replica (LoadRates, domain/load.h), and the leader's
//                   last lag readings, both from the store and cached for
//                   `cache_ttl`, so any replica answers alike.
//
// For a planner: Rates() gives per-team rates (events/s, processing s/s)
// for the whole cluster; BucketLoads(snapshot, rates, ...) in domain/load.h
// sums them per bucket at a mapping version, and the teams of one pool are
// those whose Snapshot::RouteOf(team).pool (or pinned bucket's pool) is
// that pool. docs/architecture.md, "Signals", shows the flow.
//
// Thread safety: all public methods are thread-safe.
#ifndef BUCKETMAP_SERVER_SIGNALS_LOAD_SIGNALS_H_
#define BUCKETMAP_SERVER_SIGNALS_LOAD_SIGNALS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "domain/load.h"
#include "server/base/clock.h"
#include "server/metrics/metrics.h"
#include "server/store/store.h"

namespace bucketmap {

struct LoadOptions {
  // --load_window and --load_half_life (domain/load.h). Every replica must
  // run the same: the store resets the averages when they change.
  LoadConfig config;
  // How often a replica adds its pending windows to the store. A window is
  // folded two flushes after it ended, so every replica has added to it.
  absl::Duration flush_interval = absl::Seconds(1);
  // Averages below this (events/s and processing s/s) are forgotten.
  double min_rate = 0.001;
  // Keys (teams, buckets) pending in memory at most; past it, a new key's
  // rate is counted as unattributed. Bounds a replica's memory whatever
  // its clients report between two flushes.
  size_t max_pending_keys = 200000;
};

class LoadAggregator {
 public:
  // `store` must outlive the aggregator; `metrics` may be null.
  LoadAggregator(Store* store, Metrics* metrics, LoadOptions options,
                 const Clock* clock = Clock::Real());
  ~LoadAggregator();
  LoadAggregator(const LoadAggregator&) = delete;
  LoadAggregator& operator=(const LoadAggregator&) = delete;

  // Starts / stops the flusher thread (Stop flushes once more). Idempotent.
  void Start();
  void Stop();

  // Add()
  //
  // Adds a validated report (ValidateLoadReport) to the window the
  // current time falls in. Never blocks on I/O.
  void Add(const LoadReport& report) ABSL_LOCKS_EXCLUDED(mu_);

  // Flush()
  //
  // Adds the pending windows to the store and folds the due ones, as the
  // flusher does every flush_interval. On failure the windows stay pending
  // (merged with what arrives meanwhile).
  absl::Status Flush() ABSL_LOCKS_EXCLUDED(mu_, flush_mu_);

  const LoadOptions& options() const { return options_; }

 private:
  void Loop();

  Store* const store_;
  Metrics* const metrics_;
  const LoadOptions options_;
  const Clock* const clock_;

  absl::Mutex mu_;
  LoadSlots pending_ ABSL_GUARDED_BY(mu_);
  size_t pending_keys_ ABSL_GUARDED_BY(mu_) = 0;
  // Serialises flushes (the thread's and Flush() from tests).
  absl::Mutex flush_mu_;

  absl::Mutex thread_mu_;
  std::unique_ptr<absl::Notification> stop_ ABSL_GUARDED_BY(thread_mu_);
  std::thread thread_;
};

struct SignalsOptions {
  // How long a read of the store is reused.
  absl::Duration cache_ttl = absl::Seconds(1);
  // The lag exporter's interval: a reading older than 3 of them is shown
  // as unknown (GetLoad's RoleLag.up false).
  absl::Duration lag_interval = absl::Seconds(10);
};

class SignalsReader {
 public:
  // `store` must outlive the reader.
  SignalsReader(Store* store, SignalsOptions options, const Clock* clock = Clock::Real());

  // Rates()
  //
  // The merged, bias-corrected rates as of the last folded window.
  // Unavailable when the store cannot be read.
  absl::StatusOr<std::shared_ptr<const LoadRates>> Rates() ABSL_LOCKS_EXCLUDED(mu_);

  // Lag()
  //
  // The leader's last lag readings, each marked not up when older than 3
  // lag intervals ("stale"). Unavailable when the store cannot be read.
  absl::StatusOr<std::shared_ptr<const std::vector<LagReading>>> Lag() ABSL_LOCKS_EXCLUDED(mu_);

  const SignalsOptions& options() const { return options_; }

 private:
  Store* const store_;
  const SignalsOptions options_;
  const Clock* const clock_;
  absl::Mutex mu_;
  std::shared_ptr<const LoadRates> rates_ ABSL_GUARDED_BY(mu_);
  absl::Time rates_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::shared_ptr<const std::vector<LagReading>> lag_ ABSL_GUARDED_BY(mu_);
  absl::Time lag_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_SIGNALS_LOAD_SIGNALS_H_
