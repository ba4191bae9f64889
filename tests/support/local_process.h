// Helpers for tests and benchmarks that run servers as child processes and
// talk to them over loopback: free ports, plain HTTP GETs (for /metrics)
// and metric values, spawning with a log file, and reading files.
// Header-only.
#ifndef BUCKETMAP_TESTS_SUPPORT_LOCAL_PROCESS_H_
#define BUCKETMAP_TESTS_SUPPORT_LOCAL_PROCESS_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace bucketmap {

inline sockaddr_in Loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  return addr;
}

// A TCP port on 127.0.0.1 that was free a moment ago.
inline int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr = Loopback(0);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// True when something accepts connections on 127.0.0.1:`port`.
inline bool PortOpen(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr = Loopback(port);
  const bool open = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return open;
}

// The whole HTTP/1.0 response to GET `path` on 127.0.0.1:`port`; empty
// when nothing answers.
inline std::string HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr = Loopback(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  (void)!write(fd, request.data(), request.size());
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) out.append(buf, n);
  close(fd);
  return out;
}

// The value of an unlabelled metric in a Prometheus text exposition (as
// HttpGet(port, "/metrics") returns it); -1 when absent.
inline double MetricValue(const std::string& exposition, const std::string& name) {
  const std::string prefix = name + " ";
  std::istringstream lines(exposition);
  for (std::string line; std::getline(lines, line);) {
    if (line.compare(0, prefix.size(), prefix) != 0) continue;
    try {
      return std::stod(line.substr(prefix.size()));
    } catch (...) {
      return -1;
    }
  }
  return -1;
}

// A file's contents; empty when it cannot be read.
inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Starts `args` (args[0] is the binary's path) with stderr appended to
// `log`; returns the child's pid.
inline pid_t Spawn(std::vector<std::string> args, const std::string& log) {
  pid_t pid = fork();
  if (pid == 0) {
    if (std::freopen(log.c_str(), "a", stderr) == nullptr) _exit(126);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_SUPPORT_LOCAL_PROCESS_H_
