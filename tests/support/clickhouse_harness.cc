#include "tests/support/clickhouse_harness.h"

#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/support/local_process.h"

namespace bucketmap {
namespace {

std::string BinDir(const char* fallback) {
  const char* env = std::getenv("BUCKETMAP_CLICKHOUSE_BIN_DIR");
  return env != nullptr && *env != '\0' ? env : fallback;
}
std::string ServerBinary() { return BinDir("/usr/sbin") + "/clickhouse-server"; }
std::string ClientBinary() { return BinDir("/usr/bin") + "/clickhouse-client"; }

absl::Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  chmod(path.c_str(), 0644);
  return absl::OkStatus();
}

absl::Status CopyFile(const std::string& from, const std::string& to) {
  std::string text = ReadFile(from);
  if (text.empty()) return absl::InternalError(absl::StrCat("cannot read ", from));
  return WriteFile(to, text);
}

// The minimal server config; deploy/clickhouse's files are merged in from
// config.d and users.d beside it.
std::string Config(const std::string& dir, int tcp_port, int http_port) {
  return absl::StrCat(R"(<?xml version="1.0"?>
<yandex>
  <logger>
    <level>information</level>
    <log>)",
                      dir, R"(/log/server.log</log>
    <errorlog>)",
                      dir, R"(/log/error.log</errorlog>
    <console>0</console>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>)",
                      tcp_port, R"(</tcp_port>
  <http_port>)",
                      http_port, R"(</http_port>
  <path>)",
                      dir, R"(/data/</path>
  <tmp_path>)",
                      dir, R"(/data/tmp/</tmp_path>
  <format_schema_path>)",
                      dir, R"(/data/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <max_concurrent_queries>32</max_concurrent_queries>
</yandex>
)");
}

constexpr char kUsers[] = R"(<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default></default></quotas>
</yandex>
)";

}  // namespace

absl::StatusOr<std::unique_ptr<TestClickHouse>> TestClickHouse::Start(
    const std::string& repo_root) {
  if (access(ServerBinary().c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        ServerBinary(), " is missing: install clickhouse-server (scripts/install-deps.sh)"));
  }
  std::unique_ptr<TestClickHouse> ch(new TestClickHouse());
  std::string pattern = "/tmp/bucketmap-clickhouse-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", std::strerror(errno)));
  }
  ch->dir_ = pattern;
  chmod(ch->dir_.c_str(), 0755);
  for (const char* sub : {"/config.d", "/users.d", "/data", "/log"}) {
    mkdir((ch->dir_ + sub).c_str(), 0755);
  }
  ch->tcp_port_ = FreePort();
  ch->http_port_ = FreePort();
  while (ch->http_port_ == ch->tcp_port_) ch->http_port_ = FreePort();
  const std::string deploy = repo_root + "/deploy/clickhouse";
  for (absl::Status s : {
           WriteFile(ch->dir_ + "/config.xml", Config(ch->dir_, ch->tcp_port_, ch->http_port_)),
           WriteFile(ch->dir_ + "/users.xml", kUsers),
           CopyFile(deploy + "/config.d/bucketmap_kafka.xml",
                    ch->dir_ + "/config.d/bucketmap_kafka.xml"),
           CopyFile(deploy + "/users.d/bucketmap_stream.xml",
                    ch->dir_ + "/users.d/bucketmap_stream.xml"),
       }) {
    if (!s.ok()) return s;
  }

  const passwd* pw = geteuid() == 0 ? getpwnam("clickhouse") : nullptr;
  if (geteuid() == 0 && pw == nullptr) {
    return absl::FailedPreconditionError(
        "user 'clickhouse' does not exist (install clickhouse-server)");
  }
  if (pw != nullptr) {
    for (const char* sub : {"/data", "/log"}) {
      if (chown((ch->dir_ + sub).c_str(), pw->pw_uid, pw->pw_gid) != 0) {
        return absl::InternalError(absl::StrCat("chown: ", std::strerror(errno)));
      }
    }
  }
  const std::string stdout_log = ch->dir_ + "/server.stdout";
  const pid_t parent = getpid();
  ch->pid_ = fork();
  if (ch->pid_ == 0) {
    if (std::freopen(stdout_log.c_str(), "a", stdout) == nullptr ||
        std::freopen(stdout_log.c_str(), "a", stderr) == nullptr) {
      _exit(126);
    }
    if (pw != nullptr &&
        (setgroups(0, nullptr) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)) {
      _exit(125);
    }
    // After setuid(), which clears it: the server dies with the test.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(124);
    if (chdir(ch->dir_.c_str()) != 0) _exit(123);
    std::string binary = ServerBinary();
    std::string config = "--config-file=" + ch->dir_ + "/config.xml";
    char* argv[] = {binary.data(), config.data(), nullptr};
    execv(argv[0], argv);
    _exit(127);
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    absl::StatusOr<std::string> ok = ch->Query("SELECT 1");
    if (ok.ok() && *ok == "1\n") return ch;
    if (waitpid(ch->pid_, nullptr, WNOHANG) != 0) {
      ch->pid_ = 0;
      return absl::InternalError(
          absl::StrCat("clickhouse-server exited:\n", ReadFile(stdout_log), ch->LogTail()));
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::InternalError(
      absl::StrCat("clickhouse-server does not answer within 60 s:\n", ch->LogTail()));
}

TestClickHouse::~TestClickHouse() {
  if (pid_ > 0) {
    // The data is thrown away: no graceful shutdown (which waits for every
    // Kafka consumer to leave).
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (!dir_.empty() && std::getenv("BUCKETMAP_KEEP_CLICKHOUSE") == nullptr) {
    std::string rm = absl::StrCat("rm -rf '", dir_, "'");
    (void)!std::system(rm.c_str());
  }
}

std::string TestClickHouse::http_url() const {
  return absl::StrCat("http://127.0.0.1:", http_port_);
}

absl::StatusOr<std::string> TestClickHouse::Query(const std::string& sql) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr = Loopback(http_port_);
  timeval tv{30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return absl::UnavailableError("ClickHouse does not accept connections");
  }
  const std::string request = absl::StrCat(
      "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: ", sql.size(), "\r\n\r\n", sql);
  (void)!write(fd, request.data(), request.size());
  std::string response;
  char buf[16384];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) response.append(buf, n);
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (body == std::string::npos) return absl::UnavailableError("no HTTP answer from ClickHouse");
  if (!absl::StartsWith(response, "HTTP/1.0 200") && !absl::StartsWith(response, "HTTP/1.1 200")) {
    return absl::InternalError(absl::StrCat("ClickHouse refused '", sql.substr(0, 200),
                                            "': ", response.substr(body + 4, 500)));
  }
  return response.substr(body + 4);
}

absl::Status TestClickHouse::ApplyWithClient(const std::string& sql) {
  const std::string file = absl::StrCat(dir_, "/apply-", ++applied_, ".sql");
  if (absl::Status s = WriteFile(file, sql); !s.ok()) return s;
  const std::string command = absl::StrCat(ClientBinary(), " --host 127.0.0.1 --port ", tcp_port_,
                                           " --multiquery < '", file, "' 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return absl::InternalError("popen clickhouse-client");
  std::string output;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof(buf), pipe)) > 0;) output.append(buf, n);
  const int rc = pclose(pipe);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("clickhouse-client --multiquery < ", file, " exited ",
                                            WEXITSTATUS(rc), ": ", output));
  }
  return absl::OkStatus();
}

std::string TestClickHouse::LogTail(int lines) const {
  std::vector<std::string> all = absl::StrSplit(ReadFile(dir_ + "/log/server.log"), '\n');
  const size_t from = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0;
  std::string out;
  for (size_t i = from; i < all.size(); ++i) absl::StrAppend(&out, all[i].substr(0, 400), "\n");
  return out;
}

}  // namespace bucketmap
