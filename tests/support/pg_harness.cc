#include "tests/support/pg_harness.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace bucketmap {
namespace {

namespace fs = std::filesystem;

// Bump when the template's content changes, so stale caches are ignored.
constexpr int kTemplateFormat = 1;

std::string PgBin() {
  const char* env = std::getenv("BUCKETMAP_PG_BIN");
  return env != nullptr && *env != '\0' ? env : "/usr/lib/postgresql/15/bin";
}

bool IsRoot() { return geteuid() == 0; }

// Where instances live. tmpfs (/dev/shm) when it has room: creating the
// ~1,200 files of a data directory costs ~0.6 s on this machine's ext4
// /tmp against ~0.08 s there, and fsync is off anyway. Containers often
// give /dev/shm only 64 MB, hence the free-space check.
const std::string& BaseDir() {
  static const std::string* base = [] {
    const char* env = std::getenv("BUCKETMAP_TEST_TMPDIR");
    if (env != nullptr && *env != '\0') return new std::string(env);
    struct statvfs vfs {};
    constexpr unsigned long long kMinFree = 2ull << 30;
    if (statvfs("/dev/shm", &vfs) == 0 && access("/dev/shm", W_OK | X_OK) == 0 &&
        static_cast<unsigned long long>(vfs.f_bavail) * vfs.f_frsize >= kMinFree) {
      return new std::string("/dev/shm");
    }
    return new std::string("/tmp");
  }();
  return *base;
}

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs argv without a shell, from "/" (the postgres user may not be able to
// read the caller's working directory), optionally as the instance owner
// and with stdin from a file. Only async-signal-safe calls happen between
// fork and exec, as the test process has threads.
CommandResult Run(std::vector<std::string> argv, bool as_owner = false,
                  const std::string& stdin_path = "") {
  if (as_owner && IsRoot()) {
    argv.insert(argv.begin(), {"runuser", "-u", "postgres", "--"});
  }
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);

  CommandResult result;
  int out_pipe[2];
  int err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
    result.err = absl::StrCat("pipe: ", std::strerror(errno));
    return result;
  }
  const char* in_path = stdin_path.empty() ? "/dev/null" : stdin_path.c_str();
  const pid_t pid = fork();
  if (pid < 0) {
    result.err = absl::StrCat("fork: ", std::strerror(errno));
    return result;
  }
  if (pid == 0) {
    const int in = open(in_path, O_RDONLY);
    if (in < 0 || dup2(in, 0) < 0 || dup2(out_pipe[1], 1) < 0 || dup2(err_pipe[1], 2) < 0 ||
        chdir("/") != 0) {
      _exit(126);
    }
    execvp(args[0], args.data());
    _exit(127);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  char buf[8192];
  while (open_fds > 0) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      const ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

absl::Status RunOk(const std::vector<std::string>& argv, bool as_owner,
                   const std::string& stdin_path = "") {
  CommandResult r = Run(argv, as_owner, stdin_path);
  if (r.exit_code == 0) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(argv[0], " exited with ", r.exit_code, ": ", r.out, r.err));
}

// Gives a directory created by root to the postgres user.
absl::Status ChownToOwner(const std::string& path) {
  if (!IsRoot()) return absl::OkStatus();
  const passwd* pw = getpwnam("postgres");
  if (pw == nullptr) {
    return absl::InternalError("user 'postgres' does not exist (install postgresql)");
  }
  if (chown(path.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
    return absl::InternalError(absl::StrCat("chown ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> MakeTempDir(const std::string& prefix) {
  std::string pattern = absl::StrCat(BaseDir(), "/", prefix, "XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", std::strerror(errno)));
  }
  if (absl::Status s = ChownToOwner(pattern); !s.ok()) {
    fs::remove_all(pattern);
    return s;
  }
  return pattern;
}

std::string MajorVersion() {
  CommandResult r = Run({PgBin() + "/pg_ctl", "--version"});
  std::string digits;
  for (char c : r.out) {
    if (c >= '0' && c <= '9') {
      digits.push_back(c);
    } else if (!digits.empty()) {
      break;
    }
  }
  return digits.empty() ? "unknown" : digits;
}

// Returns the template data directory, building it on first use. Several
// processes may race to build it: each builds privately and publishes with
// rename(), which only one wins.
absl::StatusOr<std::string> TemplateDataDir() {
  static std::string* cached = nullptr;
  if (cached != nullptr) return *cached;
  const std::string root = absl::StrCat(BaseDir(), "/bucketmap-pg-template-", geteuid(), "-v",
                                        kTemplateFormat, "-pg", MajorVersion());
  const std::string data = root + "/data";
  if (!fs::exists(root + "/READY")) {
    auto build = MakeTempDir("bucketmap-pg-template-build-");
    if (!build.ok()) return build.status();
    const std::string build_data = *build + "/data";
    absl::Status s = RunOk({PgBin() + "/initdb", "-D", build_data, "-U", "postgres", "--auth=trust",
                            "-E", "UTF8", "--locale=C", "--no-sync"},
                           /*as_owner=*/true);
    if (s.ok()) {
      // Single-user mode creates the database without starting a server.
      const std::string sql_path = *build + "/create.sql";
      std::ofstream(sql_path) << "CREATE DATABASE bucketmap;\n";
      s = RunOk(
          {PgBin() + "/postgres", "--single", "-D", build_data, "-c", "fsync=off", "postgres"},
          /*as_owner=*/true, sql_path);
      fs::remove(sql_path);
    }
    if (s.ok()) {
      std::ofstream(*build + "/READY") << "ok\n";
      if (rename(build->c_str(), root.c_str()) != 0) {
        // Another process published first; use its template.
        std::error_code ec;
        fs::remove_all(*build, ec);
      }
    } else {
      std::error_code ec;
      fs::remove_all(*build, ec);
      return absl::InternalError(absl::StrCat("building the PostgreSQL template: ", s.message()));
    }
  }
  if (!fs::exists(root + "/READY")) {
    return absl::InternalError(absl::StrCat("PostgreSQL template ", root, " is incomplete"));
  }
  cached = new std::string(data);
  return *cached;
}

// Picks a port below Linux's ephemeral range (32768+), so outgoing
// connections cannot grab it between this check and the server's bind.
int PickPort() {
  static std::mt19937 rng(std::random_device{}() ^ static_cast<unsigned>(getpid()));
  std::uniform_int_distribution<int> dist(10000, 31999);
  for (int attempt = 0; attempt < 200; ++attempt) {
    const int port = dist(rng);
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    const bool free = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    close(fd);
    if (free) return port;
  }
  return 0;
}

// Starts a process that outlives a crashed or killed test: when `parent`
// is gone, it stops the server immediately and deletes `dir`. Returns its
// pid (0 if it could not start); the destructor kills it.
pid_t StartWatchdog(pid_t parent, const std::string& dir, const std::string& data_dir) {
  std::string stop = absl::StrCat(PgBin(), "/pg_ctl stop -D ", data_dir, " -m immediate -w -t 10");
  if (IsRoot()) stop = absl::StrCat("runuser -u postgres -- ", stop);
  const std::string script =
      absl::StrCat("while kill -0 ", parent, " 2>/dev/null; do sleep 1; done; cd /; ", stop,
                   " >/dev/null 2>&1; rm -rf ", dir);
  std::vector<std::string> argv = {"/bin/sh", "-c", script};
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    setsid();  // out of the test's process group and terminal
    const int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2(null, 0);
      dup2(null, 1);
      dup2(null, 2);
    }
    execv(args[0], args.data());
    _exit(127);
  }
  return pid > 0 ? pid : 0;
}

// pid of each instance's watchdog, keyed by directory (the header keeps no
// platform types).
std::vector<std::pair<std::string, pid_t>>& Watchdogs() {
  static auto* watchdogs = new std::vector<std::pair<std::string, pid_t>>();
  return *watchdogs;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TestPostgres>> TestPostgres::Start() {
  if (access((PgBin() + "/pg_ctl").c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("PostgreSQL binaries not found in ", PgBin(),
                     " (run scripts/install-deps.sh, or set BUCKETMAP_PG_BIN)"));
  }
  auto template_data = TemplateDataDir();
  if (!template_data.ok()) return template_data.status();
  auto dir = MakeTempDir("bucketmap-pg-");
  if (!dir.ok()) return dir.status();

  std::unique_ptr<TestPostgres> pg(new TestPostgres());
  pg->dir_ = *dir;
  pg->data_dir_ = *dir + "/data";
  pg->log_path_ = *dir + "/postgres.log";
  const pid_t watchdog = StartWatchdog(getpid(), pg->dir_, pg->data_dir_);
  if (watchdog > 0) Watchdogs().emplace_back(pg->dir_, watchdog);

  if (absl::Status s = RunOk({"cp", "-a", *template_data, pg->data_dir_}, /*as_owner=*/true);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = pg->StartServer(/*pick_port=*/true); !s.ok()) return s;
  return pg;
}

TestPostgres::~TestPostgres() {
  if (running_) {
    Run({PgBin() + "/pg_ctl", "stop", "-D", data_dir_, "-m", "immediate", "-w", "-t", "30"},
        /*as_owner=*/true);
  }
  auto& watchdogs = Watchdogs();
  for (auto it = watchdogs.begin(); it != watchdogs.end(); ++it) {
    if (it->first == dir_) {
      kill(it->second, SIGKILL);
      waitpid(it->second, nullptr, 0);
      watchdogs.erase(it);
      break;
    }
  }
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

std::string TestPostgres::url() const { return url_for("bucketmap"); }

std::string TestPostgres::url_for(const std::string& database) const {
  return absl::StrCat("postgresql://postgres@127.0.0.1:", port_, "/", database);
}

absl::Status TestPostgres::StartServer(bool pick_port) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (pick_port || port_ == 0) port_ = PickPort();
    if (port_ == 0) return absl::InternalError("no free TCP port on 127.0.0.1");
    const std::string options =
        absl::StrCat("-p ", port_, " -k ", dir_,
                     " -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
                     " -c full_page_writes=off -c max_connections=50");
    CommandResult r = Run({PgBin() + "/pg_ctl", "start", "-D", data_dir_, "-l", log_path_, "-w",
                           "-t", "60", "-s", "-o", options},
                          /*as_owner=*/true);
    if (r.exit_code == 0) {
      running_ = true;
      return absl::OkStatus();
    }
    const std::string tail = LogTail(20);
    const bool port_taken = tail.find("could not bind") != std::string::npos ||
                            tail.find("already in use") != std::string::npos ||
                            tail.find("could not create any TCP/IP sockets") != std::string::npos;
    if (!(pick_port && port_taken)) {
      return absl::InternalError(
          absl::StrCat("pg_ctl start failed (", r.exit_code, "): ", r.out, r.err, "\n", tail));
    }
  }
  return absl::InternalError("PostgreSQL could not bind a port after 5 attempts");
}

absl::Status TestPostgres::Stop() {
  if (!running_) return absl::OkStatus();
  absl::Status s =
      RunOk({PgBin() + "/pg_ctl", "stop", "-D", data_dir_, "-m", "fast", "-w", "-t", "60", "-s"},
            /*as_owner=*/true);
  if (s.ok()) running_ = false;
  return s;
}

absl::Status TestPostgres::StartAgain() {
  if (running_) return absl::OkStatus();
  return StartServer(/*pick_port=*/false);
}

absl::Status TestPostgres::Restart() {
  if (absl::Status s = Stop(); !s.ok()) return s;
  return StartAgain();
}

absl::StatusOr<std::string> TestPostgres::Psql(const std::string& sql) const {
  CommandResult r =
      Run({PgBin() + "/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-A", "-t", "-h", "127.0.0.1",
           "-p", absl::StrCat(port_), "-U", "postgres", "-d", "bucketmap", "-c", sql});
  if (r.exit_code != 0) {
    return absl::InternalError(absl::StrCat("psql failed (", r.exit_code, "): ", r.err));
  }
  return std::string(absl::StripSuffix(r.out, "\n"));
}

absl::Status TestPostgres::CreateDatabase(const std::string& name) const {
  return RunOk(
      {PgBin() + "/createdb", "-h", "127.0.0.1", "-p", absl::StrCat(port_), "-U", "postgres", name},
      /*as_owner=*/false);
}

std::string TestPostgres::LogTail(int lines) const {
  std::ifstream in(log_path_);
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) all.push_back(line);
  const size_t from = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0;
  return absl::StrJoin(all.begin() + static_cast<std::ptrdiff_t>(from), all.end(), "\n");
}

}  // namespace bucketmap
