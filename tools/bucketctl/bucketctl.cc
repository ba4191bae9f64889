// bucketctl: the command-line client of bucketmap-server. It covers every
// unary call of AdminService and MappingService; `bucketctl help` lists the
// commands.
//
// Exit codes: 0 success, 1 the server (or the connection) returned an
// error, 2 bad usage. Errors go to stderr as "error: <CODE>: <message>".
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/read_file.h"
#include "bucketmap/watch.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "tools/bucketctl/args.h"
#include "tools/bucketctl/commands.h"
#include "tools/bucketctl/format.h"

namespace bucketmap::bucketctl {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitRpcError = 1;
constexpr int kExitUsage = 2;

constexpr char kDefaultServer[] = "localhost:50051";
constexpr double kDefaultTimeoutSeconds = 30;
constexpr int64_t kDefaultMaxMessageSize = 64 << 20;
constexpr char kActorHeader[] = "x-bucketmap-actor";


struct Options {
  std::string server;
  bool json = false;
  double timeout_seconds = kDefaultTimeoutSeconds;
  int64_t max_message_size = kDefaultMaxMessageSize;
  std::string actor;
  std::string token;  // never printed
  bool tls = false;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
};

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

// Plaintext, or TLS (set up as the client library does) when any TLS flag
// is given.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Credentials(const Options& o) {
  WatchTlsOptions tls;
  tls.enabled = o.tls || !o.tls_ca.empty() || !o.tls_cert.empty() || !o.tls_key.empty();
  tls.root_ca_file = o.tls_ca;
  tls.cert_file = o.tls_cert;
  tls.key_file = o.tls_key;
  return ChannelCredentialsFor(tls);
}

// One channel and the two stubs; every call gets the deadline, the token
// and the actor header.
class Client {
 public:
  Client(const Options& options, std::shared_ptr<grpc::ChannelCredentials> credentials)
      : options_(options) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_size));
    args.SetMaxSendMessageSize(static_cast<int>(options.max_message_size));
    channel_ = grpc::CreateCustomChannel(options.server, std::move(credentials), args);
    admin_ = v1::AdminService::NewStub(channel_);
    mapping_ = v1::MappingService::NewStub(channel_);
  }

  v1::AdminService::Stub& admin() { return *admin_; }
  v1::MappingService::Stub& mapping() { return *mapping_; }

  template <typename Fn>
  grpc::Status Call(Fn&& fn) {
    grpc::ClientContext context;
    if (options_.timeout_seconds > 0) {
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::duration_cast<std::chrono::system_clock::duration>(
                               std::chrono::duration<double>(options_.timeout_seconds)));
    }
    if (!options_.actor.empty()) context.AddMetadata(kActorHeader, options_.actor);
    if (!options_.token.empty()) context.AddMetadata("authorization", "Bearer " + options_.token);
    return fn(&context);
  }

 private:
  const Options& options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
  std::unique_ptr<v1::MappingService::Stub> mapping_;
};

int UsageError(const CommandSpec* command, absl::string_view message) {
  std::cerr << "error: " << message << "\n";
  if (command != nullptr) {
    std::cerr << "usage: " << UsageLine(*command) << "\n";
  } else {
    std::cerr << "run `bucketctl help` for the commands\n";
  }
  return kExitUsage;
}

int RpcError(const grpc::Status& status, const Options& options) {
  std::cerr << "error: " << CodeName(status.error_code()) << ": " << status.error_message() << "\n";
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      std::cerr << "hint: is bucketmap-server running at " << options.server
                << "? Set --server or $BUCKETMAP_SERVER.\n";
      break;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      std::cerr << "hint: no answer within " << options.timeout_seconds << " s; raise --timeout.\n";
      break;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      if (absl::StrContains(status.error_message(), "larger than max")) {
        std::cerr << "hint: the response exceeds --max_message_size (" << options.max_message_size
                  << " bytes); raise it.\n";
      }
      break;
    default:
      break;
  }
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

// Prints `response` as JSON, or as format(response) for humans.
template <typename Response, typename Format>
int Print(const Options& options, const Response& response, Format&& format) {
  if (options.json) return PrintJson(response);
  std::cout << format(response);
  return kExitOk;
}

// Resolves a bucket name to its id with ListBuckets.
grpc::Status ResolveBucket(Client& client, const std::string& name, int32_t* id) {
  v1::ListBucketsRequest request;
  v1::ListBucketsResponse response;
  grpc::Status status = client.Call([&](grpc::ClientContext* context) {
    return client.admin().ListBuckets(context, request, &response);
  });
  if (!status.ok()) return status;
  for (const v1::Bucket& bucket : response.buckets()) {
    if (bucket.name() == name) {
      *id = bucket.id();
      return grpc::Status::OK;
    }
  }
  return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("no bucket named '", name, "'"));
}

struct Context {
  Client& client;
  const Options& options;
  const CommandSpec& command;
  const ParsedArgs& args;
};

int RunCreateBucket(Context& c) {
  auto request = BuildCreateBucket(c.args);
  if (!request.ok()) return UsageError(&c.command, request.status().message());
  v1::CreateBucketResponse response;
  grpc::Status status = c.client.Call([&](grpc::ClientContext* context) {
    return c.client.admin().CreateBucket(context, *request, &response);
  });
  if (!status.ok()) return RpcError(status, c.options);
  return Print(c.options, response, FormatCreateBucket);
}

int RunUpdateBucket(Context& c) {
  auto request = BuildUpdateBucket(c.args);
  if (!request.ok()) return UsageError(&c.command, request.status().message());
  v1::UpdateBucketResponse response;
  grpc::Status status = c.client.Call([&](grpc::ClientContext* context) {
    return c.client.admin().UpdateBucket(context, *request, &response);
  });
  if (!status.ok()) return RpcError(status, c.options);
  return Print(c.options, response,
               [&](const v1::UpdateBucketResponse& r) { return FormatUpdateBucket(*request, r); });
}

int RunListBuckets(Context& c) {
  auto request = BuildListBuckets(c.args);
  if (!request.ok()) return UsageError(&c.command, request.status().message());
  v1::ListBucketsResponse response;
  grpc::Status status = c.client.Call([&](grpc::ClientContext* context) {
    return c.client.admin().ListBuckets(context, *request, &response);
  });
  if (!status.ok()) return RpcError(status, c.options);
  return Print(c.options, response, FormatListBuckets);
}

int RunAssign(Context& c) {
  std::string bucket_name;
  auto request = BuildAssignTeam(c.args, &bucket_name);
  if (!request.ok()) return UsageError(&c.command, request.status().message());
  if (!bucket_name.empty()) {
    int32_t id = 0;
    if (grpc::Status s = ResolveBucket(c.client, bucket_name, &id); !s.ok()) {
      return RpcError(s, c.options);
    }
    request->set_bucket_id(id);
  }
  v1::AssignTeamResponse response;
  grpc::Status status = c.client.Call([&](grpc::ClientContext* context) {
    return c.client.admin().AssignTeam(context, *request, &response);
  });
  if (!status.ok()) return RpcError(status, c.options);
  return Print(c.options, response,
               [&](const v1::AssignTeamResponse& r) { return FormatAssignTeam(*request, r); });
}

int RunUnassign(Context& c) {
  auto request = BuildUnassignTeam(c.args);
  if (!request.ok()) return UsageError(&c.command, request.status().message());
  v1::UnassignTeamResponse response;
  grpc::Status status = c.client.Call([&](grpc::ClientContext* context) {
    return c.client.admin().UnassignTeam(context, *request, &response);
  });
  if (!status.ok()) return RpcError(status, c.options);
  return Print(c.options, response,
               [&](const v1::UnassignTeamResponse& r) { return FormatUnassignTeam(*request, r); });
}

int RunBulkAssign(Context& c) {
  const std::string file = c.args.Get("file");
  if (file.empty()) return UsageError(&c.command, "--file is required (- reads stdin)");
  std::string text;
  if (file == "-") {
    std::stringstream in;
    in << std::cin.rdbuf();
    text = in.str();
  } else {
    absl::StatusOr<std::string> read = ReadFile(file, "--file");
    if (!read.ok()) return UsageError(&c.command, absl::StrCat("cannot read ", file));
    text = *std::move(read);
  }
  auto request = BuildBulkAssign(c.args, text, file == "-" ? "stdin" : file);
  if (!request.ok()) return UsageError(&c.command, request.status().message());
  v1::BulkAssignResponse response;
  grpc::Status status = c.client.Call([&](grpc::ClientContext* context) {
    return c.client.admin().BulkAssign(context, *request, &response);
  });
  if (!status.ok()) return RpcError(status, c.options);
  return Print(c.options, response,
               [&](const v1::BulkAssignResponse& r) { return FormatBulkAssign(*request, r); });
}

// Fetches one page, or every page with --all (merged into one response).
// `fetch` fills a response for a request; `append` moves a page's items
// into the merged response.
template <typename Request, typename Response, typename Fetch, typename Append>
grpc::Status FetchPages(Context& c, Request request, Response* merged, Fetch&& fetch,
                        Append&& append) {
  const bool all = c.args.GetBool("all");
  std::string previous_token;
  while (true) {
    Response page;
    grpc::Status status =
        c.client.Call([&](grpc::ClientContext* context) { return fetch(context, request, &page); });
    if (!status.ok()) return status;
    const std::string next = page.next_page_token();
    append(&page, merged);
    merged->set_next_page_token(next);
    if (!all || next.empty()) return grpc::Status::OK;
    if (next == previous_token) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "the server repeated a page token");
    }
    previous_token = next;
    request.set_page_token(next);
  }
}

void PrintNextPage(const Options& options, const std::string& token) {
  if (!options.json && !token.empty()) {
    std::cout << "more: add --page-token " << token << " (or --all)\n";
  }
}

int RunListAssignments(Context& c) {
  std::string bucket_name;
  auto request = BuildListAssignments(c.args, &bucket_name);
  if (!request.ok()) return UsageError(&c.command, request.status().message());
  if (!bucket_name.empty()) {
    int32_t id = 0;
    if (grpc::Status s = ResolveBucket(c.client, bucket_name, &id); !s.ok()) {
      return RpcError(s, c.options);
    }
    request->set_bucket_id(id);
  }
  v1::ListAssignmentsResponse merged;
  grpc::Status status = FetchPages(
      c, *request, &merged,
      [&](grpc::ClientContext* context, const v1::ListAssignmentsRequest& r,
          v1::ListAssignmentsResponse* page) {
        return c.client.admin().ListAssignments(context, r, page);
      },
      [](v1::ListAssignmentsResponse* page, v1::ListAssignmentsResponse* out) {
        out->set_version(page->version());
        for (v1::Assignment& a : *page->mutable_assignments()) {
          *out->add_assignments() = std::move(a);
        }
      });
  if (!status.ok()) return RpcError(status, c.options);
  int rc = Print(c.options, merged, FormatListAssignments);
  PrintNextPage(c.options, merged.next_page_token());
  return rc;
}

int RunHistory(Context& c) {
  auto request = BuildGetHistory(c.args);
  if (!request.ok()) return UsageError(&c.command, request.status().message());
  v1::GetHistoryResponse merged;
  grpc::Status status = FetchPages(
      c, *request, &merged,
      [&](grpc::ClientContext* context, const v1::GetHistoryRequest& r,
          v1::GetHistoryResponse* page) { return c.client.admin().GetHistory(context, r, page); },
      [](v1::GetHistoryResponse* page, v1::GetHistoryResponse* out) {
        for (v1::ChangeRecord& record : *page->mutable_records()) {
          *out->add_records() = std::move(record);
        }
      });
  if (!status.ok()) return RpcError(status, c.options);
  int rc = Print(c.options, merged, [&](const v1::GetHistoryResponse& r) {
    return FormatHistory(r, request->include_delta());
  });
  PrintNextPage(c.options, merged.next_page_token());
  return rc;
}

int RunGetMapping(Context& c) {
  auto request = BuildGetMapping(c.args);
  if (!request.ok()) return UsageError(&c.command, request.status().message());
  v1::MappingSnapshot response;
  grpc::Status status = c.client.Call([&](grpc::ClientContext* context) {
    return c.client.mapping().GetMapping(context, *request, &response);
  });
  if (!status.ok()) return RpcError(status, c.options);
  return Print(c.options, response, FormatMapping);
}

int RunGetTeam(Context& c) {
  auto request = BuildGetTeam(c.args);
  if (!request.ok()) return UsageError(&c.command, request.status().message());
  v1::TeamRoute response;
  grpc::Status status = c.client.Call([&](grpc::ClientContext* context) {
    return c.client.mapping().GetTeam(context, *request, &response);
  });
  if (!status.ok()) return RpcError(status, c.options);
  return Print(c.options, response, FormatTeam);
}

int RunListClients(Context& c) {
  v1::ListClientsResponse response;
  grpc::Status status = c.client.Call([&](grpc::ClientContext* context) {
    return c.client.admin().ListClients(context, v1::ListClientsRequest(), &response);
  });
  if (!status.ok()) return RpcError(status, c.options);
  return Print(c.options, response, FormatClients);
}

int RunListHandoffs(Context& c) {
  auto request = BuildListHandoffs(c.args);
  if (!request.ok()) return UsageError(&c.command, request.status().message());
  v1::ListHandoffsResponse response;
  grpc::Status status = c.client.Call([&](grpc::ClientContext* context) {
    return c.client.admin().ListHandoffs(context, *request, &response);
  });
  if (!status.ok()) return RpcError(status, c.options);
  return Print(c.options, response, FormatHandoffs);
}

int RunCancelHandoff(Context& c) {
  auto request = BuildCancelHandoff(c.args);
  if (!request.ok()) return UsageError(&c.command, request.status().message());
  v1::CancelHandoffResponse response;
  grpc::Status status = c.client.Call([&](grpc::ClientContext* context) {
    return c.client.admin().CancelHandoff(context, *request, &response);
  });
  if (!status.ok()) return RpcError(status, c.options);
  return Print(c.options, response, [&](const v1::CancelHandoffResponse& r) {
    return FormatCancelHandoff(*request, r);
  });
}

using Runner = int (*)(Context&);

Runner FindRunner(absl::string_view name) {
  static const std::pair<const char*, Runner> kRunners[] = {
      {"create-bucket", RunCreateBucket},
      {"update-bucket", RunUpdateBucket},
      {"list-buckets", RunListBuckets},
      {"assign", RunAssign},
      {"unassign", RunUnassign},
      {"bulk-assign", RunBulkAssign},
      {"list-assignments", RunListAssignments},
      {"history", RunHistory},
      {"get-mapping", RunGetMapping},
      {"get-team", RunGetTeam},
      {"list-clients", RunListClients},
      {"list-handoffs", RunListHandoffs},
      {"cancel-handoff", RunCancelHandoff},
  };
  for (const auto& [command, runner] : kRunners) {
    if (name == command) return runner;
  }
  return nullptr;
}

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

int Main(int argc, char** argv) {
  const std::vector<std::string> all(argv + 1, argv + argc);
  absl::StatusOr<ParsedArgs> global = ParseArgs(all, GlobalFlags(), /*stop_at_positional=*/true);
  if (!global.ok()) return UsageError(nullptr, global.status().message());
  if (global->GetBool("help")) {
    std::cout << HelpText();
    return kExitOk;
  }
  if (global->positional().empty()) {
    std::cerr << HelpText();
    return kExitUsage;
  }
  const std::string& name = global->positional()[0];
  if (name == "help") {
    if (global->rest().empty()) {
      std::cout << HelpText();
      return kExitOk;
    }
    const CommandSpec* command = FindCommand(global->rest()[0]);
    if (command == nullptr) {
      return UsageError(nullptr, absl::StrCat("unknown command '", global->rest()[0], "'"));
    }
    std::cout << CommandHelp(*command);
    return kExitOk;
  }
  const CommandSpec* command = FindCommand(name);
  Runner runner = FindRunner(name);
  if (command == nullptr || runner == nullptr) {
    return UsageError(nullptr, absl::StrCat("unknown command '", name, "'"));
  }

  std::vector<FlagSpec> specs = command->flags;
  specs.insert(specs.end(), GlobalFlags().begin(), GlobalFlags().end());
  absl::StatusOr<ParsedArgs> args = ParseArgs(global->rest(), specs, false);
  if (!args.ok()) return UsageError(command, args.status().message());
  if (args->GetBool("help")) {
    std::cout << CommandHelp(*command);
    return kExitOk;
  }
  const size_t n = args->positional().size();
  if (n < command->min_positional || n > command->max_positional) {
    return UsageError(
        command,
        n < command->min_positional
            ? absl::StrCat("missing argument ", command->usage.substr(0, command->usage.find(' ')))
            : absl::StrCat("unexpected argument '", args->positional()[command->max_positional],
                           "'"));
  }

  // A global flag may come before or after the command; after wins.
  auto global_value = [&](absl::string_view flag) {
    return args->Has(flag) ? args->Get(flag) : global->Get(flag);
  };
  Options options;
  options.server = global_value("server");
  if (options.server.empty()) options.server = Env("BUCKETMAP_SERVER");
  if (options.server.empty()) options.server = kDefaultServer;
  options.json = args->GetBool("json") || global->GetBool("json");
  if (std::string t = global_value("timeout"); !t.empty()) {
    if (!absl::SimpleAtod(t, &options.timeout_seconds) || !(options.timeout_seconds >= 0)) {
      return UsageError(command, absl::StrCat("--timeout: expected seconds >= 0, got '", t, "'"));
    }
  }
  if (std::string m = global_value("max-message-size"); !m.empty()) {
    auto size = ParseInteger(m, "--max_message_size", 1, std::numeric_limits<int32_t>::max());
    if (!size.ok()) return UsageError(command, size.status().message());
    options.max_message_size = *size;
  }
  options.actor = global_value("actor");
  if (options.actor.empty()) options.actor = Env("BUCKETMAP_ACTOR");

  options.token = global_value("token");
  if (options.token.empty()) options.token = Env("BUCKETMAP_TOKEN");
  options.tls = args->GetBool("tls") || global->GetBool("tls");
  options.tls_ca = global_value("tls-ca");
  options.tls_cert = global_value("tls-cert");
  options.tls_key = global_value("tls-key");
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = Credentials(options);
  if (!credentials.ok()) return UsageError(command, credentials.status().message());

  Client client(options, *std::move(credentials));
  Context context{client, options, *command, *args};
  return runner(context);
}

}  // namespace
}  // namespace bucketmap::bucketctl

int main(int argc, char** argv) { return bucketmap::bucketctl::Main(argc, argv); }
