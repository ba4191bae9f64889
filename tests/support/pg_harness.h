// TestPostgres: a throwaway PostgreSQL 15 server for integration tests.
//
// Each instance owns a fresh directory (data, socket and log) under
// $BUCKETMAP_TEST_TMPDIR, else /dev/shm when it has 2 GB free, else /tmp,
// listens on its own free TCP port of 127.0.0.1 and serves an empty
// database `bucketmap`, so tests can run in parallel (ctest -j) and stop or
// restart their server without disturbing each other.
//
// initdb is slow, so it runs once per machine: the first instance builds a
// template data directory (with the `bucketmap` database) in that
// directory, named bucketmap-pg-template-<uid>-v<format>-pg<major>, and
// publishes it with an atomic rename; every instance then copies it. It is
// a cache: deleting it is always safe. fsync is off: the data
// must survive Stop()/StartAgain() but not a machine crash. A watchdog
// process stops the server and deletes the directory if the test process
// dies without running the destructor.
//
// As root, the server runs as the `postgres` user (PostgreSQL refuses
// root); otherwise as the current user. Binaries come from
// $BUCKETMAP_PG_BIN or /usr/lib/postgresql/15/bin.
//
// Thread safety: none; use one instance from one test thread (the store
// under test may use it from many threads: it only connects to url()).
#ifndef BUCKETMAP_TESTS_SUPPORT_PG_HARNESS_H_
#define BUCKETMAP_TESTS_SUPPORT_PG_HARNESS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace bucketmap {

class TestPostgres {
 public:
  // Creates and starts a new instance. FailedPrecondition when the
  // PostgreSQL binaries are missing; Internal (with the server log's tail)
  // when initdb or the server fails.
  static absl::StatusOr<std::unique_ptr<TestPostgres>> Start();

  // Stops the server immediately and deletes its directory.
  ~TestPostgres();
  TestPostgres(const TestPostgres&) = delete;
  TestPostgres& operator=(const TestPostgres&) = delete;

  // postgresql://postgres@127.0.0.1:PORT/bucketmap
  std::string url() const;
  // The same server, another database (e.g. "postgres").
  std::string url_for(const std::string& database) const;
  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  bool running() const { return running_; }

  // Stops the server (fast shutdown: sessions are ended, data is kept).
  absl::Status Stop();
  // Starts the stopped server again on the same directory and port.
  absl::Status StartAgain();
  // Stop() then StartAgain().
  absl::Status Restart();

  // Runs `sql` with psql on the `bucketmap` database (ON_ERROR_STOP) and
  // returns its unaligned, tuples-only output, without the final newline.
  // Rows are separated by '\n', columns by '|'. Internal on error.
  absl::StatusOr<std::string> Psql(const std::string& sql) const;

  // Creates a database on this server (for tests that need a second one).
  absl::Status CreateDatabase(const std::string& name) const;

  // Returns the last `lines` lines of the server log (for failure output).
  std::string LogTail(int lines = 30) const;

 private:
  TestPostgres() = default;
  absl::Status StartServer(bool pick_port);

  std::string dir_;
  std::string data_dir_;
  std::string log_path_;
  int port_ = 0;
  bool running_ = false;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_SUPPORT_PG_HARNESS_H_
