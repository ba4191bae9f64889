// AutoRebalancer: automatic rebalancing on the leader (issue 12,
// docs/rebalancing.md, "In the server"); a leader task
// (server/replica/leader.h: Start(epoch) / Stop()), off unless
// --auto_rebalance_interval is set.
//
// Every `interval` it looks at each pool of the served snapshot: it plans
// with the default budget (Rebalancer::PlanPool), its load budget cut to
// what is left of the pool's daily churn budget (`daily_load_share` of the
// pool's load per UTC day, kept in the store so that a leader change does
// not reset it), and when the pool's imbalance exceeds the target and the
// plan has moves, applies them as one version through the WritePath
// (kind "ApplyRebalance", actor "auto-rebalance", expected_version the
// plan's, fenced by the leader epoch like the handoff coordinator's
// writes), then adds the share moved to the day's churn. Its handoffs,
// cooldown and guards are those of any explicit move.
//
// Thread safety: all public methods are thread-safe. Start/Stop are called
// by the leader election, never concurrently with each other.
#ifndef BUCKETMAP_SERVER_REBALANCE_AUTO_REBALANCER_H_
#define BUCKETMAP_SERVER_REBALANCE_AUTO_REBALANCER_H_

#include <cstdint>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "domain/rebalance.h"
#include "server/base/clock.h"
#include "server/metrics/metrics.h"
#include "server/rebalance/rebalancer.h"
#include "server/state/write_path.h"

namespace bucketmap {

// The actor of automatic changes in the change log.
inline constexpr char kAutoRebalanceActor[] = "auto-rebalance";

struct AutoRebalanceOptions {
  // --auto_rebalance_interval; 0: off.
  absl::Duration interval = absl::ZeroDuration();
  // --auto_rebalance_daily_load_share: the most of a pool's load that
  // automatic rounds may move per UTC day, in [0, 1].
  double daily_load_share = 0.02;
  // The load it evens out.
  LoadMetric metric = LoadMetric::kEventRate;
  // Bound on each write.
  absl::Duration write_timeout = absl::Seconds(10);
};

class AutoRebalancer {
 public:
  // Every pointer must outlive the task; `metrics` may be null.
  AutoRebalancer(const Rebalancer* rebalancer, const WritePath* write_path, Store* store,
                 MappingManager* manager, Metrics* metrics, AutoRebalanceOptions options,
                 const Clock* clock = Clock::Real());
  // Stops the thread.
  ~AutoRebalancer();
  AutoRebalancer(const AutoRebalancer&) = delete;
  AutoRebalancer& operator=(const AutoRebalancer&) = delete;

  // Start(): this replica leads at `epoch`; starts the thread (a no-op
  // when the interval is 0). Stop(): stops it and waits for it;
  // idempotent.
  void Start(int64_t epoch);
  void Stop();

 private:
  void Loop(int64_t epoch);
  // One round; false when no longer the leader.
  bool RunOnce(int64_t epoch);
  // One pool's round: its outcome for the metric, or "not_leader".
  std::string RunPool(const std::string& pool, int64_t epoch, double* share_moved);

  const Rebalancer* const rebalancer_;
  const WritePath* const write_path_;
  Store* const store_;
  MappingManager* const manager_;
  Metrics* const metrics_;
  const AutoRebalanceOptions options_;
  const Clock* const clock_;

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // Start/Stop only
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_REBALANCE_AUTO_REBALANCER_H_
