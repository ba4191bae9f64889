// Authentication, authorisation and limits of a real in-process server on
// a throwaway PostgreSQL: every role against every service, with and
// without anonymous reads; the recorded actor; health and reflection
// without a token; watch stream limits; the write rate limit; deadlines.
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/auth/auth_test_util.h"
#include "tests/server/server_fixture.h"
#include "tests/support/generic_calls.h"

namespace bucketmap {
namespace {

using ::testing::HasSubstr;

constexpr char kAdminToken[] = "admin-token-3f9a";
constexpr char kOtherAdminToken[] = "admin-token-other";
constexpr char kReaderToken[] = "reader-token-77c1";

enum class Caller { kNone, kUnknownToken, kNotBearer, kReader, kAdmin };

const char* CallerName(Caller c) {
  switch (c) {
    case Caller::kNone:
      return "no token";
    case Caller::kUnknownToken:
      return "unknown token";
    case Caller::kNotBearer:
      return "not a bearer token";
    case Caller::kReader:
      return "reader";
    case Caller::kAdmin:
      return "admin";
  }
  return "?";
}

std::unique_ptr<grpc::ClientContext> CtxAs(Caller caller,
                                           absl::Duration timeout = absl::Seconds(10)) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  switch (caller) {
    case Caller::kNone:
      break;
    case Caller::kUnknownToken:
      ctx->AddMetadata("authorization", "Bearer not-a-known-token");
      break;
    case Caller::kNotBearer:
      ctx->AddMetadata("authorization", std::string("Basic ") + kAdminToken);
      break;
    case Caller::kReader:
      ctx->AddMetadata("authorization", std::string("Bearer ") + kReaderToken);
      break;
    case Caller::kAdmin:
      ctx->AddMetadata("authorization", std::string("Bearer ") + kAdminToken);
      break;
  }
  return ctx;
}

std::unique_ptr<grpc::ClientContext> CtxWithToken(const std::string& token) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  ctx->AddMetadata("authorization", "Bearer " + token);
  return ctx;
}

class AuthServerTest : public ServerFixture {
 protected:
  ServerOptions Options() override {
    ServerOptions options = ServerFixture::Options();
    auto entries = ParseTokenFile(TokenLine("alice", "admin", kAdminToken) +
                                  TokenLine("carol", "admin", kOtherAdminToken) +
                                  TokenLine("rob", "reader", kReaderToken));
    EXPECT_TRUE(entries.ok()) << entries.status();
    options.auth.tokens = std::make_shared<TokenStore>(*entries);
    if (!tokens_file_.empty()) {
      options.auth.tokens = nullptr;
      options.auth.tokens_file = tokens_file_;
    }
    options.auth.allow_anonymous_reads = anonymous_reads_;
    options.watch.max_streams = max_streams_;
    options.watch.max_streams_per_client = max_streams_per_client_;
    options.admin.write_rate_limit = write_rate_limit_;
    options.admin.max_bulk_assign = 3;
    if (max_message_size_ > 0) options.max_message_size = max_message_size_;
    return options;
  }

  void Restart() {
    StopServer();
    StartServer();
  }

  int32_t MakeBucketAsAdmin(const std::string& name) {
    v1::CreateBucketRequest req;
    req.mutable_bucket()->set_name(name);
    (*req.mutable_bucket()->mutable_topics())["ingestion"] = "events_" + name;
    req.set_reason("test setup");
    v1::CreateBucketResponse resp;
    grpc::Status s = admin_->CreateBucket(CtxAs(Caller::kAdmin).get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.bucket().id();
  }

  grpc::Status AssignAs(grpc::ClientContext* ctx, int64_t team, int32_t bucket,
                        bool dry_run = false) {
    v1::AssignTeamRequest req;
    req.set_team_id(team);
    req.set_bucket_id(bucket);
    req.set_reason("auth test");
    req.set_dry_run(dry_run);
    v1::AssignTeamResponse resp;
    return admin_->AssignTeam(ctx, req, &resp);
  }

  std::string tokens_file_;
  bool anonymous_reads_ = false;
  int max_streams_ = 0;
  int max_message_size_ = 0;
  int max_streams_per_client_ = 0;
  RateLimit write_rate_limit_;
};

// A WatchMapping stream that has subscribed and read its first message
// (or failed).
struct Watch {
  std::unique_ptr<grpc::ClientContext> ctx;
  std::unique_ptr<grpc::ClientReaderWriter<v1::WatchRequest, v1::WatchResponse>> stream;
  grpc::Status status;  // of the failed stream; OK while it runs

  void Close() {
    if (stream == nullptr) return;
    ctx->TryCancel();
    v1::WatchResponse ignored;
    while (stream->Read(&ignored)) {
    }
    stream->Finish();
    stream.reset();
  }
  ~Watch() { Close(); }
};

std::unique_ptr<Watch> OpenWatch(v1::MappingService::Stub* stub,
                                 std::unique_ptr<grpc::ClientContext> ctx,
                                 const std::string& client_id) {
  auto watch = std::make_unique<Watch>();
  watch->ctx = std::move(ctx);
  watch->stream = stub->WatchMapping(watch->ctx.get());
  v1::WatchRequest subscribe;
  subscribe.mutable_subscribe()->set_client_id(client_id);
  subscribe.mutable_subscribe()->set_role(v1::OBSERVER);
  watch->stream->Write(subscribe);
  v1::WatchResponse first;
  if (!watch->stream->Read(&first)) {
    watch->status = watch->stream->Finish();
    watch->stream.reset();
  }
  return watch;
}

grpc::StatusCode WatchCode(v1::MappingService::Stub* stub, Caller caller) {
  return OpenWatch(stub, CtxAs(caller), "matrix")->status.error_code();
}

TEST_F(AuthServerTest, EveryRoleAgainstEveryServiceWithAndWithoutAnonymousReads) {
  for (bool anonymous : {false, true}) {
    anonymous_reads_ = anonymous;
    Restart();
    const int32_t bucket = MakeBucketAsAdmin(absl::StrCat("b", anonymous));
    for (Caller caller : {Caller::kNone, Caller::kUnknownToken, Caller::kNotBearer, Caller::kReader,
                          Caller::kAdmin}) {
      SCOPED_TRACE(absl::StrCat(CallerName(caller), ", anonymous reads ", anonymous));
      grpc::StatusCode read = grpc::StatusCode::OK;
      grpc::StatusCode write = grpc::StatusCode::OK;
      switch (caller) {
        case Caller::kNone:
          read = anonymous ? grpc::StatusCode::OK : grpc::StatusCode::UNAUTHENTICATED;
          write = grpc::StatusCode::UNAUTHENTICATED;
          break;
        case Caller::kUnknownToken:
        case Caller::kNotBearer:
          // A token that is sent must be valid, even where none is needed.
          read = grpc::StatusCode::UNAUTHENTICATED;
          write = grpc::StatusCode::UNAUTHENTICATED;
          break;
        case Caller::kReader:
          write = grpc::StatusCode::PERMISSION_DENIED;
          break;
        case Caller::kAdmin:
          break;
      }
      v1::MappingSnapshot snapshot;
      EXPECT_EQ(mapping_->GetMapping(CtxAs(caller).get(), v1::GetMappingRequest(), &snapshot)
                    .error_code(),
                read);
      v1::GetTeamRequest team;
      team.set_team_id(42);
      v1::TeamRoute route;
      EXPECT_EQ(mapping_->GetTeam(CtxAs(caller).get(), team, &route).error_code(), read);
      EXPECT_EQ(WatchCode(mapping_.get(), caller), read);

      v1::ListBucketsResponse buckets;
      EXPECT_EQ(
          admin_->ListBuckets(CtxAs(caller).get(), v1::ListBucketsRequest(), &buckets).error_code(),
          write);
      v1::GetHistoryResponse history;
      EXPECT_EQ(
          admin_->GetHistory(CtxAs(caller).get(), v1::GetHistoryRequest(), &history).error_code(),
          write);
      v1::ListClientsResponse clients;
      EXPECT_EQ(
          admin_->ListClients(CtxAs(caller).get(), v1::ListClientsRequest(), &clients).error_code(),
          write);
      EXPECT_EQ(AssignAs(CtxAs(caller).get(), 100 + static_cast<int>(caller), bucket).error_code(),
                write);
      // Auth comes before validation: an invalid request from a stranger
      // learns nothing.
      v1::AssignTeamRequest invalid;
      v1::AssignTeamResponse ignored;
      EXPECT_EQ(admin_->AssignTeam(CtxAs(caller).get(), invalid, &ignored).error_code(),
                write == grpc::StatusCode::OK ? grpc::StatusCode::INVALID_ARGUMENT : write);
    }
  }
}

TEST_F(AuthServerTest, FailuresSayWhatIsWrongWithoutEchoingTheToken) {
  v1::ListBucketsResponse buckets;
  grpc::Status none = admin_->ListBuckets(CtxAs(Caller::kNone).get(), {}, &buckets);
  EXPECT_THAT(none.error_message(), HasSubstr("Bearer"));
  grpc::Status unknown = admin_->ListBuckets(CtxAs(Caller::kUnknownToken).get(), {}, &buckets);
  EXPECT_THAT(unknown.error_message(), HasSubstr("unknown token"));
  EXPECT_THAT(unknown.error_message(), ::testing::Not(HasSubstr("not-a-known-token")));
  grpc::Status reader = admin_->ListBuckets(CtxAs(Caller::kReader).get(), {}, &buckets);
  EXPECT_THAT(reader.error_message(), HasSubstr("\"rob\" has role reader"));
  EXPECT_THAT(reader.error_message(), ::testing::Not(HasSubstr(kReaderToken)));
}

TEST_F(AuthServerTest, TheActorInTheChangeLogIsTheTokenName) {
  const int32_t bucket = MakeBucketAsAdmin("b1");
  auto ctx = CtxAs(Caller::kAdmin);
  // With auth on, a declared actor is ignored: the token says who it is.
  ctx->AddMetadata("x-bucketmap-actor", "mallory");
  ASSERT_TRUE(AssignAs(ctx.get(), 7, bucket).ok());
  ASSERT_TRUE(AssignAs(CtxWithToken(kOtherAdminToken).get(), 8, bucket).ok());

  v1::GetHistoryResponse history;
  ASSERT_TRUE(admin_->GetHistory(CtxAs(Caller::kAdmin).get(), {}, &history).ok());
  ASSERT_EQ(history.records_size(), 3);
  EXPECT_EQ(history.records(0).actor(), "alice");  // CreateBucket
  EXPECT_EQ(history.records(1).actor(), "alice");
  EXPECT_EQ(history.records(2).actor(), "carol");
}

// Every method of both services, by reflection, so a method added later
// without a check fails here: no token is UNAUTHENTICATED, and a reader
// token is PERMISSION_DENIED on AdminService.
TEST_F(AuthServerTest, EveryMethodOfEveryServiceChecksTheToken) {
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  for (const char* name : {"bucketmap.v1.AdminService", "bucketmap.v1.MappingService"}) {
    const google::protobuf::ServiceDescriptor* service = pool->FindServiceByName(name);
    ASSERT_NE(service, nullptr) << name;
    const bool admin = service->name() == "AdminService";
    for (int i = 0; i < service->method_count(); ++i) {
      const google::protobuf::MethodDescriptor* method = service->method(i);
      if (method->client_streaming() || method->server_streaming()) continue;  // WatchMapping
      const std::string path = absl::StrCat("/", service->full_name(), "/", method->name());
      std::string ignored;
      const grpc::StatusCode anonymous = GenericUnary(channel_, path, "", &ignored).error_code();
      // A method in the proto that the server does not implement yet
      // exposes nothing.
      if (anonymous == grpc::StatusCode::UNIMPLEMENTED) continue;
      EXPECT_EQ(anonymous, grpc::StatusCode::UNAUTHENTICATED) << path;
      const grpc::StatusCode as_reader =
          GenericUnary(channel_, path, "", &ignored, kReaderToken).error_code();
      if (admin) {
        EXPECT_EQ(as_reader, grpc::StatusCode::PERMISSION_DENIED) << path;
      } else {
        // Past auth (an empty GetTeam is then INVALID_ARGUMENT).
        EXPECT_NE(as_reader, grpc::StatusCode::UNAUTHENTICATED) << path;
        EXPECT_NE(as_reader, grpc::StatusCode::PERMISSION_DENIED) << path;
      }
    }
  }
}

TEST_F(AuthServerTest, HealthAndReflectionNeedNoToken) {
  std::string health;
  grpc::Status s = GenericUnary(channel_, "/grpc.health.v1.Health/Check", "", &health);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(health, std::string("\x08\x01", 2));  // SERVING

  grpc::GenericStub stub(channel_);
  // ServerReflectionRequest{list_services: ""}: field 7, empty string.
  ReflectionCall call(&stub, std::string("\x3a\x00", 2));
  EXPECT_THAT(call.Wait(), HasSubstr("bucketmap.v1.AdminService"));
}

TEST_F(AuthServerTest, WatchStreamLimitsInTotalAndPerClient) {
  max_streams_ = 3;
  max_streams_per_client_ = 2;
  Restart();
  auto a1 = OpenWatch(mapping_.get(), CtxAs(Caller::kReader), "client-a");
  auto a2 = OpenWatch(mapping_.get(), CtxAs(Caller::kReader), "client-a");
  ASSERT_TRUE(a1->status.ok()) << a1->status.error_message();
  ASSERT_TRUE(a2->status.ok()) << a2->status.error_message();
  auto a3 = OpenWatch(mapping_.get(), CtxAs(Caller::kReader), "client-a");
  EXPECT_EQ(a3->status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(a3->status.error_message(), HasSubstr("--max_watch_streams_per_client"));
  EXPECT_THAT(a3->status.error_message(), HasSubstr("client-a"));

  auto b1 = OpenWatch(mapping_.get(), CtxAs(Caller::kReader), "client-b");
  ASSERT_TRUE(b1->status.ok()) << b1->status.error_message();
  auto c1 = OpenWatch(mapping_.get(), CtxAs(Caller::kReader), "client-c");
  EXPECT_EQ(c1->status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(c1->status.error_message(), HasSubstr("--max_watch_streams:"));
  EXPECT_EQ(server_->watch_hub().stream_count(), 3u);

  // A closed stream frees its place, in the total and for its client.
  a1->Close();
  for (int i = 0; i < 100 && server_->watch_hub().stream_count() > 2; ++i) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  auto a4 = OpenWatch(mapping_.get(), CtxAs(Caller::kReader), "client-a");
  EXPECT_TRUE(a4->status.ok()) << a4->status.error_message();
}

TEST_F(AuthServerTest, WriteRateLimitPerTokenAnswersResourceExhausted) {
  write_rate_limit_.per_second = 1.0 / 60;  // effectively no refill during the test
  write_rate_limit_.burst = 2;
  Restart();
  const int32_t bucket = MakeBucketAsAdmin("b1");  // alice's first write
  ASSERT_TRUE(AssignAs(CtxAs(Caller::kAdmin).get(), 1, bucket).ok());
  // Dry runs commit nothing and are not counted.
  ASSERT_TRUE(AssignAs(CtxAs(Caller::kAdmin).get(), 2, bucket, /*dry_run=*/true).ok());
  grpc::Status limited = AssignAs(CtxAs(Caller::kAdmin).get(), 2, bucket);
  EXPECT_EQ(limited.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(limited.error_message(), HasSubstr("--write_rate_limit"));
  EXPECT_THAT(limited.error_message(), HasSubstr("\"alice\""));
  // The limit is per token: carol still writes, and reads are not limited.
  EXPECT_TRUE(AssignAs(CtxWithToken(kOtherAdminToken).get(), 3, bucket).ok());
  v1::ListBucketsResponse buckets;
  EXPECT_TRUE(admin_->ListBuckets(CtxAs(Caller::kAdmin).get(), {}, &buckets).ok());
}

TEST_F(AuthServerTest, BulkAssignSizeCap) {
  const int32_t bucket = MakeBucketAsAdmin("b1");
  v1::BulkAssignRequest req;
  req.set_reason("too many");
  for (int64_t team = 1; team <= 4; ++team) {
    auto* a = req.add_assignments();
    a->set_team_id(team);
    a->set_bucket_id(bucket);
  }
  v1::BulkAssignResponse resp;
  grpc::Status s = admin_->BulkAssign(CtxAs(Caller::kAdmin).get(), req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("assignments: 4 entries exceed --max_bulk_assign (3"));
  req.mutable_assignments()->RemoveLast();
  EXPECT_TRUE(admin_->BulkAssign(CtxAs(Caller::kAdmin).get(), req, &resp).ok());
}

TEST_F(AuthServerTest, MessagesOverMaxMessageSizeAreRefusedBothWays) {
  max_message_size_ = 16 << 10;
  Restart();
  const int32_t bucket = MakeBucketAsAdmin("b1");
  // A request over the limit: refused before any handler runs.
  v1::AssignTeamRequest big;
  big.set_team_id(1);
  big.set_bucket_id(bucket);
  big.set_reason(std::string(20 << 10, 'r'));
  v1::AssignTeamResponse ignored;
  EXPECT_EQ(admin_->AssignTeam(CtxAs(Caller::kAdmin).get(), big, &ignored).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  // A response over the limit (a snapshot of many buckets) is not sent.
  for (int i = 0; i < 12; ++i) {
    v1::CreateBucketRequest req;
    req.mutable_bucket()->set_name(absl::StrCat("big", i));
    for (int l = 0; l < 8; ++l) {
      (*req.mutable_bucket()->mutable_labels())[absl::StrCat("pad", l)] = std::string(200, 'p');
    }
    req.set_reason("fill");
    v1::CreateBucketResponse resp;
    grpc::Status created = admin_->CreateBucket(CtxAs(Caller::kAdmin).get(), req, &resp);
    ASSERT_TRUE(created.ok()) << created.error_message();
  }
  v1::MappingSnapshot snapshot;
  EXPECT_EQ(mapping_->GetMapping(CtxAs(Caller::kReader).get(), {}, &snapshot).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(AuthServerTest, AWriteWhoseDeadlinePassesIsNotCommitted) {
  const int32_t bucket = MakeBucketAsAdmin("b1");
  v1::MappingSnapshot before;
  ASSERT_TRUE(mapping_->GetMapping(CtxAs(Caller::kAdmin).get(), {}, &before).ok());
  // Another session holds the global write lock for 3 s.
  std::thread holder([this] {
    auto out = pg_->Psql(
        "BEGIN; SELECT version FROM bm_meta FOR UPDATE; SELECT pg_sleep(3); "
        "COMMIT;");
    EXPECT_TRUE(out.ok()) << out.status();
  });
  absl::SleepFor(absl::Milliseconds(500));
  grpc::Status s = AssignAs(CtxAs(Caller::kAdmin, absl::Seconds(1)).get(), 5, bucket);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.error_code(),
              ::testing::AnyOf(grpc::StatusCode::DEADLINE_EXCEEDED, grpc::StatusCode::UNAVAILABLE));
  holder.join();
  // Once the lock is free, nothing of the timed-out write shows up.
  absl::SleepFor(absl::Milliseconds(500));
  v1::GetHistoryResponse history;
  ASSERT_TRUE(admin_->GetHistory(CtxAs(Caller::kAdmin).get(), {}, &history).ok());
  EXPECT_EQ(history.records_size(), 1);  // CreateBucket only
  v1::MappingSnapshot after;
  ASSERT_TRUE(mapping_->GetMapping(CtxAs(Caller::kAdmin).get(), {}, &after).ok());
  EXPECT_EQ(after.version(), before.version());
  // The same write with time to spare commits.
  EXPECT_TRUE(AssignAs(CtxAs(Caller::kAdmin).get(), 5, bucket).ok());
}

TEST_F(AuthServerTest, ReloadSwapsTokensForLaterCalls) {
  const std::string path = pg_->dir() + "/tokens";
  WriteTextFile(path, TokenLine("dave", "admin", "dave-1"));
  // A server reading a file (the fixture's table has no file to reload).
  EXPECT_EQ(server_->ReloadAuthTokens().code(), absl::StatusCode::kFailedPrecondition);
  StopServer();
  tokens_file_ = path;
  StartServer();
  v1::ListBucketsResponse buckets;
  EXPECT_TRUE(admin_->ListBuckets(CtxWithToken("dave-1").get(), {}, &buckets).ok());
  EXPECT_EQ(admin_->ListBuckets(CtxAs(Caller::kAdmin).get(), {}, &buckets).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  WriteTextFile(path, TokenLine("dave", "reader", "dave-1") + TokenLine("erin", "admin", "e-1"));
  ASSERT_TRUE(server_->ReloadAuthTokens().ok());
  EXPECT_EQ(admin_->ListBuckets(CtxWithToken("dave-1").get(), {}, &buckets).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(admin_->ListBuckets(CtxWithToken("e-1").get(), {}, &buckets).ok());

  WriteTextFile(path, "erin admin nothex\n");
  EXPECT_FALSE(server_->ReloadAuthTokens().ok());
  EXPECT_TRUE(admin_->ListBuckets(CtxWithToken("e-1").get(), {}, &buckets).ok());
}

}  // namespace
}  // namespace bucketmap
