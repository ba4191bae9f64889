// Rolling upgrade from the previous release (SPEC §7, issue 6 item 6):
//   1. a fresh PostgreSQL gets exactly the previous release's migrations
//      (release_<rev>_migrations.txt, checked against what shipped);
//   2. data is written with the previous release's own SQL statements
//      (release_<rev>_sql.txt, captured from its server/pg_store.cc);
//   3. this release's server binary starts on it, migrates it forward and
//      serves the old data, and writes;
//   4. while it runs, the previous release's statements still prepare and
//      run against the migrated schema: its reads see the new data, and a
//      write made with them (a not-yet-upgraded replica) is served by the
//      new server.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "domain/change.h"
#include "gtest/gtest.h"
#include "pqxx/pqxx"
#include "codec/codec.h"
#include "server/store/bucket_json.h"
#include "server/store/migrator.h"
#include "tests/support/pg_harness.h"
#include "tests/support/server_process.h"

namespace bucketmap {
namespace {

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// (file name, sha256 hex) of each migration the previous release shipped.
std::vector<std::pair<std::string, std::string>> PreviousMigrations() {
  std::vector<std::pair<std::string, std::string>> out;
  for (absl::string_view line :
       absl::StrSplit(ReadText(BUCKETMAP_PREVIOUS_MIGRATIONS), '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "#")) continue;
    std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (parts.size() == 2) out.emplace_back(parts[0], parts[1]);
  }
  return out;
}

// name -> SQL of the previous release's statements.
std::vector<std::pair<std::string, std::string>> PreviousStatements() {
  std::vector<std::pair<std::string, std::string>> out;
  for (absl::string_view line : absl::StrSplit(ReadText(BUCKETMAP_PREVIOUS_SQL), '\n')) {
    if (absl::ConsumePrefix(&line, "-- statement: ")) {
      out.emplace_back(std::string(line), "");
    } else if (!out.empty() && !line.empty()) {
      absl::StrAppend(&out.back().second, out.back().second.empty() ? "" : "\n", line);
    }
  }
  return out;
}

std::string Hex(const std::string& bytes) {
  return absl::StrCat("decode('", absl::BytesToHexString(bytes), "', 'hex')");
}

class UpgradeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = TestPostgres::Start();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
    server_ = std::make_unique<ServerProcess>(BUCKETMAP_SERVER_BINARY, pg_->dir() + "/server.log");
  }

  // The previous release's statements, prepared in `tx` as old_<name>;
  // CREATE statements (its per-session staging tables) run, and the
  // column lists of its COPYs are selected. Fails the test for each one
  // the schema no longer accepts.
  void PreparePrevious(pqxx::work& tx) {
    int prepared = 0;
    for (const auto& [name, sql] : PreviousStatements()) {
      std::string statement = sql;
      if (absl::StartsWith(name, "copy:") || absl::StartsWith(sql, "CREATE")) {
        // Run as is: DDL and COPY column lists cannot be prepared.
      } else {
        statement = absl::StrCat("PREPARE old_", absl::AsciiStrToLower(name), " AS ", sql);
      }
      try {
        pqxx::subtransaction sub(tx, "s");
        sub.exec0(statement);
        sub.commit();
        ++prepared;
      } catch (const std::exception& e) {
        ADD_FAILURE() << "the previous release's statement " << name
                      << " fails on this schema: " << e.what() << "\n"
                      << sql;
      }
    }
    EXPECT_GE(prepared, 25);
  }

  std::unique_ptr<TestPostgres> pg_;
  std::unique_ptr<ServerProcess> server_;
};

Bucket OldBucket(int32_t id, const std::string& pool, int64_t version) {
  Bucket b;
  b.id = id;
  b.name = absl::StrCat("old-", id);
  b.pool = pool;
  b.topics = {{"ingestion", absl::StrCat("events_ingestion_", id)}};
  b.created_version = version;
  b.updated_version = version;
  return b;
}

// One version written the way the previous release's PgStore::Commit does
// it, with its prepared statements.
void WriteOldVersion(pqxx::work& tx, int64_t version, const std::string& kind, const Change& change,
                     int32_t next_bucket_id) {
  tx.exec1("EXECUTE old_lock_meta");
  for (const Bucket& b : change.buckets) {
    tx.exec0(absl::StrCat("EXECUTE old_upsert_bucket(", b.id, ", ", tx.quote(b.name), ", ",
                          static_cast<int>(b.state), ", ", b.weight, ", ", tx.quote(b.pool), ", ",
                          tx.quote(BucketToJson(b)), ", ", b.created_version, ", ",
                          b.updated_version, ")"));
  }
  std::vector<int32_t> bucket_ids;
  for (const Bucket& b : change.buckets) bucket_ids.push_back(b.id);
  for (const auto& [team, target] : change.set) {
    tx.exec0(absl::StrCat("EXECUTE old_upsert_assignment(", team, ", ", target.bucket_id, ", ",
                          tx.quote(target.pool), ", ", version, ")"));
    tx.exec0(absl::StrCat("EXECUTE old_insert_log_team(", team, ", ", version, ")"));
  }
  v1::MappingDelta delta;
  ToProto(change, version, &delta);
  tx.exec0(absl::StrCat("EXECUTE old_insert_log(", version, ", ", tx.quote(kind),
                        ", 'previous-release', 'written by 13bf497 statements', '', ",
                        change.set.size(), ", '{", absl::StrJoin(bucket_ids, ","), "}', ",
                        Hex(delta.SerializeAsString()), ")"));
  tx.exec0(absl::StrCat("EXECUTE old_bump_meta(", version, ", ", next_bucket_id, ")"));
}

TEST_F(UpgradeTest, PreviousReleaseDatabaseMigratesForwardAndBothReleasesWork) {
  // 1. The previous release's schema, from the files it shipped.
  const std::string old_dir = pg_->dir() + "/previous-migrations";
  std::filesystem::create_directories(old_dir);
  const auto previous = PreviousMigrations();
  ASSERT_GE(previous.size(), 3u);
  for (const auto& [name, sha] : previous) {
    std::filesystem::copy_file(std::string(BUCKETMAP_MIGRATIONS_DIR) + "/" + name,
                               old_dir + "/" + name);
  }
  auto report = RunMigrations(pg_->url(), old_dir);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->applied.size(), previous.size());
  for (const auto& [name, sha] : previous) {
    auto applied = pg_->Psql("SELECT checksum FROM schema_migrations WHERE name = '" + name + "'");
    ASSERT_TRUE(applied.ok()) << applied.status();
    EXPECT_EQ(*applied, sha) << name << " differs from the file the previous release shipped";
  }

  // 2. Data written by the previous release's statements: two buckets,
  //    then a pin and a pool assignment.
  {
    pqxx::connection conn(pg_->url());
    pqxx::work tx(conn);
    PreparePrevious(tx);
    Change v1_change;
    v1_change.buckets = {OldBucket(1, "default", 1)};
    WriteOldVersion(tx, 1, "CreateBucket", v1_change, 2);
    Change v2_change;
    v2_change.buckets = {OldBucket(2, "paid", 2)};
    WriteOldVersion(tx, 2, "CreateBucket", v2_change, 3);
    Change v3_change;
    v3_change.set = {{42, Target::Pin(2)}, {43, Target::Pool("paid")}};
    WriteOldVersion(tx, 3, "BulkAssign", v3_change, 3);
    tx.commit();
  }

  // 3. This release migrates forward and serves the old data.
  ASSERT_TRUE(server_->Launch(pg_->url()).ok()) << server_->log();
  auto files = ReadMigrationFiles(BUCKETMAP_MIGRATIONS_DIR);
  ASSERT_TRUE(files.ok()) << files.status();
  auto count = pg_->Psql("SELECT count(*) FROM schema_migrations");
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(*count, std::to_string(files->size()));

  v1::MappingSnapshot snapshot;
  ASSERT_TRUE(server_->mapping()
                  ->GetMapping(ContextWithTimeout(absl::Seconds(10)).get(), v1::GetMappingRequest(),
                               &snapshot)
                  .ok());
  EXPECT_EQ(snapshot.version(), 3);
  ASSERT_EQ(snapshot.buckets_size(), 2);
  EXPECT_EQ(snapshot.buckets(1).name(), "old-2");
  EXPECT_EQ(snapshot.buckets(1).pool(), "paid");
  EXPECT_EQ(snapshot.buckets(1).topics().at("ingestion"), "events_ingestion_2");
  v1::TeamRoute route;
  v1::GetTeamRequest team;
  team.set_team_id(42);
  ASSERT_TRUE(
      server_->mapping()->GetTeam(ContextWithTimeout(absl::Seconds(10)).get(), team, &route).ok());
  EXPECT_EQ(route.bucket_id(), 2);
  EXPECT_EQ(route.source(), "pin");
  team.set_team_id(43);
  ASSERT_TRUE(
      server_->mapping()->GetTeam(ContextWithTimeout(absl::Seconds(10)).get(), team, &route).ok());
  EXPECT_EQ(route.bucket_id(), 2);  // the pool's only bucket
  v1::GetHistoryRequest history_request;
  history_request.set_team_id(42);
  history_request.set_include_delta(true);
  v1::GetHistoryResponse history;
  ASSERT_TRUE(
      server_->admin()
          ->GetHistory(ContextWithTimeout(absl::Seconds(10)).get(), history_request, &history)
          .ok());
  ASSERT_EQ(history.records_size(), 1);
  EXPECT_EQ(history.records(0).version(), 3);
  EXPECT_EQ(history.records(0).actor(), "previous-release");
  // History by team trims the delta to that team.
  ASSERT_EQ(history.records(0).delta().set().team_ids_size(), 1);
  EXPECT_EQ(history.records(0).delta().set().team_ids(0), 42);

  // ... and writes on it.
  v1::AssignTeamRequest assign;
  assign.set_team_id(44);
  assign.set_bucket_id(1);
  assign.set_reason("written by this release");
  v1::AssignTeamResponse assigned;
  grpc::Status s =
      server_->admin()->AssignTeam(ContextWithTimeout(absl::Seconds(10)).get(), assign, &assigned);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(assigned.version(), 4);

  // 4. The previous release, still running on some replicas mid-upgrade,
  //    reads the migrated schema and writes to it.
  {
    pqxx::connection conn(pg_->url());
    pqxx::work tx(conn);
    PreparePrevious(tx);
    const pqxx::row meta = tx.exec1("EXECUTE old_read_meta");
    EXPECT_EQ(meta[0].as<int64_t>(), 4);
    EXPECT_EQ(tx.exec("EXECUTE old_read_buckets").size(), 2u);
    const pqxx::result log = tx.exec("EXECUTE old_history_team(1, 100, 10, true, 44)");
    ASSERT_EQ(log.size(), 1u);
    EXPECT_EQ(log[0][0].as<int64_t>(), 4);
    v1::MappingDelta delta;
    const pqxx::binarystring blob(log[0][8]);
    ASSERT_TRUE(delta.ParseFromString(blob.str()));
    EXPECT_EQ(delta.to_version(), 4);
    EXPECT_EQ(tx.exec("EXECUTE old_load_deltas(0, 4)").size(), 4u);
    EXPECT_EQ(tx.exec("EXECUTE old_history_range(1, 100, 10, false)").size(), 4u);
    tx.exec("EXECUTE old_list_clients(0)");
    tx.exec("EXECUTE old_outbox_backlog");
    Change v5_change;
    v5_change.set = {{45, Target::Pin(1)}};
    WriteOldVersion(tx, 5, "AssignTeam", v5_change, 3);
    tx.commit();
  }
  // The new server picks the old replica's write up (its catch-up poll;
  // the previous release sends no notification).
  const absl::Time give_up = absl::Now() + absl::Seconds(15);
  route.Clear();
  team.set_team_id(45);
  while (absl::Now() < give_up) {
    grpc::Status got =
        server_->mapping()->GetTeam(ContextWithTimeout(absl::Seconds(5)).get(), team, &route);
    if (got.ok() && route.version() >= 5) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(route.version(), 5);
  EXPECT_EQ(route.bucket_id(), 1);
  EXPECT_EQ(route.source(), "pin");
}

}  // namespace
}  // namespace bucketmap
