// Hostile clients against a real server (in-process, throwaway PostgreSQL):
// NUL bytes and invalid UTF-8 in every kind of string field, oversized map
// keys, random bytes to every method, a client that ACKs pushes it never
// read, a producer that lies about what it drained, and a NACK storm.
// Each test asserts the code and field, that nothing was stored, that
// memory stays bounded, and that the log is neither forged nor flooded.
#include <atomic>
#include <cstdint>
#include <fstream>
#include <limits>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bucketmap/v1/admin.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"
#include "spdlog/sinks/base_sink.h"
#include "spdlog/spdlog.h"
#include "tests/handoff/handoff_test_util.h"
#include "tests/server/server_fixture.h"
#include "tests/server/watch_client.h"
#include "tests/support/generic_calls.h"

namespace bucketmap {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// Collects the server's log lines (spdlog's default logger) as written.
class CapturedLog : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::vector<std::string> Lines() {
    std::lock_guard<std::mutex> lock(mutex_);
    return lines_;
  }
  int Count(const std::string& needle) {
    int n = 0;
    for (const std::string& line : Lines()) n += absl::StrContains(line, needle) ? 1 : 0;
    return n;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    lines_.push_back(fmt::to_string(formatted));
  }
  void flush_() override {}

 private:
  std::vector<std::string> lines_;
};

class HostileTest : public ServerFixture {
 protected:
  void SetUp() override {
    log_ = std::make_shared<CapturedLog>();
    log_->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%n] [%l] %v");
    spdlog::default_logger()->sinks().push_back(log_);
    ServerFixture::SetUp();
  }
  void TearDown() override {
    ServerFixture::TearDown();
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), log_), sinks.end());
  }
  ServerOptions Options() override {
    ServerOptions options = ServerFixture::Options();
    options.watch.client_flush = absl::Milliseconds(100);
    return options;
  }

  std::vector<v1::ClientInfo> Clients() {
    v1::ListClientsResponse resp;
    grpc::Status s = admin_->ListClients(Ctx().get(), v1::ListClientsRequest(), &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return {resp.clients().begin(), resp.clients().end()};
  }

  // Polls ListClients until `client_id` is listed; nullopt on timeout.
  std::optional<v1::ClientInfo> WaitForClient(const std::string& client_id,
                                              absl::Duration timeout = absl::Seconds(10)) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      for (const v1::ClientInfo& c : Clients()) {
        if (c.client_id() == client_id) return c;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    return std::nullopt;
  }

  int64_t HistoryCount() {
    v1::GetHistoryRequest req;
    req.set_page_size(1000);
    v1::GetHistoryResponse resp;
    EXPECT_TRUE(admin_->GetHistory(Ctx().get(), req, &resp).ok());
    return resp.records_size();
  }

  // The first push of a freshly subscribed stream, ACKed.
  v1::WatchResponse::Push SubscribeAndAck(WatchClient* w, const std::string& id,
                                          v1::ClientRole role) {
    w->Subscribe(id, role);
    std::optional<v1::WatchResponse> r = w->NextNonHeartbeat();
    EXPECT_TRUE(r.has_value() && r->has_push());
    w->Ack(r->push(), role == v1::PRODUCER ? r->push().to_version() : 0);
    return r.value_or(v1::WatchResponse()).push();
  }

  std::shared_ptr<CapturedLog> log_;
};

// D5: NUL bytes were cut short by PostgreSQL ("abc\0def" stored as "abc"),
// or failed with its raw error. Every string field, every path, refuses
// them with INVALID_ARGUMENT naming the field, and stores nothing.
TEST_F(HostileTest, NulBytesAreRefusedNamingTheFieldOnEveryPath) {
  const int32_t b1 = MakeBucket("b1");
  const int64_t version = Version();
  const int64_t history = HistoryCount();

  v1::AssignTeamRequest assign;
  assign.set_team_id(7);
  assign.set_bucket_id(b1);
  assign.set_reason(std::string("abc\0def", 7));
  v1::AssignTeamResponse assigned;
  grpc::Status s = admin_->AssignTeam(Ctx().get(), assign, &assigned);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), StartsWith("reason: must not contain NUL"));

  v1::CreateBucketRequest create;
  create.mutable_bucket()->set_name("b2");
  (*create.mutable_bucket()->mutable_topics())["ingestion"] = "events_b2";
  (*create.mutable_bucket()->mutable_labels())["team"] = std::string("a\0b", 3);
  create.set_reason("labels");
  v1::CreateBucketResponse created;
  s = admin_->CreateBucket(Ctx().get(), create, &created);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), StartsWith("bucket.labels[team]: must not contain NUL"));

  v1::BulkAssignRequest bulk;
  bulk.add_assignments()->set_team_id(8);
  bulk.mutable_assignments(0)->set_pool(std::string("free\0", 5));
  bulk.set_reason("bulk");
  v1::BulkAssignResponse bulked;
  s = admin_->BulkAssign(Ctx().get(), bulk, &bulked);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), StartsWith("assignments[0].pool: must not contain NUL"));

  v1::ListBucketsRequest list;
  list.set_pool(std::string("\0", 1));
  v1::ListBucketsResponse listed;
  s = admin_->ListBuckets(Ctx().get(), list, &listed);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), StartsWith("pool: must not contain NUL"));

  // A client id with NUL would collide with the one before it.
  WatchClient watcher(mapping_.get());
  watcher.Subscribe(std::string("nulid\0tail", 10), v1::OBSERVER);
  s = watcher.Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), StartsWith("subscribe.client_id: must not contain NUL"));

  // A NACK error with NUL.
  WatchClient nacker(mapping_.get());
  nacker.Subscribe("nacker", v1::OBSERVER);
  std::optional<v1::WatchResponse> push = nacker.NextNonHeartbeat();
  ASSERT_TRUE(push.has_value() && push->has_push());
  nacker.Nack(push->push(), std::string("before\0after", 12));
  s = nacker.Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), StartsWith("nack.error: must not contain NUL"));

  EXPECT_EQ(Version(), version);
  EXPECT_EQ(HistoryCount(), history);
  for (const v1::ClientInfo& c : Clients()) {
    EXPECT_THAT(c.client_id(), Not(StartsWith("nulid")));
    EXPECT_EQ(c.nacks(), 0) << c.ShortDebugString();
  }
}

// D7: a 100 KB map key was echoed whole, so the status did not fit a
// default client's metadata limit (RESOURCE_EXHAUSTED instead of the
// INVALID_ARGUMENT it was).
TEST_F(HostileTest, HugeMapKeysAreCutInTheErrorMessage) {
  for (const char* map : {"topics", "labels", "consumer_groups"}) {
    v1::CreateBucketRequest create;
    create.mutable_bucket()->set_name("big");
    (*create.mutable_bucket()->mutable_topics())["ingestion"] = "events_big";
    const std::string key(100000, 'K');
    if (std::string(map) == "topics") (*create.mutable_bucket()->mutable_topics())[key] = "t";
    if (std::string(map) == "labels") (*create.mutable_bucket()->mutable_labels())[key] = "v";
    if (std::string(map) == "consumer_groups") {
      (*create.mutable_bucket()->mutable_consumer_groups())[key] = "g";
    }
    create.set_reason("huge key");
    v1::CreateBucketResponse created;
    grpc::Status s = admin_->CreateBucket(Ctx().get(), create, &created);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << map;
    EXPECT_THAT(s.error_message(), StartsWith(absl::StrCat("bucket.", map, "[KKKK")));
    EXPECT_LT(s.error_message().size(), 400u) << map;
  }
  EXPECT_EQ(Version(), 0);
}

// Every method, fed bodies that are not its request message, answers
// INVALID_ARGUMENT (gRPC's typed methods said UNIMPLEMENTED, with no
// message); random bytes never crash the server or answer INTERNAL.
TEST_F(HostileTest, RandomBytesToEveryMethodAreRefusedCleanly) {
  MakeBucket("b1");
  const int64_t version = Version();
  std::mt19937_64 rng(17);
  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  for (const char* name : {"bucketmap.v1.AdminService", "bucketmap.v1.MappingService"}) {
    const google::protobuf::ServiceDescriptor* service = pool->FindServiceByName(name);
    ASSERT_NE(service, nullptr);
    for (int m = 0; m < service->method_count(); ++m) {
      const google::protobuf::MethodDescriptor* method = service->method(m);
      if (method->client_streaming()) continue;  // WatchMapping: below
      const std::string path = absl::StrCat("/", name, "/", method->name());
      // A field 1 claiming 100 bytes it does not have: never parses.
      std::string response;
      grpc::Status s = GenericUnary(channel_, path, std::string("\x0a\x64\x01", 3), &response);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << path;
      EXPECT_THAT(s.error_message(), StartsWith("request: cannot parse")) << path;
      for (int i = 0; i < 40; ++i) {
        std::string body(rng() % 64, '\0');
        for (char& c : body) c = static_cast<char>(rng());
        response.clear();
        s = GenericUnary(channel_, path, body, &response);
        EXPECT_THAT(s.error_code(),
                    Not(AnyOf(grpc::StatusCode::INTERNAL, grpc::StatusCode::UNIMPLEMENTED,
                              grpc::StatusCode::UNKNOWN)))
            << path << ": " << s.error_message();
      }
    }
  }
  // Random frames on a watch stream end it with INVALID_ARGUMENT, or (when
  // they happen to parse) with the protocol's own answer; never INTERNAL.
  for (int i = 0; i < 20; ++i) {
    grpc::GenericStub stub(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    grpc::CompletionQueue cq;
    std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
        stub.PrepareCall(&ctx, "/bucketmap.v1.MappingService/WatchMapping", &cq);
    void* tag = nullptr;
    bool ok = false;
    call->StartCall(reinterpret_cast<void*>(1));
    ASSERT_TRUE(cq.Next(&tag, &ok));
    std::string body = i == 0 ? std::string("\x0a\x64\x01", 3) : std::string(1 + rng() % 32, 'x');
    if (i > 0) {
      for (char& c : body) c = static_cast<char>(rng());
    }
    grpc::Slice slice(body);
    grpc::ByteBuffer frame(&slice, 1);
    call->Write(frame, reinterpret_cast<void*>(2));
    ASSERT_TRUE(cq.Next(&tag, &ok));
    call->WritesDone(reinterpret_cast<void*>(3));
    ASSERT_TRUE(cq.Next(&tag, &ok));
    grpc::ByteBuffer read;
    // Drain what the server sends until the call ends.
    for (;;) {
      call->Read(&read, reinterpret_cast<void*>(4));
      if (!cq.Next(&tag, &ok) || !ok) break;
    }
    grpc::Status status;
    call->Finish(&status, reinterpret_cast<void*>(5));
    ASSERT_TRUE(cq.Next(&tag, &ok));
    if (i == 0) {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
      EXPECT_THAT(status.error_message(), StartsWith("request: cannot parse"));
    }
    EXPECT_THAT(status.error_code(),
                Not(AnyOf(grpc::StatusCode::INTERNAL, grpc::StatusCode::UNKNOWN)))
        << status.error_message();
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
  }
  EXPECT_EQ(Version(), version);
  // libprotobuf's own complaint about invalid UTF-8 is rate-limited: a
  // client cannot flood the log with it.
  EXPECT_LE(log_->Count("libprotobuf"), 6);
}

// D1: a NACK error cut inside a UTF-8 sequence made every later flush of
// client states fail, so no client connecting afterwards was recorded.
TEST_F(HostileTest, NackErrorIsCutAtACharacterAndLaterClientsAreStillRecorded) {
  MakeBucket("b1");
  WatchClient nacker(mapping_.get());
  nacker.Subscribe("nacker", v1::CONSUMER);
  std::optional<v1::WatchResponse> push = nacker.NextNonHeartbeat();
  ASSERT_TRUE(push.has_value() && push->has_push());
  nacker.Nack(push->push(), std::string(1023, 'a') + "\xe2\x82\xac");  // "€" at 1023..1025

  WatchClient later(mapping_.get());
  SubscribeAndAck(&later, "later", v1::OBSERVER);
  std::optional<v1::ClientInfo> listed = WaitForClient("later");
  ASSERT_TRUE(listed.has_value()) << "a client connecting after the NACK is never recorded";
  std::optional<v1::ClientInfo> n = WaitForClient("nacker");
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(n->nacks(), 1);
  EXPECT_EQ(n->last_nack_error(), std::string(1023, 'a'));
}

// D2: a client that never reads, but ACKs, queued one full-snapshot push
// per ACK (1,993 pending writes for one stream, RSS +440 MB). Now a push is
// built only once the last one left the write path, an ACK must carry the
// push's nonce (random per stream) and its to_version, and a stream holds
// at most a push and the SYNC marker.
//
// The attack, in `ack_mode`: a mapping of 100k pins, then a raw stream that
// reads its first push (so it knows the nonce), then never reads again, but
// ACKs the pushes it guesses were sent, nonces counting up from the first,
// each with applied_version 0 (once enough to have the server queue the
// full snapshot again, per ACK), while a write now and then gives every
// push something to carry (or, once more than --watch_max_deltas_per_push
// behind, the snapshot). Returns the most writes the hub held pending.
class BlindAckingTest : public HostileTest {
 protected:
  int64_t MaxPendingWritesOfABlindAckingStream(v1::AckMode ack_mode) {
    const int32_t b1 = MakeBucket("b1");
    MakeBucket("b2");
    v1::BulkAssignRequest bulk;
    bulk.set_reason("a big snapshot");
    for (int64_t team = 1; team <= 100000; ++team) {
      v1::BulkAssignment* a = bulk.add_assignments();
      a->set_team_id(team);
      a->set_bucket_id(b1);
    }
    v1::BulkAssignResponse bulked;
    EXPECT_TRUE(admin_->BulkAssign(Ctx(absl::Seconds(60)).get(), bulk, &bulked).ok());

    grpc::ClientContext ctx;
    auto stream = mapping_->WatchMapping(&ctx);
    v1::WatchRequest sub;
    sub.mutable_subscribe()->set_client_id("blind");
    sub.mutable_subscribe()->set_role(v1::OBSERVER);
    sub.mutable_subscribe()->set_ack_mode(ack_mode);
    EXPECT_TRUE(stream->Write(sub));
    v1::WatchResponse first;
    if (!stream->Read(&first) || !first.has_push()) {
      ADD_FAILURE() << "no first push";
      ctx.TryCancel();
      return -1;
    }
    int64_t max_pending = 0;
    for (int k = 0; k < 2000; ++k) {
      v1::WatchRequest ack;
      ack.mutable_ack()->set_nonce(first.push().nonce() + k);
      ack.mutable_ack()->set_applied_version(0);
      if (!stream->Write(ack)) break;  // refused: the stream ended
      if (k % 7 == 0) EXPECT_TRUE(Pin(200000 + k, b1).ok());
      max_pending = std::max(max_pending, server_->watch_hub().pending_writes());
    }
    absl::SleepFor(absl::Milliseconds(300));
    max_pending = std::max(max_pending, server_->watch_hub().pending_writes());
    ctx.TryCancel();
    return max_pending;
  }
};

TEST_F(BlindAckingTest, BlindAckingClientCannotQueueMoreThanTwoWrites) {
  EXPECT_LE(MaxPendingWritesOfABlindAckingStream(v1::ACK_EVERY_PUSH), 2)
      << "pending writes of one stream";
}

// D2 under ACK_REQUESTED (pushes stream without waiting for ACKs): ACKs
// never cause a push there, so guessed ones queue nothing; what bounds the
// stream is that a push is built only once the last one is written. A
// client that stops reading holds its push in flight and the SYNC marker,
// however many versions and ACKs come.
TEST_F(BlindAckingTest, BlindAckingStreamingClientCannotQueueMoreThanTwoWrites) {
  EXPECT_LE(MaxPendingWritesOfABlindAckingStream(v1::ACK_REQUESTED), 2)
      << "pending writes of one stream";
}

// D3: a producer's first ACK could claim drained_version INT64_MAX; kept by
// GREATEST, it passed the barrier of every later handoff.
TEST_F(HostileTest, ProducerCannotClaimVersionsItWasNotSent) {
  MakeBucket("b1");
  WatchClient liar(mapping_.get());
  liar.Subscribe("liar", v1::PRODUCER);
  std::optional<v1::WatchResponse> first = liar.NextNonHeartbeat();
  ASSERT_TRUE(first.has_value() && first->has_push());
  v1::WatchRequest ack;
  ack.mutable_ack()->set_nonce(first->push().nonce());
  ack.mutable_ack()->set_applied_version(first->push().to_version());
  ack.mutable_ack()->set_drained_version(std::numeric_limits<int64_t>::max());
  liar.Send(ack);
  grpc::Status s = liar.Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), StartsWith("ack.drained_version:"));

  // An honest first ACK, then a repeated ACK claiming more than applied.
  WatchClient again(mapping_.get());
  const v1::WatchResponse::Push p = SubscribeAndAck(&again, "liar-2", v1::PRODUCER);
  v1::WatchRequest repeat;
  repeat.mutable_ack()->set_nonce(p.nonce());
  repeat.mutable_ack()->set_applied_version(p.to_version());
  repeat.mutable_ack()->set_drained_version(p.to_version() + 1);
  again.Send(repeat);
  s = again.Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), StartsWith("ack.drained_version:"));

  // An applied_version the push did not reach.
  WatchClient third(mapping_.get());
  third.Subscribe("liar-3", v1::PRODUCER);
  std::optional<v1::WatchResponse> r = third.NextNonHeartbeat();
  ASSERT_TRUE(r.has_value() && r->has_push());
  v1::WatchRequest ahead;
  ahead.mutable_ack()->set_nonce(r->push().nonce());
  ahead.mutable_ack()->set_applied_version(r->push().to_version() + 5);
  third.Send(ahead);
  s = third.Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), StartsWith("ack.applied_version:"));

  absl::SleepFor(absl::Milliseconds(500));
  for (const v1::ClientInfo& c : Clients()) {
    EXPECT_LE(c.drained_version(), c.applied_version()) << c.ShortDebugString();
    EXPECT_LE(c.applied_version(), Version()) << c.ShortDebugString();
  }
}

// D6: NACK errors and client ids were logged raw, one warning per NACK:
// a client could forge log lines and flood the log.
TEST_F(HostileTest, NackStormNeitherForgesNorFloodsTheLog) {
  MakeBucket("b1");
  WatchClient storm(mapping_.get());
  storm.Subscribe("storm\n[2026-01-01 00:00:00.000] [bucketmap] [error] FORGED-ID", v1::OBSERVER);
  const std::string forged = "oops\n[2026-01-01 00:00:00.000] [bucketmap] [error] FORGED-LINE";
  int nacks = 0;
  while (nacks < 200) {
    std::optional<v1::WatchResponse> r = storm.NextNonHeartbeat();
    if (!r.has_value()) break;
    if (!r->has_push()) continue;  // the SYNC marker
    storm.Nack(r->push(), forged);
    ++nacks;
  }
  EXPECT_EQ(nacks, 200);
  std::optional<v1::ClientInfo> info;
  const absl::Time end = absl::Now() + absl::Seconds(10);
  do {
    for (const v1::ClientInfo& c : Clients()) {
      if (absl::StartsWith(c.client_id(), "storm")) info = c;
    }
  } while ((!info.has_value() || info->nacks() < 200) && absl::Now() < end &&
           (absl::SleepFor(absl::Milliseconds(100)), true));
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->nacks(), 200);

  int nack_lines = 0;
  for (const std::string& line : log_->Lines()) {
    // One line per record: no client text starts a line of its own.
    EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
    EXPECT_THAT(line, Not(StartsWith("[2026-01-01")));
    if (absl::StrContains(line, "NACKed")) {
      ++nack_lines;
      EXPECT_THAT(line, HasSubstr("\\n[2026-01-01"));  // escaped
    }
  }
  EXPECT_GE(nack_lines, 1);
  EXPECT_LE(nack_lines, 2);
}

// A request_id replayed with `ordered: true` spelled out is the same
// request as the first, which left it out.
TEST_F(HostileTest, ExplicitDefaultFieldFingerprintsLikeAnAbsentOne) {
  const int32_t b1 = MakeBucket("b1");
  v1::AssignTeamRequest req;
  req.set_team_id(9);
  req.set_bucket_id(b1);
  req.set_reason("replay");
  req.set_request_id("replay-ordered");
  v1::AssignTeamResponse first;
  ASSERT_TRUE(admin_->AssignTeam(Ctx().get(), req, &first).ok());
  req.set_ordered(true);
  v1::AssignTeamResponse replay;
  grpc::Status s = admin_->AssignTeam(Ctx().get(), req, &replay);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(replay.effect().replayed());
  EXPECT_EQ(replay.version(), first.version());
  req.set_ordered(false);  // a different request
  EXPECT_EQ(admin_->AssignTeam(Ctx().get(), req, &replay).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

// UnassignTeam of a team with no override is a no-op, as inside a bulk.
TEST_F(HostileTest, UnassignOfATeamWithoutOverrideIsANoOp) {
  MakeBucket("b1");
  const int64_t version = Version();
  v1::UnassignTeamRequest req;
  req.set_team_id(12345);
  req.set_reason("not there");
  v1::UnassignTeamResponse resp;
  grpc::Status s = admin_->UnassignTeam(Ctx().get(), req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(resp.effect().changed());
  EXPECT_EQ(resp.version(), version);
  EXPECT_EQ(Version(), version);
}

// A producer that lies about its drained version does not pass the
// handoff's switch barrier; it is named as missing when grace ends.
class HostileBarrierTest : public HostileTest {
 protected:
  ServerOptions Options() override {
    ServerOptions options = HostileTest::Options();
    options.handoff.enabled = true;
    options.handoff.grace = absl::Seconds(2);
    options.handoff.poll_interval = absl::Milliseconds(100);
    options.watch.client_lease = absl::Seconds(3);
    return options;
  }
};

TEST_F(HostileBarrierTest, LyingProducerDoesNotPassTheBarrier) {
  const int32_t a = MakeBucket("a");
  const int32_t b = MakeBucket("b", "other");
  WatchClient honest(mapping_.get());
  honest.Subscribe("honest", v1::PRODUCER);
  std::atomic<bool> stop{false};
  std::thread acker([&] {
    while (!stop) {
      std::optional<v1::WatchResponse> r = honest.Next(absl::Milliseconds(100));
      if (r.has_value() && r->has_push()) honest.Ack(r->push(), r->push().to_version());
    }
  });
  // The liar's first ACK claims to have drained everything there will
  // ever be. Refused, it resumes from the version it applied (as the
  // client library would) and then answers nothing: it stays leased, and
  // has not drained the handoff's version.
  WatchClient liar(mapping_.get());
  liar.Subscribe("liar", v1::PRODUCER);
  std::optional<v1::WatchResponse> first = liar.NextNonHeartbeat();
  ASSERT_TRUE(first.has_value() && first->has_push());
  v1::WatchRequest lie;
  lie.mutable_ack()->set_nonce(first->push().nonce());
  lie.mutable_ack()->set_applied_version(first->push().to_version());
  lie.mutable_ack()->set_drained_version(std::numeric_limits<int64_t>::max());
  liar.Send(lie);
  std::unique_ptr<WatchClient> resumed;
  if (liar.WaitDone(absl::Seconds(2))) {
    resumed = std::make_unique<WatchClient>(mapping_.get());
    resumed->Subscribe("liar", v1::PRODUCER, first->push().to_version());
  }
  absl::SleepFor(absl::Milliseconds(500));
  // Both sessions recorded and leased before the move: with no producer
  // leased, a handoff out of a (no consumer group) would be COMPLETED at
  // once, with no barrier to pass.
  WaitForClientLeased(admin_.get(), "honest");
  WaitForClientLeased(admin_.get(), "liar");
  int64_t team = 1;
  for (;; ++team) {
    v1::GetTeamRequest req;
    req.set_team_id(team);
    v1::TeamRoute route;
    if (mapping_->GetTeam(Ctx().get(), req, &route).ok() && route.bucket_id() == a) break;
  }
  v1::AssignTeamResponse moved;
  ASSERT_TRUE(Pin(team, b, &moved).ok());
  ASSERT_EQ(moved.effect().handoffs_size(), 1);

  v1::Handoff ended =
      WaitForHandoff(admin_.get(), moved.effect().handoffs(0).id(), Ended, absl::Seconds(20));
  EXPECT_EQ(ended.state(), v1::HANDOFF_FORCED);
  EXPECT_THAT(ended.missing_producers(), ::testing::ElementsAre("liar"));
  stop = true;
  acker.join();
}

}  // namespace
}  // namespace bucketmap
