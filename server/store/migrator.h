// Migrator: brings a PostgreSQL database up to the schema in a directory of
// NNNN_name.sql files (migrations/ by default).
//
// Each file is applied once, in ascending NNNN order, inside its own
// transaction, and recorded in schema_migrations with the SHA-256 of its
// content. The whole run holds a session-level advisory lock
// (kMigrationLockKey), so replicas starting at the same time apply each
// migration exactly once: the second one waits, then finds nothing to do.
//
// Migrations are expand-then-contract (SPEC §7), so a database that a newer
// release has already migrated further than the files here is accepted
// with a warning; replicas can then be upgraded one at a time.
//
// Thread safety: the functions are reentrant; they share no state.
#ifndef BUCKETMAP_SERVER_STORE_MIGRATOR_H_
#define BUCKETMAP_SERVER_STORE_MIGRATOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace bucketmap {

// The advisory-lock key held while migrating: the ASCII bytes "bm_migra".
// Documented because operators may see it in pg_locks.
inline constexpr int64_t kMigrationLockKey = 0x626d5f6d69677261;

struct MigrationFile {
  int32_t version = 0;  // NNNN
  std::string name;     // file name, e.g. "0001_init.sql"
  std::string path;
  std::string content;
};

// Reads the migration files of `dir`, ascending by version. Files not
// ending in ".sql" are ignored. InvalidArgument for a .sql file not named
// NNNN_name.sql ([a-z0-9_]+ name) or a duplicate version; NotFound when
// `dir` cannot be read.
absl::StatusOr<std::vector<MigrationFile>> ReadMigrationFiles(const std::string& dir);

struct MigrationReport {
  std::vector<std::string> applied;  // names applied by this run
  int32_t schema_version = 0;        // highest recorded version afterwards
};

// Connects to `conninfo` (a libpq URI or keyword string) and applies the
// pending migrations of `dir` under the advisory lock.
//
// Errors:
//   FailedPrecondition: an applied migration's file was edited (the message
//     names the file and both checksums), or is missing while newer files
//     exist, or a migration's SQL failed (the message names the file);
//   Unavailable: the database cannot be reached;
//   NotFound / InvalidArgument: as ReadMigrationFiles.
absl::StatusOr<MigrationReport> RunMigrations(const std::string& conninfo, const std::string& dir);

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_STORE_MIGRATOR_H_
