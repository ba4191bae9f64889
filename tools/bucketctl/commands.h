// bucketctl's commands: their flags and usage, and the translation of
// parsed command lines into bucketmap.v1 requests.
//
// Builders are pure functions: they do no I/O, and every error they return
// is a usage error (InvalidArgument naming the flag or argument), which
// bucketctl reports with exit code 2. Thread-compatible.
#ifndef BUCKETMAP_TOOLS_BUCKETCTL_COMMANDS_H_
#define BUCKETMAP_TOOLS_BUCKETCTL_COMMANDS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "bucketmap/v1/admin.pb.h"
#include "bucketmap/v1/mapping.pb.h"
#include "tools/bucketctl/args.h"

namespace bucketmap::bucketctl {

struct CommandSpec {
  std::string name;             // e.g. "create-bucket"
  std::string usage;            // arguments after the name, for the usage line
  std::string summary;          // one line, for `bucketctl help`
  std::string details;          // more lines for `bucketctl help <command>`; may be empty
  std::vector<FlagSpec> flags;  // without the global flags
  size_t min_positional = 0;
  size_t max_positional = 0;
};

// Flags accepted before and after every command: server, json, timeout,
// max-message-size, actor, help.
const std::vector<FlagSpec>& GlobalFlags();

// Every command, in the order `bucketctl help` lists them.
const std::vector<CommandSpec>& Commands();

// Returns the command named `name`, or nullptr.
const CommandSpec* FindCommand(absl::string_view name);

// "bucketctl <name> <usage>"
std::string UsageLine(const CommandSpec& command);

// The text of `bucketctl help`.
std::string HelpText();

// The text of `bucketctl help <command>`.
std::string CommandHelp(const CommandSpec& command);

// Each builder reads the flags of its command from `args` (positional
// arguments exclude the command name).

absl::StatusOr<v1::CreateBucketRequest> BuildCreateBucket(const ParsedArgs& args);

// The bucket is identified by id when the argument is numeric, else by
// name. The update mask holds exactly the fields given as flags.
absl::StatusOr<v1::UpdateBucketRequest> BuildUpdateBucket(const ParsedArgs& args);

// When --bucket is a name rather than an id, leaves the target unset and
// stores the name in *bucket_name for the caller to resolve; otherwise
// clears *bucket_name.
absl::StatusOr<v1::AssignTeamRequest> BuildAssignTeam(const ParsedArgs& args,
                                                      std::string* bucket_name);

absl::StatusOr<v1::UnassignTeamRequest> BuildUnassignTeam(const ParsedArgs& args);

// `file_text` is the content of --file; `file_name` prefixes errors.
absl::StatusOr<v1::BulkAssignRequest> BuildBulkAssign(const ParsedArgs& args,
                                                      absl::string_view file_text,
                                                      absl::string_view file_name);

// Parses a bulk-assign file. Each line is one of
//   TEAM_ID,BUCKET_ID     pin
//   TEAM_ID,pool:NAME     assign to a pool
//   TEAM_ID,-             remove the team's override
// Blank lines and everything after '#' are ignored; fields are trimmed.
// Errors name the file and line: "teams.csv:3: ...".
absl::StatusOr<std::vector<v1::BulkAssignment>> ParseBulkFile(absl::string_view text,
                                                              absl::string_view file_name);

// Like BuildAssignTeam for --bucket.
absl::StatusOr<v1::ListAssignmentsRequest> BuildListAssignments(const ParsedArgs& args,
                                                                std::string* bucket_name);

absl::StatusOr<v1::GetHistoryRequest> BuildGetHistory(const ParsedArgs& args);
absl::StatusOr<v1::ListBucketsRequest> BuildListBuckets(const ParsedArgs& args);
absl::StatusOr<v1::GetMappingRequest> BuildGetMapping(const ParsedArgs& args);
absl::StatusOr<v1::GetTeamRequest> BuildGetTeam(const ParsedArgs& args);
absl::StatusOr<v1::ListHandoffsRequest> BuildListHandoffs(const ParsedArgs& args);
absl::StatusOr<v1::CancelHandoffRequest> BuildCancelHandoff(const ParsedArgs& args);

// Pools: update-pool NAME [--state S] [--priority P]; pause-pool NAME and
// resume-pool NAME are update-pool with --state PAUSED / ACTIVE.
absl::StatusOr<v1::UpdatePoolRequest> BuildUpdatePool(const ParsedArgs& args);
absl::StatusOr<v1::UpdatePoolRequest> BuildPausePool(const ParsedArgs& args);
absl::StatusOr<v1::UpdatePoolRequest> BuildResumePool(const ParsedArgs& args);

// Team rules: `rules` lists them; set-rule TEAM_ID --kind K; clear-rule
// TEAM_ID [--kind K]. Kinds are written as in the API or in lower case,
// with '-' or '_': rate-limit, force-overflow, drop, skip-person-processing.
absl::StatusOr<v1::ListTeamRulesRequest> BuildListTeamRules(const ParsedArgs& args);
absl::StatusOr<v1::SetTeamRuleRequest> BuildSetTeamRule(const ParsedArgs& args);
absl::StatusOr<v1::ClearTeamRuleRequest> BuildClearTeamRule(const ParsedArgs& args);

// Parses a rule kind (see above). InvalidArgument naming `what`.
absl::StatusOr<v1::TeamRuleKind> ParseRuleKind(absl::string_view text, absl::string_view what);

}  // namespace bucketmap::bucketctl

#endif  // BUCKETMAP_TOOLS_BUCKETCTL_COMMANDS_H_
