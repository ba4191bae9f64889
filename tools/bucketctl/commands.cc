#include "tools/bucketctl/commands.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "domain/status_macros.h"
#include "google/protobuf/util/time_util.h"
#include "tools/bucketctl/pipeline.h"

namespace bucketmap::bucketctl {
namespace {

constexpr int64_t kInt32Min = std::numeric_limits<int32_t>::min();
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

constexpr char kWriteUsage[] = "--reason R [--request-id ID] [--expected-version V] [--dry-run]";

std::vector<FlagSpec> WriteFlags(std::vector<FlagSpec> more) {
  more.push_back({"reason", FlagKind::kValue});
  more.push_back({"request-id", FlagKind::kValue});
  more.push_back({"expected-version", FlagKind::kValue});
  more.push_back({"dry-run", FlagKind::kBool});
  return more;
}

std::vector<CommandSpec> MakeCommands() {
  const std::vector<FlagSpec> bucket_fields = {
      {"pool", FlagKind::kValue},
      {"weight", FlagKind::kValue},
      {"state", FlagKind::kValue},
      {"topic", FlagKind::kRepeated},
      {"consumer-group", FlagKind::kRepeated},
      {"drain-order", FlagKind::kValue},
      {"label", FlagKind::kRepeated},
  };
  std::vector<FlagSpec> create_flags = bucket_fields;
  create_flags.push_back({"name", FlagKind::kValue});
  std::vector<FlagSpec> update_flags = bucket_fields;
  update_flags.push_back({"clear-labels", FlagKind::kBool});

  const std::string bucket_usage =
      "[--pool P] [--weight W] [--state S] [--topic ROLE=TOPIC]... "
      "[--consumer-group ROLE=GROUP]... [--drain-order R1,R2] [--label K=V]...";
  const std::string write_details =
      "\nWrite flags:\n"
      "  --reason R            why; required, kept in the history (at most 1 KiB)\n"
      "  --request-id ID       makes a retry safe: a replay returns the first result\n"
      "  --expected-version V  fail with ABORTED unless the mapping is at version V\n"
      "  --dry-run             show what would change; commit nothing\n";

  std::vector<CommandSpec> commands;
  commands.push_back(CommandSpec{
      "create-bucket", absl::StrCat("--name N ", bucket_usage, " ", kWriteUsage),
      "Create a bucket (a set of Kafka topics with its own consumers).",
      absl::StrCat("The server assigns the id. --state is ACTIVE (default) or PAUSED.\n"
                   "--pool defaults to \"default\", --weight to 100. --drain-order lists\n"
                   "the topic roles in pipeline order.\n",
                   write_details),
      WriteFlags(create_flags), 0, 0});
  commands.push_back(CommandSpec{
      "update-bucket",
      absl::StrCat("<ID|NAME> [--state S] [--weight W] [--pool P] [--topic ROLE=TOPIC]... "
                   "[--consumer-group ROLE=GROUP]... [--drain-order R1,R2] [--label K=V]... "
                   "[--clear-labels] ",
                   kWriteUsage),
      "Change a bucket's state, weight, pool, topics, groups, drain order or labels.",
      absl::StrCat("Only the fields given are changed (they form the update mask). --topic,\n"
                   "--consumer-group and --label replace the whole map; --clear-labels\n"
                   "removes every label. States: ACTIVE, PAUSED, DRAINING, RETIRED.\n",
                   write_details),
      WriteFlags(update_flags), 1, 1});
  commands.push_back(CommandSpec{"list-buckets",
                                 "[--pool P]",
                                 "List buckets with their state, pool, weight and pinned teams.",
                                 "",
                                 {{"pool", FlagKind::kValue}},
                                 0,
                                 0});
  commands.push_back(CommandSpec{
      "assign", absl::StrCat("<TEAM_ID> (--bucket ID|NAME | --pool P) [--force] ", kWriteUsage),
      "Pin a team to a bucket, or assign it to a pool.",
      absl::StrCat("--force overrides a move cooldown (recorded in the history).\n"
                   "--unordered: an emergency move that opens no ordering hold (its handoff\n"
                   "is recorded as FORCED \"unordered\").\n",
                   write_details),
      WriteFlags({{"bucket", FlagKind::kValue},
                  {"pool", FlagKind::kValue},
                  {"force", FlagKind::kBool},
                  {"unordered", FlagKind::kBool}}),
      1, 1});
  commands.push_back(CommandSpec{
      "unassign", absl::StrCat("<TEAM_ID> [--force] ", kWriteUsage),
      "Remove a team's override: it goes back to default placement.", write_details.substr(1),
      WriteFlags({{"force", FlagKind::kBool}, {"unordered", FlagKind::kBool}}), 1, 1});
  commands.push_back(
      CommandSpec{"bulk-assign", absl::StrCat("--file F [--force] ", kWriteUsage),
                  "Assign many teams in one atomic write (one version).",
                  absl::StrCat("F (or - for stdin) has one team per line:\n"
                               "  TEAM_ID,BUCKET_ID     pin the team to a bucket\n"
                               "  TEAM_ID,pool:NAME     assign the team to a pool\n"
                               "  TEAM_ID,-             remove the team's override\n"
                               "Blank lines and text after # are ignored.\n",
                               write_details),
                  WriteFlags({{"file", FlagKind::kValue}, {"force", FlagKind::kBool}}), 0, 0});
  commands.push_back(
      CommandSpec{"list-assignments",
                  "[--bucket ID|NAME | --pool P] [--page-size N] [--page-token T] [--all]",
                  "List team overrides (pins and pool assignments), one page or --all.",
                  "Teams without an override are placed by hash and are not listed.\n",
                  {{"bucket", FlagKind::kValue},
                   {"pool", FlagKind::kValue},
                   {"page-size", FlagKind::kValue},
                   {"page-token", FlagKind::kValue},
                   {"all", FlagKind::kBool}},
                  0,
                  0});
  commands.push_back(CommandSpec{
      "history",
      "[--team T] [--from V] [--to V] [--page-size N] [--page-token T] [--include-delta] [--all]",
      "Show the change log: who changed what, when and why.",
      "--from and --to bound the versions (inclusive). --include-delta shows\n"
      "what each version changed.\n",
      {{"team", FlagKind::kValue},
       {"from", FlagKind::kValue},
       {"to", FlagKind::kValue},
       {"page-size", FlagKind::kValue},
       {"page-token", FlagKind::kValue},
       {"include-delta", FlagKind::kBool},
       {"all", FlagKind::kBool}},
      0,
      0});
  commands.push_back(
      CommandSpec{"get-mapping",
                  "[--min-version V]",
                  "Summarise the whole mapping snapshot (--json prints all of it).",
                  "With --min-version the server answers only at that version or later.\n"
                  "Large snapshots may need a larger --max_message_size.\n",
                  {{"min-version", FlagKind::kValue}},
                  0,
                  0});
  commands.push_back(CommandSpec{
      "get-team", "<TEAM_ID>", "Show where a team's events go, and why.", "", {}, 1, 1});
  commands.push_back(CommandSpec{
      "list-clients", "", "List the watch clients seen within their lease.", "", {}, 0, 0});
  commands.push_back(
      CommandSpec{"list-handoffs",
                  "[--include-ended] [--team T] [--page-size N]",
                  "List the open handoffs (coordinated moves): phase, age, lag, missing producers.",
                  "--include-ended adds ended ones (COMPLETED, FORCED, CANCELLED), newest first.\n"
                  "--team lists only the handoffs involving that team.\n",
                  {{"include-ended", FlagKind::kBool},
                   {"team", FlagKind::kValue},
                   {"page-size", FlagKind::kValue}},
                  0,
                  0});
  commands.push_back(CommandSpec{
      "top",
      "[--pool P] [--top-teams N] [--include-retired] [--once] [--interval D]",
      "Per-bucket load and lag (GetLoad), as a table refreshed every --interval.",
      "Rates are EWMAs of the clients' load reports (events/s from producers, processing\n"
      "seconds/s from consumers); LAG is each role's consumer lag as the leader last read\n"
      "it (\"?\" when unknown, never 0). --once prints one table and exits (for scripts);\n"
      "--json prints GetLoad's response once.\n",
      {{"pool", FlagKind::kValue},
       {"top-teams", FlagKind::kValue},
       {"include-retired", FlagKind::kBool},
       {"once", FlagKind::kBool},
       {"interval", FlagKind::kValue}},
      0,
      0});
  commands.push_back(CommandSpec{
      "cancel-handoff", absl::StrCat("<HANDOFF_ID> ", kWriteUsage),
      "End an open handoff as CANCELLED: its targets stop holding the moved teams.",
      absl::StrCat("The teams keep their new route; only the ordering hold ends.\n", write_details),
      WriteFlags({}), 1, 1});
  commands.push_back(CommandSpec{
      "rebalance",
      "--pool P [--metric events|processing] [--max-load-moved 5%] [--max-teams N] "
      "[--target 1.05] [--apply [--reason R] [--dry-run]]",
      "Plan (and with --apply, apply) moves that even out a pool's load (PlanRebalance).",
      "Prints the plan: each bucket's load before and after the moves against its ideal\n"
      "load, the moves, the share of the load they carry, why the planner stopped, and\n"
      "the teams it could not move (giants that need a bucket of their own, teams too\n"
      "heavy for --max-load-moved, teams in their move cooldown). Nothing changes unless\n"
      "--apply: then ApplyRebalance applies exactly the printed moves as one version, at\n"
      "the plan's version and with a fresh request id (ABORTED if the mapping moved in\n"
      "between: plan again), and prints the new version and the handoffs it opened.\n"
      "--reason defaults to \"bucketctl rebalance\". --json prints the plan (and with\n"
      "--apply the ApplyRebalance response on a second line). docs/rebalancing.md.\n",
      {{"pool", FlagKind::kValue},
       {"metric", FlagKind::kValue},
       {"max-load-moved", FlagKind::kValue},
       {"max-teams", FlagKind::kValue},
       {"target", FlagKind::kValue},
       {"apply", FlagKind::kBool},
       {"reason", FlagKind::kValue},
       {"dry-run", FlagKind::kBool}},
      0,
      0});
  commands.push_back(
      CommandSpec{"list-pools",
                  "",
                  "List pools: state, priority, buckets and teams.",
                  "A pool without an object (never paused or given a priority) is ACTIVE with\n"
                  "priority 100.\n",
                  {},
                  0,
                  0});
  commands.push_back(CommandSpec{
      "pause-pool", absl::StrCat("<POOL> ", kWriteUsage),
      "Pause a pool: every ACTIVE bucket of it becomes PAUSED, in one version.",
      absl::StrCat("Consumers of the pool's buckets stop consuming; producers keep routing to\n"
                   "them. A bucket created in (or moved into) the pool while it is paused is\n"
                   "PAUSED too.\n",
                   write_details),
      WriteFlags({}), 1, 1});
  commands.push_back(CommandSpec{
      "resume-pool", absl::StrCat("<POOL> ", kWriteUsage),
      "Resume a pool: the buckets its pause paused become ACTIVE, in one version.",
      absl::StrCat("Buckets that were paused one by one (update-bucket --state PAUSED) before\n"
                   "the pool was paused stay PAUSED.\n",
                   write_details),
      WriteFlags({}), 1, 1});
  commands.push_back(CommandSpec{
      "update-pool", absl::StrCat("<POOL> [--state ACTIVE|PAUSED] [--priority P] ", kWriteUsage),
      "Set a pool's state and priority (0..1000, higher matters more).", write_details.substr(1),
      WriteFlags({{"state", FlagKind::kValue}, {"priority", FlagKind::kValue}}), 1, 1});
  commands.push_back(
      CommandSpec{"rules",
                  "[--team T] [--kind K] [--page-size N] [--page-token T] [--all]",
                  "List the team rules in force: kind, limit, expiry, who set them and why.",
                  "Kinds: rate-limit, force-overflow, drop, skip-person-processing.\n",
                  {{"team", FlagKind::kValue},
                   {"kind", FlagKind::kValue},
                   {"page-size", FlagKind::kValue},
                   {"page-token", FlagKind::kValue},
                   {"all", FlagKind::kBool}},
                  0,
                  0});
  commands.push_back(CommandSpec{
      "set-rule",
      absl::StrCat("<TEAM_ID> --kind K [--events-per-second N [--burst B]] "
                   "[--ttl D | --expires T] ",
                   kWriteUsage),
      "Set a team rule (rate-limit, force-overflow, drop, skip-person-processing).",
      absl::StrCat("rate-limit needs --events-per-second (and takes --burst, default one second's\n"
                   "worth): producers send a team's events beyond it to the bucket's overflow\n"
                   "topic. force-overflow sends them all there; both need the team's bucket to\n"
                   "have an \"overflow\" topic. drop: producers drop the team's events.\n"
                   "skip-person-processing: consumers skip person processing for them.\n"
                   "--ttl (e.g. 30m, 2h) or --expires (RFC 3339) makes the rule expire: the\n"
                   "server removes it then, as a version of its own.\n",
                   write_details),
      WriteFlags({{"kind", FlagKind::kValue},
                  {"events-per-second", FlagKind::kValue},
                  {"burst", FlagKind::kValue},
                  {"ttl", FlagKind::kValue},
                  {"expires", FlagKind::kValue}}),
      1, 1});
  commands.push_back(CommandSpec{"clear-rule", absl::StrCat("<TEAM_ID> [--kind K] ", kWriteUsage),
                                 "Remove a team rule (of one kind, or every rule of the team).",
                                 write_details.substr(1), WriteFlags({{"kind", FlagKind::kValue}}),
                                 1, 1});
  std::string render_details =
      "Reads the live mapping (ListBuckets) and prints the artifact of KIND on stdout.\n"
      "Deterministic: the same buckets and flags print the same bytes. --kafka_brokers\n"
      "names the Kafka cluster of the bucket topics: consumer counts are capped at each\n"
      "topic's partition count read from it (without it, only 1 consumer is allowed).\n"
      "A bucket that has a topic for a role but no consumer group for it is an error.\n"
      "\nKinds:\n";
  std::vector<std::string> kind_names;
  for (const RenderKind& kind : RenderKinds()) {
    kind_names.push_back(kind.name);
    absl::StrAppend(&render_details, "\n  render ", kind.name, " ", kind.usage, "\n    ",
                    kind.summary, "\n");
    for (absl::string_view line : absl::StrSplit(kind.details, '\n', absl::SkipEmpty())) {
      absl::StrAppend(&render_details, "    ", line, "\n");
    }
  }
  commands.push_back(CommandSpec{
      "render", absl::StrCat("<", absl::StrJoin(kind_names, "|"), "> [flags of the kind]"),
      "Render a pipeline artifact from the live mapping (ClickHouse DDL, Helm values, ...).",
      render_details, RenderFlags(), 1, 1});
  commands.push_back(CommandSpec{
      "check-pipeline",
      "--kafka_brokers B [--clickhouse_url URL [--template F]] [--roles R1,R2] [--file F]...",
      "Check the pipeline around the mapping; exit 3 naming each problem found.",
      "Problems: a topic, a group or a (topic, group) pair shared between buckets or\n"
      "roles; a bucket other than RETIRED without a topic or consumer group for a role\n"
      "of --roles (default: every role an ACTIVE bucket has); a topic missing from Kafka.\n"
      "With --clickhouse_url: a Kafka table with more consumers than its topic has\n"
      "partitions, a topic read by two Kafka tables, a table of a RETIRED bucket.\n"
      "Each --file (a rendered artifact: SQL, Helm values) must not name a topic or\n"
      "group of a RETIRED bucket.\n",
      {{"kafka-brokers", FlagKind::kValue},
       {"clickhouse-url", FlagKind::kValue},
       {"template", FlagKind::kValue},
       {"roles", FlagKind::kValue},
       {"file", FlagKind::kRepeated}},
      0,
      0});
  return commands;
}

absl::Status Usage(absl::string_view message) { return absl::InvalidArgumentError(message); }

absl::StatusOr<int64_t> IntFlag(const ParsedArgs& args, absl::string_view name, int64_t min,
                                int64_t max) {
  return ParseInteger(args.Get(name), absl::StrCat("--", name), min, max);
}

absl::StatusOr<v1::BucketState> ParseState(absl::string_view text) {
  std::string upper = absl::AsciiStrToUpper(text);
  v1::BucketState state;
  if (upper == "BUCKET_STATE_UNSPECIFIED" || !v1::BucketState_Parse(upper, &state)) {
    return Usage(
        absl::StrCat("--state: expected ACTIVE, PAUSED, DRAINING or RETIRED, got '", text, "'"));
  }
  return state;
}

template <typename Request>
absl::Status ApplyWriteFlags(const ParsedArgs& args, Request* request) {
  if (args.Get("reason").empty()) {
    return Usage("--reason is required: say why (it is kept in the history)");
  }
  request->set_reason(args.Get("reason"));
  request->set_request_id(args.Get("request-id"));
  if (args.Has("expected-version")) {
    ASSIGN_OR_RETURN(int64_t v, IntFlag(args, "expected-version", kInt64Min, kInt64Max));
    request->set_expected_version(v);
  }
  request->set_dry_run(args.GetBool("dry-run"));
  return absl::OkStatus();
}

// --page-size, --page-token, and --all (which pages through from the
// start, so it excludes --page-token).
template <typename Request>
absl::Status ApplyPageFlags(const ParsedArgs& args, Request* request) {
  if (args.Has("page-size")) {
    ASSIGN_OR_RETURN(int64_t size, IntFlag(args, "page-size", kInt32Min, kInt32Max));
    request->set_page_size(static_cast<int32_t>(size));
  }
  if (args.Has("page-token") && args.GetBool("all")) {
    return Usage("--page-token and --all exclude each other");
  }
  request->set_page_token(args.Get("page-token"));
  return absl::OkStatus();
}

// Sets the bucket fields given as flags and returns their field-mask paths.
absl::StatusOr<std::vector<std::string>> ApplyBucketFlags(const ParsedArgs& args,
                                                          v1::Bucket* bucket) {
  std::vector<std::string> paths;
  if (args.Has("state")) {
    ASSIGN_OR_RETURN(v1::BucketState state, ParseState(args.Get("state")));
    bucket->set_state(state);
    paths.push_back("state");
  }
  if (args.Has("weight")) {
    ASSIGN_OR_RETURN(int64_t weight, IntFlag(args, "weight", kInt32Min, kInt32Max));
    bucket->set_weight(static_cast<int32_t>(weight));
    paths.push_back("weight");
  }
  if (args.Has("pool")) {
    bucket->set_pool(args.Get("pool"));
    paths.push_back("pool");
  }
  if (args.Has("topic")) {
    ASSIGN_OR_RETURN(auto topics, ParseKeyValues(args.GetAll("topic"), "--topic"));
    bucket->mutable_topics()->insert(topics.begin(), topics.end());
    paths.push_back("topics");
  }
  if (args.Has("consumer-group")) {
    ASSIGN_OR_RETURN(auto groups,
                     ParseKeyValues(args.GetAll("consumer-group"), "--consumer-group"));
    bucket->mutable_consumer_groups()->insert(groups.begin(), groups.end());
    paths.push_back("consumer_groups");
  }
  if (args.Has("drain-order")) {
    for (std::string& role : ParseList(args.Get("drain-order"))) {
      bucket->add_drain_order(std::move(role));
    }
    paths.push_back("drain_order");
  }
  if (args.Has("label")) {
    if (args.GetBool("clear-labels")) {
      return Usage("--label and --clear-labels exclude each other");
    }
    ASSIGN_OR_RETURN(auto labels, ParseKeyValues(args.GetAll("label"), "--label"));
    bucket->mutable_labels()->insert(labels.begin(), labels.end());
    paths.push_back("labels");
  } else if (args.GetBool("clear-labels")) {
    paths.push_back("labels");
  }
  return paths;
}

absl::StatusOr<int64_t> TeamArg(const ParsedArgs& args) {
  return ParseInteger(args.positional().at(0), "TEAM_ID", kInt64Min, kInt64Max);
}

// --bucket ID|NAME: sets *bucket_id for an id, else *bucket_name.
absl::Status BucketFlag(const ParsedArgs& args, int32_t* bucket_id, std::string* bucket_name) {
  bucket_name->clear();
  *bucket_id = 0;
  const std::string value = args.Get("bucket");
  if (value.empty()) return Usage("--bucket needs a bucket id or name");
  if (IsInteger(value)) {
    ASSIGN_OR_RETURN(int64_t id, IntFlag(args, "bucket", kInt32Min, kInt32Max));
    *bucket_id = static_cast<int32_t>(id);
  } else {
    *bucket_name = value;
  }
  return absl::OkStatus();
}

}  // namespace

const std::vector<FlagSpec>& GlobalFlags() {
  static const auto* flags = new std::vector<FlagSpec>{
      {"server", FlagKind::kValue},  {"json", FlagKind::kBool},
      {"timeout", FlagKind::kValue}, {"max-message-size", FlagKind::kValue},
      {"actor", FlagKind::kValue},   {"help", FlagKind::kBool},
      {"token", FlagKind::kValue},   {"tls", FlagKind::kBool},
      {"tls-ca", FlagKind::kValue},  {"tls-cert", FlagKind::kValue},
      {"tls-key", FlagKind::kValue},
  };
  return *flags;
}

const std::vector<CommandSpec>& Commands() {
  static const auto* commands = new std::vector<CommandSpec>(MakeCommands());
  return *commands;
}

const CommandSpec* FindCommand(absl::string_view name) {
  for (const CommandSpec& command : Commands()) {
    if (command.name == name) return &command;
  }
  return nullptr;
}

std::string UsageLine(const CommandSpec& command) {
  std::string line = absl::StrCat("bucketctl ", command.name);
  if (!command.usage.empty()) absl::StrAppend(&line, " ", command.usage);
  return line;
}

std::string HelpText() {
  std::string text =
      "bucketctl: command-line client of bucketmap-server.\n"
      "\n"
      "usage: bucketctl [global flags] <command> [arguments] [flags]\n"
      "\n"
      "Global flags (also accepted after the command):\n"
      "  --server HOST:PORT        server address (default: $BUCKETMAP_SERVER, else\n"
      "                            localhost:50051)\n"
      "  --json                    print the response as protobuf JSON\n"
      "  --timeout SECONDS         deadline of each call (default 30; 0: none)\n"
      "  --max_message_size BYTES  largest response accepted (default 67108864)\n"
      "  --actor NAME              who makes the change, sent as x-bucketmap-actor\n"
      "                            (default: $BUCKETMAP_ACTOR, else the server's default)\n"
      "                            (ignored by servers with auth: they record the token's\n"
      "                            name)\n"
      "  --token TOKEN             bearer token (default: $BUCKETMAP_TOKEN; prefer the\n"
      "                            variable: arguments show in `ps`)\n"
      "  --tls                     connect with TLS, trusting the system's CAs\n"
      "  --tls_ca FILE             connect with TLS, trusting this PEM CA bundle\n"
      "  --tls_cert FILE           client certificate for mTLS (PEM; with --tls_key)\n"
      "  --tls_key FILE            its private key (PEM)\n"
      "Flags are written --name VALUE or --name=VALUE; '_' and '-' are interchangeable.\n"
      "\n"
      "Commands:\n";
  for (const CommandSpec& command : Commands()) {
    absl::StrAppend(&text, "  ", UsageLine(command), "\n      ", command.summary, "\n");
  }
  absl::StrAppend(&text,
                  "\n"
                  "Run `bucketctl help <command>` for details. Exit codes: 0 success, 1 the\n"
                  "server (or Kafka, or ClickHouse) returned an error, 2 bad usage, 3\n"
                  "check-pipeline found problems.\n");
  return text;
}

std::string CommandHelp(const CommandSpec& command) {
  std::string text = absl::StrCat("usage: ", UsageLine(command), "\n\n", command.summary, "\n");
  if (!command.details.empty()) absl::StrAppend(&text, "\n", command.details);
  return text;
}

absl::StatusOr<v1::CreateBucketRequest> BuildCreateBucket(const ParsedArgs& args) {
  v1::CreateBucketRequest request;
  if (args.Get("name").empty()) return Usage("--name is required");
  request.mutable_bucket()->set_name(args.Get("name"));
  RETURN_IF_ERROR(ApplyBucketFlags(args, request.mutable_bucket()).status());
  RETURN_IF_ERROR(ApplyWriteFlags(args, &request));
  return request;
}

absl::StatusOr<v1::UpdateBucketRequest> BuildUpdateBucket(const ParsedArgs& args) {
  v1::UpdateBucketRequest request;
  const std::string& target = args.positional().at(0);
  if (IsInteger(target)) {
    ASSIGN_OR_RETURN(int64_t id, ParseInteger(target, "ID", kInt32Min, kInt32Max));
    request.mutable_bucket()->set_id(static_cast<int32_t>(id));
  } else {
    request.mutable_bucket()->set_name(target);
  }
  ASSIGN_OR_RETURN(std::vector<std::string> paths,
                   ApplyBucketFlags(args, request.mutable_bucket()));
  if (paths.empty()) {
    return Usage(
        "nothing to update: give at least one of --state, --weight, --pool, --topic, "
        "--consumer-group, --drain-order, --label, --clear-labels");
  }
  for (std::string& path : paths) request.mutable_update_mask()->add_paths(std::move(path));
  RETURN_IF_ERROR(ApplyWriteFlags(args, &request));
  return request;
}

absl::StatusOr<v1::AssignTeamRequest> BuildAssignTeam(const ParsedArgs& args,
                                                      std::string* bucket_name) {
  v1::AssignTeamRequest request;
  bucket_name->clear();
  ASSIGN_OR_RETURN(int64_t team, TeamArg(args));
  request.set_team_id(team);
  if (args.Has("bucket") == args.Has("pool")) {
    return Usage("give exactly one of --bucket ID|NAME and --pool P");
  }
  if (args.Has("bucket")) {
    int32_t bucket_id = 0;
    RETURN_IF_ERROR(BucketFlag(args, &bucket_id, bucket_name));
    if (bucket_name->empty()) request.set_bucket_id(bucket_id);
  } else {
    request.set_pool(args.Get("pool"));
  }
  request.set_force(args.GetBool("force"));
  if (args.GetBool("unordered")) request.set_ordered(false);
  RETURN_IF_ERROR(ApplyWriteFlags(args, &request));
  return request;
}

absl::StatusOr<v1::UnassignTeamRequest> BuildUnassignTeam(const ParsedArgs& args) {
  v1::UnassignTeamRequest request;
  ASSIGN_OR_RETURN(int64_t team, TeamArg(args));
  request.set_team_id(team);
  request.set_force(args.GetBool("force"));
  if (args.GetBool("unordered")) request.set_ordered(false);
  RETURN_IF_ERROR(ApplyWriteFlags(args, &request));
  return request;
}

absl::StatusOr<std::vector<v1::BulkAssignment>> ParseBulkFile(absl::string_view text,
                                                              absl::string_view file_name) {
  std::vector<v1::BulkAssignment> out;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    if (size_t hash = line.find('#'); hash != absl::string_view::npos) line = line.substr(0, hash);
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    const std::string where = absl::StrCat(file_name, ":", line_number);
    std::vector<absl::string_view> fields = absl::StrSplit(line, ',');
    if (fields.size() != 2) {
      return Usage(absl::StrCat(where, ": expected TEAM_ID,BUCKET_ID or TEAM_ID,pool:NAME or ",
                                "TEAM_ID,-, got '", line, "'"));
    }
    absl::string_view team_text = absl::StripAsciiWhitespace(fields[0]);
    absl::string_view target = absl::StripAsciiWhitespace(fields[1]);
    v1::BulkAssignment assignment;
    ASSIGN_OR_RETURN(int64_t team, ParseInteger(team_text, absl::StrCat(where, ": team id"),
                                                kInt64Min, kInt64Max));
    assignment.set_team_id(team);
    if (target == "-") {
      assignment.set_unassign(true);
    } else if (absl::ConsumePrefix(&target, "pool:")) {
      if (target.empty()) return Usage(absl::StrCat(where, ": empty pool name"));
      assignment.set_pool(std::string(target));
    } else {
      ASSIGN_OR_RETURN(int64_t bucket, ParseInteger(target, absl::StrCat(where, ": bucket id"),
                                                    kInt32Min, kInt32Max));
      assignment.set_bucket_id(static_cast<int32_t>(bucket));
    }
    out.push_back(std::move(assignment));
  }
  return out;
}

absl::StatusOr<v1::BulkAssignRequest> BuildBulkAssign(const ParsedArgs& args,
                                                      absl::string_view file_text,
                                                      absl::string_view file_name) {
  v1::BulkAssignRequest request;
  ASSIGN_OR_RETURN(std::vector<v1::BulkAssignment> assignments,
                   ParseBulkFile(file_text, file_name));
  if (assignments.empty()) {
    return Usage(absl::StrCat(file_name, ": no assignments in the file"));
  }
  for (v1::BulkAssignment& a : assignments) *request.add_assignments() = std::move(a);
  request.set_force(args.GetBool("force"));
  RETURN_IF_ERROR(ApplyWriteFlags(args, &request));
  return request;
}

absl::StatusOr<v1::ListAssignmentsRequest> BuildListAssignments(const ParsedArgs& args,
                                                                std::string* bucket_name) {
  v1::ListAssignmentsRequest request;
  bucket_name->clear();
  if (args.Has("bucket") && args.Has("pool")) {
    return Usage("give at most one of --bucket and --pool");
  }
  if (args.Has("bucket")) {
    int32_t bucket_id = 0;
    RETURN_IF_ERROR(BucketFlag(args, &bucket_id, bucket_name));
    request.set_bucket_id(bucket_id);
  }
  request.set_pool(args.Get("pool"));
  RETURN_IF_ERROR(ApplyPageFlags(args, &request));
  return request;
}

absl::StatusOr<v1::GetHistoryRequest> BuildGetHistory(const ParsedArgs& args) {
  v1::GetHistoryRequest request;
  if (args.Has("team")) {
    ASSIGN_OR_RETURN(int64_t team, IntFlag(args, "team", kInt64Min, kInt64Max));
    request.set_team_id(team);
  }
  if (args.Has("from")) {
    ASSIGN_OR_RETURN(int64_t v, IntFlag(args, "from", kInt64Min, kInt64Max));
    request.set_from_version(v);
  }
  if (args.Has("to")) {
    ASSIGN_OR_RETURN(int64_t v, IntFlag(args, "to", kInt64Min, kInt64Max));
    request.set_to_version(v);
  }
  RETURN_IF_ERROR(ApplyPageFlags(args, &request));
  request.set_include_delta(args.GetBool("include-delta"));
  return request;
}

absl::StatusOr<v1::ListBucketsRequest> BuildListBuckets(const ParsedArgs& args) {
  v1::ListBucketsRequest request;
  request.set_pool(args.Get("pool"));
  return request;
}

absl::StatusOr<v1::GetMappingRequest> BuildGetMapping(const ParsedArgs& args) {
  v1::GetMappingRequest request;
  if (args.Has("min-version")) {
    ASSIGN_OR_RETURN(int64_t v, IntFlag(args, "min-version", kInt64Min, kInt64Max));
    request.set_min_version(v);
  }
  return request;
}

absl::StatusOr<v1::GetTeamRequest> BuildGetTeam(const ParsedArgs& args) {
  v1::GetTeamRequest request;
  ASSIGN_OR_RETURN(int64_t team, TeamArg(args));
  request.set_team_id(team);
  return request;
}

absl::StatusOr<v1::ListHandoffsRequest> BuildListHandoffs(const ParsedArgs& args) {
  v1::ListHandoffsRequest request;
  request.set_include_ended(args.GetBool("include-ended"));
  if (args.Has("team")) {
    ASSIGN_OR_RETURN(int64_t team, IntFlag(args, "team", kInt64Min, kInt64Max));
    request.set_team_id(team);
  }
  if (args.Has("page-size")) {
    ASSIGN_OR_RETURN(int64_t size, IntFlag(args, "page-size", kInt32Min, kInt32Max));
    request.set_page_size(static_cast<int32_t>(size));
  }
  return request;
}

absl::StatusOr<v1::CancelHandoffRequest> BuildCancelHandoff(const ParsedArgs& args) {
  v1::CancelHandoffRequest request;
  ASSIGN_OR_RETURN(int64_t id,
                   ParseInteger(args.positional().at(0), "HANDOFF_ID", kInt64Min, kInt64Max));
  request.set_handoff_id(id);
  RETURN_IF_ERROR(ApplyWriteFlags(args, &request));
  return request;
}

absl::StatusOr<v1::TeamRuleKind> ParseRuleKind(absl::string_view text, absl::string_view what) {
  std::string upper = absl::AsciiStrToUpper(text);
  std::replace(upper.begin(), upper.end(), '-', '_');
  v1::TeamRuleKind kind;
  if (upper == "TEAM_RULE_KIND_UNSPECIFIED" || !v1::TeamRuleKind_Parse(upper, &kind)) {
    return Usage(absl::StrCat(what, ": expected rate-limit, force-overflow, drop or ",
                              "skip-person-processing, got '", text, "'"));
  }
  return kind;
}

absl::StatusOr<v1::UpdatePoolRequest> BuildUpdatePool(const ParsedArgs& args) {
  v1::UpdatePoolRequest request;
  request.set_name(args.positional().at(0));
  if (args.Has("state")) {
    ASSIGN_OR_RETURN(v1::BucketState state, ParseState(args.Get("state")));
    if (state != v1::ACTIVE && state != v1::PAUSED) {
      return Usage("--state: a pool is ACTIVE or PAUSED");
    }
    request.set_state(state);
  }
  if (args.Has("priority")) {
    ASSIGN_OR_RETURN(int64_t priority, IntFlag(args, "priority", kInt32Min, kInt32Max));
    request.set_priority(static_cast<int32_t>(priority));
  }
  if (!request.has_state() && !request.has_priority()) {
    return Usage("nothing to update: give --state, --priority or both");
  }
  RETURN_IF_ERROR(ApplyWriteFlags(args, &request));
  return request;
}

absl::StatusOr<v1::UpdatePoolRequest> BuildPausePool(const ParsedArgs& args) {
  v1::UpdatePoolRequest request;
  request.set_name(args.positional().at(0));
  request.set_state(v1::PAUSED);
  RETURN_IF_ERROR(ApplyWriteFlags(args, &request));
  return request;
}

absl::StatusOr<v1::UpdatePoolRequest> BuildResumePool(const ParsedArgs& args) {
  v1::UpdatePoolRequest request;
  request.set_name(args.positional().at(0));
  request.set_state(v1::ACTIVE);
  RETURN_IF_ERROR(ApplyWriteFlags(args, &request));
  return request;
}

absl::StatusOr<v1::ListTeamRulesRequest> BuildListTeamRules(const ParsedArgs& args) {
  v1::ListTeamRulesRequest request;
  if (args.Has("team")) {
    ASSIGN_OR_RETURN(int64_t team, IntFlag(args, "team", kInt64Min, kInt64Max));
    request.set_team_id(team);
  }
  if (args.Has("kind")) {
    ASSIGN_OR_RETURN(v1::TeamRuleKind kind, ParseRuleKind(args.Get("kind"), "--kind"));
    request.set_kind(kind);
  }
  RETURN_IF_ERROR(ApplyPageFlags(args, &request));
  return request;
}

absl::StatusOr<v1::SetTeamRuleRequest> BuildSetTeamRule(const ParsedArgs& args) {
  v1::SetTeamRuleRequest request;
  ASSIGN_OR_RETURN(int64_t team, TeamArg(args));
  request.set_team_id(team);
  if (!args.Has("kind")) return Usage("--kind is required");
  ASSIGN_OR_RETURN(v1::TeamRuleKind kind, ParseRuleKind(args.Get("kind"), "--kind"));
  request.set_kind(kind);
  if (kind == v1::RATE_LIMIT) {
    if (!args.Has("events-per-second")) {
      return Usage("--events-per-second is required for a rate-limit rule");
    }
    double eps = 0;
    if (!absl::SimpleAtod(args.Get("events-per-second"), &eps)) {
      return Usage(
          absl::StrCat("--events-per-second: not a number: '", args.Get("events-per-second"), "'"));
    }
    request.mutable_rate_limit()->set_events_per_second(eps);
    if (args.Has("burst")) {
      ASSIGN_OR_RETURN(int64_t burst, IntFlag(args, "burst", kInt64Min, kInt64Max));
      request.mutable_rate_limit()->set_burst(burst);
    }
  } else if (args.Has("events-per-second") || args.Has("burst")) {
    return Usage("--events-per-second and --burst are for rate-limit rules only");
  }
  if (args.Has("ttl") && args.Has("expires")) {
    return Usage("--ttl and --expires exclude each other");
  }
  if (args.Has("ttl")) {
    absl::Duration ttl;
    if (!absl::ParseDuration(args.Get("ttl"), &ttl) || ttl <= absl::ZeroDuration()) {
      return Usage(absl::StrCat("--ttl: expected a positive duration such as 30m or 2h, got '",
                                args.Get("ttl"), "'"));
    }
    *request.mutable_ttl() =
        google::protobuf::util::TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(ttl));
  }
  if (args.Has("expires")) {
    google::protobuf::Timestamp when;
    if (!google::protobuf::util::TimeUtil::FromString(args.Get("expires"), &when)) {
      return Usage(absl::StrCat("--expires: expected RFC 3339, e.g. 2026-01-02T03:04:05Z, got '",
                                args.Get("expires"), "'"));
    }
    *request.mutable_expire_time() = when;
  }
  RETURN_IF_ERROR(ApplyWriteFlags(args, &request));
  return request;
}

absl::StatusOr<v1::ClearTeamRuleRequest> BuildClearTeamRule(const ParsedArgs& args) {
  v1::ClearTeamRuleRequest request;
  ASSIGN_OR_RETURN(int64_t team, TeamArg(args));
  request.set_team_id(team);
  if (args.Has("kind")) {
    ASSIGN_OR_RETURN(v1::TeamRuleKind kind, ParseRuleKind(args.Get("kind"), "--kind"));
    request.set_kind(kind);
  }
  RETURN_IF_ERROR(ApplyWriteFlags(args, &request));
  return request;
}

}  // namespace bucketmap::bucketctl
