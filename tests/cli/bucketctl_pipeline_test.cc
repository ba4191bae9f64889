// Unit tests of bucketctl's pipeline artifacts (render clickhouse, render
// helm-values, check-pipeline) over fake sources: no server, no Kafka, no
// ClickHouse. tests/clickhouse_e2e runs them against the real parts.
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/bucketctl/args.h"
#include "tools/bucketctl/commands.h"
#include "tools/bucketctl/pipeline.h"
#include "tools/bucketctl/render_clickhouse.h"
#include "tools/bucketctl/render_helm.h"

namespace bucketmap::bucketctl {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

// Answers from maps; counts ClickHouse queries.
class FakeSources : public PipelineSources {
 public:
  std::optional<std::map<std::string, int32_t>> partitions;
  std::optional<std::string> tables_tsv;  // nullopt: no ClickHouse given
  std::string columns_tsv;
  std::map<std::string, std::string> files;
  int queries = 0;

  absl::StatusOr<std::map<std::string, int32_t>> PartitionCounts() override {
    if (!partitions) return absl::FailedPreconditionError("no --kafka_brokers");
    return *partitions;
  }
  absl::StatusOr<std::string> QueryClickHouse(const std::string& sql) override {
    ++queries;
    if (!tables_tsv) return absl::FailedPreconditionError("no --clickhouse_url");
    return absl::StrContains(sql, "system.tables") ? *tables_tsv : columns_tsv;
  }
  absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view what) override {
    auto it = files.find(path);
    if (it == files.end())
      return absl::NotFoundError(absl::StrCat(what, " ", path, ": cannot read"));
    return it->second;
  }
};

// Bucket `id` with a topic and group per role of `roles`: topics
// <role>_<id>, groups g_<role>_<id>.
v1::Bucket Standard(int32_t id, v1::BucketState state,
                    std::vector<std::string> roles = {"ingestion", "async", "clickhouse"}) {
  v1::Bucket b;
  b.set_id(id);
  b.set_name(absl::StrCat("b", id));
  b.set_state(state);
  for (const std::string& role : roles) {
    (*b.mutable_topics())[role] = absl::StrCat(role, "_", id);
    (*b.mutable_consumer_groups())[role] = absl::StrCat("g_", role, "_", id);
  }
  return b;
}

class PipelineTest : public ::testing::Test {
 protected:
  // Parses `flags` as the flags of `command`.
  void Flags(const std::string& command, const std::vector<std::string>& flags) {
    const CommandSpec* spec = FindCommand(command);
    ASSERT_NE(spec, nullptr);
    std::vector<FlagSpec> specs = spec->flags;
    specs.insert(specs.end(), GlobalFlags().begin(), GlobalFlags().end());
    absl::StatusOr<ParsedArgs> parsed = ParseArgs(flags, specs, false);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    args_ = *parsed;
  }

  RenderInput Input() {
    RenderInput input;
    input.version = 7;
    input.buckets = buckets_;
    input.args = &args_;
    input.sources = &sources_;
    input.server = "bucketmap:50051";
    return input;
  }

  ParsedArgs args_;
  FakeSources sources_;
  std::vector<v1::Bucket> buckets_;
};

TEST(ClickHouseTemplateTest, TheBuiltInTemplateIsPostHogLike) {
  absl::StatusOr<ClickHouseTemplate> t =
      ParseClickHouseTemplate(DefaultClickHouseTemplate(), "built-in");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->database, "posthog");
  EXPECT_EQ(t->table, "events");
  EXPECT_EQ(t->format, "JSONEachRow");
  std::vector<std::string> names;
  for (const auto& column : t->columns) names.push_back(column.first);
  EXPECT_THAT(names, testing::IsSupersetOf({"uuid", "event", "properties", "timestamp", "team_id",
                                            "distinct_id", "elements_chain", "created_at"}));
  EXPECT_THAT(t->order_by, HasSubstr("team_id"));
}

TEST(ClickHouseTemplateTest, ErrorsNameTheLine) {
  const std::string head = "order_by (a)\ncolumn a String\n";
  auto error = [&](const std::string& text) {
    absl::StatusOr<ClickHouseTemplate> t = ParseClickHouseTemplate(head + text, "t.tmpl");
    EXPECT_FALSE(t.ok()) << text;
    return t.ok() ? std::string() : std::string(t.status().message());
  };
  EXPECT_THAT(error("colum b String"), HasSubstr("t.tmpl:3: unknown directive 'colum'"));
  EXPECT_THAT(error("column a Int64"), HasSubstr("t.tmpl:3: column a given twice"));
  EXPECT_THAT(error("column _topic String"), HasSubstr("bucketctl's own"));
  EXPECT_THAT(error("column b-c String"), HasSubstr("expected a name"));
  EXPECT_THAT(error("column b"), HasSubstr("needs a type"));
  EXPECT_THAT(error("engine MergeTree(); DROP TABLE x"), HasSubstr("';'"));
  EXPECT_THAT(error("database my-db"), HasSubstr("expected an identifier"));
  EXPECT_THAT(error("max_block_size 0"), HasSubstr("max_block_size: expected 1.."));
  EXPECT_FALSE(ParseClickHouseTemplate("column a String\n", "t").ok());  // no order_by
  EXPECT_FALSE(ParseClickHouseTemplate("order_by a\n", "t").ok());       // no column
}

TEST_F(PipelineTest, ClickHouseTablesPerBucketWithRoleConsumersCappedAtPartitions) {
  buckets_ = {Standard(1, v1::ACTIVE), Standard(2, v1::PAUSED), Standard(3, v1::RETIRED),
              Standard(4, v1::ACTIVE, {"ingestion"})};
  sources_.partitions = {{{"clickhouse_1", 3}, {"clickhouse_2", 1}, {"clickhouse_3", 3}}};
  Flags("render", {"clickhouse", "--kafka_brokers", "kafka:9092", "--consumers", "2"});
  absl::StatusOr<ClickHouseDdl> ddl = RenderClickHouseDdl(Input());
  ASSERT_TRUE(ddl.ok()) << ddl.status();
  std::vector<std::string> names;
  for (const ClickHouseObject& o : ddl->objects) names.push_back(o.name);
  // RETIRED bucket 3 and bucket 4 (no clickhouse topic) get nothing.
  EXPECT_THAT(names, ElementsAre("events", "kafka_events_b1", "events_b1_mv", "kafka_events_b2",
                                 "events_b2_mv"));
  EXPECT_EQ(ddl->objects[1].settings.at("kafka_num_consumers"), "2");
  EXPECT_EQ(ddl->objects[3].settings.at("kafka_num_consumers"), "1");  // 1 partition
  EXPECT_EQ(ddl->objects[1].settings.at("kafka_group_name"), "g_clickhouse_1");
  EXPECT_EQ(ddl->objects[1].settings.at("kafka_broker_list"), "kafka:9092");
  EXPECT_EQ(ddl->objects[1].settings.at("kafka_max_block_size"), "8192");  // the template's

  const std::string text = ClickHouseDdlText(*ddl);
  EXPECT_THAT(text, HasSubstr("CREATE DATABASE IF NOT EXISTS posthog;"));
  EXPECT_THAT(text, HasSubstr("CREATE TABLE IF NOT EXISTS posthog.events\n(\n    uuid UUID,"));
  EXPECT_THAT(text, HasSubstr("    _topic String\n)\nENGINE = MergeTree()"));
  EXPECT_THAT(text,
              HasSubstr("ENGINE = Kafka\nSETTINGS kafka_broker_list = 'kafka:9092', "
                        "kafka_topic_list = 'clickhouse_1', kafka_group_name = 'g_clickhouse_1', "
                        "kafka_format = 'JSONEachRow', kafka_num_consumers = 2, "
                        "kafka_max_block_size = 8192;"));
  EXPECT_THAT(text, HasSubstr("CREATE MATERIALIZED VIEW IF NOT EXISTS posthog.events_b1_mv TO "
                              "posthog.events\nAS SELECT uuid, event,"));
  EXPECT_THAT(text, HasSubstr("'clickhouse_1' AS _topic FROM posthog.kafka_events_b1;"));
  EXPECT_THAT(text, HasSubstr("-- bucket 2 (b2): topic clickhouse_2, group g_clickhouse_2, 1 "
                              "partitions, 1 consumer"));
  EXPECT_THAT(text, Not(HasSubstr("b3")));
  // Deterministic, and the version is not part of it.
  RenderInput later = Input();
  later.version = 99;
  EXPECT_EQ(ClickHouseDdlText(*RenderClickHouseDdl(later)), text);
}

TEST_F(PipelineTest, ClickHouseRefusals) {
  buckets_ = {Standard(1, v1::ACTIVE)};
  Flags("render", {"clickhouse"});
  EXPECT_EQ(RenderClickHouseDdl(Input()).status().code(), absl::StatusCode::kInvalidArgument)
      << "no broker list";
  Flags("render", {"clickhouse", "--clickhouse_kafka_brokers", "k:1", "--consumers", "2"});
  EXPECT_THAT(RenderClickHouseDdl(Input()).status().message(), HasSubstr("needs --kafka_brokers"));
  Flags("render", {"clickhouse", "--clickhouse_kafka_brokers", "k:1"});
  EXPECT_TRUE(RenderClickHouseDdl(Input()).ok()) << "1 consumer needs no partition count";

  sources_.partitions = {{{"other", 1}}};
  Flags("render", {"clickhouse", "--kafka_brokers", "k:1"});
  absl::Status missing = RenderClickHouseDdl(Input()).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(missing.message(), HasSubstr("topic clickhouse_1 (bucket 1 (b1), role clickhouse) "
                                           "does not exist in Kafka"));

  buckets_[0].mutable_consumer_groups()->erase("clickhouse");
  sources_.partitions = {{{"clickhouse_1", 1}}};
  absl::Status no_group = RenderClickHouseDdl(Input()).status();
  EXPECT_EQ(no_group.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(no_group.message(), HasSubstr("bucket 1 (b1) has a clickhouse topic"));
}

TEST_F(PipelineTest, TemplateFlagAndRoleFlag) {
  buckets_ = {Standard(1, v1::ACTIVE, {"events_ch"})};
  sources_.files["my.tmpl"] = "database db\ntable ev\norder_by x\ncolumn x Int64\n";
  Flags("render", {"clickhouse", "--template", "my.tmpl", "--clickhouse_role", "events_ch",
                   "--clickhouse_kafka_brokers", "k:1"});
  absl::StatusOr<ClickHouseDdl> ddl = RenderClickHouseDdl(Input());
  ASSERT_TRUE(ddl.ok()) << ddl.status();
  EXPECT_EQ(ddl->objects[1].name, "kafka_ev_b1");
  EXPECT_EQ(ddl->objects[2].query,
            "TO db.ev AS SELECT x, 'events_ch_1' AS _topic FROM db.kafka_ev_b1");
  Flags("render", {"clickhouse", "--template", "nope.tmpl", "--clickhouse_kafka_brokers", "k:1"});
  EXPECT_EQ(RenderClickHouseDdl(Input()).status().code(), absl::StatusCode::kNotFound);
}

TEST(ClickHouseLiveTest, KafkaSettingsAndManagedNames) {
  // engine_full as ClickHouse 18.16 prints it (after TabSeparated
  // unescaping), with a quote in the group id.
  EXPECT_THAT(ParseKafkaSettings("Kafka SETTINGS kafka_broker_list = '127.0.0.1:1', "
                                 "kafka_topic_list = 't1', kafka_group_name = 'g\\'x', "
                                 "kafka_format = 'JSONEachRow', kafka_num_consumers = 2"),
              ElementsAre(testing::Pair("kafka_broker_list", "127.0.0.1:1"),
                          testing::Pair("kafka_format", "JSONEachRow"),
                          testing::Pair("kafka_group_name", "g'x"),
                          testing::Pair("kafka_num_consumers", "2"),
                          testing::Pair("kafka_topic_list", "t1")));
  EXPECT_THAT(ParseKafkaSettings("Kafka('b', 't', 'g', 'f')"), IsEmpty());
  ClickHouseTemplate t;
  EXPECT_EQ(ManagedBucketId(t, "kafka_events_b12"), 12);
  EXPECT_EQ(ManagedBucketId(t, "events_b3_mv"), 3);
  EXPECT_EQ(ManagedBucketId(t, "events"), std::nullopt);
  EXPECT_EQ(ManagedBucketId(t, "kafka_events_b"), std::nullopt);
  EXPECT_EQ(ManagedBucketId(t, "kafka_events_b01"), std::nullopt);
  EXPECT_EQ(ManagedBucketId(t, "events_bx_mv"), std::nullopt);
  EXPECT_EQ(ManagedBucketId(t, "kafka_other_b1"), std::nullopt);
}

// The live tables of ClickHouse 18.16 for `ddl`, as system.tables and
// system.columns print them (TabSeparated: quotes escaped, columns
// re-spaced), with the Kafka table of bucket `id` dropped from it when
// `skip` is set.
std::pair<std::string, std::string> LiveTsv(const ClickHouseDdl& ddl, int32_t skip = 0) {
  std::string tables, columns;
  auto escape = [](const std::string& s) {
    std::string out;
    for (char c : s) {
      if (c == '\'' || c == '\\') out += '\\';
      out += c;
    }
    return out;
  };
  for (const ClickHouseObject& o : ddl.objects) {
    if (o.kind == ClickHouseObject::Kind::kKafkaTable && o.bucket_id == skip) continue;
    std::string cols;
    for (const auto& [name, type] : o.columns) {
      absl::StrAppend(&columns, o.name, "\t", name, "\t", escape(type), "\n");
      absl::StrAppend(&cols, cols.empty() ? " " : ",  ", name, " ", type);
    }
    std::string engine, engine_full, create;
    switch (o.kind) {
      case ClickHouseObject::Kind::kEventsTable:
        engine = "MergeTree";
        break;
      case ClickHouseObject::Kind::kKafkaTable:
        engine = "Kafka";
        engine_full = o.create.substr(o.create.find("Kafka\nSETTINGS"));
        engine_full.replace(engine_full.find('\n'), 1, " ");
        break;
      case ClickHouseObject::Kind::kView:
        engine = "MaterializedView";
        create = absl::StrCat("CREATE MATERIALIZED VIEW posthog.", o.name, " TO posthog.events (",
                              cols, ") AS ", o.query.substr(o.query.find("SELECT")), " ");
        break;
    }
    absl::StrAppend(&tables, o.name, "\t", engine, "\t", escape(engine_full), "\t", escape(create),
                    "\n");
  }
  return {tables, columns};
}

TEST_F(PipelineTest, DiffAddsDropsAndRecreates) {
  buckets_ = {Standard(1, v1::ACTIVE), Standard(2, v1::ACTIVE), Standard(3, v1::ACTIVE)};
  sources_.partitions = {{{"clickhouse_1", 2}, {"clickhouse_2", 2}, {"clickhouse_3", 2}}};
  Flags("render", {"clickhouse", "--kafka_brokers", "k:1"});
  absl::StatusOr<ClickHouseDdl> before = RenderClickHouseDdl(Input());
  ASSERT_TRUE(before.ok()) << before.status();
  // ClickHouse has what was rendered, minus bucket 2's Kafka table.
  auto [tables, columns] = LiveTsv(*before, /*skip=*/2);
  absl::StatusOr<std::vector<LiveTable>> live = ParseLiveTables(tables, columns);
  ASSERT_TRUE(live.ok()) << live.status();
  ASSERT_EQ(live->size(), 6u);

  // In sync but for bucket 2's Kafka table.
  std::string diff = DiffClickHouse(*before, *live, Input());
  EXPECT_EQ(diff, absl::StrCat("-- add: kafka_events_b2\n", before->objects[3].create, ";\n"));
  auto [all_tables, all_columns] = LiveTsv(*before);
  EXPECT_EQ(DiffClickHouse(*before, *ParseLiveTables(all_tables, all_columns), Input()),
            "-- in sync\n");

  // Bucket 3 retires, bucket 1 runs 2 consumers, bucket 4 is new.
  buckets_[2].set_state(v1::RETIRED);
  buckets_.push_back(Standard(4, v1::ACTIVE));
  sources_.partitions->emplace("clickhouse_4", 1);
  Flags("render", {"clickhouse", "--kafka_brokers", "k:1", "--consumers", "2"});
  absl::StatusOr<ClickHouseDdl> after = RenderClickHouseDdl(Input());
  ASSERT_TRUE(after.ok()) << after.status();
  diff = DiffClickHouse(*after, *live, Input());
  EXPECT_THAT(diff, HasSubstr("-- drop: events_b3_mv (bucket 3 (b3) is RETIRED)\n"
                              "DROP TABLE IF EXISTS posthog.events_b3_mv;\n"
                              "-- drop: kafka_events_b3 (bucket 3 (b3) is RETIRED)\n"
                              "DROP TABLE IF EXISTS posthog.kafka_events_b3;\n"));
  EXPECT_THAT(diff, HasSubstr("-- recreate: events_b1_mv (its Kafka table is recreated)\n"
                              "DROP TABLE IF EXISTS posthog.events_b1_mv;\n"
                              "-- recreate: kafka_events_b1 (kafka_num_consumers 1 -> 2); the "
                              "group's committed offsets keep its place\n"
                              "DROP TABLE IF EXISTS posthog.kafka_events_b1;\n"));
  EXPECT_THAT(diff, HasSubstr("CREATE TABLE IF NOT EXISTS posthog.kafka_events_b4"));
  EXPECT_THAT(diff, HasSubstr("-- add: events_b4_mv\nCREATE MATERIALIZED VIEW"));
  // Bucket 2's Kafka table is added; its view is as rendered.
  EXPECT_THAT(diff, HasSubstr("-- add: kafka_events_b2\n"));
  EXPECT_THAT(diff, Not(HasSubstr("events_b2_mv")));
  EXPECT_THAT(diff, Not(HasSubstr("drop: events_b4")));

  // A bucket that no longer has the role, and one the mapping lacks.
  buckets_ = {Standard(1, v1::ACTIVE, {"ingestion"}), Standard(2, v1::ACTIVE)};
  diff = DiffClickHouse(*RenderClickHouseDdl(Input()), *live, Input());
  EXPECT_THAT(diff, HasSubstr("-- drop: kafka_events_b1 (bucket 1 (b1) has no clickhouse topic)"));
  EXPECT_THAT(diff, HasSubstr("-- drop: events_b3_mv (no bucket 3 in the mapping)"));
}

TEST_F(PipelineTest, DiffAddsMissingEventColumnsAndReportsOthers) {
  buckets_ = {};
  Flags("render", {"clickhouse", "--kafka_brokers", "k:1"});
  sources_.partitions.emplace();
  absl::StatusOr<ClickHouseDdl> ddl = RenderClickHouseDdl(Input());
  ASSERT_TRUE(ddl.ok()) << ddl.status();
  EXPECT_THAT(DiffClickHouse(*ddl, {}, Input()), HasSubstr("-- add: events (the events table)\n"
                                                           "CREATE TABLE IF NOT EXISTS"));
  LiveTable events{"events", "MergeTree", "", "", ddl->objects[0].columns};
  events.columns.erase(events.columns.begin() + 2);  // properties
  events.columns[0].second = "String";               // uuid's type
  events.columns.emplace_back("extra", "UInt8");
  const std::string diff = DiffClickHouse(*ddl, {events}, Input());
  EXPECT_THAT(diff, HasSubstr("-- add: column properties of events\n"
                              "ALTER TABLE posthog.events ADD COLUMN properties String;\n"));
  EXPECT_THAT(diff, HasSubstr("-- differs (not changed by bucketctl): events.uuid is String, the "
                              "template says UUID\n"));
  EXPECT_THAT(diff, HasSubstr("events.extra is not in the template"));
}

TEST_F(PipelineTest, DiffNeedsClickHouseUrl) {
  buckets_ = {Standard(1, v1::ACTIVE)};
  Flags("render", {"clickhouse", "--kafka_brokers", "k:1", "--diff"});
  sources_.partitions = {{{"clickhouse_1", 1}}};
  EXPECT_EQ(FindRenderKind("clickhouse")->render(Input()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sources_.queries, 0);
}

TEST_F(PipelineTest, HelmValuesOneDeploymentPerBucketAndRole) {
  buckets_ = {Standard(1, v1::ACTIVE), Standard(2, v1::DRAINING, {"ingestion"}),
              Standard(3, v1::RETIRED)};
  sources_.partitions = {{{"ingestion_1", 4}, {"async_1", 1}, {"ingestion_2", 2}}};
  Flags("render", {"helm-values", "--kafka_brokers", "k:1", "--replicas", "3"});
  absl::StatusOr<std::string> yaml = RenderHelmValues(Input());
  ASSERT_TRUE(yaml.ok()) << yaml.status();
  EXPECT_EQ(*yaml,
            "# bucketctl render helm-values: one plugin-server deployment per bucket and role\n"
            "# (ingestion, async).\n"
            "plugins:\n"
            "  deployments:\n"
            "    - name: \"plugins-ingestion-b1\"\n"
            "      role: \"ingestion\"\n"
            "      bucket:\n"
            "        id: 1\n"
            "        name: \"b1\"\n"
            "      replicaCount: 3\n"
            "      env:\n"
            "        - name: PLUGIN_SERVER_MODE\n"
            "          value: \"ingestion\"\n"
            "        - name: KAFKA_CONSUMPTION_TOPIC\n"
            "          value: \"ingestion_1\"\n"
            "        - name: KAFKA_CONSUMPTION_GROUP\n"
            "          value: \"g_ingestion_1\"\n"
            "        - name: BUCKETMAP_BUCKET_ID\n"
            "          value: \"1\"\n"
            "        - name: BUCKETMAP_BUCKET_NAME\n"
            "          value: \"b1\"\n"
            "        - name: BUCKETMAP_SERVERS\n"
            "          value: \"bucketmap:50051\"\n"
            "    - name: \"plugins-ingestion-b2\"\n"
            "      role: \"ingestion\"\n"
            "      bucket:\n"
            "        id: 2\n"
            "        name: \"b2\"\n"
            "      replicaCount: 2\n"
            "      env:\n"
            "        - name: PLUGIN_SERVER_MODE\n"
            "          value: \"ingestion\"\n"
            "        - name: KAFKA_CONSUMPTION_TOPIC\n"
            "          value: \"ingestion_2\"\n"
            "        - name: KAFKA_CONSUMPTION_GROUP\n"
            "          value: \"g_ingestion_2\"\n"
            "        - name: BUCKETMAP_BUCKET_ID\n"
            "          value: \"2\"\n"
            "        - name: BUCKETMAP_BUCKET_NAME\n"
            "          value: \"b2\"\n"
            "        - name: BUCKETMAP_SERVERS\n"
            "          value: \"bucketmap:50051\"\n"
            "    - name: \"plugins-async-b1\"\n"
            "      role: \"async\"\n"
            "      bucket:\n"
            "        id: 1\n"
            "        name: \"b1\"\n"
            "      replicaCount: 1\n"
            "      env:\n"
            "        - name: PLUGIN_SERVER_MODE\n"
            "          value: \"async\"\n"
            "        - name: KAFKA_CONSUMPTION_TOPIC\n"
            "          value: \"async_1\"\n"
            "        - name: KAFKA_CONSUMPTION_GROUP\n"
            "          value: \"g_async_1\"\n"
            "        - name: BUCKETMAP_BUCKET_ID\n"
            "          value: \"1\"\n"
            "        - name: BUCKETMAP_BUCKET_NAME\n"
            "          value: \"b1\"\n"
            "        - name: BUCKETMAP_SERVERS\n"
            "          value: \"bucketmap:50051\"\n");
}

// docs/pipeline.md shows the full output for two buckets of its layout: it
// is what bucketctl prints.
TEST_F(PipelineTest, HelmValuesExampleOfTheDocsIsCurrent) {
  std::ifstream in(std::string(BUCKETMAP_SOURCE_DIR) + "/docs/pipeline.md");
  std::stringstream doc;
  doc << in.rdbuf();
  const std::string text = doc.str();
  const std::string open = "```yaml\n# bucketctl render helm-values";
  const size_t start = text.find(open);
  ASSERT_NE(start, std::string::npos);
  const std::string example = text.substr(start + 8, text.find("```", start + 8) - (start + 8));
  for (int32_t id : {1, 2}) {
    v1::Bucket b;
    b.set_id(id);
    b.set_name(absl::StrCat("b", id));
    b.set_state(v1::ACTIVE);
    (*b.mutable_topics())["ingestion"] = absl::StrCat("events_plugin_ingestion_", id);
    (*b.mutable_topics())["clickhouse"] = absl::StrCat("clickhouse_events_json_", id);
    (*b.mutable_topics())["async"] = absl::StrCat("clickhouse_events_json_", id);
    for (const char* role : {"ingestion", "clickhouse", "async"}) {
      (*b.mutable_consumer_groups())[role] = absl::StrCat(role, "_", id);
    }
    buckets_.push_back(b);
  }
  sources_.partitions = {{{"events_plugin_ingestion_1", 16},
                          {"events_plugin_ingestion_2", 16},
                          {"clickhouse_events_json_1", 8},
                          {"clickhouse_events_json_2", 8}}};
  Flags("render", {"helm-values", "--kafka_brokers", "kafka:9092", "--replicas", "4",
                   "--bucketmap_address", "bucketmap.bucketmap.svc:50051"});
  absl::StatusOr<std::string> yaml = RenderHelmValues(Input());
  ASSERT_TRUE(yaml.ok()) << yaml.status();
  EXPECT_EQ(*yaml, example);
}

TEST_F(PipelineTest, HelmValuesAutoscalingRolesAndRefusals) {
  buckets_ = {Standard(1, v1::ACTIVE, {"my_role"})};
  (*buckets_[0].mutable_consumer_groups())["my_role"] = "a\"b";
  sources_.partitions = {{{"my_role_1", 6}}};
  Flags("render", {"helm-values", "--kafka_brokers", "k:1", "--roles", "my_role", "--autoscaling",
                   "--replicas", "10", "--bucketmap_address", "bm:1"});
  absl::StatusOr<std::string> yaml = RenderHelmValues(Input());
  ASSERT_TRUE(yaml.ok()) << yaml.status();
  EXPECT_THAT(*yaml, HasSubstr("    - name: \"plugins-my-role-b1\"\n"));
  EXPECT_THAT(*yaml, HasSubstr("      autoscaling:\n        enabled: true\n"
                               "        scaledObject: \"plugins-my-role-b1\"\n"
                               "        maxReplicas: 6\n"));
  EXPECT_THAT(*yaml, Not(HasSubstr("replicaCount")));
  EXPECT_THAT(*yaml, HasSubstr("value: \"a\\\"b\""));
  EXPECT_THAT(*yaml, HasSubstr("value: \"bm:1\""));

  Flags("render", {"helm-values", "--roles", "nope"});
  EXPECT_THAT(*RenderHelmValues(Input()), HasSubstr("  deployments: []\n"));
  sources_.partitions.reset();  // no --kafka_brokers
  Flags("render", {"helm-values", "--roles", "my_role", "--replicas", "2"});
  EXPECT_EQ(RenderHelmValues(Input()).status().code(), absl::StatusCode::kInvalidArgument);
  buckets_[0].mutable_consumer_groups()->clear();
  Flags("render", {"helm-values", "--roles", "my_role"});
  EXPECT_EQ(RenderHelmValues(Input()).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(PipelineTest, RenderKindsAndTheirFlags) {
  ASSERT_NE(FindRenderKind("clickhouse"), nullptr);
  ASSERT_NE(FindRenderKind("helm-values"), nullptr);
  EXPECT_EQ(FindRenderKind("nope"), nullptr);
  const CommandSpec* render = FindCommand("render");
  ASSERT_NE(render, nullptr);
  EXPECT_THAT(render->usage, HasSubstr("<clickhouse|helm-values"));
  EXPECT_THAT(CommandHelp(*render), HasSubstr("render helm-values"));
  Flags("render", {"helm-values", "--diff"});
  absl::Status s = CheckKindFlags(*FindRenderKind("helm-values"), args_, GlobalFlags());
  EXPECT_THAT(s.message(), HasSubstr("--diff is not a flag of render helm-values"));
  Flags("render", {"clickhouse", "--diff", "--kafka_brokers", "k:1", "--server", "x:1"});
  EXPECT_TRUE(CheckKindFlags(*FindRenderKind("clickhouse"), args_, GlobalFlags()).ok());
}

TEST_F(PipelineTest, CheckPipelineCleanMapping) {
  buckets_ = {Standard(1, v1::ACTIVE), Standard(2, v1::PAUSED), Standard(3, v1::RETIRED)};
  sources_.partitions = {{{"ingestion_1", 1},
                          {"async_1", 1},
                          {"clickhouse_1", 1},
                          {"ingestion_2", 1},
                          {"async_2", 1},
                          {"clickhouse_2", 1}}};
  Flags("check-pipeline", {"--kafka_brokers", "k:1"});
  absl::StatusOr<std::vector<std::string>> problems = CheckPipeline(Input(), {});
  ASSERT_TRUE(problems.ok()) << problems.status();
  EXPECT_THAT(*problems, IsEmpty());
  sources_.partitions.reset();
  EXPECT_EQ(CheckPipeline(Input(), {}).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(PipelineTest, CheckPipelineFindsSharingMissingRolesAndTopics) {
  buckets_ = {Standard(1, v1::ACTIVE), Standard(2, v1::ACTIVE, {"ingestion", "clickhouse"}),
              Standard(3, v1::DRAINING)};
  // Bucket 2 shares bucket 1's clickhouse topic and group; bucket 3's async
  // role reads its clickhouse topic with its clickhouse group.
  (*buckets_[1].mutable_topics())["clickhouse"] = "clickhouse_1";
  (*buckets_[1].mutable_consumer_groups())["clickhouse"] = "g_clickhouse_1";
  (*buckets_[2].mutable_topics())["async"] = "clickhouse_3";
  (*buckets_[2].mutable_consumer_groups())["async"] = "g_clickhouse_3";
  buckets_[2].mutable_consumer_groups()->erase("ingestion");
  sources_.partitions = {{{"ingestion_1", 1},
                          {"async_1", 1},
                          {"clickhouse_1", 1},
                          {"ingestion_2", 1},
                          {"clickhouse_3", 1}}};
  Flags("check-pipeline", {"--kafka_brokers", "k:1"});
  absl::StatusOr<std::vector<std::string>> problems = CheckPipeline(Input(), {});
  ASSERT_TRUE(problems.ok()) << problems.status();
  EXPECT_THAT(*problems,
              testing::UnorderedElementsAre(
                  HasSubstr("topic clickhouse_1 is used by bucket 1 (b1) and bucket 2 (b2)"),
                  HasSubstr("topic clickhouse_1 with group g_clickhouse_1 is consumed by bucket 1 "
                            "(b1) role clickhouse and bucket 2 (b2) role clickhouse"),
                  HasSubstr("topic clickhouse_3 with group g_clickhouse_3 is consumed by bucket 3 "
                            "(b3) role async and bucket 3 (b3) role clickhouse"),
                  HasSubstr("group g_clickhouse_1 is used by bucket 1 (b1) and bucket 2 (b2)"),
                  HasSubstr("bucket 2 (b2) (ACTIVE) has no topic for role async"),
                  HasSubstr("bucket 3 (b3) (DRAINING) has no consumer group for role ingestion"),
                  HasSubstr("topic ingestion_3 (bucket 3 (b3), role ingestion) does not exist")));

  // --roles names the pipeline's roles.
  buckets_ = {Standard(1, v1::ACTIVE, {"ingestion"})};
  Flags("check-pipeline", {"--kafka_brokers", "k:1", "--roles", "ingestion,clickhouse"});
  EXPECT_THAT(*CheckPipeline(Input(), {}),
              ElementsAre(HasSubstr("bucket 1 (b1) (ACTIVE) has no topic for role clickhouse")));
}

TEST_F(PipelineTest, CheckPipelineFindsRetiredBucketsAndOverConsumption) {
  buckets_ = {Standard(1, v1::ACTIVE, {"clickhouse"}), Standard(2, v1::RETIRED, {"clickhouse"})};
  sources_.partitions = {{{"clickhouse_1", 1}, {"clickhouse_2", 1}}};
  Flags("render", {"clickhouse", "--kafka_brokers", "k:1"});
  // What was rendered while bucket 2 was ACTIVE, with 2 consumers on
  // bucket 1 (its topic has 1 partition).
  std::vector<v1::Bucket> retired = buckets_;
  buckets_[1].set_state(v1::ACTIVE);
  absl::StatusOr<ClickHouseDdl> old = RenderClickHouseDdl(Input());
  ASSERT_TRUE(old.ok()) << old.status();
  old->objects[1].create.replace(old->objects[1].create.find("kafka_num_consumers = 1"), 23,
                                 "kafka_num_consumers = 2");
  auto [tables, columns] = LiveTsv(*old);
  buckets_ = retired;
  sources_.tables_tsv = tables;
  sources_.columns_tsv = columns;
  const std::string sql = ClickHouseDdlText(*old);
  Flags("check-pipeline", {"--kafka_brokers", "k:1", "--clickhouse_url", "http://ch:8123"});
  absl::StatusOr<std::vector<std::string>> problems =
      CheckPipeline(Input(), {{"out.sql", sql}, {"clean.yaml", "clickhouse_20 g_clickhouse_2x"}});
  ASSERT_TRUE(problems.ok()) << problems.status();
  EXPECT_THAT(*problems,
              testing::UnorderedElementsAre(
                  "ClickHouse still has posthog.events_b2_mv of bucket 2 (b2), which is RETIRED "
                  "(see render clickhouse --diff)",
                  "ClickHouse still has posthog.kafka_events_b2 of bucket 2 (b2), which is "
                  "RETIRED (see render clickhouse --diff)",
                  "ClickHouse table posthog.kafka_events_b1 runs 2 consumers on topic "
                  "clickhouse_1, which has 1 partitions",
                  "out.sql still names clickhouse_2 of bucket 2 (b2), which is RETIRED: render it "
                  "again",
                  "out.sql still names g_clickhouse_2 of bucket 2 (b2), which is RETIRED: render "
                  "it again"));
  EXPECT_EQ(sources_.queries, 2);
}

// A values file whose deployment runs more replicas than its topic has
// partitions (edited by hand after rendering) is named; the rendered one
// is clean.
TEST_F(PipelineTest, CheckPipelineFindsDeploymentsWithMoreReplicasThanPartitions) {
  buckets_ = {Standard(1, v1::ACTIVE, {"ingestion", "async"})};
  sources_.partitions = {{{"ingestion_1", 2}, {"async_1", 4}}};
  Flags("render", {"helm-values", "--kafka_brokers", "k:1", "--replicas", "4"});
  absl::StatusOr<std::string> yaml = RenderHelmValues(Input());
  ASSERT_TRUE(yaml.ok()) << yaml.status();
  EXPECT_THAT(
      ParseHelmValues(*yaml),
      ElementsAre(testing::AllOf(testing::Field(&RenderedDeployment::name, "plugins-ingestion-b1"),
                                 testing::Field(&RenderedDeployment::topic, "ingestion_1"),
                                 testing::Field(&RenderedDeployment::replicas, 2)),
                  testing::Field(&RenderedDeployment::replicas, 4)));
  Flags("check-pipeline", {"--kafka_brokers", "k:1"});
  EXPECT_THAT(*CheckPipeline(Input(), {{"values.yaml", *yaml}}), IsEmpty());

  std::string edited = *yaml;
  edited.replace(edited.find("replicaCount: 2"), 15, "replicaCount: 5");
  EXPECT_THAT(*CheckPipeline(Input(), {{"values.yaml", edited}}),
              ElementsAre("values.yaml: deployment plugins-ingestion-b1 runs up to 5 replicas on "
                          "topic ingestion_1, which has 2 partitions"));
}

}  // namespace
}  // namespace bucketmap::bucketctl
