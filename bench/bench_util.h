// Helpers shared by the benchmark programs that talk to a server over
// gRPC: RPC checks, servers as child processes, process figures. Flags and
// sanity checks are in bench_main.h, which this includes.
//
// Thread safety: every function may be called from any thread, except
// SpawnServer() (see there).
#ifndef BUCKETMAP_BENCH_BENCH_UTIL_H_
#define BUCKETMAP_BENCH_BENCH_UTIL_H_

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "bench/bench_main.h"
#include "grpcpp/support/status.h"
#include "tests/support/local_process.h"

namespace bucketmap {

// The name of a gRPC status code, as in grpc/impl/codegen/status.h.
inline const char* GrpcCodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < static_cast<int>(sizeof(kNames) / sizeof(kNames[0])) ? kNames[i] : "?";
}

// Exits the benchmark (Fatal()) on an RPC failure, with the server's code
// and message: a number measured past a failure would be meaningless.
inline void Check(const grpc::Status& status, const char* what) {
  if (!status.ok()) {
    Fatal("%s failed: %s (%d): %s", what, GrpcCodeName(status.error_code()),
          static_cast<int>(status.error_code()), status.error_message().c_str());
  }
}

// Starts `args` (args[0] is the binary's path) with stdout and stderr
// appended to `log`; returns the child's pid. Unlike Spawn(), the child
// gets SIGKILL when the benchmark ends without stopping it (a failed
// check calls exit(), a signal or CI's timeout kills it), so no server
// outlives the benchmark, holding its ports or the stdout of whoever ran
// it. Call it from the main thread: Linux sends that signal when the
// *thread* that forked ends.
inline pid_t SpawnServer(std::vector<std::string> args, const std::string& log) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    // Only async-signal-safe calls: the benchmark has threads.
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(125);
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0) _exit(126);
    execv(argv[0], argv.data());
    _exit(127);
  }
  if (pid < 0) Fatal("fork: %s", std::strerror(errno));
  return pid;
}

// The last `lines` lines of a server's log, for a failure message: the log
// lives in the throwaway PostgreSQL's directory, which goes with the
// benchmark.
inline std::string LogTail(const std::string& path, int lines = 20) {
  const std::string text = ReadFile(path);
  size_t start = text.size();
  for (int n = 0; start > 0 && n <= lines;) {
    if (text[--start] == '\n') ++n;
  }
  return text.substr(start == 0 ? 0 : start + 1);
}

// Resident set size of a process, from /proc.
inline double ProcessRssMb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      double kb = 0;
      in >> kb;
      return kb / 1024;
    }
    in.ignore(1 << 20, '\n');
  }
  return -1;
}

// CPU time (user + system) of a process, in seconds, from /proc.
inline double ProcessCpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string field;
  double ticks = 0;
  for (int i = 1; in >> field && i <= 15; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);
  }
  return ticks / sysconf(_SC_CLK_TCK);
}

}  // namespace bucketmap

#endif  // BUCKETMAP_BENCH_BENCH_UTIL_H_
