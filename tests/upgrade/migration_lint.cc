#include "tests/upgrade/migration_lint.h"

#include <cctype>
#include <regex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace bucketmap {
namespace {

struct Statement {
  int line = 0;
  std::string code;      // with comments and quoted text blanked
  std::string comments;  // the text of its comments
};

// Splits `sql` at top-level semicolons. Quoted text is replaced by a space
// so that neither a ';' nor a keyword inside it counts.
std::vector<Statement> SplitStatements(std::string_view sql) {
  std::vector<Statement> out;
  Statement current;
  int line = 1;
  bool started = false;
  auto begin_code = [&] {
    if (!started) {
      current.line = line;
      started = true;
    }
  };
  size_t i = 0;
  while (i < sql.size()) {
    const char c = sql[i];
    if (c == '\n') ++line;
    if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      const size_t end = std::min(sql.find('\n', i), sql.size());
      current.comments.append(sql.substr(i + 2, end - i - 2)).push_back('\n');
      i = end;
      continue;
    }
    if (c == '/' && i + 1 < sql.size() && sql[i + 1] == '*') {
      size_t end = sql.find("*/", i + 2);
      end = end == std::string_view::npos ? sql.size() : end + 2;
      for (size_t k = i; k < end; ++k) line += sql[k] == '\n';
      current.comments.append(sql.substr(i, end - i)).push_back('\n');
      i = end;
      continue;
    }
    if (c == '\'' || c == '"') {
      begin_code();
      size_t end = i + 1;
      while (end < sql.size() && sql[end] != c) ++end;
      for (size_t k = i; k < end; ++k) line += sql[k] == '\n';
      // A quoted identifier stays a word; a string literal goes.
      current.code.append(c == '"' ? " quoted_identifier " : " ");
      i = std::min(end + 1, sql.size());
      continue;
    }
    if (c == '$') {
      // $tag$ ... $tag$ (a function body, say).
      size_t tag_end = i + 1;
      while (tag_end < sql.size() &&
             (std::isalnum(static_cast<unsigned char>(sql[tag_end])) || sql[tag_end] == '_')) {
        ++tag_end;
      }
      if (tag_end < sql.size() && sql[tag_end] == '$') {
        begin_code();
        const std::string_view tag = sql.substr(i, tag_end - i + 1);
        size_t end = sql.find(tag, tag_end + 1);
        end = end == std::string_view::npos ? sql.size() : end + tag.size();
        for (size_t k = i; k < end; ++k) line += sql[k] == '\n';
        current.code.push_back(' ');
        i = end;
        continue;
      }
    }
    if (c == ';') {
      if (started) out.push_back(std::move(current));
      current = Statement();
      started = false;
      ++i;
      continue;
    }
    if (!std::isspace(static_cast<unsigned char>(c))) begin_code();
    current.code.push_back(c);
    ++i;
  }
  if (started) out.push_back(std::move(current));
  return out;
}

std::string Collapse(const std::string& code) {
  std::string out;
  for (absl::string_view word :
       absl::StrSplit(code, absl::ByAnyChar(" \t\r\n"), absl::SkipEmpty())) {
    if (!out.empty()) out.push_back(' ');
    out.append(word.data(), word.size());
  }
  return out;
}

bool Escaped(const std::string& comments) {
  for (absl::string_view line : absl::StrSplit(comments, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (!absl::ConsumePrefix(&line, kContractStepMarker)) continue;
    if (!absl::StripAsciiWhitespace(line).empty()) return true;  // a reason is required
  }
  return false;
}

}  // namespace

std::vector<LintFinding> FindContractSteps(std::string_view sql) {
  static const std::regex kDrop(R"(\bDROP\b)");
  static const std::regex kRename(R"(\bRENAME\b)");
  // ALTER [COLUMN] col [SET DATA] TYPE t, inside ALTER TABLE.
  static const std::regex kAlterType(R"(\bALTER\s+(COLUMN\s+)?\w+\s+(SET\s+DATA\s+)?TYPE\b)");
  std::vector<LintFinding> findings;
  for (const Statement& s : SplitStatements(sql)) {
    const std::string code = absl::AsciiStrToUpper(Collapse(s.code));
    const char* what = nullptr;
    if (std::regex_search(code, kDrop)) {
      what = "DROP";
    } else if (std::regex_search(code, kRename)) {
      what = "RENAME";
    } else if (absl::StartsWith(code, "ALTER TABLE") && std::regex_search(code, kAlterType)) {
      what = "ALTER ... TYPE";
    }
    if (what != nullptr && !Escaped(s.comments)) {
      findings.push_back(LintFinding{s.line, what, Collapse(s.code)});
    }
  }
  return findings;
}

}  // namespace bucketmap
