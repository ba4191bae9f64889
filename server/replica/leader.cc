#include "server/replica/leader.h"

#include <algorithm>
#include <pqxx/pqxx>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/store/pg_util.h"
#include "spdlog/spdlog.h"

namespace bucketmap {

struct LeaderElection::Session {
  explicit Session(const std::string& conninfo) : conn(conninfo) {}
  pqxx::connection conn;
};

LeaderElection::LeaderElection(LeaderElectionOptions options, Metrics* metrics)
    : options_(std::move(options)), metrics_(metrics) {}

LeaderElection::~LeaderElection() { Stop(); }

void LeaderElection::AddLeaderTask(std::string name, StartFn start_fn, StopFn stop_fn) {
  absl::MutexLock lock(&tasks_mu_);
  tasks_.push_back(Task{std::move(name), std::move(start_fn), std::move(stop_fn)});
  const int64_t e = epoch_.load(std::memory_order_acquire);
  if (e != kNotLeader) tasks_.back().start(e);
}

void LeaderElection::Start() {
  {
    absl::MutexLock lock(&mu_);
    if (started_ || stop_) return;
    started_ = true;
  }
  if (options_.url.empty()) {
    spdlog::info("leader election: no database URL, {} leads alone (unfenced)", options_.holder);
    BecomeLeader(0);
    return;
  }
  thread_ = std::thread([this] { Loop(); });
}

void LeaderElection::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
  LoseLeadership("stopping");
  absl::MutexLock lock(&tasks_mu_);
  stopped_ = true;
}

bool LeaderElection::WaitForLeadership(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto leading = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return IsLeader(); };
  mu_.AwaitWithTimeout(absl::Condition(&leading), timeout);
  return IsLeader();
}

void LeaderElection::TEST_DropSession() {
  absl::MutexLock lock(&mu_);
  drop_session_ = true;
}

void LeaderElection::SetMetrics(int64_t epoch) {
  if (metrics_ == nullptr) return;
  metrics_->SetLeader(epoch == kNotLeader ? 0 : epoch);
}

void LeaderElection::BecomeLeader(int64_t epoch) {
  absl::MutexLock lock(&tasks_mu_);
  if (stopped_) return;
  {
    absl::MutexLock state(&mu_);  // wakes WaitForLeadership
    epoch_.store(epoch, std::memory_order_release);
  }
  SetMetrics(epoch);
  if (metrics_ != nullptr) metrics_->RecordLeaderChange(/*acquired=*/true);
  spdlog::info("leader election: {} is the leader, epoch {}", options_.holder, epoch);
  for (Task& task : tasks_) {
    spdlog::info("leader election: starting {}", task.name);
    task.start(epoch);
  }
}

void LeaderElection::LoseLeadership(const std::string& why) {
  absl::MutexLock lock(&tasks_mu_);
  const int64_t epoch = epoch_.load(std::memory_order_acquire);
  if (epoch == kNotLeader) return;
  {
    // First, so leader-only work that checks IsLeader() stops at once.
    absl::MutexLock state(&mu_);
    epoch_.store(kNotLeader, std::memory_order_release);
  }
  spdlog::warn("leader election: {} is no longer the leader (epoch {}): {}", options_.holder, epoch,
               why);
  for (auto it = tasks_.rbegin(); it != tasks_.rend(); ++it) {
    spdlog::info("leader election: stopping {}", it->name);
    it->stop();
  }
  SetMetrics(kNotLeader);
  if (metrics_ != nullptr) metrics_->RecordLeaderChange(/*acquired=*/false);
}

void LeaderElection::Loop() {
  for (;;) {
    Step();
    absl::MutexLock lock(&mu_);
    auto wake = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_ || drop_session_; };
    mu_.AwaitWithTimeout(absl::Condition(&wake), options_.interval);
    if (stop_) break;
  }
  // Tasks stop before the session closes, so a successor never starts
  // while they still run here.
  LoseLeadership("stopping");
  session_.reset();
}

void LeaderElection::TerminateHungLeader() {
  // The holder's lock session, and how long it has been idle: a live
  // leader runs its check every `interval`, which moves state_change.
  pqxx::nontransaction tx(session_->conn);
  const pqxx::result holder = tx.exec_params(
      "SELECT l.pid, (EXTRACT(EPOCH FROM now() - a.state_change) * 1000)::bigint"
      " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
      " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2"
      " AND l.objsubid = 1 AND a.state <> 'active'",
      static_cast<int64_t>(static_cast<uint64_t>(kLeaderLockKey) >> 32),
      static_cast<int64_t>(static_cast<uint64_t>(kLeaderLockKey) & 0xffffffffu));
  if (holder.empty() || holder[0][1].is_null()) return;
  const absl::Duration idle = absl::Milliseconds(holder[0][1].as<int64_t>());
  if (idle < options_.lease) return;
  const int pid = holder[0][0].as<int>();
  spdlog::warn(
      "leader election: the leader's lock session (backend {}) has been idle for {}, "
      "longer than the {} lease: the leader is hung; terminating its session",
      pid, absl::FormatDuration(idle), absl::FormatDuration(options_.lease));
  tx.exec_params("SELECT pg_terminate_backend($1)", pid);
  tx.commit();
}

void LeaderElection::Step() {
  bool drop = false;
  {
    absl::MutexLock lock(&mu_);
    drop = drop_session_;
    drop_session_ = false;
  }
  if (drop && session_ != nullptr) {
    session_.reset();
    LoseLeadership("lock session dropped (test)");
    return;
  }
  const int64_t timeout_s = std::max<int64_t>(
      1, absl::ToInt64Seconds(absl::Ceil(options_.session_timeout, absl::Seconds(1))));
  try {
    if (session_ == nullptr) {
      // Tighter than the pool's defaults: this session's death is how a
      // dead leader is noticed, by both ends.
      const std::string conninfo = WithConnectionDefaults(
          WithConnectionParams(options_.url, {{"keepalives_idle", "1"},
                                              {"keepalives_interval", "1"},
                                              {"keepalives_count", absl::StrCat(timeout_s)},
                                              {"tcp_user_timeout", absl::StrCat(timeout_s * 1000)},
                                              {"application_name", "bucketmap-leader"}}),
          static_cast<int>(timeout_s));
      auto session = std::make_unique<Session>(conninfo);
      pqxx::nontransaction tx(session->conn);
      // The server side of the same: PostgreSQL drops a vanished leader's
      // session, and with it the lock, within about session_timeout.
      tx.exec0(
          absl::StrCat("SET tcp_keepalives_idle = 1; SET tcp_keepalives_interval = 1;"
                       " SET tcp_keepalives_count = ",
                       timeout_s, "; SET tcp_user_timeout = ", timeout_s * 1000,
                       "; SET statement_timeout = ", timeout_s * 1000));
      tx.commit();
      session_ = std::move(session);
    }
    if (!IsLeader()) {
      bool acquired = false;
      {
        pqxx::nontransaction tx(session_->conn);
        acquired = tx.exec_params1("SELECT pg_try_advisory_lock($1)", kLeaderLockKey)[0].as<bool>();
        tx.commit();
      }
      if (!acquired) {
        TerminateHungLeader();
        return;
      }
      int64_t epoch = 0;
      try {
        pqxx::work tx(session_->conn);
        // Waits for the old leader's fenced writes still in flight (they
        // hold the row FOR SHARE); every later one sees the new epoch.
        tx.exec0(absl::StrCat("SET LOCAL statement_timeout = ",
                              absl::ToInt64Milliseconds(options_.bump_timeout)));
        epoch = tx.exec_params1(
                      "UPDATE bm_leader SET epoch = epoch + 1, holder = $1, acquired_at = now()"
                      " RETURNING epoch",
                      options_.holder)[0]
                    .as<int64_t>();
        tx.commit();
      } catch (const pqxx::broken_connection&) {
        throw;
      } catch (const std::exception& e) {
        spdlog::warn(
            "leader election: took the lock but could not bump the epoch ({}); "
            "releasing it",
            e.what());
        pqxx::nontransaction tx(session_->conn);
        tx.exec_params0("SELECT pg_advisory_unlock($1)", kLeaderLockKey);
        tx.commit();
        return;
      }
      BecomeLeader(epoch);
      return;
    }
    // The leader's check: the session is alive, still holds the lock, and
    // nobody bumped the epoch behind our back.
    pqxx::nontransaction tx(session_->conn);
    const pqxx::row row = tx.exec1(
        "SELECT (SELECT epoch FROM bm_leader),"
        " EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND pid = pg_backend_pid())");
    tx.commit();
    const int64_t epoch = row[0].as<int64_t>();
    if (!row[1].as<bool>() || epoch != this->epoch()) {
      session_.reset();
      LoseLeadership(absl::StrCat("the lock session no longer holds the lock at epoch ",
                                  this->epoch(), " (current epoch ", epoch, ")"));
    }
  } catch (...) {
    const absl::Status status = StatusFromCurrentException("leader lock session");
    session_.reset();
    if (IsLeader()) {
      LoseLeadership(status.ToString());
    } else {
      spdlog::debug("leader election: {}", status.ToString());
    }
  }
}

}  // namespace bucketmap
