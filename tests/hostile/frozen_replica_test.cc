// A replica frozen (SIGSTOP) in the middle of a write, while its
// transaction holds the version row, must not stop the other replicas'
// writes: every write locks bm_meta (SELECT ... FOR UPDATE), and a frozen
// process's socket stays open, so PostgreSQL would keep the transaction,
// and the lock, for as long as the process is stopped.
//
// Two bucketmap-server processes on one database take sequential writes.
// One of them (once the leader, once the follower) is made to pause a
// write just before COMMIT (--TEST_pause_before_commit, so it holds the
// version row for certain: pg_stat_activity shows it idle in transaction),
// then is SIGSTOPped for 8 s. Writes through the other replica must
// succeed again within 3 s of the freeze; after SIGCONT the resumed
// replica writes again; versions stay gapless and every acknowledged
// write is stored; the paused write was not committed, and its retry with
// the same request_id writes it once.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/support/local_process.h"
#include "tests/support/pg_harness.h"
#include "tests/support/server_process.h"

namespace bucketmap {
namespace {

// Each replica pauses a request_id of its own, so that the retry through
// the other replica does not pause.
std::string PausedRequestId(int replica) { return absl::StrCat("frozen-write-", replica); }
constexpr int64_t kPausedTeam = 1'000'000;
constexpr absl::Duration kFreeze = absl::Seconds(8);
constexpr absl::Duration kWriteTimeout = absl::Seconds(5);

// One write of a writer thread.
struct Write {
  int replica = 0;
  int64_t team = 0;
  absl::Time end;
  grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
  int64_t version = 0;
};

// The writes of the writer threads, in completion order.
class WriteLog {
 public:
  void Add(const Write& w) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    writes_.push_back(w);
  }

  // Acknowledged writes through `replica` that ended after `after`.
  int64_t AckedBy(int replica, absl::Time after) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return std::count_if(writes_.begin(), writes_.end(), [&](const Write& w) {
      return w.replica == replica && w.code == grpc::StatusCode::OK && w.end > after;
    });
  }

  std::vector<Write> All() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return writes_;
  }

 private:
  absl::Mutex mu_;
  std::vector<Write> writes_ ABSL_GUARDED_BY(mu_);
};

class FrozenReplicaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = TestPostgres::Start();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
    for (int i = 0; i < 2; ++i) {
      const std::string name = absl::StrCat("r", i + 1);
      servers_.push_back(std::make_unique<ServerProcess>(BUCKETMAP_SERVER_BINARY,
                                                         pg_->dir() + "/" + name + ".log"));
      // --handoffs=false: these writes are about the version row, not moves.
      absl::Status launched = servers_.back()->Launch(
          pg_->url(), {"--replica_name=" + name, "--handoffs=false", "--shutdown_grace=2s",
                       "--TEST_pause_before_commit=" + PausedRequestId(i)});
      ASSERT_TRUE(launched.ok()) << name << ": " << launched;
    }
  }

  void TearDown() override {
    for (auto& s : servers_) {
      if (s->running()) kill(s->pid(), SIGCONT);
      s->Kill();
    }
  }

  // The index of the one replica whose metric says it leads; -1 until
  // exactly one does.
  int WaitForLeader(absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    for (;;) {
      int leader = -1;
      int leaders = 0;
      for (size_t i = 0; i < servers_.size(); ++i) {
        if (MetricValue(HttpGet(servers_[i]->metrics_port(), "/metrics"), "bucketmap_leader") ==
            1) {
          ++leaders;
          leader = static_cast<int>(i);
        }
      }
      if (leaders == 1 || absl::Now() > end) return leaders == 1 ? leader : -1;
      absl::SleepFor(absl::Milliseconds(20));
    }
  }

  static grpc::Status Assign(ServerProcess& s, int64_t team, absl::Duration timeout,
                             const std::string& request_id = "",
                             v1::AssignTeamResponse* resp = nullptr) {
    v1::AssignTeamRequest req;
    req.set_team_id(team);
    req.set_bucket_id(1);
    req.set_reason("frozen replica test");
    req.set_request_id(request_id);
    v1::AssignTeamResponse local;
    return s.admin()->AssignTeam(ContextWithTimeout(timeout).get(), req,
                                 resp != nullptr ? resp : &local);
  }

  std::vector<std::vector<std::string>> Rows(const std::string& sql) {
    auto out = pg_->Psql(sql);
    EXPECT_TRUE(out.ok()) << out.status();
    std::vector<std::vector<std::string>> rows;
    if (!out.ok() || out->empty()) return rows;
    for (absl::string_view line : absl::StrSplit(*out, '\n')) {
      rows.push_back(absl::StrSplit(line, '|'));
    }
    return rows;
  }

  int64_t PsqlInt(const std::string& sql) {
    auto rows = Rows(sql);
    int64_t value = -1;
    if (rows.size() != 1 || !absl::SimpleAtoi(rows[0][0], &value)) ADD_FAILURE() << sql;
    return value;
  }

  // Freezes the leader (or the follower) mid-write; see the file comment.
  void FreezeMidWrite(bool freeze_leader);

  std::unique_ptr<TestPostgres> pg_;
  std::vector<std::unique_ptr<ServerProcess>> servers_;
};

void FrozenReplicaTest::FreezeMidWrite(bool freeze_leader) {
  const int leader = WaitForLeader(absl::Seconds(10));
  ASSERT_GE(leader, 0) << "no single leader";
  const int victim_index = freeze_leader ? leader : 1 - leader;
  ServerProcess& victim = *servers_[victim_index];
  ServerProcess& survivor = *servers_[1 - victim_index];
  {
    v1::CreateBucketRequest req;
    req.mutable_bucket()->set_name("b1");
    (*req.mutable_bucket()->mutable_topics())["ingestion"] = "events_b1";
    req.set_reason("frozen replica test");
    v1::CreateBucketResponse resp;
    grpc::Status s =
        survivor.admin()->CreateBucket(ContextWithTimeout(absl::Seconds(10)).get(), req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // Sequential writes through both replicas, each to a team of its own.
  WriteLog log;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> next_team{1};
  std::vector<std::thread> writers;
  // Joins the threads on every way out, a failed ASSERT included.
  struct Joiner {
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~Joiner() {
      stop = true;
      for (auto& t : threads) {
        if (t.joinable()) t.join();
      }
    }
  } joiner{stop, writers};
  for (int r = 0; r < 2; ++r) {
    writers.emplace_back([&, r] {
      while (!stop.load()) {
        Write w;
        w.replica = r;
        w.team = next_team.fetch_add(1);
        v1::AssignTeamResponse resp;
        const grpc::Status s = Assign(*servers_[r], w.team, kWriteTimeout, "", &resp);
        w.end = absl::Now();
        w.code = s.error_code();
        w.version = resp.version();
        log.Add(w);
      }
    });
  }
  auto acked_by = [&log](int replica, absl::Time after) { return log.AckedBy(replica, after); };
  const absl::Time started = absl::Now();
  while ((acked_by(0, started) < 20 || acked_by(1, started) < 20) &&
         absl::Now() - started < absl::Seconds(30)) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_GE(acked_by(victim_index, started), 20);
  ASSERT_GE(acked_by(1 - victim_index, started), 20);

  // The victim takes a write that pauses before COMMIT, holding the row
  // lock, until its deadline (6 s: it ends during the freeze).
  const std::string paused_id = PausedRequestId(victim_index);
  grpc::Status paused_status;
  writers.emplace_back(
      [&] { paused_status = Assign(victim, kPausedTeam, absl::Seconds(6), paused_id); });
  const std::string holding =
      "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
      " AND query LIKE 'INSERT INTO request_ids%'";
  const absl::Time wait_end = absl::Now() + absl::Seconds(10);
  while (PsqlInt(holding) != 1 && absl::Now() < wait_end) absl::SleepFor(absl::Milliseconds(10));
  ASSERT_EQ(PsqlInt(holding), 1) << "the paused write does not hold the version row:\n"
                                 << victim.log();

  ASSERT_EQ(kill(victim.pid(), SIGSTOP), 0);
  const absl::Time frozen = absl::Now();
  absl::SleepFor(kFreeze);
  ASSERT_EQ(kill(victim.pid(), SIGCONT), 0);
  const absl::Time resumed = absl::Now();
  writers.back().join();  // the paused write's caller
  EXPECT_NE(paused_status.error_code(), grpc::StatusCode::OK);

  // The resumed replica writes again (its broken connection replaced).
  while (acked_by(victim_index, resumed) == 0 && absl::Now() - resumed < absl::Seconds(15)) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  stop = true;
  for (auto& t : writers) {
    if (t.joinable()) t.join();
  }

  absl::Time survivor_back = absl::InfiniteFuture();
  absl::Time victim_back = absl::InfiniteFuture();
  int survivor_during_freeze = 0;
  std::map<int64_t, int64_t> acked;  // team -> version
  for (const Write& w : log.All()) {
    if (w.code != grpc::StatusCode::OK) continue;
    acked[w.team] = w.version;
    if (w.replica != victim_index && w.end > frozen) {
      survivor_back = std::min(survivor_back, w.end);
      if (w.end < frozen + kFreeze) ++survivor_during_freeze;
    }
    if (w.replica == victim_index && w.end > resumed) victim_back = std::min(victim_back, w.end);
  }
  const absl::Duration recovery = survivor_back - frozen;
  const absl::Duration victim_recovery = victim_back - resumed;
  std::printf(
      "%s frozen for %s mid-write: writes through the other replica back after %s (%d during "
      "the freeze); the resumed replica writes again after %s; %zu acknowledged writes\n",
      freeze_leader ? "leader" : "follower", absl::FormatDuration(kFreeze).c_str(),
      absl::FormatDuration(recovery).c_str(), survivor_during_freeze,
      absl::FormatDuration(victim_recovery).c_str(), acked.size());
  EXPECT_LT(recovery, absl::Seconds(3)) << survivor.log();
  EXPECT_GT(survivor_during_freeze, 10);
  EXPECT_LT(victim_recovery, absl::Seconds(15)) << victim.log();

  // The paused write was rolled back; its retry writes it, once.
  v1::AssignTeamResponse retry;
  grpc::Status s = Assign(survivor, kPausedTeam, absl::Seconds(10), paused_id, &retry);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(retry.effect().replayed()) << "the paused write was committed:\n" << victim.log();
  acked[kPausedTeam] = retry.version();
  s = Assign(victim, kPausedTeam, absl::Seconds(10), paused_id, &retry);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(retry.effect().replayed());
  EXPECT_EQ(retry.version(), acked[kPausedTeam]);

  // Gapless versions, and every acknowledged write stored at its version.
  const int64_t last = PsqlInt("SELECT version FROM bm_meta");
  EXPECT_EQ(PsqlInt("SELECT count(*) FROM change_log"), last);
  EXPECT_EQ(PsqlInt("SELECT max(version) FROM change_log"), last);
  std::map<int64_t, int64_t> stored;
  for (const auto& row : Rows("SELECT team_id, version FROM assignments")) {
    int64_t team = 0;
    int64_t version = 0;
    ASSERT_TRUE(absl::SimpleAtoi(row[0], &team) && absl::SimpleAtoi(row[1], &version));
    stored[team] = version;
  }
  int lost = 0;
  for (const auto& [team, version] : acked) {
    auto it = stored.find(team);
    if (it == stored.end() || it->second != version) ++lost;
  }
  EXPECT_EQ(lost, 0) << "acknowledged writes missing or at another version";
  // Frozen past the 6 s lease, the leader was replaced; it stepped down.
  const int leader_after = WaitForLeader(absl::Seconds(10));
  EXPECT_EQ(leader_after, freeze_leader ? 1 - victim_index : leader)
      << "leader after the freeze: " << leader_after;
}

TEST_F(FrozenReplicaTest, FrozenLeaderMidWriteDoesNotStopTheOtherReplicasWrites) {
  FreezeMidWrite(/*freeze_leader=*/true);
}

TEST_F(FrozenReplicaTest, FrozenFollowerMidWriteDoesNotStopTheOtherReplicasWrites) {
  FreezeMidWrite(/*freeze_leader=*/false);
}

}  // namespace
}  // namespace bucketmap
