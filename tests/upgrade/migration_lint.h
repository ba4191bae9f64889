// The expand-only rule for migrations (SPEC §7), as a lint: during a
// rolling upgrade the previous release still runs against the new schema,
// so a migration may add tables, columns, indexes and constraints old code
// satisfies, but never DROP, RENAME or change a column's TYPE.
//
// A contract step (dropping what no running release reads any more, one
// release after the code stopped reading it) is allowed when the
// statement carries the escape comment
//     -- contract-step: <why it is safe now>
// on a line of its own between the previous statement and this one, or
// inside it. docs/operations.md ("Rolling upgrades") describes when that is
// right.
//
// Thread safety: pure functions.
#ifndef BUCKETMAP_TESTS_UPGRADE_MIGRATION_LINT_H_
#define BUCKETMAP_TESTS_UPGRADE_MIGRATION_LINT_H_

#include <string>
#include <string_view>
#include <vector>

namespace bucketmap {

inline constexpr char kContractStepMarker[] = "contract-step:";

struct LintFinding {
  int line = 0;           // 1-based line where the statement starts
  std::string what;       // "DROP", "RENAME" or "ALTER ... TYPE"
  std::string statement;  // the statement, comments removed, whitespace collapsed
};

// Returns the statements of `sql` that contract the schema without the
// escape comment. Comments, quoted strings, quoted identifiers and
// dollar-quoted bodies are not searched.
std::vector<LintFinding> FindContractSteps(std::string_view sql);

}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_UPGRADE_MIGRATION_LINT_H_
