// HandoffCoordinator: drives coordinated moves (SPEC §5) and supplies the
// move policy of writes.
//
// Every replica has one. On every replica it runs a monitor thread that
// caches what the move policy needs from Kafka (partition counts of the
// bucket topics, the consumer lag of each bucket when --max_move_lag is
// set) and exports the handoff metrics. On the leader only (a leader task,
// server/leader.h: Start(epoch) / Stop()) it also runs the coordinator
// thread, which moves each open handoff on, one version per phase change,
// every write fenced by the leader epoch and by the phase it expects
// (PlanHandoffUpdate):
//
//   SWITCHING  waits until every leased PRODUCER session (Store::ListClients,
//              all replicas) has drained_version >= opened_version; at the
//              grace deadline it passes anyway and records the producers
//              that missed it. After taking over, a coordinator judges no
//              barrier before one client lease has passed while some
//              PRODUCER lease is alive (Store::ListClients): that
//              producer's last ACK may not be flushed by its replica yet.
//              With no producer lease alive it judges at once: no replica
//              has vouched for a producer within a lease, so there is no
//              ACK to wait for (the barrier counts producers only; a
//              producer that subscribed less than one --client_flush ago
//              is not recorded yet, then as at any other time).
//   DRAINING   role by role in the source's drain order: reads the end
//              offset of every partition of the role's topic (the drain
//              point, persisted), then polls the role's consumer group
//              until it has committed at or past it; then the next role.
//   COMPLETED  after the last role, when the barrier passed in full.
//   FORCED     at hold_deadline (--max_hold); when a source topic's
//              partition count changed; when the drains finish but the
//              barrier had passed on its grace deadline (named producers);
//              or when no Kafka cluster is configured and a role has a
//              consumer group to wait for ("no kafka").
// A role without a consumer group has nothing to wait for and counts as
// drained; so does a role whose topic is empty or does not exist.
//
// All state is in PostgreSQL (the handoffs are in every snapshot), so a
// coordinator that restarts or takes over resumes each handoff where it
// was. Lag progress between phase changes is kept in memory only (Decorate
// adds it to ListHandoffs/GetTeam answers of the leader).
//
// Thread safety: all public methods are thread-safe. Start/Stop are called
// by the leader election, never concurrently with each other.
#ifndef BUCKETMAP_SERVER_HANDOFF_HANDOFF_COORDINATOR_H_
#define BUCKETMAP_SERVER_HANDOFF_HANDOFF_COORDINATOR_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "bucketmap/v1/types.pb.h"
#include "domain/move_policy.h"
#include "server/base/clock.h"
#include "server/kafka/kafka_offsets.h"
#include "server/state/handoff_view.h"
#include "server/state/mapping_manager.h"
#include "server/store/store.h"

namespace bucketmap {

class Metrics;

// The defaults are the server's (its flags take them from here).
struct HandoffOptions {
  // Writes open handoffs (--handoffs).
  bool enabled = true;
  absl::Duration grace = kDefaultHandoffGrace;   // --handoff_grace
  absl::Duration max_hold = kDefaultMaxHold;     // --max_hold
  // --move_cooldown; 0 disables it.
  absl::Duration move_cooldown = kDefaultMoveCooldown;
  // --max_move_lag in messages; 0 disables the guard.
  int64_t max_move_lag = 0;
  // The watch clients' lease (--client_lease): how long a new leader waits
  // before judging a barrier while some producer lease is alive.
  absl::Duration client_lease = kDefaultClientLease;
  // How often the coordinator looks at each open handoff.
  absl::Duration poll_interval = absl::Seconds(1);
  // How often the monitor refreshes partition counts and lags from Kafka.
  absl::Duration kafka_refresh_interval = absl::Seconds(10);
  // Bound on each Kafka request.
  absl::Duration kafka_timeout = absl::Seconds(5);
};

class HandoffCoordinator final : public HandoffView {
 public:
  // `manager` and `store` must outlive the coordinator; `offsets` is null
  // without a Kafka cluster; `metrics` may be null.
  HandoffCoordinator(MappingManager* manager, Store* store, std::shared_ptr<OffsetReader> offsets,
                     HandoffOptions options, Metrics* metrics, const Clock* clock = Clock::Real());
  // Stops both threads.
  ~HandoffCoordinator();
  HandoffCoordinator(const HandoffCoordinator&) = delete;
  HandoffCoordinator& operator=(const HandoffCoordinator&) = delete;

  // Starts the monitor thread. Call once.
  void StartMonitor();

  // Start(): this replica leads at `epoch` (0: unfenced, static
  // leadership); starts the coordinator thread. Stop(): stops it and
  // waits for it. Stop() is idempotent.
  void Start(int64_t epoch);
  void Stop();

  // HandoffView: the move policy of a write made now, from the flags and
  // the monitor's caches; the leader's live view of an open handoff.
  MovePolicy Policy(MoveScope scope, bool ordered, bool force) const override;
  void Decorate(v1::Handoff* handoff) const override;

  const HandoffOptions& options() const { return options_; }

  // TEST_RunRound()
  //
  // Test only: one round of the coordinator thread (each open handoff of
  // the current snapshot moved on once) on the calling thread, as the
  // leader at `epoch` since `leader_since`. Returns false when this replica
  // is no longer the leader (the thread would stop). Lets unit tests drive
  // the coordinator round by round with a fake clock instead of sleeping
  // through poll intervals. Never call it while Start()ed.
  bool TEST_RunRound(int64_t epoch, absl::Time leader_since) {
    return RunRound(epoch, leader_since);
  }
  // TEST_RefreshKafka()
  //
  // Test only: what the monitor thread does every kafka_refresh_interval
  // (the partition counts and lags the policy and the partition-count
  // check read), on the calling thread.
  void TEST_RefreshKafka() { RefreshKafka(); }

 private:
  struct Live {
    std::vector<std::string> missing_producers;
    int32_t drain_index = -1;
    std::vector<int64_t> committed;
    int64_t lag = -1;
  };

  void MonitorLoop();
  void RefreshKafka();
  void ExportMetrics();
  void CoordinatorLoop(int64_t epoch, absl::Time leader_since);
  // One round of CoordinatorLoop: moves each open handoff on once. Returns
  // false when this replica is no longer the leader.
  bool RunRound(int64_t epoch, absl::Time leader_since);
  // Moves one open handoff on; returns false when this replica must stop
  // acting (it is no longer the leader).
  // `clients` caches the leased sessions for one round.
  bool Advance(const Handoff& h, int64_t epoch, absl::Time leader_since,
               std::optional<std::vector<ClientState>>* clients);
  // Starts draining from next->drain_index: records the drain point of the
  // first role that has something to drain; skips (marks drained) roles
  // with nothing to wait for; ends the handoff when no role is left.
  absl::Status StartRole(Handoff* next, absl::Time now);
  // Ends the drains: COMPLETED, or FORCED when the barrier was missed.
  static void Finish(Handoff* next, absl::Time now);
  // Commits `next` as a new version, fenced by `expected` and `epoch`.
  // Returns false when this replica is no longer the leader.
  bool Commit(const Handoff& next, HandoffPhase expected, int64_t epoch, const std::string& reason);
  int32_t CachedPartitions(const std::string& topic) const;
  // Logs a transient failure of handoff `id` (retried next round), at
  // most every 30 s per handoff. Coordinator thread only.
  void RetryLater(const char* format, int64_t id, const std::string& why);
  bool Stopping() const;

  MappingManager* const manager_;
  Store* const store_;
  const std::shared_ptr<OffsetReader> offsets_;
  const HandoffOptions options_;
  Metrics* const metrics_;
  const Clock* const clock_;

  mutable absl::Mutex mu_;
  std::map<std::string, int32_t> partitions_ ABSL_GUARDED_BY(mu_);
  std::map<int32_t, int64_t> lags_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, Live> live_ ABSL_GUARDED_BY(mu_);
  bool stop_monitor_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_leader_ ABSL_GUARDED_BY(mu_) = false;

  // Coordinator thread only: last RetryLater log per handoff.
  std::map<int64_t, absl::Time> last_warning_;

  std::thread monitor_;
  std::thread leader_;  // Start/Stop only
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_HANDOFF_HANDOFF_COORDINATOR_H_
