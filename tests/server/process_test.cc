// Tests of the bucketmap-server binary as operators run it: health,
// reflection, /metrics, SIGTERM, and refusing an edited migration.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/support/generic_calls.h"
#include "tests/support/local_process.h"
#include "tests/support/pg_harness.h"

namespace bucketmap {
namespace {

using ::testing::HasSubstr;

class ProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = TestPostgres::Start();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
    log_ = pg_->dir() + "/server.log";
  }

  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  // Starts the binary; returns once it serves, or fails the test.
  void Launch(std::vector<std::string> extra = {}) {
    grpc_port_ = FreePort();
    metrics_port_ = FreePort();
    std::vector<std::string> args = {
        BUCKETMAP_SERVER_BINARY,
        "--postgres_url=" + pg_->url(),
        absl::StrCat("--grpc_listen=127.0.0.1:", grpc_port_),
        absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port_),
    };
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = Spawn(args, log_);

  }

  // Waits until the port accepts connections (so the channel does not
  // start in reconnect backoff), then until GetMapping answers.
  bool WaitServing() {
    for (int i = 0; i < 500 && !PortOpen(grpc_port_); ++i) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", grpc_port_),
                                   grpc::InsecureChannelCredentials());
    auto stub = v1::MappingService::NewStub(channel_);
    for (int i = 0; i < 100; ++i) {
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
      v1::MappingSnapshot snap;
      if (stub->GetMapping(&ctx, v1::GetMappingRequest(), &snap).ok()) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return false;
  }

  // Waits for the process to exit; returns its wait status or -1.
  int WaitExit(absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        return status;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    return -1;
  }

  grpc::Status GenericUnary(const std::string& method, const std::string& request,
                            std::string* response) {
    return bucketmap::GenericUnary(channel_, method, request, response);
  }

  std::unique_ptr<TestPostgres> pg_;
  std::string log_;
  pid_t pid_ = 0;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(ProcessTest, ServesHealthReflectionAndMetricsThenStopsCleanlyOnSigterm) {
  Launch();
  ASSERT_TRUE(WaitServing()) << ReadFile(log_);

  // grpc.health.v1: an empty HealthCheckRequest; SERVING is `status: 1`.
  std::string health;
  grpc::Status s = GenericUnary("/grpc.health.v1.Health/Check", "", &health);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(health, std::string("\x08\x01", 2));

  // Reflection lists both services: ServerReflectionRequest{list_services: ""}.
  grpc::GenericStub stub(channel_);
  ReflectionCall call(&stub, std::string("\x3a\x00", 2));
  const std::string listed = call.Wait();
  EXPECT_THAT(listed, HasSubstr("bucketmap.v1.AdminService"));
  EXPECT_THAT(listed, HasSubstr("bucketmap.v1.MappingService"));

  const std::string metrics = HttpGet(metrics_port_, "/metrics");
  EXPECT_THAT(metrics, HasSubstr("bucketmap_mapping_version 0"));
  EXPECT_THAT(metrics, HasSubstr("bucketmap_rpc_requests_total{"));
  EXPECT_THAT(metrics, HasSubstr("method=\"bucketmap.v1.MappingService/GetMapping\""));
  EXPECT_THAT(metrics, HasSubstr("bucketmap_rpc_duration_seconds_bucket{"));

  ASSERT_EQ(kill(pid_, SIGTERM), 0);
  const int status = WaitExit(absl::Seconds(20));
  ASSERT_NE(status, -1) << "server did not exit after SIGTERM";
  EXPECT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << ReadFile(log_);
}

TEST_F(ProcessTest, RefusesToStartWhenAnAppliedMigrationWasEdited) {
  const std::string dir = pg_->dir() + "/migrations";
  std::filesystem::copy(BUCKETMAP_MIGRATIONS_DIR, dir);
  Launch({"--migrations_dir=" + dir});
  ASSERT_TRUE(WaitServing()) << ReadFile(log_);
  kill(pid_, SIGTERM);
  ASSERT_NE(WaitExit(absl::Seconds(20)), -1);

  std::string first;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (first.empty() || entry.path().string() < first) first = entry.path().string();
  }
  std::ofstream(first, std::ios::app) << "\n-- edited after it was applied\n";
  Launch({"--migrations_dir=" + dir});
  const int status = WaitExit(absl::Seconds(20));
  ASSERT_NE(status, -1);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
  EXPECT_THAT(ReadFile(log_), HasSubstr("edited"));
}

}  // namespace
}  // namespace bucketmap
