// TestClickHouse: a throwaway ClickHouse server (Debian's 18.16) for
// integration tests.
//
// Each instance owns a fresh directory under /tmp (config, data, logs)
// and listens on free ports of 127.0.0.1 (native TCP for
// clickhouse-client, HTTP for queries). Its config is minimal (root
// <yandex>) plus the repository's deploy/clickhouse/config.d and users.d
// files, the same ones docker-compose.yml mounts: the Kafka engine starts
// new groups at the earliest offset and flushes (and commits) every
// 500 ms.
//
// As root, the server runs as the `clickhouse` user (as Debian's package
// runs it); otherwise as the current user. The binaries come from
// $BUCKETMAP_CLICKHOUSE_BIN_DIR or /usr/bin and /usr/sbin. The server gets
// SIGKILL when the test process dies, and the destructor kills it and
// deletes the directory.
//
// Thread safety: none; use one instance from one test thread.
#ifndef BUCKETMAP_TESTS_SUPPORT_CLICKHOUSE_HARNESS_H_
#define BUCKETMAP_TESTS_SUPPORT_CLICKHOUSE_HARNESS_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace bucketmap {

class TestClickHouse {
 public:
  // Starts a new server with the deploy/clickhouse files of `repo_root`,
  // and waits until it answers queries. FailedPrecondition when
  // clickhouse-server is not installed; Internal (with the log's tail)
  // when it does not answer within 60 s.
  static absl::StatusOr<std::unique_ptr<TestClickHouse>> Start(const std::string& repo_root);

  ~TestClickHouse();
  TestClickHouse(const TestClickHouse&) = delete;
  TestClickHouse& operator=(const TestClickHouse&) = delete;

  // http://127.0.0.1:PORT: pass it as bucketctl's --clickhouse_url.
  std::string http_url() const;
  int tcp_port() const { return tcp_port_; }
  const std::string& dir() const { return dir_; }

  // Runs one statement over HTTP and returns the body (TabSeparated unless
  // the statement says FORMAT). Internal with ClickHouse's message when it
  // refuses the statement; Unavailable when it does not answer.
  absl::StatusOr<std::string> Query(const std::string& sql);

  // Runs `sql` (several statements) with `clickhouse-client --multiquery`,
  // as an operator applies bucketctl's output. Internal with the client's
  // output when it fails.
  absl::Status ApplyWithClient(const std::string& sql);

  // The last `lines` lines of the server's log (errors and warnings).
  std::string LogTail(int lines = 40) const;

 private:
  TestClickHouse() = default;

  std::string dir_;
  int tcp_port_ = 0;
  int http_port_ = 0;
  pid_t pid_ = 0;
  int applied_ = 0;  // files written by ApplyWithClient
};

}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_SUPPORT_CLICKHOUSE_HARNESS_H_
