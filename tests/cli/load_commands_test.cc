// bucketctl's `top` and `render keda` without a server (load_commands.h):
// the request, the table, the KEDA query and ScaledObjects, and the example
// of docs/autoscaling.md, which must be exactly what `render keda` writes
// for the bucket it describes.
#include "tools/bucketctl/load_commands.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/bucketctl/commands.h"

namespace bucketmap::bucketctl {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

ParsedArgs Parse(const std::string& command, const std::vector<std::string>& args) {
  const CommandSpec* spec = FindCommand(command);
  EXPECT_NE(spec, nullptr) << command;
  std::vector<FlagSpec> flags = spec->flags;
  auto parsed = ParseArgs(args, flags, false);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? *parsed : ParsedArgs();
}

// The bucket of docs/autoscaling.md's example.
v1::Bucket ExampleBucket() {
  v1::Bucket b;
  b.set_id(3);
  b.set_name("b3");
  b.set_state(v1::ACTIVE);
  (*b.mutable_topics())["ingestion"] = "events_plugin_ingestion_3";
  (*b.mutable_topics())["clickhouse"] = "clickhouse_events_json_3";
  (*b.mutable_consumer_groups())["ingestion"] = "ingestion-3";
  (*b.mutable_consumer_groups())["clickhouse"] = "clickhouse-3";
  return b;
}

// The text between "<!-- NAME -->\n```yaml\n" and "```\n<!-- /NAME -->".
std::string DocBlock(const std::string& file, const std::string& name) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  const std::string doc = text.str();
  const std::string open = "<!-- " + name + " -->\n```yaml\n";
  const size_t start = doc.find(open);
  const size_t end = doc.find("```\n<!-- /" + name + " -->");
  if (start == std::string::npos || end == std::string::npos) return "";
  return doc.substr(start + open.size(), end - start - open.size());
}

TEST(RenderKedaTest, TheDocsExampleIsWhatItRenders) {
  const ParsedArgs args = Parse("render", {"keda", "--bucket", "b3", "--namespace", "ingestion",
                                           "--deployment", "plugin-server-{bucket}-{role}"});
  absl::StatusOr<KedaOptions> options = BuildKedaOptions(args);
  ASSERT_TRUE(options.ok()) << options.status();
  absl::StatusOr<std::string> yaml = RenderKeda({ExampleBucket()}, *options);
  ASSERT_TRUE(yaml.ok()) << yaml.status();
  EXPECT_EQ(*yaml, DocBlock(BUCKETMAP_SOURCE_DIR "/docs/autoscaling.md", "keda:example"))
      << "docs/autoscaling.md's example is out of date; `render keda` writes:\n"
      << *yaml;
}

TEST(RenderKedaTest, OneObjectPerBucketAndRoleWithAGroup) {
  v1::Bucket other = ExampleBucket();
  other.set_id(4);
  other.set_name("b4");
  other.mutable_consumer_groups()->erase("clickhouse");
  v1::Bucket retired = ExampleBucket();
  retired.set_id(1);
  retired.set_name("old");
  retired.set_state(v1::RETIRED);
  absl::StatusOr<KedaOptions> options = BuildKedaOptions(Parse("render", {"keda"}));
  ASSERT_TRUE(options.ok());
  absl::StatusOr<std::string> yaml = RenderKeda({other, ExampleBucket(), retired}, *options);
  ASSERT_TRUE(yaml.ok()) << yaml.status();
  // b3 clickhouse, b3 ingestion, b4 ingestion; not the RETIRED bucket.
  size_t docs = 0;
  for (size_t at = 0; (at = yaml->find("kind: ScaledObject", at)) != std::string::npos; ++at) {
    ++docs;
  }
  EXPECT_EQ(docs, 3u);
  EXPECT_LT(yaml->find("bucket_id=\\\"3\\\",role=\\\"clickhouse\\\""),
            yaml->find("bucket_id=\\\"4\\\",role=\\\"ingestion\\\""));
  EXPECT_THAT(*yaml, Not(HasSubstr("bucket-id: \"1\"")));
  EXPECT_THAT(*yaml, HasSubstr("ignoreNullValues: \"false\""));
  EXPECT_THAT(*yaml, HasSubstr("  fallback:\n    failureThreshold: 3\n    replicas: 4\n"));

  // Only what was asked, and an error for what matches nothing.
  options = BuildKedaOptions(Parse("render", {"keda", "--bucket", "4", "--role", "ingestion"}));
  ASSERT_TRUE(options.ok());
  yaml = RenderKeda({other, ExampleBucket()}, *options);
  ASSERT_TRUE(yaml.ok());
  EXPECT_THAT(*yaml, HasSubstr("name: \"bucketmap-b4-ingestion\""));
  EXPECT_THAT(*yaml, Not(HasSubstr("b3")));
  options = BuildKedaOptions(Parse("render", {"keda", "--bucket", "nope"}));
  ASSERT_TRUE(options.ok());
  EXPECT_THAT(RenderKeda({other}, *options).status().message(), HasSubstr("--bucket: no bucket"));
  options = BuildKedaOptions(Parse("render", {"keda", "--role", "nope"}));
  EXPECT_THAT(RenderKeda({other}, *options).status().message(), HasSubstr("--role: "));
}

TEST(RenderKedaTest, BadFlagsAreUsageErrors) {
  EXPECT_THAT(BuildKedaOptions(Parse("render", {"keda", "--metric", "cpu"})).status().message(),
              HasSubstr("--metric"));
  EXPECT_THAT(BuildKedaOptions(Parse("render", {"keda", "--threshold", "0"})).status().message(),
              HasSubstr("--threshold"));
  EXPECT_THAT(
      BuildKedaOptions(Parse("render", {"keda", "--min-replicas", "5", "--max-replicas", "2"}))
          .status()
          .message(),
      HasSubstr("--max-replicas"));
  EXPECT_EQ(KedaQuery("messages", 7, "ingestion"),
            "max(bucketmap_bucket_lag_messages{bucket_id=\"7\",role=\"ingestion\"})");
}

TEST(TopTest, TheTableShowsRatesLagAndUnknownLag) {
  auto request = BuildGetLoad(Parse("top", {"--pool", "paid", "--top-teams", "5", "--once"}));
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->pool(), "paid");
  EXPECT_EQ(request->top_teams(), 5);
  EXPECT_FALSE(BuildGetLoad(Parse("top", {"--top-teams", "0"})).ok());
  EXPECT_FALSE(TopInterval(Parse("top", {"--interval", "1ms"})).ok());

  v1::GetLoadResponse r;
  r.set_version(12);
  r.set_window_seconds(10);
  r.set_half_life_seconds(600);
  r.set_windows(6);
  r.mutable_as_of()->set_seconds(1700000000);
  r.set_lag_interval_seconds(10);
  v1::BucketLoad* b = r.add_buckets();
  b->set_bucket_id(3);
  b->set_bucket_name("b3");
  b->set_pool("paid");
  b->set_state(v1::ACTIVE);
  b->set_weight(100);
  b->set_weight_share(0.5);
  b->mutable_rate()->set_events_per_second(1234.5);
  b->set_event_share(0.25);
  v1::RoleLag* up = b->add_lag();
  up->set_role("ingestion");
  up->set_up(true);
  up->set_messages(120);
  up->set_seconds(3.2);
  up->mutable_read_time()->set_seconds(1700000005);
  v1::RoleLag* down = b->add_lag();
  down->set_role("clickhouse");
  down->set_up(false);
  down->set_error("broker down");
  v1::TeamLoad* t = b->add_top_teams();
  t->set_team_id(42);
  t->mutable_rate()->set_events_per_second(800);
  const std::string table = FormatLoad(r, absl::FromUnixSeconds(1700000007));
  EXPECT_THAT(table, HasSubstr("version 12  load: 6 windows of 10s, half-life 10m"));
  EXPECT_THAT(table, HasSubstr("3 b3"));
  EXPECT_THAT(table, HasSubstr("100 (50%)"));
  EXPECT_THAT(table, HasSubstr("1234"));
  EXPECT_THAT(table, HasSubstr("25.0%"));
  EXPECT_THAT(table, HasSubstr("ingestion: 120 / 3.2s (2.0s ago)"));
  EXPECT_THAT(table, HasSubstr("clickhouse: ? (broker down)"));
  EXPECT_THAT(table, HasSubstr("42:800"));
}

}  // namespace
}  // namespace bucketmap::bucketctl

namespace bucketmap::bucketctl {
namespace {

TEST(RebalanceCommandTest, FlagsBuildThePlanRequest) {
  absl::StatusOr<v1::PlanRebalanceRequest> req = BuildPlanRebalance(
      Parse("rebalance", {"--pool", "hot", "--metric", "processing", "--max-load-moved", "5%",
                          "--max-teams", "20", "--target", "1.1"}));
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->pool(), "hot");
  EXPECT_EQ(req->metric(), v1::LOAD_METRIC_PROCESSING_TIME);
  EXPECT_DOUBLE_EQ(req->budget().max_load_share(), 0.05);
  EXPECT_EQ(req->budget().max_teams(), 20);
  EXPECT_DOUBLE_EQ(req->budget().target_imbalance(), 1.1);

  // Absent flags leave the server's defaults.
  req = BuildPlanRebalance(Parse("rebalance", {"--pool", "hot", "--max-load-moved", "0.25"}));
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->metric(), v1::LOAD_METRIC_UNSPECIFIED);
  EXPECT_DOUBLE_EQ(req->budget().max_load_share(), 0.25);
  EXPECT_FALSE(req->budget().has_max_teams());
  EXPECT_FALSE(req->budget().has_target_imbalance());

  auto error = [](const std::vector<std::string>& args) {
    absl::StatusOr<v1::PlanRebalanceRequest> r = BuildPlanRebalance(Parse("rebalance", args));
    return r.ok() ? std::string("ok") : std::string(r.status().message());
  };
  EXPECT_THAT(error({}), HasSubstr("--pool is required"));
  EXPECT_THAT(error({"--pool", "p", "--metric", "bytes"}), HasSubstr("--metric: events or"));
  EXPECT_THAT(error({"--pool", "p", "--max-load-moved", "150%"}), HasSubstr("--max-load-moved"));
  EXPECT_THAT(error({"--pool", "p", "--max-load-moved", "2"}), HasSubstr("--max-load-moved"));
  EXPECT_THAT(error({"--pool", "p", "--max-teams", "-1"}), HasSubstr("--max-teams"));
  EXPECT_THAT(error({"--pool", "p", "--target", "0.9"}), HasSubstr("--target"));
}

// The plan of docs/rebalancing.md's end-to-end example.
v1::PlanRebalanceResponse ExamplePlan() {
  v1::PlanRebalanceResponse p;
  p.set_version(6);
  p.set_pool("hot");
  p.set_metric(v1::LOAD_METRIC_EVENT_RATE);
  p.mutable_budget()->set_max_load_share(0.25);
  p.mutable_budget()->set_max_teams(1000);
  p.mutable_budget()->set_target_imbalance(1.05);
  p.set_pool_load(2200);
  p.set_load_windows(1);
  const double before[] = {800, 200, 200, 1000};
  const double after[] = {400, 400, 400, 1000};
  for (int i = 0; i < 4; ++i) {
    v1::RebalanceBucketLoad* b = p.add_buckets();
    b->set_bucket_id(i + 1);
    b->set_state(v1::ACTIVE);
    b->set_weight(100);
    b->set_before(before[i]);
    b->set_after(after[i]);
    b->set_share(550);
    b->set_ideal(i == 3 ? 1000 : 400);
    b->set_floored(i == 3);
  }
  for (int i = 0; i < 4; ++i) {
    v1::RebalanceMove* m = p.add_moves();
    m->set_team_id(i + 2);
    m->set_from_bucket_id(1);
    m->set_to_bucket_id(i % 2 == 0 ? 2 : 3);
    m->set_load(100);
  }
  p.set_load_moved(400);
  p.set_share_moved(400.0 / 2200);
  v1::RebalanceHeavyTeam* giant = p.add_giants();
  giant->set_team_id(13);
  giant->set_bucket_id(4);
  giant->set_load(1000);
  giant->set_limit(550);
  p.set_imbalance_before(2);
  p.set_imbalance_after(1);
  p.set_target_reached(true);
  p.set_stop_reason("target_reached");
  p.add_frozen_team_ids(1);
  return p;
}

// The text between "<!-- NAME -->\n```\n" and "```\n<!-- /NAME -->".
std::string TextBlock(const std::string& file, const std::string& name) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  const std::string doc = text.str();
  const std::string open = "<!-- " + name + " -->\n```\n";
  const size_t start = doc.find(open);
  const size_t end = doc.find("```\n<!-- /" + name + " -->");
  if (start == std::string::npos || end == std::string::npos) return "";
  return doc.substr(start + open.size(), end - start - open.size());
}

TEST(RebalanceCommandTest, TheDocsExampleIsWhatItPrints) {
  const std::string table = FormatRebalancePlan(ExamplePlan());
  EXPECT_EQ(TextBlock(std::string(BUCKETMAP_SOURCE_DIR) + "/docs/rebalancing.md", "rebalance-plan"),
            table);
  EXPECT_THAT(table, HasSubstr("imbalance 2.000 -> 1.000 (target 1.05): target_reached"));
  EXPECT_THAT(table, HasSubstr("frozen (in their move cooldown): 1\n"));
}

TEST(RebalanceCommandTest, ApplyRebalanceCarriesThePlansMovesAndVersion) {
  const v1::PlanRebalanceResponse plan = ExamplePlan();
  const v1::ApplyRebalanceRequest apply = ApplyRebalanceOf(plan, "even out hot", "rb-1");
  EXPECT_EQ(apply.pool(), "hot");
  EXPECT_EQ(apply.expected_version(), 6);
  EXPECT_EQ(apply.request_id(), "rb-1");
  EXPECT_EQ(apply.reason(), "even out hot");
  ASSERT_EQ(apply.moves_size(), 4);
  EXPECT_EQ(apply.moves(3).team_id(), 5);
  EXPECT_EQ(apply.moves(3).to_bucket_id(), 3);
  EXPECT_FALSE(apply.dry_run());
}

}  // namespace
}  // namespace bucketmap::bucketctl
