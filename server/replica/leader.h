// LeaderElection: picks the one replica that runs the leader-only workers
// (the outbox relay, the handoff coordinator), SPEC §5.8 and §7.
//
// Leadership is a session-level PostgreSQL advisory lock, held on a
// dedicated connection (the "lock session"). Every `interval` a follower
// tries pg_try_advisory_lock; on success it bumps the leader epoch row
// (migrations/0004_leader.sql) in the same session and becomes leader with
// that epoch. A leader checks its session every `interval`; when the check
// fails (the session broke, PostgreSQL restarted, the epoch moved) it
// loses leadership at once: epoch() drops to 0 and its leader tasks are
// stopped before the next attempt. PostgreSQL releases the lock as soon as
// the session ends: at once for a killed process (the kernel closes the
// socket), within `session_timeout` for a vanished host (server-side TCP
// keepalives and tcp_user_timeout are set on the lock session). A frozen
// leader (its session alive but no longer checked) is cut off by a follower
// once the session has been idle for `lease`. So a failover takes at most
// about lease + interval (7 s by default), under 10 s.
//
// Fencing. Two replicas may both believe they lead for a moment (the old
// one has not noticed yet). Leader-only writes therefore carry the epoch:
// set WriteContext::leader_epoch (or pass it to Store::MarkPublished) to
// epoch() as read when the task started; the store commits them only while
// that epoch is current, and the new leader's bump waits for the ones in
// flight. A stale leader's writes fail with FailedPrecondition "not the
// leader"; a task seeing that should stop acting (its stop_fn follows).
//
// Without a URL (options.url empty) the election is static: Start() makes
// this process the leader at epoch 0 (no fencing) for good. That is for a
// single replica without a database URL, and for tests.
//
// Leader tasks. AddLeaderTask(name, start_fn, stop_fn): start_fn(epoch)
// runs each time this replica becomes leader, stop_fn() each time it stops
// being leader (and at Stop()). Both run on the election thread (or in
// AddLeaderTask/Stop, see there), never concurrently with each other or
// with another task's; tasks start in the order added and stop in reverse.
// start_fn must not block for long (start a thread); stop_fn must stop the
// work promptly and may block until it has (it delays the next attempt).
// Neither may call back into the LeaderElection except IsLeader()/epoch().
//
// Usage (the handoff coordinator):
//   election->AddLeaderTask(
//       "handoff coordinator",
//       [&](int64_t epoch) { coordinator.Start(epoch); },  // writes carry epoch
//       [&] { coordinator.Stop(); });
//
// Metrics (server/metrics/metrics.h): bucketmap_leader (1 while leader),
// bucketmap_leader_epoch (this replica's epoch, 0 when follower) and
// bucketmap_leader_changes_total{event="acquired"|"lost"}.
//
// Thread safety: all public methods are thread-safe.
#ifndef BUCKETMAP_SERVER_REPLICA_LEADER_H_
#define BUCKETMAP_SERVER_REPLICA_LEADER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/metrics/metrics.h"

namespace bucketmap {

// The advisory lock key of the leadership ("bmleader" in ASCII).
inline constexpr int64_t kLeaderLockKey = 0x626d6c6561646572;

struct LeaderElectionOptions {
  // libpq conninfo of the shared database. Empty: static leadership (see
  // above).
  std::string url;
  // Who leads, recorded in bm_leader.holder and in the logs: the replica
  // name.
  std::string holder;
  // Period of the lock attempts (followers) and of the session checks
  // (the leader).
  absl::Duration interval = absl::Seconds(1);
  // How long a silent lock session may last before either end gives it
  // up (TCP keepalives, tcp_user_timeout, statement_timeout). Whole
  // seconds, at least 1.
  absl::Duration session_timeout = absl::Seconds(3);
  // A leader whose lock session has been idle this long has stopped
  // checking it (the process is frozen: SIGSTOP, a stuck thread, swap): its
  // socket still answers, so PostgreSQL keeps the session and the lock. A
  // follower then terminates that session (pg_terminate_backend) and takes
  // over. Must exceed `interval` plus a check's round trip.
  absl::Duration lease = absl::Seconds(6);
  // The epoch bump waits for in-flight fenced writes of the old leader;
  // this bounds that wait (the attempt is then retried).
  absl::Duration bump_timeout = absl::Seconds(15);
};

class LeaderElection {
 public:
  using StartFn = std::function<void(int64_t epoch)>;
  using StopFn = std::function<void()>;

  // `metrics` may be null; it must outlive the election.
  LeaderElection(LeaderElectionOptions options, Metrics* metrics);
  // Stop()s.
  ~LeaderElection();
  LeaderElection(const LeaderElection&) = delete;
  LeaderElection& operator=(const LeaderElection&) = delete;

  // AddLeaderTask()
  //
  // Registers a leader-only worker. May be called at any time; if this
  // replica is leader already, start_fn runs now, on the caller's thread.
  void AddLeaderTask(std::string name, StartFn start_fn, StopFn stop_fn);

  // Start()
  //
  // Starts campaigning on a thread of its own. Static leadership (no URL)
  // starts the tasks before returning. Call once.
  void Start();

  // Stop()
  //
  // Stops the tasks if leading (on the caller's thread), ends the lock
  // session so another replica can take over at once, and joins the
  // thread. Idempotent.
  void Stop();

  // IsLeader()
  //
  // True while this replica holds the lock and its tasks run (or are
  // being started). Leadership may already be lost without this knowing
  // for up to session_timeout: act through fenced writes, not on this.
  bool IsLeader() const { return epoch_.load(std::memory_order_acquire) != kNotLeader; }

  // epoch()
  //
  // The epoch of the current leadership; 0 when not leader (and in static
  // mode, where writes are not fenced). Pass it as WriteContext::leader_epoch.
  int64_t epoch() const {
    const int64_t e = epoch_.load(std::memory_order_acquire);
    return e == kNotLeader ? 0 : e;
  }

  // WaitForLeadership()
  //
  // Blocks until this replica leads or `timeout` passes; returns IsLeader().
  bool WaitForLeadership(absl::Duration timeout) const;

  // Test hook: closes the lock session as if the connection broke; the
  // loss is handled on the election thread's next check.
  void TEST_DropSession();

 private:
  struct Session;  // the lock session's pqxx::connection
  struct Task {
    std::string name;
    StartFn start;
    StopFn stop;
  };
  static constexpr int64_t kNotLeader = -1;

  void Loop();
  // One attempt or check on the lock session; returns after `interval`.
  void Step();
  // Follower: terminates the lock session of a leader that stopped
  // checking it for longer than `lease`. May throw pqxx exceptions.
  void TerminateHungLeader();
  void BecomeLeader(int64_t epoch) ABSL_LOCKS_EXCLUDED(tasks_mu_);
  void LoseLeadership(const std::string& why) ABSL_LOCKS_EXCLUDED(tasks_mu_);
  void SetMetrics(int64_t epoch);

  const LeaderElectionOptions options_;
  Metrics* const metrics_;

  // The epoch while leader, kNotLeader otherwise. Written under tasks_mu_.
  std::atomic<int64_t> epoch_{kNotLeader};

  // Serialises task starts and stops, and guards the task list.
  mutable absl::Mutex tasks_mu_;
  std::vector<Task> tasks_ ABSL_GUARDED_BY(tasks_mu_);
  bool stopped_ ABSL_GUARDED_BY(tasks_mu_) = false;

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool drop_session_ ABSL_GUARDED_BY(mu_) = false;

  std::unique_ptr<Session> session_;  // election thread only
  std::thread thread_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_REPLICA_LEADER_H_
