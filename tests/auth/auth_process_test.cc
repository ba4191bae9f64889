// The server binary and bucketctl as operators run them: tokens reloaded
// on SIGHUP (a bad file keeps the old ones), tokens never in the log, the
// development-mode warning, and bucketctl over mTLS with a token.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/auth/auth_test_util.h"
#include "tests/support/local_process.h"
#include "tests/support/pg_harness.h"

namespace bucketmap {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAdmin1[] = "adm1n-t0ken-first-6d1f0c";
constexpr char kAdmin2[] = "adm1n-t0ken-second-a93b2e";
constexpr char kReader[] = "re4der-t0ken-57e8aa";
constexpr char kPresented[] = "presented-but-unknown-c0ffee";

struct CtlRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

class AuthProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = TestPostgres::Start();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
    log_ = pg_->dir() + "/server.log";
    tokens_ = pg_->dir() + "/tokens";
  }

  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  void Launch(std::vector<std::string> extra) {
    port_ = FreePort();
    std::vector<std::string> args = {BUCKETMAP_SERVER_BINARY, "--postgres_url=" + pg_->url(),
                                     absl::StrCat("--grpc_listen=127.0.0.1:", port_),
                                     "--metrics_listen="};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = Spawn(args, log_);
    for (int i = 0; i < 500 && !PortOpen(port_) && !Exited(); ++i) {
      absl::SleepFor(absl::Milliseconds(20));
    }
  }

  // True once the server has exited (it is then reaped: exit_status_).
  bool Exited() {
    if (pid_ <= 0) return true;
    if (waitpid(pid_, &exit_status_, WNOHANG) != pid_) return false;
    pid_ = 0;
    return true;
  }

  // Runs bucketctl with `env` (e.g. "BUCKETMAP_TOKEN=x") and `args`.
  CtlRun Bucketctl(const std::string& env, const std::vector<std::string>& args) {
    std::string command =
        absl::StrCat(env, " '", BUCKETCTL_BINARY, "' --server localhost:", port_, " --timeout 5");
    for (const std::string& a : args) absl::StrAppend(&command, " '", a, "'");
    absl::StrAppend(&command, " 2>&1");
    CtlRun run;
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) return run;
    char buf[4096];
    for (size_t n; (n = fread(buf, 1, sizeof(buf), pipe)) > 0;) run.output.append(buf, n);
    const int status = pclose(pipe);
    run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return run;
  }

  // Retries `args` until it exits 0 (the server may still be starting, or
  // reloading); returns the last run.
  CtlRun BucketctlUntilOk(const std::string& env, const std::vector<std::string>& args) {
    CtlRun run;
    for (int i = 0; i < 50; ++i) {
      run = Bucketctl(env, args);
      if (run.exit_code == 0) break;
      absl::SleepFor(absl::Milliseconds(200));
    }
    return run;
  }

  int Stop() {
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = 0;
    return status;
  }

  std::unique_ptr<TestPostgres> pg_;
  std::string log_;
  std::string tokens_;
  pid_t pid_ = 0;
  int exit_status_ = 0;
  int port_ = 0;
};

std::string TokenEnv(const std::string& token) { return "BUCKETMAP_TOKEN=" + token; }

TEST_F(AuthProcessTest, SighupReloadsTokensABadFileKeepsThemAndTokensAreNeverLogged) {
  WriteTextFile(tokens_, "# test tokens\n" + TokenLine("alice", "admin", kAdmin1) +
                             TokenLine("rob", "reader", kReader));
  Launch({"--auth_tokens_file=" + tokens_});
  const std::vector<std::string> create = {"create-bucket",       "--name",   "b1",       "--topic",
                                           "ingestion=events_b1", "--reason", "auth test"};
  CtlRun created = BucketctlUntilOk(TokenEnv(kAdmin1), create);
  ASSERT_EQ(created.exit_code, 0) << created.output << ReadFile(log_);
  EXPECT_THAT(created.output, Not(HasSubstr(kAdmin1)));

  CtlRun as_reader =
      Bucketctl("", {"--token", kReader, "assign", "7", "--bucket", "b1", "--reason", "r"});
  EXPECT_EQ(as_reader.exit_code, 1);
  EXPECT_THAT(as_reader.output, HasSubstr("PERMISSION_DENIED"));
  EXPECT_THAT(as_reader.output, Not(HasSubstr(kReader)));
  EXPECT_EQ(Bucketctl("", {"--token", kReader, "get-mapping"}).exit_code, 0);
  CtlRun anonymous = Bucketctl("", {"list-buckets"});
  EXPECT_EQ(anonymous.exit_code, 1);
  EXPECT_THAT(anonymous.output, HasSubstr("UNAUTHENTICATED"));
  CtlRun unknown = Bucketctl(TokenEnv(kPresented), {"list-buckets"});
  EXPECT_THAT(unknown.output, HasSubstr("UNAUTHENTICATED"));
  EXPECT_THAT(unknown.output, Not(HasSubstr(kPresented)));

  // The declared actor is ignored: the change log names the token.
  ASSERT_EQ(Bucketctl(TokenEnv(kAdmin1),
                      {"--actor", "mallory", "assign", "7", "--bucket", "b1", "--reason", "r"})
                .exit_code,
            0);
  CtlRun history = Bucketctl(TokenEnv(kAdmin1), {"--json", "history"});
  EXPECT_THAT(history.output, HasSubstr("\"actor\":\"alice\""));
  EXPECT_THAT(history.output, Not(HasSubstr("mallory")));

  // Rotation: the new token in, the old one out, SIGHUP.
  WriteTextFile(tokens_,
                TokenLine("alice", "admin", kAdmin2) + TokenLine("rob", "reader", kReader));
  kill(pid_, SIGHUP);
  CtlRun rotated = BucketctlUntilOk(TokenEnv(kAdmin2), {"list-buckets"});
  EXPECT_EQ(rotated.exit_code, 0) << rotated.output << ReadFile(log_);
  EXPECT_THAT(Bucketctl(TokenEnv(kAdmin1), {"list-buckets"}).output, HasSubstr("UNAUTHENTICATED"));

  // A bad file (a token pasted instead of its hash) keeps the tokens.
  WriteTextFile(tokens_, absl::StrCat("alice admin ", kAdmin1, "\n"));
  kill(pid_, SIGHUP);
  for (int i = 0; i < 100 && !absl::StrContains(ReadFile(log_), "tokens not reloaded"); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  const std::string log_after_bad = ReadFile(log_);
  EXPECT_THAT(log_after_bad, HasSubstr("tokens not reloaded"));
  EXPECT_THAT(log_after_bad, HasSubstr("line 1: hash"));
  EXPECT_EQ(Bucketctl(TokenEnv(kAdmin2), {"list-buckets"}).exit_code, 0);
  EXPECT_THAT(Bucketctl(TokenEnv(kAdmin1), {"list-buckets"}).output, HasSubstr("UNAUTHENTICATED"));

  EXPECT_EQ(Stop(), 0);
  const std::string log = ReadFile(log_);
  EXPECT_THAT(log, HasSubstr("authentication on: 2 tokens"));
  EXPECT_THAT(log, HasSubstr("reloaded " + tokens_ + ": 2 tokens"));
  for (const char* token : {kAdmin1, kAdmin2, kReader, kPresented}) {
    EXPECT_THAT(log, Not(HasSubstr(token))) << token;
  }
}

TEST_F(AuthProcessTest, ABadTokensFileStopsTheStart) {
  WriteTextFile(tokens_, TokenLine("alice", "admin", kAdmin1) + "rob reader\n");
  Launch({"--auth_tokens_file=" + tokens_});
  if (pid_ > 0) {
    waitpid(pid_, &exit_status_, 0);
    pid_ = 0;
  }
  ASSERT_TRUE(WIFEXITED(exit_status_));
  EXPECT_EQ(WEXITSTATUS(exit_status_), 1);
  const std::string log = ReadFile(log_);
  EXPECT_THAT(log, HasSubstr("--auth_tokens_file " + tokens_ + ": line 2"));
  EXPECT_THAT(log, Not(HasSubstr(kAdmin1)));
}

TEST_F(AuthProcessTest, WithoutATokensFileItWarnsAndAnyoneMayWrite) {
  Launch({});
  CtlRun created = BucketctlUntilOk("", {"--actor", "dev", "create-bucket", "--name", "b1",
                                         "--topic", "ingestion=e1", "--reason", "dev mode"});
  EXPECT_EQ(created.exit_code, 0) << created.output;
  EXPECT_THAT(Bucketctl("", {"--json", "history"}).output, HasSubstr("\"actor\":\"dev\""));
  EXPECT_THAT(ReadFile(log_), HasSubstr("AUTHENTICATION IS OFF"));
  EXPECT_EQ(Stop(), 0);
}

TEST_F(AuthProcessTest, BucketctlOverMutualTlsWithAToken) {
  const std::string dir = pg_->dir() + "/certs";
  std::filesystem::create_directories(dir);
  auto certs = MakeTestCerts(dir);
  ASSERT_TRUE(certs.ok()) << certs.status() << ReadFile(dir + "/openssl.log");
  WriteTextFile(tokens_, TokenLine("alice", "admin", kAdmin1));
  Launch({"--auth_tokens_file=" + tokens_, "--tls_cert=" + certs->server_cert,
          "--tls_key=" + certs->server_key, "--tls_client_ca=" + certs->ca});
  const std::vector<std::string> tls = {"--tls_ca",         certs->ca,   "--tls_cert",
                                        certs->client_cert, "--tls_key", certs->client_key};
  std::vector<std::string> list = tls;
  list.push_back("list-buckets");
  CtlRun ok = BucketctlUntilOk(TokenEnv(kAdmin1), list);
  EXPECT_EQ(ok.exit_code, 0) << ok.output << ReadFile(log_);

  // Without a client certificate, or without TLS at all: refused.
  CtlRun no_cert = Bucketctl(TokenEnv(kAdmin1), {"--tls_ca", certs->ca, "list-buckets"});
  EXPECT_EQ(no_cert.exit_code, 1);
  EXPECT_THAT(no_cert.output, HasSubstr("UNAVAILABLE"));
  EXPECT_EQ(Bucketctl(TokenEnv(kAdmin1), {"list-buckets"}).exit_code, 1);
  // With a certificate but no token: the certificate is not an identity.
  EXPECT_THAT(Bucketctl("", list).output, HasSubstr("UNAUTHENTICATED"));
  // Half a key pair is a usage error.
  EXPECT_EQ(Bucketctl("", {"--tls_cert", certs->client_cert, "list-buckets"}).exit_code, 2);
  EXPECT_EQ(Stop(), 0);
  EXPECT_THAT(ReadFile(log_), HasSubstr("client certificates required (mTLS)"));
}

}  // namespace
}  // namespace bucketmap
