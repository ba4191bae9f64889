// bucketctl's commands at run time. A table gives each command its request
// builder (commands.h), its RPC and its printer (format.h); one runner does
// the rest the same way for every command: usage errors, looking up a
// bucket given by name, the call (every page with --all), the response as
// text or --json, and RPC errors.
//
// Exit codes: kExitOk; kExitRpcError when the server or the connection
// returned an error; kExitUsage for bad usage, with nothing sent. Errors go
// to stderr as "error: ...".
//
// Thread-compatible: bucketctl runs one command, from main().
#ifndef BUCKETMAP_TOOLS_BUCKETCTL_RUNNER_H_
#define BUCKETMAP_TOOLS_BUCKETCTL_RUNNER_H_

#include "absl/strings/string_view.h"
#include "tools/bucketctl/args.h"
#include "tools/bucketctl/commands.h"
#include "tools/bucketctl/rpc.h"

namespace bucketmap::bucketctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRpcError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitProblems = 3;

// UsageError()
//
// Prints "error: <message>" and the usage line of `command` (or, when it
// is null, a pointer to `bucketctl help`) to stderr. Returns kExitUsage.
int UsageError(const CommandSpec* command, absl::string_view message);

// CanRun()
//
// Whether the table has a runner for the command named `name` (it has one
// for every command of Commands()).
bool CanRun(absl::string_view name);

// RunCommand()
//
// Runs `command` with its parsed `args` (positional arguments exclude the
// command name) over `connection`. Prints the response to stdout, as
// protobuf JSON with `json`, and errors to stderr. Requires
// CanRun(command.name). Returns the exit code.
int RunCommand(const CommandSpec& command, const ParsedArgs& args, bool json,
               Connection& connection);

}  // namespace bucketmap::bucketctl

#endif  // BUCKETMAP_TOOLS_BUCKETCTL_RUNNER_H_
