#include "tools/bucketctl/runner.h"

#include <algorithm>
#include <functional>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bucketmap/read_file.h"
#include "google/protobuf/util/json_util.h"
#include "tools/bucketctl/format.h"
#include "tools/bucketctl/load_commands.h"
#include "tools/bucketctl/pipeline.h"
#include "tools/bucketctl/pipeline_io.h"

namespace bucketmap::bucketctl {
namespace {

using Admin = v1::AdminService::StubInterface;
using Mapping = v1::MappingService::StubInterface;

// What one run of a command has to hand.
struct Invocation {
  const CommandSpec& command;
  const ParsedArgs& args;
  bool json;
  Connection& connection;
};

int RpcError(const Invocation& in, const grpc::Status& status) {
  std::cerr << RpcErrorText(status, in.connection.options());
  return kExitRpcError;
}

int PrintJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions json_options;
  json_options.preserve_proto_field_names = true;
  json_options.always_print_primitive_fields = true;
  std::string json;
  auto status = google::protobuf::util::MessageToJsonString(message, &json, json_options);
  if (!status.ok()) {
    std::cerr << "error: INTERNAL: cannot print the response as JSON: " << status.ToString()
              << "\n";
    return kExitRpcError;
  }
  std::cout << json << "\n";
  return kExitOk;
}

// The id of the bucket named `name`, from ListBuckets.
grpc::Status FindBucketId(Connection& connection, const std::string& name, int32_t* id) {
  v1::ListBucketsResponse response;
  grpc::Status status = connection.Call(&Admin::ListBuckets, v1::ListBucketsRequest(), &response);
  if (!status.ok()) return status;
  for (const v1::Bucket& bucket : response.buckets()) {
    if (bucket.name() == name) {
      *id = bucket.id();
      return grpc::Status::OK;
    }
  }
  return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("no bucket named '", name, "'"));
}

// BuildRequest() sets *request from the flags with one of the two kinds of
// builders of commands.h, and returns kExitOk or the exit code of the error
// it printed. A builder's error is a usage error.

template <typename Request>
int BuildRequest(const Invocation& in, absl::StatusOr<Request> (*build)(const ParsedArgs&),
                 Request* request) {
  absl::StatusOr<Request> built = build(in.args);
  if (!built.ok()) return UsageError(&in.command, built.status().message());
  *request = *std::move(built);
  return kExitOk;
}

// A builder that leaves a bucket given by name (--bucket NAME) unset: the
// name is looked up here, and a failed lookup is an RPC error.
template <typename Request>
int BuildRequest(const Invocation& in,
                 absl::StatusOr<Request> (*build)(const ParsedArgs&, std::string*),
                 Request* request) {
  std::string bucket_name;
  absl::StatusOr<Request> built = build(in.args, &bucket_name);
  if (!built.ok()) return UsageError(&in.command, built.status().message());
  *request = *std::move(built);
  if (bucket_name.empty()) return kExitOk;
  int32_t id = 0;
  if (grpc::Status status = FindBucketId(in.connection, bucket_name, &id); !status.ok()) {
    return RpcError(in, status);
  }
  request->set_bucket_id(id);
  return kExitOk;
}

// Text() is the human output, by one of the two kinds of printers of
// format.h: of the response, or of the request and its response.

template <typename Request, typename Response>
std::string Text(std::string (*format)(const Response&), const Request&, const Response& response) {
  return format(response);
}

template <typename Request, typename Response>
std::string Text(std::string (*format)(const Request&, const Response&), const Request& request,
                 const Response& response) {
  return format(request, response);
}

// One page, or with --all every page, merged into *merged: MergeFrom
// appends the repeated fields; next_page_token is the last page's.
template <typename Stub, typename Request, typename Response>
grpc::Status CallPages(const Invocation& in, Method<Stub, Request, Response> method,
                       Request request, Response* merged) {
  const bool all = in.args.GetBool("all");
  std::string previous_token;
  while (true) {
    Response page;
    grpc::Status status = in.connection.Call(method, request, &page);
    if (!status.ok()) return status;
    const std::string next = page.next_page_token();
    merged->MergeFrom(page);
    merged->set_next_page_token(next);
    if (!all || next.empty()) return grpc::Status::OK;
    if (next == previous_token) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "the server repeated a page token");
    }
    previous_token = next;
    request.set_page_token(next);
  }
}

// The one runner: builds the request, calls `method` (page by page when
// kPaged), and prints the response.
template <bool kPaged, typename Stub, typename Request, typename Response, typename Build,
          typename Format>
int Run(const Invocation& in, Method<Stub, Request, Response> method, Build build, Format format) {
  Request request;
  if (int rc = BuildRequest(in, build, &request); rc != kExitOk) return rc;
  Response response;
  grpc::Status status;
  if constexpr (kPaged) {
    status = CallPages(in, method, request, &response);
  } else {
    status = in.connection.Call(method, request, &response);
  }
  if (!status.ok()) return RpcError(in, status);
  if (in.json) return PrintJson(response);
  std::cout << Text(format, request, response);
  if constexpr (kPaged) {
    if (!response.next_page_token().empty()) {
      std::cout << "more: add --page-token " << response.next_page_token() << " (or --all)\n";
    }
  }
  return kExitOk;
}

using Runner = std::function<int(const Invocation&)>;

// A command that makes one call.
template <typename Stub, typename Request, typename Response, typename Build, typename Format>
Runner OneCall(Method<Stub, Request, Response> method, Build build, Format format) {
  return [=](const Invocation& in) { return Run<false>(in, method, build, format); };
}

// A command that lists one page, or every page with --all.
template <typename Stub, typename Request, typename Response, typename Build, typename Format>
Runner PagedCall(Method<Stub, Request, Response> method, Build build, Format format) {
  return [=](const Invocation& in) { return Run<true>(in, method, build, format); };
}

// bulk-assign's request, with the text of --file (a path, or - for stdin).
absl::StatusOr<v1::BulkAssignRequest> BuildBulkAssignFromFile(const ParsedArgs& args) {
  const std::string file = args.Get("file");
  if (file.empty()) return absl::InvalidArgumentError("--file is required (- reads stdin)");
  if (file == "-") {
    std::stringstream text;
    text << std::cin.rdbuf();
    return BuildBulkAssign(args, text.str(), "stdin");
  }
  absl::StatusOr<std::string> text = ReadFile(file, "--file");
  if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat("cannot read ", file));
  return BuildBulkAssign(args, *text, file);
}

// The request of a command without flags.
template <typename Request>
absl::StatusOr<Request> NoFlags(const ParsedArgs&) {
  return Request();
}

std::string FormatHistoryAsAsked(const v1::GetHistoryRequest& request,
                                 const v1::GetHistoryResponse& response) {
  return FormatHistory(response, request.include_delta());
}

// top: GetLoad once (--once, --json), or refreshed every --interval
// until interrupted.
int RunTop(const Invocation& in) {
  v1::GetLoadRequest request;
  if (int rc = BuildRequest(in, BuildGetLoad, &request); rc != kExitOk) return rc;
  absl::StatusOr<absl::Duration> interval = TopInterval(in.args);
  if (!interval.ok()) return UsageError(&in.command, interval.status().message());
  const bool once = in.args.GetBool("once") || in.json;
  for (;;) {
    v1::GetLoadResponse response;
    grpc::Status status = in.connection.Call(&Mapping::GetLoad, request, &response);
    if (!status.ok()) return RpcError(in, status);
    if (in.json) return PrintJson(response);
    // Clear the screen before each refresh, not for --once.
    if (!once) std::cout << "\033[H\033[2J";
    std::cout << FormatLoad(response, absl::Now()) << std::flush;
    if (once) return kExitOk;
    absl::SleepFor(*interval);
  }
}

// rebalance: PlanRebalance, printed; with --apply, ApplyRebalance of the
// printed moves at the plan's version.
int RunRebalance(const Invocation& in) {
  v1::PlanRebalanceRequest request;
  if (int rc = BuildRequest(in, BuildPlanRebalance, &request); rc != kExitOk) return rc;
  const bool apply = in.args.GetBool("apply");
  if (!apply && (in.args.Has("reason") || in.args.GetBool("dry-run"))) {
    return UsageError(&in.command, "--reason and --dry-run apply only with --apply");
  }
  v1::PlanRebalanceResponse plan;
  grpc::Status status = in.connection.Call(&Admin::PlanRebalance, request, &plan);
  if (!status.ok()) return RpcError(in, status);
  if (in.json) {
    if (int rc = PrintJson(plan); rc != kExitOk) return rc;
  } else {
    std::cout << FormatRebalancePlan(plan);
  }
  if (!apply) return kExitOk;
  if (plan.moves().empty()) {
    if (!in.json) std::cout << "nothing to apply\n";
    return kExitOk;
  }
  std::random_device random;
  const std::string request_id =
      absl::StrCat("bucketctl-rebalance-", absl::Hex(random(), absl::kZeroPad8),
                   absl::Hex(random(), absl::kZeroPad8));
  v1::ApplyRebalanceRequest apply_request = ApplyRebalanceOf(
      plan, in.args.Has("reason") ? in.args.Get("reason") : "bucketctl rebalance", request_id);
  apply_request.set_dry_run(in.args.GetBool("dry-run"));
  v1::ApplyRebalanceResponse applied;
  status = in.connection.Call(&Admin::ApplyRebalance, apply_request, &applied);
  if (!status.ok()) return RpcError(in, status);
  if (in.json) return PrintJson(applied);
  std::cout << (applied.effect().dry_run() ? "dry run: would apply " : "applied: ")
            << applied.effect().moved_team_count() << " teams moved at version "
            << applied.version() << ", " << applied.effect().handoffs_size()
            << " handoffs (request id " << request_id << ")\n";
  for (const v1::Handoff& h : applied.effect().handoffs()) {
    std::cout << "  handoff " << h.id() << ": bucket " << h.source_bucket_id() << " -> "
              << absl::StrJoin(h.target_bucket_ids(), ",") << ", " << h.team_ids_size()
              << " teams\n";
  }
  return kExitOk;
}

// What render and check-pipeline work from: every bucket (by id) from
// ListBuckets, the flags, and the network behind NetworkSources. Returns
// kExitOk or the exit code of the error it printed.
int PipelineInput(const Invocation& in, NetworkSources* sources, RenderInput* input) {
  if (in.json) {
    return UsageError(&in.command, absl::StrCat(in.command.name, " prints its artifact; --json ",
                                                "does not apply"));
  }
  v1::ListBucketsResponse response;
  grpc::Status status =
      in.connection.Call(&Admin::ListBuckets, v1::ListBucketsRequest(), &response);
  if (!status.ok()) return RpcError(in, status);
  input->version = response.version();
  input->buckets.assign(response.buckets().begin(), response.buckets().end());
  std::sort(input->buckets.begin(), input->buckets.end(),
            [](const v1::Bucket& a, const v1::Bucket& b) { return a.id() < b.id(); });
  input->args = &in.args;
  input->sources = sources;
  input->server = in.connection.options().server;
  return kExitOk;
}

absl::Duration PipelineTimeout(const Invocation& in) {
  const double seconds = in.connection.options().timeout_seconds;
  return seconds > 0 ? absl::Seconds(seconds) : absl::Seconds(30);
}

// An error of a render kind or of the check: a usage error for
// InvalidArgument, else printed with its code.
int PipelineError(const Invocation& in, const absl::Status& status) {
  if (status.code() == absl::StatusCode::kInvalidArgument) {
    return UsageError(&in.command, status.message());
  }
  std::cerr << "error: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
            << "\n";
  return kExitRpcError;
}

// bucketctl render <KIND>: the kind's artifact from the live mapping.
int RunRender(const Invocation& in) {
  const std::string& name = in.args.positional().at(0);
  const RenderKind* kind = FindRenderKind(name);
  if (kind == nullptr) {
    std::vector<std::string> names;
    for (const RenderKind& k : RenderKinds()) names.push_back(k.name);
    return UsageError(&in.command, absl::StrCat("unknown kind '", name,
                                                "' (kinds: ", absl::StrJoin(names, ", "), ")"));
  }
  if (absl::Status s = CheckKindFlags(*kind, in.args, GlobalFlags()); !s.ok()) {
    return UsageError(&in.command, s.message());
  }
  NetworkSources sources(in.args.Get("kafka-brokers"), in.args.Get("clickhouse-url"),
                         PipelineTimeout(in));
  RenderInput input;
  if (int rc = PipelineInput(in, &sources, &input); rc != kExitOk) return rc;
  absl::StatusOr<std::string> text = kind->render(input);
  if (!text.ok()) return PipelineError(in, text.status());
  std::cout << *text;
  return kExitOk;
}

// bucketctl check-pipeline: the problems of CheckPipeline, one a line.
int RunCheckPipeline(const Invocation& in) {
  NetworkSources sources(in.args.Get("kafka-brokers"), in.args.Get("clickhouse-url"),
                         PipelineTimeout(in));
  if (!in.args.Has("kafka-brokers")) {
    return UsageError(&in.command, "--kafka_brokers is required: partition counts come from Kafka");
  }
  RenderInput input;
  if (int rc = PipelineInput(in, &sources, &input); rc != kExitOk) return rc;
  std::map<std::string, std::string> files;
  for (const std::string& path : in.args.GetAll("file")) {
    absl::StatusOr<std::string> text = sources.ReadFile(path, "--file");
    if (!text.ok()) return UsageError(&in.command, text.status().message());
    files[path] = *std::move(text);
  }
  absl::StatusOr<std::vector<std::string>> problems = CheckPipeline(input, files);
  if (!problems.ok()) return PipelineError(in, problems.status());
  for (const std::string& problem : *problems) std::cout << "problem: " << problem << "\n";
  if (!problems->empty()) {
    std::cout << problems->size() << (problems->size() == 1 ? " problem" : " problems")
              << " at mapping version " << input.version << "\n";
    return kExitProblems;
  }
  std::cout << "ok: " << input.buckets.size() << " buckets at mapping version " << input.version
            << ", no problem found\n";
  return kExitOk;
}

struct TableEntry {
  const char* name;
  Runner run;
};

// Every command, in the order of Commands().
const std::vector<TableEntry>& Table() {
  static const auto* table = new std::vector<TableEntry>{
      {"create-bucket", OneCall(&Admin::CreateBucket, BuildCreateBucket, FormatCreateBucket)},
      {"update-bucket", OneCall(&Admin::UpdateBucket, BuildUpdateBucket, FormatUpdateBucket)},
      {"list-buckets", OneCall(&Admin::ListBuckets, BuildListBuckets, FormatListBuckets)},
      {"assign", OneCall(&Admin::AssignTeam, BuildAssignTeam, FormatAssignTeam)},
      {"unassign", OneCall(&Admin::UnassignTeam, BuildUnassignTeam, FormatUnassignTeam)},
      {"bulk-assign", OneCall(&Admin::BulkAssign, BuildBulkAssignFromFile, FormatBulkAssign)},
      {"list-assignments",
       PagedCall(&Admin::ListAssignments, BuildListAssignments, FormatListAssignments)},
      {"history", PagedCall(&Admin::GetHistory, BuildGetHistory, FormatHistoryAsAsked)},
      {"get-mapping", OneCall(&Mapping::GetMapping, BuildGetMapping, FormatMapping)},
      {"get-team", OneCall(&Mapping::GetTeam, BuildGetTeam, FormatTeam)},
      {"list-clients",
       OneCall(&Admin::ListClients, NoFlags<v1::ListClientsRequest>, FormatClients)},
      {"list-handoffs", OneCall(&Admin::ListHandoffs, BuildListHandoffs, FormatHandoffs)},
      {"top", RunTop},
      {"cancel-handoff", OneCall(&Admin::CancelHandoff, BuildCancelHandoff, FormatCancelHandoff)},
      {"rebalance", RunRebalance},
      {"list-pools", OneCall(&Admin::ListPools, NoFlags<v1::ListPoolsRequest>, FormatListPools)},
      {"pause-pool", OneCall(&Admin::UpdatePool, BuildPausePool, FormatUpdatePool)},
      {"resume-pool", OneCall(&Admin::UpdatePool, BuildResumePool, FormatUpdatePool)},
      {"update-pool", OneCall(&Admin::UpdatePool, BuildUpdatePool, FormatUpdatePool)},
      {"rules", PagedCall(&Admin::ListTeamRules, BuildListTeamRules, FormatTeamRules)},
      {"set-rule", OneCall(&Admin::SetTeamRule, BuildSetTeamRule, FormatSetTeamRule)},
      {"clear-rule", OneCall(&Admin::ClearTeamRule, BuildClearTeamRule, FormatClearTeamRule)},
      {"render", RunRender},
      {"check-pipeline", RunCheckPipeline},
  };
  return *table;
}

const Runner* FindRunner(absl::string_view name) {
  for (const TableEntry& entry : Table()) {
    if (name == entry.name) return &entry.run;
  }
  return nullptr;
}

}  // namespace

int UsageError(const CommandSpec* command, absl::string_view message) {
  std::cerr << "error: " << message << "\n";
  if (command != nullptr) {
    std::cerr << "usage: " << UsageLine(*command) << "\n";
  } else {
    std::cerr << "run `bucketctl help` for the commands\n";
  }
  return kExitUsage;
}

bool CanRun(absl::string_view name) { return FindRunner(name) != nullptr; }

int RunCommand(const CommandSpec& command, const ParsedArgs& args, bool json,
               Connection& connection) {
  const Runner* run = FindRunner(command.name);
  if (run == nullptr)
    return UsageError(nullptr, absl::StrCat("unknown command '", command.name, "'"));
  return (*run)(Invocation{command, args, json, connection});
}

}  // namespace bucketmap::bucketctl
