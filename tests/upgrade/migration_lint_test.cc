// The expand-only lint (migration_lint.h): the repository's migrations pass
// it, and it catches what it must while ignoring comments and strings.
#include "tests/upgrade/migration_lint.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/store/migrator.h"

namespace bucketmap {
namespace {

using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::IsEmpty;

TEST(MigrationLintTest, EveryMigrationOnlyExpands) {
  auto files = ReadMigrationFiles(BUCKETMAP_MIGRATIONS_DIR);
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_FALSE(files->empty());
  for (const MigrationFile& file : *files) {
    for (const LintFinding& f : FindContractSteps(file.content)) {
      ADD_FAILURE() << file.name << ":" << f.line << ": " << f.what
                    << " contracts the schema, which the previous release may still use: "
                    << f.statement << "\nMake it a later release's contract step, marked with "
                    << "'-- " << kContractStepMarker << " <why>' (docs/operations.md).";
    }
  }
}

TEST(MigrationLintTest, FindsDropRenameAndTypeChanges) {
  const auto found = FindContractSteps(R"sql(
CREATE TABLE t (a int);
DROP TABLE old_t;
ALTER TABLE t RENAME COLUMN a TO b;
ALTER TABLE t RENAME TO u;
ALTER TABLE t ALTER COLUMN a TYPE bigint;
ALTER TABLE t ALTER a SET DATA TYPE bigint;
alter table t alter column "Mixed" type text;
ALTER TABLE t DROP COLUMN a;
DROP INDEX t_idx;
)sql");
  EXPECT_THAT(found, ElementsAre(Field(&LintFinding::line, 3), Field(&LintFinding::line, 4),
                                 Field(&LintFinding::line, 5), Field(&LintFinding::line, 6),
                                 Field(&LintFinding::line, 7), Field(&LintFinding::line, 8),
                                 Field(&LintFinding::line, 9), Field(&LintFinding::line, 10)));
  EXPECT_EQ(found[0].what, "DROP");
  EXPECT_EQ(found[1].what, "RENAME");
  EXPECT_EQ(found[3].what, "ALTER ... TYPE");
  EXPECT_EQ(found[0].statement, "DROP TABLE old_t");
}

TEST(MigrationLintTest, IgnoresCommentsStringsAndExpandingStatements) {
  EXPECT_THAT(FindContractSteps(R"sql(
-- A release never drops what the previous one reads; rename nothing.
/* DROP TABLE x; */
CREATE TABLE t (a int, kind text DEFAULT 'drop');
ALTER TABLE t ADD COLUMN b text;
ALTER TABLE t ALTER COLUMN b SET DEFAULT 'x';
CREATE INDEX t_b_idx ON t (b) WHERE b <> 'rename';
CREATE TYPE mood AS ENUM ('ok');
ALTER TYPE mood ADD VALUE 'fine';
CREATE FUNCTION f() RETURNS void AS $body$ BEGIN DROP TABLE x; END $body$ LANGUAGE plpgsql;
COMMENT ON TABLE t IS 'dropped; renamed';
)sql"),
              IsEmpty());
}

TEST(MigrationLintTest, TheEscapeCommentAllowsAContractStep) {
  EXPECT_THAT(FindContractSteps(R"sql(
ALTER TABLE t ADD COLUMN c int;
-- contract-step: 0007 stopped reading b; every release since 0008 ignores it.
ALTER TABLE t DROP COLUMN b;
)sql"),
              IsEmpty());
  // Only the marked statement, and only with a reason.
  EXPECT_THAT(FindContractSteps(R"sql(
-- contract-step: b is unused since 0007
ALTER TABLE t DROP COLUMN b;
DROP TABLE u;
-- contract-step:
DROP TABLE v;
)sql"),
              ElementsAre(Field(&LintFinding::line, 4), Field(&LintFinding::line, 6)));
}

}  // namespace
}  // namespace bucketmap
