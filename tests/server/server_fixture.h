// ServerFixture: a real bucketmap server in-process, on a throwaway
// PostgreSQL, with gRPC stubs connected to it.
#ifndef BUCKETMAP_TESTS_SERVER_SERVER_FIXTURE_H_
#define BUCKETMAP_TESTS_SERVER_SERVER_FIXTURE_H_

#include <memory>
#include <string>

#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "server/store/pg_store.h"
#include "server/server.h"
#include "tests/support/pg_harness.h"

namespace bucketmap {

class ServerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = TestPostgres::Start();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
    StartServer();
  }

  void TearDown() override { StopServer(); }

  virtual ServerOptions Options() {
    ServerOptions options;
    options.grpc_listen = "127.0.0.1:0";
    options.refresh_interval = absl::Milliseconds(200);
    options.admin.write_timeout = absl::Seconds(3);
    // The server's defaults open handoffs with a 1 h move cooldown; tests
    // about handoffs turn them on, with the cooldown they need.
    options.handoff.enabled = false;
    options.handoff.move_cooldown = absl::ZeroDuration();
    return options;
  }

  // The store's options but its URL; tests override it to set a TEST_ hook.
  virtual PgStoreOptions StoreOptions() {
    PgStoreOptions options;
    options.connect_timeout = absl::Seconds(1);
    return options;
  }

  // Starts a server on `listen` (default: a free port) over `database_url`
  // (default: the fixture's database), and stubs connected to it.
  void StartServer(const std::string& listen = "", const std::string& database_url = "") {
    PgStoreOptions store_options = StoreOptions();
    store_options.url = database_url.empty() ? pg_->url() : database_url;
    auto store = PgStore::Open(store_options);
    ASSERT_TRUE(store.ok()) << store.status();
    ServerOptions options = Options();
    if (!listen.empty()) options.grpc_listen = listen;
    auto server = BucketmapServer::Start(*std::move(store), options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    channel_ = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                         grpc::InsecureChannelCredentials(), args);
    admin_ = v1::AdminService::NewStub(channel_);
    mapping_ = v1::MappingService::NewStub(channel_);
  }

  void StopServer() {
    admin_.reset();
    mapping_.reset();
    channel_.reset();
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
    server_.reset();
  }

  // A client context with a deadline and an actor.
  static std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout = absl::Seconds(10)) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    ctx->AddMetadata("x-bucketmap-actor", "test-admin");
    return ctx;
  }

  // Creates an ACTIVE bucket with an ingestion topic; returns its id.
  int32_t MakeBucket(const std::string& name, const std::string& pool = "default",
                     int32_t weight = 100) {
    v1::CreateBucketRequest req;
    req.mutable_bucket()->set_name(name);
    req.mutable_bucket()->set_pool(pool);
    req.mutable_bucket()->set_weight(weight);
    (*req.mutable_bucket()->mutable_topics())["ingestion"] = "events_" + name;
    req.set_reason("test setup");
    v1::CreateBucketResponse resp;
    grpc::Status s = admin_->CreateBucket(Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.bucket().id();
  }

  grpc::Status Pin(int64_t team, int32_t bucket, v1::AssignTeamResponse* resp = nullptr) {
    v1::AssignTeamRequest req;
    req.set_team_id(team);
    req.set_bucket_id(bucket);
    req.set_reason("pin for test");
    v1::AssignTeamResponse local;
    return admin_->AssignTeam(Ctx().get(), req, resp != nullptr ? resp : &local);
  }

  int64_t Version() {
    v1::MappingSnapshot snap;
    grpc::Status s = mapping_->GetMapping(Ctx().get(), v1::GetMappingRequest(), &snap);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return snap.version();
  }

  std::unique_ptr<TestPostgres> pg_;
  std::unique_ptr<BucketmapServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
  std::unique_ptr<v1::MappingService::Stub> mapping_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_SERVER_SERVER_FIXTURE_H_
