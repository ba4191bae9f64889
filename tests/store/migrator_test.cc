// The migrator against a real PostgreSQL: once each, in order, checksums,
// refusal of edited or missing files, and the advisory lock.
#include "server/store/migrator.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/store/pg_store.h"
#include "server/store/pg_util.h"
#include "tests/store/store_test_util.h"

namespace bucketmap {
namespace store_test {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// A private copy of migrations/, which the tests may edit.
class MigrationsDir {
 public:
  MigrationsDir() {
    std::string pattern = "/tmp/bucketmap-migrations-XXXXXX";
    path_ = mkdtemp(pattern.data()) != nullptr ? pattern : "";
    fs::copy(BUCKETMAP_MIGRATIONS_DIR, path_, fs::copy_options::recursive);
  }
  ~MigrationsDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  void Write(const std::string& name, const std::string& content) const {
    std::ofstream(path_ + "/" + name) << content;
  }
  void Append(const std::string& name, const std::string& content) const {
    std::ofstream(path_ + "/" + name, std::ios::app) << content;
  }
  void Remove(const std::string& name) const { fs::remove(path_ + "/" + name); }

 private:
  std::string path_;
};

class MigratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = TestPostgres::Start();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
  }

  std::vector<std::string> FileNames() {
    auto files = ReadMigrationFiles(BUCKETMAP_MIGRATIONS_DIR);
    EXPECT_TRUE(files.ok()) << files.status();
    std::vector<std::string> names;
    if (files.ok()) {
      for (const MigrationFile& f : *files) names.push_back(f.name);
    }
    return names;
  }

  std::unique_ptr<TestPostgres> pg_;
};

TEST_F(MigratorTest, AppliesEveryMigrationOnceInOrder) {
  const std::vector<std::string> names = FileNames();
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.front(), "0001_init.sql");

  auto first = RunMigrations(pg_->url(), BUCKETMAP_MIGRATIONS_DIR);
  ASSERT_THAT(first, IsOk());
  EXPECT_EQ(first->applied, names);
  auto second = RunMigrations(pg_->url(), BUCKETMAP_MIGRATIONS_DIR);
  ASSERT_THAT(second, IsOk());
  EXPECT_THAT(second->applied, IsEmpty());
  EXPECT_EQ(second->schema_version, first->schema_version);

  auto recorded = pg_->Psql("SELECT string_agg(name, ',' ORDER BY version) FROM schema_migrations");
  ASSERT_THAT(recorded, IsOk());
  EXPECT_EQ(*recorded, absl::StrJoin(names, ","));
  // The checksum is the SHA-256 of the file, as sha256sum prints it.
  auto checksum = pg_->Psql("SELECT checksum FROM schema_migrations WHERE version = 1");
  ASSERT_THAT(checksum, IsOk());
  EXPECT_EQ(checksum->size(), 64u);

  // Opening a store on a migrated database is fine, twice.
  PgStoreOptions options;
  options.url = pg_->url();
  EXPECT_THAT(PgStore::Open(options), IsOk());
  EXPECT_THAT(PgStore::Open(options), IsOk());
  EXPECT_EQ(pg_->Psql("SELECT count(*) FROM bm_meta").value_or(""), "1");
}

TEST_F(MigratorTest, EditedMigrationRefusesTheStart) {
  MigrationsDir dir;
  ASSERT_THAT(RunMigrations(pg_->url(), dir.path()), IsOk());
  auto applied = pg_->Psql("SELECT checksum FROM schema_migrations WHERE version = 1");
  ASSERT_THAT(applied, IsOk());

  dir.Append("0001_init.sql", "\n-- an innocent-looking edit\n");
  auto result = RunMigrations(pg_->url(), dir.path());
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kFailedPrecondition,
                               AllOf(HasSubstr("0001_init.sql"), HasSubstr("edited"),
                                     HasSubstr(*applied), HasSubstr("add a new migration"))));

  PgStoreOptions options;
  options.url = pg_->url();
  options.migrations_dir = dir.path();
  EXPECT_THAT(PgStore::Open(options),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("0001_init.sql")));
}

TEST_F(MigratorTest, NewMigrationIsAppliedAlone) {
  MigrationsDir dir;
  ASSERT_THAT(RunMigrations(pg_->url(), dir.path()), IsOk());
  dir.Write("0900_extra.sql", "CREATE TABLE extra (id int PRIMARY KEY);");
  auto result = RunMigrations(pg_->url(), dir.path());
  ASSERT_THAT(result, IsOk());
  EXPECT_THAT(result->applied, ElementsAre("0900_extra.sql"));
  EXPECT_EQ(result->schema_version, 900);
  EXPECT_EQ(pg_->Psql("SELECT count(*) FROM extra").value_or(""), "0");
}

TEST_F(MigratorTest, FailingMigrationIsRolledBackAndNamed) {
  MigrationsDir dir;
  dir.Write("0900_broken.sql", "CREATE TABLE half_done (id int);\nSELECT * FROM no_such_table;\n");
  auto result = RunMigrations(pg_->url(), dir.path());
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kFailedPrecondition,
                               AllOf(HasSubstr("0900_broken.sql"), HasSubstr("no_such_table"))));
  // Earlier migrations stay applied; the failed one left nothing behind.
  EXPECT_EQ(pg_->Psql("SELECT count(*) FROM schema_migrations WHERE version = 900").value_or(""),
            "0");
  EXPECT_EQ(pg_->Psql("SELECT count(*) FROM schema_migrations WHERE version = 1").value_or(""),
            "1");
  EXPECT_EQ(pg_->Psql("SELECT to_regclass('half_done') IS NULL").value_or(""), "t");
}

TEST_F(MigratorTest, MissingAppliedMigrationRefusesTheStart) {
  MigrationsDir dir;
  dir.Write("0900_extra.sql", "CREATE TABLE extra (id int);");
  ASSERT_THAT(RunMigrations(pg_->url(), dir.path()), IsOk());
  dir.Remove("0900_extra.sql");
  dir.Write("0901_more.sql", "CREATE TABLE more (id int);");
  EXPECT_THAT(RunMigrations(pg_->url(), dir.path()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("0900_extra.sql"), HasSubstr("missing"))));
}

TEST_F(MigratorTest, DatabaseMigratedByNewerReleaseIsAccepted) {
  // Expand-then-contract: an older replica keeps starting after a newer
  // one applied migrations it does not know.
  MigrationsDir newer;
  newer.Write("0900_newer.sql", "CREATE TABLE newer (id int);");
  ASSERT_THAT(RunMigrations(pg_->url(), newer.path()), IsOk());
  auto older = RunMigrations(pg_->url(), BUCKETMAP_MIGRATIONS_DIR);
  ASSERT_THAT(older, IsOk());
  EXPECT_THAT(older->applied, IsEmpty());
  EXPECT_EQ(older->schema_version, 900);
}

TEST_F(MigratorTest, OutOfOrderMigrationIsRefused) {
  MigrationsDir dir;
  dir.Write("0900_later.sql", "CREATE TABLE later (id int);");
  ASSERT_THAT(RunMigrations(pg_->url(), dir.path()), IsOk());
  dir.Write("0500_earlier.sql", "CREATE TABLE earlier (id int);");
  EXPECT_THAT(RunMigrations(pg_->url(), dir.path()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("0500_earlier.sql"), HasSubstr("renumber"))));
}

TEST_F(MigratorTest, BadFileNamesAreRejected) {
  MigrationsDir dir;
  dir.Write("12_short.sql", "SELECT 1;");
  EXPECT_THAT(RunMigrations(pg_->url(), dir.path()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("12_short.sql")));
  dir.Remove("12_short.sql");
  dir.Write("0001_dup.sql", "SELECT 1;");
  EXPECT_THAT(RunMigrations(pg_->url(), dir.path()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("share version 0001")));
  dir.Remove("0001_dup.sql");
  dir.Write("README.md", "not a migration");
  EXPECT_THAT(RunMigrations(pg_->url(), dir.path()), IsOk());
  EXPECT_THAT(RunMigrations(pg_->url(), "/nonexistent/migrations"),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
}

TEST_F(MigratorTest, ConcurrentStartsApplyEachMigrationOnce) {
  // A slow migration widens the race window: without the advisory lock the
  // second starter would apply it again and fail.
  MigrationsDir dir;
  dir.Write("0900_slow.sql", "SELECT pg_sleep(1);\nCREATE TABLE slow_marker (id int);");
  std::vector<absl::StatusOr<std::unique_ptr<PgStore>>> results;
  for (int i = 0; i < 3; ++i) results.emplace_back(absl::UnknownError("unset"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([&, i] {
      PgStoreOptions options;
      options.url = pg_->url();
      options.migrations_dir = dir.path();
      results[i] = PgStore::Open(options);
    });
  }
  for (std::thread& t : threads) t.join();
  for (const auto& result : results) EXPECT_THAT(result, IsOk());
  EXPECT_EQ(pg_->Psql("SELECT count(*) FROM schema_migrations WHERE version = 900").value_or(""),
            "1");
  EXPECT_EQ(pg_->Psql("SELECT count(*) FROM bm_meta").value_or(""), "1");
}

TEST_F(MigratorTest, UnreachableDatabaseIsUnavailable) {
  const std::string url = pg_->url();
  ASSERT_THAT(pg_->Stop(), IsOk());
  EXPECT_THAT(RunMigrations(url, BUCKETMAP_MIGRATIONS_DIR),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  PgStoreOptions options;
  options.url = url;
  EXPECT_THAT(PgStore::Open(options), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
}

TEST(PgUtilTest, WithConnectionDefaultsAddsMissingParameters) {
  constexpr char kDefaults[] =
      "keepalives_idle=5&keepalives_interval=2&keepalives_count=3&tcp_user_timeout=10000";
  EXPECT_EQ(WithConnectionDefaults("postgresql://u@h:5/db", 2),
            absl::StrCat("postgresql://u@h:5/db?connect_timeout=2&", kDefaults));
  EXPECT_EQ(WithConnectionDefaults("postgresql://u@h/db?sslmode=disable", 3),
            absl::StrCat("postgresql://u@h/db?sslmode=disable&connect_timeout=3&", kDefaults));
  EXPECT_EQ(WithConnectionDefaults("host=h dbname=db keepalives_idle=1 keepalives_interval=1 "
                                   "keepalives_count=1 tcp_user_timeout=1",
                                   2),
            "host=h dbname=db keepalives_idle=1 keepalives_interval=1 keepalives_count=1 "
            "tcp_user_timeout=1 connect_timeout=2");
  EXPECT_EQ(WithConnectionDefaults("postgresql://h/db?connect_timeout=9&keepalives_idle=1&"
                                   "keepalives_interval=1&keepalives_count=1&tcp_user_timeout=1",
                                   2),
            "postgresql://h/db?connect_timeout=9&keepalives_idle=1&keepalives_interval=1&"
            "keepalives_count=1&tcp_user_timeout=1");
}

}  // namespace
}  // namespace store_test
}  // namespace bucketmap
