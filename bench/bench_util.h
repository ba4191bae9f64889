// Small helpers shared by the benchmark programs.
#ifndef BUCKETMAP_BENCH_BENCH_UTIL_H_
#define BUCKETMAP_BENCH_BENCH_UTIL_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "grpcpp/support/status.h"
#include "tests/support/local_process.h"

namespace bucketmap {

// Exits the benchmark on an RPC failure: a number measured past a failure
// would be meaningless.
inline void Check(const grpc::Status& status, const char* what) {
  if (!status.ok()) {
    std::fprintf(stderr, "%s failed: %d %s\n", what, status.error_code(),
                 status.error_message().c_str());
    std::exit(1);
  }
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

}  // namespace bucketmap

#endif  // BUCKETMAP_BENCH_BENCH_UTIL_H_
