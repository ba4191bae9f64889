// ServerProcess: the real bucketmap-server binary as a child process, for
// tests that kill it, restart it or its PostgreSQL, or start it on a
// database another release left behind (tests/faults, tests/upgrade).
//
// Each Launch() picks fresh ports, appends the server's stderr to one log
// file, and returns once GetMapping answers. Kafka publishing is off unless
// the caller passes --kafka_brokers.
//
// Thread safety: Launch/Kill/Stop from one thread. The stubs may be used
// from any number of threads between a Launch() and the next Kill().
// Header-only.
#ifndef BUCKETMAP_TESTS_SUPPORT_SERVER_PROCESS_H_
#define BUCKETMAP_TESTS_SUPPORT_SERVER_PROCESS_H_

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "tests/support/local_process.h"

namespace bucketmap {

class ServerProcess {
 public:
  // `binary` is the server's path; `log` collects its stderr across runs.
  ServerProcess(std::string binary, std::string log)
      : binary_(std::move(binary)), log_(std::move(log)) {}
  ~ServerProcess() { Kill(); }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Starts the server on `postgres_url` with `extra` flags and waits up to
  // `timeout` for it to serve. With `same_ports`, a restart listens where
  // the previous run did, so clients' channels reconnect to it. Internal,
  // with the log, when it exits or does not serve in time.
  absl::Status Launch(const std::string& postgres_url, std::vector<std::string> extra = {},
                      absl::Duration timeout = absl::Seconds(60), bool same_ports = false) {
    Kill();
    if (!same_ports || grpc_port_ == 0) {
      grpc_port_ = FreePort();
      metrics_port_ = FreePort();
    }
    std::vector<std::string> args = {
        binary_,
        "--postgres_url=" + postgres_url,
        absl::StrCat("--grpc_listen=127.0.0.1:", grpc_port_),
        absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port_),
    };
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = Spawn(args, log_);
    const absl::Time give_up = absl::Now() + timeout;
    // The channel is made once the port is open, so it does not start in
    // reconnect backoff.
    while (!PortOpen(grpc_port_)) {
      if (waitpid(pid_, nullptr, WNOHANG) != 0) return Exited();
      if (absl::Now() > give_up) return NotServing();
      absl::SleepFor(absl::Milliseconds(20));
    }
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", grpc_port_),
                                   grpc::InsecureChannelCredentials());
    admin_ = v1::AdminService::NewStub(channel_);
    mapping_ = v1::MappingService::NewStub(channel_);
    while (absl::Now() < give_up) {
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
      v1::MappingSnapshot snapshot;
      if (mapping_->GetMapping(&ctx, v1::GetMappingRequest(), &snapshot).ok()) {
        return absl::OkStatus();
      }
      if (waitpid(pid_, nullptr, WNOHANG) != 0) return Exited();
      absl::SleepFor(absl::Milliseconds(50));
    }
    return NotServing();
  }

  // Sends `sig` and waits for the process to exit; returns its wait status
  // (-1 when nothing runs).
  int Kill(int sig = SIGKILL) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = 0;
    return status;
  }

  // True while the process has not exited.
  bool running() {
    if (pid_ <= 0) return false;
    if (waitpid(pid_, nullptr, WNOHANG) == 0) return true;
    pid_ = 0;
    return false;
  }

  pid_t pid() const { return pid_; }
  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  std::string address() const { return absl::StrCat("127.0.0.1:", grpc_port_); }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  v1::AdminService::Stub* admin() const { return admin_.get(); }
  v1::MappingService::Stub* mapping() const { return mapping_.get(); }
  std::string log() const { return ReadFile(log_); }

 private:
  absl::Status Exited() {
    pid_ = 0;
    return absl::InternalError(absl::StrCat("the server exited:\n", log()));
  }
  absl::Status NotServing() {
    return absl::InternalError(absl::StrCat("the server does not serve:\n", log()));
  }

  std::string binary_;
  std::string log_;
  pid_t pid_ = 0;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
  std::unique_ptr<v1::MappingService::Stub> mapping_;
};

// A channel to `address` that retries a lost connection every 100 ms to
// 1 s, for clients that outlive a server restart (gRPC's default backoff
// grows to minutes).
inline std::shared_ptr<grpc::Channel> FastReconnectChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

// A client context with a deadline `timeout` from now.
inline std::unique_ptr<grpc::ClientContext> ContextWithTimeout(absl::Duration timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_SUPPORT_SERVER_PROCESS_H_
