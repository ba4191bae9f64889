// End-to-end test of the pipeline around the mapping with a real ClickHouse
// (issue 13): Debian's ClickHouse 18.16 in a temp dir (TestClickHouse),
// librdkafka's mock cluster in a helper process, PostgreSQL and the
// bucketmap-server binary (the handoff harness's Stack), and the bucketctl
// binary as an operator runs it.
//
//   - Three buckets in the default pool, each with one role, `clickhouse`:
//     a topic of 3 partitions and a consumer group of its own. ClickHouse
//     is each bucket's consumer: `bucketctl render clickhouse` writes a
//     Kafka engine table per bucket reading the topic with the bucket's
//     group (one consumer: with more, 18.16 re-reads after the late
//     joiner's rebalance, see docs/pipeline.md), and a view into
//     posthog.events recording the topic; it is applied with
//     clickhouse-client --multiquery, as docker-compose.yml's init step
//     does, and `render --diff` then finds ClickHouse in sync.
//   - Two producer sessions on the C++ client library (delivery tracker,
//     idempotent producer, route version in each event) send events for
//     200 teams, routed by default placement, each to its bucket's
//     clickhouse topic. Each event says which topic its producer chose and
//     under which route version.
//   - While events flow, ten teams move to another bucket with handoffs.
//     The handoff's drain of the `clickhouse` role waits for the source's
//     group, that is for ClickHouse's commits.
//   - Every event is in posthog.events exactly once, per-team counts equal
//     what was produced, and each event's _topic (stamped by the view of
//     the Kafka table that read it) is the topic it was produced to: its
//     team's bucket at its route version.
// A second test covers the lifecycle of the tables: consumers capped at the
// partition count read from Kafka, and a RETIRED bucket that shows up in
// `render --diff` (drop) and in `check-pipeline` (exit 3) until the diff
// is applied.
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "domain/placement.h"
#include "gtest/gtest.h"
#include "tests/handoff_e2e/handoff_harness.h"
#include "tests/support/clickhouse_harness.h"

namespace bucketmap {
namespace {

using handoff_harness::HarnessErrors;
using handoff_harness::Producer;
using handoff_harness::Stack;

constexpr int kTeams = 200;
constexpr int kProducers = 2;
constexpr int kPartitions = 3;
constexpr int kMoves = 10;
constexpr char kRole[] = "clickhouse";

std::string Topic(int32_t bucket) { return absl::StrCat("ch_events_", bucket); }
std::string Group(int32_t bucket) { return absl::StrCat("clickhouse_", bucket); }

// What a bucketctl run printed and how it exited.
struct CliRun {
  int exit_code = -1;
  std::string out;
};

// One event of the PostHog-like template, as JSONEachRow. Its uuid encodes
// (team, seq); properties carry the topic and route version the producer
// used.
std::string Event(int64_t team, int64_t seq, const std::string& topic, int64_t version) {
  const std::string uuid = absl::StrCat(absl::Hex(team, absl::kZeroPad8), "-0000-4000-8000-",
                                        absl::Hex(seq, absl::kZeroPad12));
  return absl::StrCat(R"({"uuid":")", uuid, R"(","event":"e2e","properties":"{\"seq\":)", seq,
                      R"(,\"topic\":\")", topic, R"(\",\"v\":)", version,
                      R"(}","timestamp":"2024-05-01 12:00:00","team_id":)", team,
                      R"(,"distinct_id":"user-)", team, R"(","created_at":"2024-05-01 12:00:01"})");
}

class ClickHouseE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<std::pair<std::string, int>> topics = {{"bucketmap_changes", 1}};
    for (int32_t b = 1; b <= 4; ++b) topics.emplace_back(Topic(b), kPartitions);
    auto stack = Stack::Start(topics, BUCKETMAP_SERVER_BINARY);
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = *std::move(stack);
    absl::Status s = stack_->Launch();
    ASSERT_TRUE(s.ok()) << s;
    auto ch = TestClickHouse::Start(BUCKETMAP_SOURCE_DIR);
    ASSERT_TRUE(ch.ok()) << ch.status();
    ch_ = *std::move(ch);
    // deploy/clickhouse/users.d was merged in.
    absl::StatusOr<std::string> flush =
        ch_->Query("SELECT value FROM system.settings WHERE name = 'stream_flush_interval_ms'");
    ASSERT_TRUE(flush.ok()) << flush.status();
    ASSERT_EQ(*flush, "500\n");
    errors_before_ = HarnessErrors();
  }

  void TearDown() override {
    producers_.clear();
    EXPECT_EQ(HarnessErrors(), errors_before_);
    if (HasFailure()) {
      std::fprintf(stderr, "clickhouse log:\n%s\nserver log (tail):\n%s\n",
                   ch_ ? ch_->LogTail().c_str() : "",
                   stack_ ? ReadFile(stack_->log_path()).substr(0, 20000).c_str() : "");
    }
    ch_.reset();
    if (stack_) stack_->Kill();
  }

  // Runs bucketctl against the stack's server.
  CliRun Bucketctl(const std::vector<std::string>& args) {
    std::string command = absl::StrCat(BUCKETCTL_BINARY, " --server ", stack_->server());
    for (const std::string& a : args) absl::StrAppend(&command, " '", a, "'");
    absl::StrAppend(&command, " 2>&1");
    CliRun run;
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) return run;
    char buf[4096];
    for (size_t n; (n = fread(buf, 1, sizeof(buf), pipe)) > 0;) run.out.append(buf, n);
    const int status = pclose(pipe);
    run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return run;
  }

  // The flags of every `render clickhouse` of a test. Blocks of 100 rows:
  // at this test's rate (about 330 events/s per bucket) ClickHouse commits
  // several times a second (deploy/clickhouse/posthog_events.template,
  // max_block_size).
  std::vector<std::string> RenderFlags() {
    return {"--kafka_brokers", stack_->bootstrap(), "--consumers",
            consumers_,        "--max_block_size",  "100"};
  }

  // Renders the ClickHouse DDL with bucketctl and applies it with
  // clickhouse-client.
  void RenderAndApply() {
    std::vector<std::string> args = {"render", "clickhouse"};
    for (const std::string& f : RenderFlags()) args.push_back(f);
    CliRun render = Bucketctl(args);
    ASSERT_EQ(render.exit_code, 0) << render.out;
    absl::Status applied = ch_->ApplyWithClient(render.out);
    ASSERT_TRUE(applied.ok()) << applied;
  }

  CliRun Diff() {
    std::vector<std::string> args = {"render", "clickhouse", "--diff", "--clickhouse_url",
                                     ch_->http_url()};
    for (const std::string& f : RenderFlags()) args.push_back(f);
    return Bucketctl(args);
  }

  CliRun Check() {
    return Bucketctl({"check-pipeline", "--kafka_brokers", stack_->bootstrap(), "--clickhouse_url",
                      ch_->http_url()});
  }

  int32_t CreateBucket(int32_t id, const std::string& pool) {
    v1::CreateBucketRequest req;
    v1::Bucket* bucket = req.mutable_bucket();
    bucket->set_name(absl::StrCat("b", id));
    bucket->set_pool(pool);
    (*bucket->mutable_topics())[kRole] = Topic(id);
    (*bucket->mutable_consumer_groups())[kRole] = Group(id);
    bucket->add_drain_order(kRole);
    req.set_reason("clickhouse e2e");
    v1::CreateBucketResponse resp;
    grpc::Status s = stack_->admin()->CreateBucket(handoff_harness::Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.bucket().id(), id);
    return resp.bucket().id();
  }

  int64_t SetState(int32_t bucket, v1::BucketState state) {
    v1::UpdateBucketRequest req;
    req.mutable_bucket()->set_id(bucket);
    req.mutable_bucket()->set_state(state);
    req.mutable_update_mask()->add_paths("state");
    req.set_reason("clickhouse e2e");
    v1::UpdateBucketResponse resp;
    grpc::Status s = stack_->admin()->UpdateBucket(handoff_harness::Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.version();
  }

  // The rows of a TabSeparated answer, split into fields.
  std::vector<std::vector<std::string>> Rows(const std::string& sql) {
    absl::StatusOr<std::string> answer = ch_->Query(sql);
    EXPECT_TRUE(answer.ok()) << answer.status();
    std::vector<std::vector<std::string>> rows;
    if (!answer.ok()) return rows;
    for (absl::string_view line : absl::StrSplit(*answer, '\n', absl::SkipEmpty())) {
      rows.push_back(absl::StrSplit(line, '\t'));
    }
    return rows;
  }

  int64_t Count(const std::string& sql) {
    auto rows = Rows(sql);
    int64_t n = -1;
    if (rows.size() == 1 && rows[0].size() == 1) EXPECT_TRUE(absl::SimpleAtoi(rows[0][0], &n));
    return n;
  }

  std::unique_ptr<Stack> stack_;
  std::unique_ptr<TestClickHouse> ch_;
  std::vector<std::unique_ptr<Producer>> producers_;
  int64_t errors_before_ = 0;
  // --consumers of render clickhouse. One consumer per table: a second one
  // joins its group after the first, and ClickHouse 18.16 then reads again
  // what the first had read but not committed (docs/pipeline.md).
  std::string consumers_ = "1";
};

TEST_F(ClickHouseE2eTest, EveryEventOnceFromItsBucketsTopicAcrossTenMoves) {
  const absl::Time start = absl::Now();
  for (int32_t b = 1; b <= 3; ++b) CreateBucket(b, "default");
  ASSERT_TRUE(stack_->WaitNoOpenHandoffs(absl::Seconds(30)));
  ASSERT_NO_FATAL_FAILURE(RenderAndApply());
  // Idempotent: applying it again changes nothing.
  ASSERT_NO_FATAL_FAILURE(RenderAndApply());
  CliRun diff = Diff();
  EXPECT_EQ(diff.exit_code, 0) << diff.out;
  EXPECT_EQ(diff.out, "-- in sync\n");
  CliRun check = Check();
  EXPECT_EQ(check.exit_code, 0) << check.out;
  EXPECT_EQ(Count("SELECT count() FROM system.tables WHERE database = 'posthog' AND engine = "
                  "'Kafka'"),
            3);

  // Default placement over buckets 1..3 (weight 100 each).
  const PlacementTable placement = PlacementTable::Build({{1, 100}, {2, 100}, {3, 100}});
  for (int p = 0; p < kProducers; ++p) {
    std::vector<int64_t> teams;
    for (int64_t team = 1; team <= kTeams; ++team) {
      if (team % kProducers == p) teams.push_back(team);
    }
    producers_.push_back(std::make_unique<Producer>(p, stack_->server(), stack_->bootstrap(), teams,
                                                    absl::Milliseconds(200), kRole, Event));
  }
  for (auto& p : producers_) p->Start();
  absl::SleepFor(absl::Seconds(3));

  // Ten teams move to another bucket while events flow.
  std::map<int64_t, std::pair<int32_t, int32_t>> moved;  // team -> (from, to)
  std::map<int64_t, int64_t> move_version;
  int64_t first_move = 0;
  for (int64_t team = 1; moved.size() < kMoves; ++team) {
    const int32_t from = placement.BucketForTeam(team);
    const int32_t to = from % 3 + 1;
    absl::StatusOr<int64_t> v = stack_->Assign(team, to);
    ASSERT_TRUE(v.ok()) << v.status();
    if (first_move == 0) first_move = *v;
    moved[team] = {from, to};
    move_version[team] = *v;
  }
  ASSERT_TRUE(stack_->WaitNoOpenHandoffs(absl::Seconds(60))) << "handoffs did not end";
  const absl::Duration moves_took = absl::Now() - start;
  int handoffs = 0;
  absl::Duration longest_handoff;
  for (const v1::Handoff& h : stack_->Handoffs(true)) {
    if (h.opened_version() < first_move) continue;
    ++handoffs;
    // phase_time is when it COMPLETED.
    longest_handoff = std::max(
        longest_handoff, absl::Seconds(h.phase_time().seconds() - h.open_time().seconds()) +
                             absl::Nanoseconds(h.phase_time().nanos() - h.open_time().nanos()));
    EXPECT_EQ(h.state(), v1::HANDOFF_COMPLETED) << h.ShortDebugString();
    // The drain of the clickhouse role waited for the source's group, whose
    // only member is ClickHouse's Kafka table: its commits reached the
    // topic's end offsets read at the drain point.
    ASSERT_EQ(h.drains_size(), 1) << h.ShortDebugString();
    const v1::RoleDrain& d = h.drains(0);
    EXPECT_EQ(d.role(), kRole);
    EXPECT_EQ(d.consumer_group(), Group(h.source_bucket_id()));
    EXPECT_EQ(d.topic(), Topic(h.source_bucket_id()));
    EXPECT_TRUE(d.drained());
    ASSERT_EQ(d.end_offsets_size(), kPartitions);
    ASSERT_EQ(d.committed_offsets_size(), kPartitions);
    int64_t end = 0;
    for (int p = 0; p < kPartitions; ++p) {
      EXPECT_GE(d.committed_offsets(p), d.end_offsets(p)) << h.ShortDebugString();
      end += d.end_offsets(p);
    }
    EXPECT_GT(end, 0) << "events had reached the source before the move";
  }
  EXPECT_EQ(handoffs, kMoves);

  // Events keep flowing on the new routes, then stop.
  absl::SleepFor(absl::Seconds(2));
  std::map<int64_t, int64_t> produced;
  int64_t total = 0;
  for (auto& p : producers_) {
    p->Stop();
    EXPECT_EQ(p->failed(), 0);
    EXPECT_EQ(p->unroutable(), 0);
    EXPECT_EQ(p->tracker().in_flight(), 0);
    for (const auto& [team, n] : p->produced()) {
      produced[team] = n;
      total += n;
    }
  }
  ASSERT_EQ(produced.size(), static_cast<size_t>(kTeams));
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  // Until every event is in (a duplicate must not end the wait early).
  while (Count("SELECT uniqExact(uuid) FROM posthog.events") < total && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(200));
  }
  // A moment more: nothing arrives twice late.
  absl::SleepFor(absl::Seconds(1));
  EXPECT_EQ(Count("SELECT count() FROM posthog.events"), total);
  EXPECT_EQ(Count("SELECT uniqExact(uuid) FROM posthog.events"), total) << "duplicates";

  // Per team: every event once.
  for (const auto& row : Rows("SELECT team_id, count(), uniqExact(uuid), max(visitParamExtractUInt("
                              "properties, 'seq')) FROM posthog.events GROUP BY team_id "
                              "ORDER BY team_id")) {
    ASSERT_EQ(row.size(), 4u);
    int64_t team = 0, count = 0, unique = 0, max_seq = 0;
    ASSERT_TRUE(absl::SimpleAtoi(row[0], &team) && absl::SimpleAtoi(row[1], &count) &&
                absl::SimpleAtoi(row[2], &unique) && absl::SimpleAtoi(row[3], &max_seq));
    EXPECT_EQ(count, produced[team]) << "team " << team;
    EXPECT_EQ(unique, count) << "team " << team;
    EXPECT_EQ(max_seq + 1, produced[team]) << "team " << team;
  }
  if (HasFailure()) {
    // Which events of the first teams are missing or doubled, and where
    // they were read from.
    for (const auto& row :
         Rows("SELECT team_id, visitParamExtractUInt(properties, 'seq') AS s, count() AS n, "
              "groupArray(_topic), any(visitParamExtractUInt(properties, 'v')) FROM "
              "posthog.events WHERE team_id <= 12 GROUP BY team_id, s HAVING n > 1 ORDER BY "
              "team_id, s LIMIT 40")) {
      std::fprintf(stderr, "doubled: %s\n", absl::StrJoin(row, " ").c_str());
    }
    for (int64_t team = 1; team <= 12; ++team) {
      std::set<int64_t> seen;
      for (const auto& row : Rows(absl::StrCat("SELECT visitParamExtractUInt(properties, 'seq') "
                                               "FROM posthog.events WHERE team_id = ",
                                               team))) {
        int64_t seq = 0;
        if (absl::SimpleAtoi(row[0], &seq)) seen.insert(seq);
      }
      std::vector<int64_t> missing;
      for (int64_t seq = 0; seq < produced[team]; ++seq) {
        if (!seen.count(seq)) missing.push_back(seq);
      }
      if (!missing.empty()) {
        std::fprintf(stderr, "team %lld (moved at v%lld) misses seqs %s\n",
                     static_cast<long long>(team), static_cast<long long>(move_version[team]),
                     absl::StrJoin(missing, ",").c_str());
      }
    }
  }
  // Each event came from the topic its producer sent it to...
  EXPECT_EQ(Count("SELECT count() FROM posthog.events WHERE _topic != "
                  "visitParamExtractString(properties, 'topic')"),
            0);
  // ...which is its team's bucket's topic at the event's route version.
  int64_t after_move = 0;
  for (const auto& row :
       Rows("SELECT team_id, _topic, visitParamExtractUInt(properties, 'v') AS v, "
            "count() FROM posthog.events GROUP BY team_id, _topic, v")) {
    int64_t team = 0, version = 0, n = 0;
    ASSERT_TRUE(absl::SimpleAtoi(row[0], &team) && absl::SimpleAtoi(row[2], &version) &&
                absl::SimpleAtoi(row[3], &n));
    int32_t bucket = placement.BucketForTeam(team);
    auto m = moved.find(team);
    if (m != moved.end() && version >= move_version[team]) {
      bucket = m->second.second;
      after_move += n;
    }
    EXPECT_EQ(row[1], Topic(bucket)) << "team " << team << " at version " << version;
  }
  EXPECT_GT(after_move, 0) << "the moved teams produced on their new routes";
  std::fprintf(stderr,
               "events %lld (%lld of moved teams after their move), handoffs %d (longest %.1f s "
               "from open to COMPLETED), setup and moves %.1f s, total %.1f s\n",
               static_cast<long long>(total), static_cast<long long>(after_move), handoffs,
               absl::ToDoubleSeconds(longest_handoff), absl::ToDoubleSeconds(moves_took),
               absl::ToDoubleSeconds(absl::Now() - start));
}

TEST_F(ClickHouseE2eTest, RetiredBucketIsDroppedByTheDiffAndFoundByTheCheck) {
  for (int32_t b = 1; b <= 2; ++b) CreateBucket(b, "default");
  // A bucket in a pool of its own, so that it can retire without moving
  // teams.
  CreateBucket(3, "spare");
  ASSERT_TRUE(stack_->WaitNoOpenHandoffs(absl::Seconds(30)));
  // More consumers than the topics' 3 partitions: capped at 3, read from
  // Kafka.
  consumers_ = "8";
  ASSERT_NO_FATAL_FAILURE(RenderAndApply());
  EXPECT_EQ(Count("SELECT count() FROM system.tables WHERE database = 'posthog' AND engine = "
                  "'Kafka' AND engine_full LIKE '%kafka_num_consumers = 3,%'"),
            3);
  CliRun check = Check();
  EXPECT_EQ(check.exit_code, 0) << check.out;

  SetState(3, v1::DRAINING);
  ASSERT_TRUE(stack_->WaitNoOpenHandoffs(absl::Seconds(30)));
  SetState(3, v1::RETIRED);
  // The rendered DDL no longer has bucket 3; ClickHouse still does.
  CliRun render = Bucketctl({"render", "clickhouse", "--kafka_brokers", stack_->bootstrap()});
  ASSERT_EQ(render.exit_code, 0) << render.out;
  EXPECT_EQ(render.out.find("kafka_events_b3"), std::string::npos) << render.out;
  check = Check();
  EXPECT_EQ(check.exit_code, 3) << check.out;
  EXPECT_NE(check.out.find("problem: ClickHouse still has posthog.kafka_events_b3 of bucket 3 "
                           "(b3), which is RETIRED"),
            std::string::npos)
      << check.out;
  CliRun diff = Diff();
  ASSERT_EQ(diff.exit_code, 0) << diff.out;
  EXPECT_EQ(diff.out,
            "-- drop: events_b3_mv (bucket 3 (b3) is RETIRED)\n"
            "DROP TABLE IF EXISTS posthog.events_b3_mv;\n"
            "-- drop: kafka_events_b3 (bucket 3 (b3) is RETIRED)\n"
            "DROP TABLE IF EXISTS posthog.kafka_events_b3;\n");
  // The diff is SQL that brings ClickHouse in line.
  absl::Status applied = ch_->ApplyWithClient(diff.out);
  ASSERT_TRUE(applied.ok()) << applied;
  EXPECT_EQ(Diff().out, "-- in sync\n");
  check = Check();
  EXPECT_EQ(check.exit_code, 0) << check.out;
  EXPECT_EQ(Count("SELECT count() FROM system.tables WHERE database = 'posthog' AND name LIKE "
                  "'%b3%'"),
            0);
}

}  // namespace
}  // namespace bucketmap
