// bucketctl: the command-line client of bucketmap-server. It covers every
// unary call of AdminService and MappingService; `bucketctl help` lists the
// commands.
//
// This file is the entry point: the global flags, help, the connection
// options (flags, then $BUCKETMAP_SERVER, $BUCKETMAP_ACTOR and
// $BUCKETMAP_TOKEN), and the command's arguments. The rest lives in
// commands.h (flags and requests), runner.h (the command table and the one
// runner), rpc.h (the channel and its calls) and format.h (text output).
//
// Exit codes: 0 success, 1 the server (or the connection, Kafka or
// ClickHouse) returned an error, 2 bad usage, 3 check-pipeline found
// problems. Errors go to stderr as "error: <CODE>: <message>".
#include <cstdlib>
#include <iostream>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tools/bucketctl/args.h"
#include "tools/bucketctl/commands.h"
#include "tools/bucketctl/rpc.h"
#include "tools/bucketctl/runner.h"

namespace bucketmap::bucketctl {
namespace {

constexpr char kDefaultServer[] = "localhost:50051";

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

// The connection options from the global flags, given before the command
// (`global`) or after it (`args`; these win), then the environment. Errors
// are usage errors.
absl::StatusOr<ConnectionOptions> ConnectionOptionsFrom(const ParsedArgs& global,
                                                        const ParsedArgs& args) {
  auto value = [&](absl::string_view flag) {
    return args.Has(flag) ? args.Get(flag) : global.Get(flag);
  };
  ConnectionOptions options;
  options.server = value("server");
  if (options.server.empty()) options.server = Env("BUCKETMAP_SERVER");
  if (options.server.empty()) options.server = kDefaultServer;
  if (std::string t = value("timeout"); !t.empty()) {
    if (!absl::SimpleAtod(t, &options.timeout_seconds) || !(options.timeout_seconds >= 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--timeout: expected seconds >= 0, got '", t, "'"));
    }
  }
  if (std::string m = value("max-message-size"); !m.empty()) {
    absl::StatusOr<int64_t> size =
        ParseInteger(m, "--max_message_size", 1, std::numeric_limits<int32_t>::max());
    if (!size.ok()) return size.status();
    options.max_message_size = *size;
  }
  options.actor = value("actor");
  if (options.actor.empty()) options.actor = Env("BUCKETMAP_ACTOR");
  options.token = value("token");
  if (options.token.empty()) options.token = Env("BUCKETMAP_TOKEN");
  options.tls = args.GetBool("tls") || global.GetBool("tls");
  options.tls_ca = value("tls-ca");
  options.tls_cert = value("tls-cert");
  options.tls_key = value("tls-key");
  return options;
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
  if (command == nullptr || !CanRun(name)) {
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

  absl::StatusOr<ConnectionOptions> options = ConnectionOptionsFrom(*global, *args);
  if (!options.ok()) return UsageError(command, options.status().message());
  absl::StatusOr<std::unique_ptr<Connection>> connection = Connection::Open(*std::move(options));
  if (!connection.ok()) return UsageError(command, connection.status().message());
  const bool json = args->GetBool("json") || global->GetBool("json");
  return RunCommand(*command, *args, json, **connection);
}

}  // namespace
}  // namespace bucketmap::bucketctl

int main(int argc, char** argv) { return bucketmap::bucketctl::Main(argc, argv); }
