// TLS and mTLS end to end on a real in-process server: raw stubs, and the
// client library's WatchConnection with a bearer token. Certificates come
// from the openssl CLI at test time.
#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bucketmap/watch.h"
#include "gmock/gmock.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "tests/auth/auth_test_util.h"
#include "tests/server/server_fixture.h"
#include "tests/support/local_process.h"

namespace bucketmap {
namespace {

constexpr char kAdminToken[] = "tls-admin-token";
constexpr char kReaderToken[] = "tls-reader-token";

class AuthTlsTest : public ServerFixture {
 protected:
  void SetUp() override {
    auto pg = TestPostgres::Start();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
    const std::string dir = pg_->dir() + "/certs";
    std::filesystem::create_directories(dir);
    auto certs = MakeTestCerts(dir);
    ASSERT_TRUE(certs.ok()) << certs.status() << "\n" << ReadFile(dir + "/openssl.log");
    certs_ = *certs;
    StartServer();
  }

  ServerOptions Options() override {
    ServerOptions options = ServerFixture::Options();
    auto entries = ParseTokenFile(TokenLine("alice", "admin", kAdminToken) +
                                  TokenLine("rob", "reader", kReaderToken));
    EXPECT_TRUE(entries.ok());
    options.auth.tokens = std::make_shared<TokenStore>(*entries);
    options.tls.cert_file = certs_.server_cert;
    options.tls.key_file = certs_.server_key;
    if (mtls_) options.tls.client_ca_file = certs_.ca;
    return options;
  }

  std::string Address() const { return absl::StrCat("localhost:", server_->port()); }

  std::shared_ptr<grpc::Channel> TlsChannel(const std::string& cert = "",
                                            const std::string& key = "") {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFile(certs_.ca);
    if (!cert.empty()) {
      ssl.pem_cert_chain = ReadFile(cert);
      ssl.pem_private_key = ReadFile(key);
    }
    return grpc::CreateChannel(Address(), grpc::SslCredentials(ssl));
  }

  static grpc::Status GetMapping(const std::shared_ptr<grpc::Channel>& channel,
                                 const std::string& token) {
    auto stub = v1::MappingService::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    v1::MappingSnapshot snapshot;
    return stub->GetMapping(&ctx, v1::GetMappingRequest(), &snapshot);
  }

  // A WatchConnection over TLS; returns whether it synced within `wait`.
  bool WatchSyncs(const std::string& token, bool client_cert, absl::Duration wait) {
    ClientOptions options;
    options.addresses = {Address()};
    options.client_id = "tls-watcher";
    options.role = v1::CONSUMER;
    options.bearer_token = token;
    Client client(options);
    WatchConnectionOptions watch;
    watch.initial_backoff = absl::Milliseconds(20);
    watch.max_backoff = absl::Milliseconds(200);
    watch.tls.enabled = true;
    watch.tls.root_ca_file = certs_.ca;
    if (client_cert) {
      watch.tls.cert_file = certs_.client_cert;
      watch.tls.key_file = certs_.client_key;
    }
    WatchConnection connection(&client, watch);
    connection.Start();
    const absl::Time deadline = absl::Now() + wait;
    while (!connection.synced() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
    return connection.synced();
  }

  TestCerts certs_;
  bool mtls_ = false;
};

TEST_F(AuthTlsTest, TlsServesTokensAndRefusesPlaintext) {
  EXPECT_TRUE(GetMapping(TlsChannel(), kReaderToken).ok());
  EXPECT_EQ(GetMapping(TlsChannel(), "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  auto plaintext = grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(GetMapping(plaintext, kReaderToken).error_code(), grpc::StatusCode::UNAVAILABLE);
  // A client that trusts another CA does not talk to this server.
  grpc::SslCredentialsOptions other;
  other.pem_root_certs = ReadFile(pg_->dir() + "/certs/rogue-ca.pem");
  EXPECT_EQ(GetMapping(grpc::CreateChannel(Address(), grpc::SslCredentials(other)), kReaderToken)
                .error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(AuthTlsTest, MutualTlsRequiresAClientCertificateFromTheCa) {
  StopServer();
  mtls_ = true;
  StartServer();
  EXPECT_TRUE(GetMapping(TlsChannel(certs_.client_cert, certs_.client_key), kReaderToken).ok());
  // No certificate, or one from another CA: the handshake fails.
  EXPECT_EQ(GetMapping(TlsChannel(), kReaderToken).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(GetMapping(TlsChannel(certs_.rogue_cert, certs_.rogue_key), kReaderToken).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // A certificate does not replace the token.
  EXPECT_EQ(GetMapping(TlsChannel(certs_.client_cert, certs_.client_key), "").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(AuthTlsTest, ClientLibraryWatchesOverTlsWithAToken) {
  EXPECT_TRUE(WatchSyncs(kReaderToken, /*client_cert=*/false, absl::Seconds(10)));
  EXPECT_FALSE(WatchSyncs("wrong-token", /*client_cert=*/false, absl::Seconds(1)));
  EXPECT_FALSE(WatchSyncs("", /*client_cert=*/false, absl::Seconds(1)));
}

TEST_F(AuthTlsTest, ClientLibraryWatchesOverMutualTls) {
  StopServer();
  mtls_ = true;
  StartServer();
  EXPECT_TRUE(WatchSyncs(kReaderToken, /*client_cert=*/true, absl::Seconds(10)));
  EXPECT_FALSE(WatchSyncs(kReaderToken, /*client_cert=*/false, absl::Seconds(1)));
}

}  // namespace
}  // namespace bucketmap
