// Command-line parsing for bucketctl: `--key value`, `--key=value`, boolean
// `--flag`, repeated flags and positional arguments.
//
// Flag names are declared without the leading "--" and with dashes; users
// may write underscores instead (`--max_message_size` is
// `--max-message-size`). Everything here is a pure function of its inputs;
// thread-compatible.
#ifndef BUCKETMAP_TOOLS_BUCKETCTL_ARGS_H_
#define BUCKETMAP_TOOLS_BUCKETCTL_ARGS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bucketmap::bucketctl {

enum class FlagKind {
  kBool,      // --flag, or --flag=true|false
  kValue,     // --flag V or --flag=V, at most once
  kRepeated,  // --flag V, any number of times
};

struct FlagSpec {
  std::string name;  // e.g. "dry-run"
  FlagKind kind;
};

class ParsedArgs {
 public:
  const std::vector<std::string>& positional() const { return positional_; }
  // Arguments left unparsed after the first positional argument, when
  // parsing stopped there (see ParseArgs).
  const std::vector<std::string>& rest() const { return rest_; }

  bool Has(absl::string_view name) const;
  // The (last) value of `name`, or `def` when absent.
  std::string Get(absl::string_view name, absl::string_view def = "") const;
  // Every value of a repeated flag, in command-line order.
  std::vector<std::string> GetAll(absl::string_view name) const;
  // True when a boolean flag was given and not set to false.
  bool GetBool(absl::string_view name) const;

 private:
  friend absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                                              const std::vector<FlagSpec>& specs,
                                              bool stop_at_positional);
  std::vector<std::string> positional_;
  std::vector<std::string> rest_;
  std::map<std::string, std::vector<std::string>, std::less<>> values_;
};

// Parses `args` (without the program name) against `specs`.
// With stop_at_positional, parsing stops at the first positional argument,
// which becomes positional()[0]; the arguments after it are in rest().
// "--" ends the flags: every later argument is positional.
// Returns InvalidArgument naming the flag for an unknown flag, a missing
// value, a value given to a boolean that is not true/false, or a
// non-repeated flag given twice.
absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                                     const std::vector<FlagSpec>& specs, bool stop_at_positional);

// Parses a decimal integer in [min, max]. `what` names the value in the
// error, e.g. "--weight".
absl::StatusOr<int64_t> ParseInteger(absl::string_view text, absl::string_view what, int64_t min,
                                     int64_t max);

// Parses "key=value" (the value may be empty; the key may not).
absl::StatusOr<std::pair<std::string, std::string>> ParseKeyValue(absl::string_view text,
                                                                  absl::string_view what);

// Parses repeated "key=value" flags into a map; a repeated key is an error.
absl::StatusOr<std::map<std::string, std::string>> ParseKeyValues(
    const std::vector<std::string>& values, absl::string_view what);

// Splits "a,b,c" into its non-empty, trimmed elements; "" gives {}.
std::vector<std::string> ParseList(absl::string_view text);

// Returns true when `text` is a decimal integer, e.g. a bucket id rather
// than a bucket name.
bool IsInteger(absl::string_view text);

}  // namespace bucketmap::bucketctl

#endif  // BUCKETMAP_TOOLS_BUCKETCTL_ARGS_H_
