// Unit tests of bucketctl's argument parsing, request building and output
// formatting (no server involved).
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "tools/bucketctl/args.h"
#include "tools/bucketctl/commands.h"
#include "tools/bucketctl/format.h"

namespace bucketmap::bucketctl {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Parses `args` as the command line of `command` (after its name).
ParsedArgs Parse(const std::string& command, const std::vector<std::string>& args) {
  const CommandSpec* spec = FindCommand(command);
  EXPECT_NE(spec, nullptr) << command;
  std::vector<FlagSpec> specs = spec->flags;
  specs.insert(specs.end(), GlobalFlags().begin(), GlobalFlags().end());
  absl::StatusOr<ParsedArgs> parsed = ParseArgs(args, specs, false);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? *parsed : ParsedArgs();
}

template <typename T>
T FromText(const std::string& text) {
  T message;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &message)) << text;
  return message;
}

TEST(ParseArgsTest, ValuesBooleansRepeatedAndPositionals) {
  std::vector<FlagSpec> specs = {{"name", FlagKind::kValue},
                                 {"dry-run", FlagKind::kBool},
                                 {"label", FlagKind::kRepeated},
                                 {"max-message-size", FlagKind::kValue}};
  absl::StatusOr<ParsedArgs> args =
      ParseArgs({"pos1", "--name", "b1", "--label=a=1", "--dry_run", "--label", "b=2",
                 "--max_message_size=5", "-7", "--", "--not-a-flag"},
                specs, false);
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_THAT(args->positional(), ElementsAre("pos1", "-7", "--not-a-flag"));
  EXPECT_EQ(args->Get("name"), "b1");
  EXPECT_TRUE(args->GetBool("dry-run"));
  EXPECT_THAT(args->GetAll("label"), ElementsAre("a=1", "b=2"));
  EXPECT_EQ(args->Get("max-message-size"), "5");
  EXPECT_FALSE(args->Has("absent"));
  EXPECT_EQ(args->Get("absent", "def"), "def");
}

TEST(ParseArgsTest, StopsAtFirstPositional) {
  absl::StatusOr<ParsedArgs> args =
      ParseArgs({"--server", "h:1", "get-team", "--json", "5"}, GlobalFlags(), true);
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->Get("server"), "h:1");
  EXPECT_THAT(args->positional(), ElementsAre("get-team"));
  EXPECT_THAT(args->rest(), ElementsAre("--json", "5"));
}

TEST(ParseArgsTest, Errors) {
  std::vector<FlagSpec> specs = {{"name", FlagKind::kValue}, {"dry-run", FlagKind::kBool}};
  EXPECT_THAT(ParseArgs({"--nope"}, specs, false).status().message(), HasSubstr("--nope"));
  EXPECT_THAT(ParseArgs({"--name"}, specs, false).status().message(),
              HasSubstr("--name needs a value"));
  EXPECT_THAT(ParseArgs({"--name", "a", "--name=b"}, specs, false).status().message(),
              HasSubstr("more than once"));
  EXPECT_THAT(ParseArgs({"--dry-run=yes"}, specs, false).status().message(),
              HasSubstr("true or false"));
  EXPECT_THAT(ParseArgs({"-x"}, specs, false).status().message(), HasSubstr("unknown flag -x"));
}

TEST(ValueParsersTest, IntegersKeyValuesLists) {
  EXPECT_EQ(*ParseInteger("42", "--w", 1, 100), 42);
  EXPECT_THAT(ParseInteger("4x", "--w", 1, 100).status().message(),
              HasSubstr("--w: expected an integer"));
  EXPECT_THAT(ParseInteger("101", "--w", 1, 100).status().message(), HasSubstr("out of range"));
  EXPECT_THAT(ParseInteger("99999999999999999999", "--w", 1, 100).status().message(),
              HasSubstr("expected an integer"));
  auto kv = ParseKeyValue("a=b=c", "--label");
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(kv->first, "a");
  EXPECT_EQ(kv->second, "b=c");
  EXPECT_FALSE(ParseKeyValue("=x", "--label").ok());
  EXPECT_FALSE(ParseKeyValue("x", "--label").ok());
  EXPECT_THAT(ParseKeyValues({"a=1", "a=2"}, "--topic").status().message(),
              HasSubstr("'a' given more than once"));
  EXPECT_THAT(ParseList(" a, b,,c "), ElementsAre("a", "b", "c"));
  EXPECT_THAT(ParseList(""), IsEmpty());
}

TEST(CommandsTest, EveryUnaryRpcHasACommand) {
  for (const char* name : {"create-bucket",    "update-bucket", "list-buckets",
                           "assign",           "unassign",      "bulk-assign",
                           "list-assignments", "history",       "get-mapping",
                           "get-team",         "list-clients",  "list-handoffs",
                           "cancel-handoff",   "list-pools",    "pause-pool",
                           "resume-pool",      "update-pool",   "rules",
                           "set-rule",         "clear-rule",    "top",
                           "rebalance"}) {
    const CommandSpec* spec = FindCommand(name);
    ASSERT_NE(spec, nullptr) << name;
    EXPECT_THAT(HelpText(), HasSubstr(UsageLine(*spec)));
  }
}

TEST(CommandsTest, CreateBucket) {
  auto request = BuildCreateBucket(Parse("create-bucket", {"--name",
                                                           "b1",
                                                           "--pool",
                                                           "paid",
                                                           "--weight",
                                                           "50",
                                                           "--state",
                                                           "paused",
                                                           "--topic",
                                                           "ingestion=events_1",
                                                           "--topic",
                                                           "clickhouse=ch_1",
                                                           "--consumer-group",
                                                           "ingestion=g1",
                                                           "--drain-order",
                                                           "ingestion,clickhouse",
                                                           "--label",
                                                           "tier=gold",
                                                           "--reason",
                                                           "new",
                                                           "--request-id",
                                                           "r1",
                                                           "--expected-version",
                                                           "7",
                                                           "--dry-run"}));
  ASSERT_TRUE(request.ok()) << request.status();
  auto want = FromText<v1::CreateBucketRequest>(R"pb(
    bucket {
      name: "b1"
      pool: "paid"
      weight: 50
      state: PAUSED
      topics { key: "ingestion" value: "events_1" }
      topics { key: "clickhouse" value: "ch_1" }
      consumer_groups { key: "ingestion" value: "g1" }
      drain_order: "ingestion"
      drain_order: "clickhouse"
      labels { key: "tier" value: "gold" }
    }
    reason: "new"
    request_id: "r1"
    expected_version: 7
    dry_run: true
  )pb");
  EXPECT_EQ(request->DebugString(), want.DebugString());
}

TEST(CommandsTest, CreateBucketUsageErrors) {
  EXPECT_THAT(BuildCreateBucket(Parse("create-bucket", {"--reason", "x"})).status().message(),
              HasSubstr("--name is required"));
  EXPECT_THAT(BuildCreateBucket(Parse("create-bucket", {"--name", "b"})).status().message(),
              HasSubstr("--reason is required"));
  EXPECT_THAT(
      BuildCreateBucket(Parse("create-bucket", {"--name", "b", "--state", "ON", "--reason", "x"}))
          .status()
          .message(),
      HasSubstr("--state"));
  EXPECT_THAT(
      BuildCreateBucket(Parse("create-bucket", {"--name", "b", "--topic", "nope", "--reason", "x"}))
          .status()
          .message(),
      HasSubstr("--topic: expected KEY=VALUE"));
}

TEST(CommandsTest, UpdateBucketMaskFollowsFlags) {
  auto by_id = BuildUpdateBucket(
      Parse("update-bucket", {"3", "--state", "DRAINING", "--weight", "10", "--reason", "r"}));
  ASSERT_TRUE(by_id.ok()) << by_id.status();
  EXPECT_EQ(by_id->bucket().id(), 3);
  EXPECT_EQ(by_id->bucket().state(), v1::DRAINING);
  EXPECT_THAT(by_id->update_mask().paths(), ElementsAre("state", "weight"));

  auto by_name = BuildUpdateBucket(
      Parse("update-bucket", {"b1", "--clear-labels", "--drain-order", "", "--reason", "r"}));
  ASSERT_TRUE(by_name.ok()) << by_name.status();
  EXPECT_EQ(by_name->bucket().id(), 0);
  EXPECT_EQ(by_name->bucket().name(), "b1");
  EXPECT_THAT(by_name->update_mask().paths(), ElementsAre("drain_order", "labels"));
  EXPECT_TRUE(by_name->bucket().labels().empty());

  EXPECT_THAT(BuildUpdateBucket(Parse("update-bucket", {"b1", "--reason", "r"})).status().message(),
              HasSubstr("nothing to update"));
}

TEST(CommandsTest, AssignByIdNameOrPool) {
  std::string name;
  auto by_id = BuildAssignTeam(
      Parse("assign", {"42", "--bucket", "7", "--reason", "pin", "--force"}), &name);
  ASSERT_TRUE(by_id.ok()) << by_id.status();
  EXPECT_EQ(by_id->team_id(), 42);
  EXPECT_EQ(by_id->bucket_id(), 7);
  EXPECT_TRUE(by_id->force());
  EXPECT_EQ(name, "");

  auto by_name = BuildAssignTeam(Parse("assign", {"42", "--bucket", "b1", "--reason", "r"}), &name);
  ASSERT_TRUE(by_name.ok());
  EXPECT_EQ(by_name->target_case(), v1::AssignTeamRequest::TARGET_NOT_SET);
  EXPECT_EQ(name, "b1");

  auto to_pool = BuildAssignTeam(Parse("assign", {"42", "--pool", "free", "--reason", "r"}), &name);
  ASSERT_TRUE(to_pool.ok());
  EXPECT_EQ(to_pool->pool(), "free");

  EXPECT_THAT(BuildAssignTeam(Parse("assign", {"42", "--reason", "r"}), &name).status().message(),
              HasSubstr("exactly one of --bucket"));
  EXPECT_THAT(BuildAssignTeam(Parse("assign", {"x", "--pool", "p", "--reason", "r"}), &name)
                  .status()
                  .message(),
              HasSubstr("TEAM_ID: expected an integer"));
}

TEST(CommandsTest, BulkFile) {
  auto parsed = ParseBulkFile(
      "# team,target\n"
      "1,2\n"
      "  3 , pool:free  # to free\n"
      "\n"
      "4,-\n",
      "teams.csv");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 3u);
  EXPECT_EQ((*parsed)[0].ShortDebugString(), "team_id: 1 bucket_id: 2");
  EXPECT_EQ((*parsed)[1].ShortDebugString(), "team_id: 3 pool: \"free\"");
  EXPECT_EQ((*parsed)[2].ShortDebugString(), "team_id: 4 unassign: true");

  EXPECT_THAT(ParseBulkFile("1,2\n5\n", "f").status().message(), HasSubstr("f:2: expected"));
  EXPECT_THAT(ParseBulkFile("1,b1\n", "f").status().message(), HasSubstr("f:1: bucket id"));
  EXPECT_THAT(ParseBulkFile("x,1\n", "f").status().message(), HasSubstr("f:1: team id"));

  auto request =
      BuildBulkAssign(Parse("bulk-assign", {"--file", "f", "--reason", "r"}), "1,2\n", "f");
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->assignments_size(), 1);
  EXPECT_THAT(BuildBulkAssign(Parse("bulk-assign", {"--file", "f", "--reason", "r"}), "#\n", "f")
                  .status()
                  .message(),
              HasSubstr("no assignments"));
}

TEST(CommandsTest, ListsAndReads) {
  std::string name;
  auto list = BuildListAssignments(
      Parse("list-assignments", {"--bucket", "3", "--page-size", "10", "--page-token", "t"}),
      &name);
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->ShortDebugString(), "bucket_id: 3 page_size: 10 page_token: \"t\"");
  EXPECT_FALSE(
      BuildListAssignments(Parse("list-assignments", {"--bucket", "3", "--pool", "p"}), &name)
          .ok());

  auto history = BuildGetHistory(
      Parse("history", {"--team", "9", "--from", "2", "--to", "5", "--include-delta"}));
  ASSERT_TRUE(history.ok());
  EXPECT_EQ(history->ShortDebugString(),
            "team_id: 9 from_version: 2 to_version: 5 include_delta: true");

  EXPECT_EQ(BuildGetMapping(Parse("get-mapping", {"--min-version", "12"}))->min_version(), 12);
  EXPECT_EQ(BuildGetTeam(Parse("get-team", {"77"}))->team_id(), 77);
  EXPECT_EQ(BuildListBuckets(Parse("list-buckets", {"--pool", "free"}))->pool(), "free");
}

TEST(CommandsTest, PoolsAndRules) {
  auto pause = BuildPausePool(Parse("pause-pool", {"free", "--reason", "incident"}));
  ASSERT_TRUE(pause.ok()) << pause.status();
  EXPECT_EQ(pause->ShortDebugString(), "name: \"free\" state: PAUSED reason: \"incident\"");
  auto resume = BuildResumePool(Parse("resume-pool", {"free", "--reason", "ok", "--dry-run"}));
  ASSERT_TRUE(resume.ok());
  EXPECT_EQ(resume->state(), v1::ACTIVE);
  EXPECT_TRUE(resume->dry_run());
  auto update =
      BuildUpdatePool(Parse("update-pool", {"paid", "--priority", "200", "--reason", "r"}));
  ASSERT_TRUE(update.ok());
  EXPECT_FALSE(update->has_state());
  EXPECT_EQ(update->priority(), 200);
  EXPECT_FALSE(BuildUpdatePool(Parse("update-pool", {"paid", "--reason", "r"})).ok());
  EXPECT_FALSE(
      BuildUpdatePool(Parse("update-pool", {"paid", "--state", "DRAINING", "--reason", "r"})).ok());

  auto limit = BuildSetTeamRule(
      Parse("set-rule", {"42", "--kind", "rate-limit", "--events-per-second", "12.5", "--burst",
                         "30", "--ttl", "90m", "--reason", "noisy"}));
  ASSERT_TRUE(limit.ok()) << limit.status();
  EXPECT_EQ(limit->team_id(), 42);
  EXPECT_EQ(limit->kind(), v1::RATE_LIMIT);
  EXPECT_EQ(limit->rate_limit().events_per_second(), 12.5);
  EXPECT_EQ(limit->rate_limit().burst(), 30);
  EXPECT_EQ(limit->ttl().seconds(), 90 * 60);
  auto drop = BuildSetTeamRule(Parse("set-rule", {"42", "--kind", "DROP", "--expires",
                                                  "2030-01-02T03:04:05Z", "--reason", "spam"}));
  ASSERT_TRUE(drop.ok()) << drop.status();
  EXPECT_EQ(drop->kind(), v1::DROP);
  EXPECT_EQ(drop->expire_time().seconds(), 1893553445);
  EXPECT_FALSE(drop->has_rate_limit());
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"42", "--reason", "r"},
        {"42", "--kind", "rate_limit", "--reason", "r"},
        {"42", "--kind", "drop", "--burst", "3", "--reason", "r"},
        {"42", "--kind", "drop", "--ttl", "soon", "--reason", "r"},
        {"42", "--kind", "drop", "--ttl", "1h", "--expires", "2030-01-02T03:04:05Z", "--reason",
         "r"},
        {"42", "--kind", "drop"}}) {
    EXPECT_FALSE(BuildSetTeamRule(Parse("set-rule", bad)).ok()) << absl::StrJoin(bad, " ");
  }
  auto clear = BuildClearTeamRule(Parse("clear-rule", {"42", "--reason", "done"}));
  ASSERT_TRUE(clear.ok());
  EXPECT_EQ(clear->kind(), v1::TEAM_RULE_KIND_UNSPECIFIED);
  clear =
      BuildClearTeamRule(Parse("clear-rule", {"42", "--kind", "force_overflow", "--reason", "x"}));
  ASSERT_TRUE(clear.ok());
  EXPECT_EQ(clear->kind(), v1::FORCE_OVERFLOW);
  auto rules =
      BuildListTeamRules(Parse("rules", {"--team", "42", "--kind", "skip-person-processing"}));
  ASSERT_TRUE(rules.ok());
  EXPECT_EQ(rules->ShortDebugString(), "team_id: 42 kind: SKIP_PERSON_PROCESSING");
}

TEST(FormatTest, PoolsAndRules) {
  v1::UpdatePoolRequest request;
  request.set_name("free");
  v1::UpdatePoolResponse response;
  response.set_version(9);
  response.mutable_pool()->set_state(v1::PAUSED);
  response.mutable_pool()->set_priority(10);
  response.add_buckets()->set_id(2);
  response.add_buckets()->set_id(5);
  response.mutable_effect()->set_changed(true);
  EXPECT_EQ(FormatUpdatePool(request, response),
            "version 9: pool free PAUSED, priority 10; buckets 2, 5 paused\n");

  v1::ListTeamRulesResponse rules;
  v1::TeamRule* r = rules.add_rules();
  r->set_team_id(42);
  r->set_kind(v1::RATE_LIMIT);
  r->mutable_rate_limit()->set_events_per_second(100);
  r->mutable_rate_limit()->set_burst(200);
  r->set_version(7);
  r->set_actor("alice");
  r->set_reason("noisy");
  EXPECT_EQ(FormatTeamRules(rules),
            "TEAM  RULE                        EXPIRES  SET AT  BY     REASON\n"
            "  42  RATE_LIMIT 100/s burst 200  never         7  alice  noisy\n");
  EXPECT_EQ(FormatTeamRules(v1::ListTeamRulesResponse()), "no team rules\n");
}

TEST(TableTest, AlignsColumnsAndRightAlignsNumbers) {
  Table table({"ID", "NAME"});
  table.AddRow({"1", "first"});
  table.AddRow({"100", "b"});
  EXPECT_EQ(table.Render(),
            " ID  NAME\n"
            "  1  first\n"
            "100  b\n");
}

TEST(FormatTest, WriteSummaries) {
  auto created = FromText<v1::CreateBucketResponse>(R"pb(
    version: 7
    bucket { id: 1 name: "b1" pool: "default" weight: 100 state: ACTIVE }
    effect {
      changed: true
      pool_shifts { pool: "default" share_moved: 1 }
    })pb");
  EXPECT_EQ(FormatCreateBucket(created),
            "version 7: created bucket 1 (b1) in pool default, weight 100, ACTIVE\n"
            "  pool default: 100.00% of default placement moved\n");

  auto dry = FromText<v1::AssignTeamResponse>(R"pb(
    version: 7
    previous_bucket_id: 2
    previous_source: "default"
    bucket_id: 1
    source: "pin"
    effect {
      dry_run: true
      changed: true
      moved_team_count: 1
      moved_teams { team_id: 42 from_bucket_id: 2 to_bucket_id: 1 }
    })pb");
  v1::AssignTeamRequest assign;
  assign.set_team_id(42);
  EXPECT_EQ(FormatAssignTeam(assign, dry),
            "dry run at version 7 (nothing committed): assign team 42: it would go to bucket 1 "
            "(pin), now bucket 2 (default)\n"
            "  1 known team would move:\n"
            "    team 42: bucket 2 -> bucket 1\n");

  auto replay = FromText<v1::AssignTeamResponse>(R"pb(
    version: 8
    bucket_id: 1
    source: "pin"
    previous_bucket_id: 2
    previous_source: "default"
    effect { changed: true replayed: true })pb");
  EXPECT_THAT(FormatAssignTeam(assign, replay),
              HasSubstr("version 8: team 42 -> bucket 1 (pin), was bucket 2 (default) [replay"));

  auto noop = FromText<v1::AssignTeamResponse>(R"pb(
    version: 8
    bucket_id: 1
    source: "pin"
    previous_bucket_id: 1
    previous_source: "pin"
    effect {})pb");
  EXPECT_EQ(FormatAssignTeam(assign, noop),
            "version 8: no change (team 42 stays on bucket 1 (pin))\n");

  auto update_request = FromText<v1::UpdateBucketRequest>(R"pb(
    bucket { id: 1 state: PAUSED }
    update_mask { paths: "state" })pb");
  auto updated = FromText<v1::UpdateBucketResponse>(R"pb(
    version: 9
    bucket { id: 1 name: "b1" state: PAUSED }
    effect { changed: true })pb");
  EXPECT_EQ(FormatUpdateBucket(update_request, updated),
            "version 9: updated bucket 1 (b1): state=PAUSED\n");
}

TEST(FormatTest, EffectListsAtMostMaxMoves) {
  v1::WriteEffect effect;
  effect.set_changed(true);
  effect.set_moved_team_count(5);
  for (int i = 1; i <= 3; ++i) {
    v1::TeamMove* move = effect.add_moved_teams();
    move->set_team_id(i);
    move->set_to_bucket_id(1);
  }
  EXPECT_EQ(FormatEffect(effect, 2),
            "  5 known teams moved:\n"
            "    team 1: unroutable -> bucket 1\n"
            "    team 2: unroutable -> bucket 1\n"
            "    ... and 3 more (--json lists up to 10000)\n");
}

TEST(FormatTest, MappingAndTeam) {
  auto snapshot = FromText<v1::MappingSnapshot>(R"pb(
    version: 3
    cluster_id: "c-1"
    buckets { id: 1 name: "b1" state: ACTIVE pool: "default" weight: 100 }
    pools: "default"
    pools: "free"
    assignments { team_ids: 42 team_ids: 43 targets: 1 targets: -2 })pb");
  std::string text = FormatMapping(snapshot);
  EXPECT_THAT(text, HasSubstr("version      3\n"));
  EXPECT_THAT(text, HasSubstr("cluster id   c-1\n"));
  EXPECT_THAT(text, HasSubstr("assignments  2 (1 pinned, 1 to pools)\n"));
  EXPECT_THAT(text, HasSubstr("42  bucket 1\n"));
  EXPECT_THAT(text, HasSubstr("43  pool:free\n"));

  auto route = FromText<v1::TeamRoute>(R"pb(
    team_id: 42
    bucket_id: 1
    bucket_name: "b1"
    source: "pin"
    version: 3
    bucket_state: ACTIVE
    topics { key: "ingestion" value: "events_1" })pb");
  EXPECT_EQ(FormatTeam(route),
            "team 42 -> bucket 1 (b1) via pin, at version 3\n"
            "  bucket state  ACTIVE\n"
            "  topics        ingestion=events_1\n");
}

TEST(FormatTest, HistoryAndEmptyLists) {
  auto history = FromText<v1::GetHistoryResponse>(R"pb(
    records {
      version: 2
      kind: "AssignTeam"
      actor: "alice"
      reason: "isolate"
      assignments_changed: 1
      create_time { seconds: 1767225600 nanos: 5 }
      delta {
        from_version: 1
        to_version: 2
        set { team_ids: 42 targets: 1 }
        unset_team_ids: 7
      }
    })pb");
  std::string table = FormatHistory(history, false);
  EXPECT_THAT(table, HasSubstr("2026-01-01T00:00:00Z  AssignTeam  alice  1 assignment  -"));
  std::string deltas = FormatHistory(history, true);
  EXPECT_THAT(deltas, HasSubstr("    team 42 -> bucket 1\n"));
  EXPECT_THAT(deltas, HasSubstr("    team 7: override removed\n"));

  EXPECT_EQ(FormatClients(v1::ListClientsResponse()), "no clients\n");
  auto clients = FromText<v1::ListClientsResponse>(R"pb(
    clients {
      client_id: "events-1"
      role: PRODUCER
      replica: "r1:50051"
      peer: "ipv4:10.0.0.7:4242"
      applied_version: 9
      drained_version: 8
      connected: true
      last_ack_time { seconds: 1767225600 }
    })pb");
  EXPECT_EQ(FormatClients(clients),
            "CLIENT    ROLE      STATE      REPLICA   PEER                APPLIED  DRAINED  "
            "LAST ACK              NACKS  LAST NACK ERROR\n"
            "events-1  PRODUCER  connected  r1:50051  ipv4:10.0.0.7:4242        9        8  "
            "2026-01-01T00:00:00Z      0  -\n");
  EXPECT_EQ(FormatHandoffs(v1::ListHandoffsResponse()), "no open handoffs\n");
  EXPECT_EQ(FormatListAssignments(v1::ListAssignmentsResponse()), "no assignments (version 0)\n");
}

}  // namespace
}  // namespace bucketmap::bucketctl
