// RuleExpiry: removes team rules whose expire_time has passed, as versions
// of their own, on the leader only (a leader task, server/replica/leader.h:
// Start(epoch) / Stop()). So every producer and consumer switches at one
// version: clients never judge an expiry by their own clocks, they keep a
// rule until the version that removes it arrives (docs/rules.md).
//
// Its thread sleeps until the earliest expire_time in the served snapshot,
// or at most `poll_interval` (so that rules set meanwhile are seen), then
// commits one write that removes every rule due by then
// (PlanExpireTeamRules): kind "ExpireTeamRules", actor "rule-expiry",
// fenced by the leader epoch like the handoff coordinator's writes. A rule
// is thus removed within about poll_interval after it expires, at the
// latest (as soon as it expires when it was in the snapshot when the
// thread went to sleep).
//
// Thread safety: all public methods are thread-safe. Start/Stop are called
// by the leader election, never concurrently with each other.
#ifndef BUCKETMAP_SERVER_RULES_RULE_EXPIRY_H_
#define BUCKETMAP_SERVER_RULES_RULE_EXPIRY_H_

#include <cstdint>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/base/clock.h"
#include "server/metrics/metrics.h"
#include "server/state/mapping_manager.h"

namespace bucketmap {

struct RuleExpiryOptions {
  // The longest the thread sleeps between two looks at the snapshot.
  absl::Duration poll_interval = absl::Seconds(1);
  // Bound on each expiry write.
  absl::Duration write_timeout = absl::Seconds(10);
};

class RuleExpiry {
 public:
  // `manager` must outlive the task; `metrics` may be null.
  RuleExpiry(MappingManager* manager, Metrics* metrics, RuleExpiryOptions options = {},
             const Clock* clock = Clock::Real());
  // Stops the thread.
  ~RuleExpiry();
  RuleExpiry(const RuleExpiry&) = delete;
  RuleExpiry& operator=(const RuleExpiry&) = delete;

  // Start(): this replica leads at `epoch` (0: unfenced, static
  // leadership); starts the thread. Stop(): stops it and waits for it.
  // Stop() is idempotent.
  void Start(int64_t epoch);
  void Stop();

  // TEST_RunOnce()
  //
  // Test only: one look at the snapshot on the calling thread, as the
  // leader at `epoch`: commits the removal of every rule due at the
  // clock's now. Returns false when this replica is no longer the leader
  // (the thread would stop). Never call it while Start()ed.
  bool TEST_RunOnce(int64_t epoch) { return RunOnce(epoch); }

 private:
  void Loop(int64_t epoch);
  // Removes the rules due now; false when no longer the leader.
  bool RunOnce(int64_t epoch);

  MappingManager* const manager_;
  Metrics* const metrics_;
  const RuleExpiryOptions options_;
  const Clock* const clock_;

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // Start/Stop only
  // The last RunOnce failed (the thread, or a TEST_RunOnce caller).
  bool failed_ = false;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_RULES_RULE_EXPIRY_H_
