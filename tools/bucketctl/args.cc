#include "tools/bucketctl/args.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace bucketmap::bucketctl {
namespace {

std::string NormalizeName(absl::string_view name) {
  std::string out(name);
  std::replace(out.begin(), out.end(), '_', '-');
  return out;
}

const FlagSpec* FindSpec(const std::vector<FlagSpec>& specs, absl::string_view name) {
  for (const FlagSpec& spec : specs) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

}  // namespace

bool ParsedArgs::Has(absl::string_view name) const { return values_.find(name) != values_.end(); }

std::string ParsedArgs::Get(absl::string_view name, absl::string_view def) const {
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty()) return std::string(def);
  return it->second.back();
}

std::vector<std::string> ParsedArgs::GetAll(absl::string_view name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return {};
  return it->second;
}

bool ParsedArgs::GetBool(absl::string_view name) const {
  auto it = values_.find(name);
  return it != values_.end() && !it->second.empty() && it->second.back() == "true";
}

absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                                     const std::vector<FlagSpec>& specs, bool stop_at_positional) {
  ParsedArgs out;
  bool flags_ended = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    // A negative number is a value (e.g. a team id the server will reject),
    // not a flag.
    const bool is_flag = !flags_ended && arg.size() > 1 && arg[0] == '-' && !IsInteger(arg);
    if (!is_flag) {
      out.positional_.push_back(arg);
      if (stop_at_positional) {
        out.rest_.assign(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
        return out;
      }
      continue;
    }
    if (arg == "--") {
      flags_ended = true;
      continue;
    }
    // "-h" is the only single-dash spelling; everything else is --name.
    absl::string_view body = arg;
    if (arg == "-h") {
      body = "help";
    } else if (!absl::ConsumePrefix(&body, "--")) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag ", arg, " (flags are written --name)"));
    }
    std::string name;
    std::string value;
    bool has_inline_value = false;
    if (size_t eq = body.find('='); eq != absl::string_view::npos) {
      name = NormalizeName(body.substr(0, eq));
      value = std::string(body.substr(eq + 1));
      has_inline_value = true;
    } else {
      name = NormalizeName(body);
    }
    const FlagSpec* spec = FindSpec(specs, name);
    if (spec == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    switch (spec->kind) {
      case FlagKind::kBool:
        if (!has_inline_value) {
          value = "true";
        } else if (value != "true" && value != "false") {
          return absl::InvalidArgumentError(
              absl::StrCat("--", name, ": expected true or false, got '", value, "'"));
        }
        break;
      case FlagKind::kValue:
      case FlagKind::kRepeated:
        if (!has_inline_value) {
          if (i + 1 >= args.size()) {
            return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
          }
          value = args[++i];
        }
        if (spec->kind == FlagKind::kValue && out.Has(name)) {
          return absl::InvalidArgumentError(absl::StrCat("--", name, " given more than once"));
        }
        break;
    }
    out.values_[name].push_back(std::move(value));
  }
  return out;
}

absl::StatusOr<int64_t> ParseInteger(absl::string_view text, absl::string_view what, int64_t min,
                                     int64_t max) {
  int64_t value = 0;
  if (!IsInteger(text) || !absl::SimpleAtoi(text, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected an integer, got '", text, "'"));
  }
  if (value < min || value > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", value, " is out of range [", min, ", ", max, "]"));
  }
  return value;
}

absl::StatusOr<std::pair<std::string, std::string>> ParseKeyValue(absl::string_view text,
                                                                  absl::string_view what) {
  size_t eq = text.find('=');
  if (eq == absl::string_view::npos || eq == 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected KEY=VALUE, got '", text, "'"));
  }
  return std::make_pair(std::string(text.substr(0, eq)), std::string(text.substr(eq + 1)));
}

absl::StatusOr<std::map<std::string, std::string>> ParseKeyValues(
    const std::vector<std::string>& values, absl::string_view what) {
  std::map<std::string, std::string> out;
  for (const std::string& text : values) {
    auto kv = ParseKeyValue(text, what);
    if (!kv.ok()) return kv.status();
    if (!out.emplace(kv->first, kv->second).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": key '", kv->first, "' given more than once"));
    }
  }
  return out;
}

std::vector<std::string> ParseList(absl::string_view text) {
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (!part.empty()) out.emplace_back(part);
  }
  return out;
}

bool IsInteger(absl::string_view text) {
  if (!text.empty() && (text[0] == '-' || text[0] == '+')) text.remove_prefix(1);
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return absl::ascii_isdigit(static_cast<unsigned char>(c));
  });
}

}  // namespace bucketmap::bucketctl
