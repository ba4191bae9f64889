#include "server/store/migrator.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <pqxx/pqxx>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/store/pg_util.h"
#include "spdlog/spdlog.h"

namespace bucketmap {
namespace {

constexpr int kConnectTimeoutSeconds = 5;

// Parses "NNNN_name.sql"; nullopt when the name does not follow it.
std::optional<int32_t> ParseMigrationName(const std::string& file_name) {
  constexpr absl::string_view kSuffix = ".sql";
  if (file_name.size() < 4 + 1 + 1 + kSuffix.size()) return std::nullopt;
  if (!absl::EndsWith(file_name, kSuffix)) return std::nullopt;
  for (int i = 0; i < 4; ++i) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(file_name[i]))) return std::nullopt;
  }
  if (file_name[4] != '_') return std::nullopt;
  const absl::string_view rest(file_name.data() + 5, file_name.size() - 5 - kSuffix.size());
  for (char c : rest) {
    if (!(absl::ascii_islower(static_cast<unsigned char>(c)) ||
          absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '_')) {
      return std::nullopt;
    }
  }
  int32_t version = 0;
  if (!absl::SimpleAtoi(file_name.substr(0, 4), &version)) return std::nullopt;
  return version;
}

struct Applied {
  std::string name;
  std::string checksum;
};

std::string Sha256Hex(pqxx::transaction_base& tx, const std::string& content) {
  // PostgreSQL's sha256() avoids a crypto dependency in the server.
  const pqxx::binarystring bytes(content);
  return tx.exec_params1("SELECT encode(sha256($1), 'hex')", bytes)[0].as<std::string>();
}

absl::StatusOr<MigrationReport> RunLocked(pqxx::connection& conn, const std::string& dir,
                                          const std::vector<MigrationFile>& files) {
  MigrationReport report;
  {
    pqxx::work tx(conn);
    tx.exec0(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY,"
        " name text NOT NULL,"
        " checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())");
    tx.commit();
  }

  std::map<int32_t, Applied> applied;
  std::map<int32_t, std::string> checksums;  // of the files
  {
    pqxx::read_transaction tx(conn);
    for (const auto& row : tx.exec("SELECT version, name, checksum FROM schema_migrations")) {
      applied[row[0].as<int32_t>()] = Applied{row[1].as<std::string>(), row[2].as<std::string>()};
    }
    for (const MigrationFile& file : files) checksums[file.version] = Sha256Hex(tx, file.content);
  }

  const int32_t newest_file = files.empty() ? 0 : files.back().version;
  const int32_t newest_applied = applied.empty() ? 0 : applied.rbegin()->first;
  for (const auto& [version, record] : applied) {
    auto file = std::find_if(files.begin(), files.end(),
                             [v = version](const MigrationFile& f) { return f.version == v; });
    if (file == files.end()) {
      if (version > newest_file) {
        // A newer release migrated further; expand-then-contract keeps
        // this release compatible with that schema.
        spdlog::warn("migration {} was applied by a newer release; it is not in {}", record.name,
                     dir);
        continue;
      }
      return absl::FailedPreconditionError(
          absl::StrCat("migration ", record.name, " was applied but its file is missing from ", dir,
                       "; restore it (applied checksum ", record.checksum, ")"));
    }
    const std::string& checksum = checksums[version];
    if (file->name != record.name || checksum != record.checksum) {
      return absl::FailedPreconditionError(
          absl::StrCat("migration ", file->name, " was edited after it was applied (applied as ",
                       record.name, " with checksum ", record.checksum, ", file checksum ",
                       checksum, "); restore it and add a new migration instead"));
    }
  }

  for (const MigrationFile& file : files) {
    if (applied.count(file.version) > 0) continue;
    if (file.version < newest_applied) {
      return absl::FailedPreconditionError(
          absl::StrCat("migration ", file.name, " is older than the applied migration ",
                       applied.rbegin()->second.name, "; renumber it after that one"));
    }
    try {
      pqxx::work tx(conn);
      tx.exec(file.content);
      tx.exec_params0("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                      file.version, file.name, checksums[file.version]);
      tx.commit();
    } catch (const pqxx::sql_error& e) {
      absl::Status status = StatusFromCurrentException(absl::StrCat("migration ", file.name));
      if (status.code() == absl::StatusCode::kInternal) {
        return absl::FailedPreconditionError(
            absl::StrCat("migration ", file.name, " failed: ", e.what()));
      }
      return status;
    }
    spdlog::info("applied migration {}", file.name);
    report.applied.push_back(file.name);
  }
  report.schema_version = std::max(newest_file, newest_applied);
  return report;
}

}  // namespace

absl::StatusOr<std::vector<MigrationFile>> ReadMigrationFiles(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) {
    return absl::NotFoundError(
        absl::StrCat("cannot read migrations directory ", dir, ": ", ec.message()));
  }
  std::vector<MigrationFile> files;
  for (const fs::directory_entry& entry : it) {
    const std::string name = entry.path().filename().string();
    if (!absl::EndsWith(name, ".sql")) continue;
    std::optional<int32_t> version = ParseMigrationName(name);
    if (!version.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("migration file ", entry.path().string(),
                       " is not named NNNN_name.sql (name: [a-z0-9_]+)"));
    }
    std::ifstream in(entry.path(), std::ios::binary);
    if (!in) {
      return absl::NotFoundError(absl::StrCat("cannot read migration ", entry.path().string()));
    }
    std::ostringstream content;
    content << in.rdbuf();
    files.push_back(MigrationFile{*version, name, entry.path().string(), content.str()});
  }
  std::sort(files.begin(), files.end(),
            [](const MigrationFile& a, const MigrationFile& b) { return a.version < b.version; });
  for (size_t i = 1; i < files.size(); ++i) {
    if (files[i].version == files[i - 1].version) {
      return absl::InvalidArgumentError(absl::StrFormat("migrations %s and %s share version %04d",
                                                        files[i - 1].name, files[i].name,
                                                        files[i].version));
    }
  }
  return files;
}

absl::StatusOr<MigrationReport> RunMigrations(const std::string& conninfo, const std::string& dir) {
  absl::StatusOr<std::vector<MigrationFile>> files = ReadMigrationFiles(dir);
  if (!files.ok()) return files.status();
  try {
    pqxx::connection conn(WithConnectionDefaults(conninfo, kConnectTimeoutSeconds));
    {
      // Session-level, so a crashed migrator's lock dies with its
      // connection, and it spans the per-migration transactions.
      pqxx::nontransaction tx(conn);
      tx.exec_params("SELECT pg_advisory_lock($1)", kMigrationLockKey);
    }
    absl::StatusOr<MigrationReport> report = RunLocked(conn, dir, *files);
    {
      pqxx::nontransaction tx(conn);
      tx.exec_params("SELECT pg_advisory_unlock($1)", kMigrationLockKey);
    }
    return report;
  } catch (...) {
    return StatusFromCurrentException("migrate");
  }
}

}  // namespace bucketmap
