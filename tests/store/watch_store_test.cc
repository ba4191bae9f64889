// PgStore's watch support against a real PostgreSQL: deltas for resumes
// from the change log (LoadDeltas) and the leased client states behind
// ListClients (SaveClients, ListClients).
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bucketmap/v1/types.pb.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/store/pg_store.h"
#include "tests/store/store_test_util.h"

namespace bucketmap {
namespace store_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

class WatchStoreTest : public PgStoreFixture {
 protected:
  // A second store on the same database whose SaveClients always takes
  // the COPY path.
  std::unique_ptr<PgStore> OpenCopyStore() {
    PgStoreOptions options = Options();
    options.copy_threshold = 0;
    auto store = PgStore::Open(options);
    EXPECT_THAT(store, IsOk());
    return store.ok() ? *std::move(store) : nullptr;
  }

  std::vector<int64_t> ToVersions(const std::vector<v1::MappingDelta>& deltas) {
    std::vector<int64_t> versions;
    for (const v1::MappingDelta& d : deltas) versions.push_back(d.to_version());
    return versions;
  }
};

// Every field, for comparisons with readable failure output.
auto Fields(const ClientState& c) {
  return std::make_tuple(c.client_id, c.role, c.replica, c.peer, c.applied_version,
                         c.drained_version, c.connected_at, c.last_ack, c.last_nack,
                         c.last_nack_error, c.nacks, c.connected, c.lease_expires);
}

// A whole second, so that the microsecond precision of the table does not
// matter unless a test wants it to.
absl::Time BaseTime() { return absl::FromUnixSeconds(1700000000); }

ClientState Client(const std::string& id, int64_t applied) {
  ClientState c;
  c.client_id = id;
  c.role = 2;  // CONSUMER
  c.replica = "replica-a";
  c.peer = "ipv4:10.0.0.7:51000";
  c.applied_version = applied;
  c.drained_version = applied - 1;
  c.connected_at = BaseTime();
  c.last_ack = BaseTime() + absl::Seconds(3);
  c.connected = true;
  return c;
}

TEST_F(WatchStoreTest, LoadDeltasReturnsTheLoggedDeltas) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  MustWrite(Ctx("AssignTeam"), PinPlan(5, 1));
  MustWrite(Ctx("BulkAssign"), AssignPlan({{6, Target::Pin(1)}, {7, Target::Pin(1)}}));
  MustWrite(Ctx("UnassignTeam"), AssignPlan({{5, std::nullopt}}));

  auto all = store_->LoadDeltas(0, 4);
  ASSERT_THAT(all, IsOk());
  EXPECT_THAT(ToVersions(*all), ElementsAre(1, 2, 3, 4));
  for (const v1::MappingDelta& d : *all) EXPECT_EQ(d.from_version(), d.to_version() - 1);
  ASSERT_THAT((*all)[0].buckets(), SizeIs(1));
  EXPECT_EQ((*all)[0].buckets(0).id(), 1);
  EXPECT_EQ((*all)[0].buckets(0).name(), "alpha");
  EXPECT_THAT((*all)[1].set().team_ids(), ElementsAre(5));
  EXPECT_THAT((*all)[2].set().team_ids(), ElementsAre(6, 7));
  EXPECT_THAT((*all)[3].unset_team_ids(), ElementsAre(5));

  // The same deltas GetHistory serves (map fields make bytes unstable).
  HistoryQuery query;
  query.include_delta = true;
  auto history = store_->GetHistory(query);
  ASSERT_THAT(history, IsOk());
  ASSERT_THAT(history->records, SizeIs(4));
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(
        google::protobuf::util::MessageDifferencer::Equals((*all)[i], history->records[i].delta()))
        << i;
  }

  auto tail = store_->LoadDeltas(2, 4);
  ASSERT_THAT(tail, IsOk());
  EXPECT_THAT(ToVersions(*tail), ElementsAre(3, 4));
  auto middle = store_->LoadDeltas(1, 2);
  ASSERT_THAT(middle, IsOk());
  EXPECT_THAT(ToVersions(*middle), ElementsAre(2));
}

TEST_F(WatchStoreTest, LoadDeltasOfAnEmptyRangeIsEmpty) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  for (auto [after, up_to] : {std::pair<int64_t, int64_t>{1, 1}, {0, 0}, {5, 1}, {7, 7}}) {
    auto deltas = store_->LoadDeltas(after, up_to);
    ASSERT_THAT(deltas, IsOk()) << after << ".." << up_to;
    EXPECT_THAT(*deltas, IsEmpty());
  }
  EXPECT_THAT(store_->LoadDeltas(-1, 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("after_version")));
}

TEST_F(WatchStoreTest, LoadDeltasIsNotFoundOnceAnyVersionIsPruned) {
  for (int v = 1; v <= 4; ++v) {
    MustWrite(Ctx("CreateBucket"), CreateBucketPlan(absl::StrCat("b", v)));
  }
  // Versions 1 and 2 are old enough for a one-hour retention, and
  // published (unpublished rows are never pruned).
  ASSERT_THAT(store_->MarkPublished(4), IsOk());
  ASSERT_THAT(pg_->Psql("UPDATE change_log SET created_at = now() - interval '2 hours' "
                        "WHERE version <= 2"),
              IsOk());
  auto pruned = store_->Prune(absl::Now(), absl::Hours(1), absl::Hours(24));
  ASSERT_THAT(pruned, IsOk());
  ASSERT_EQ(*pruned, 2);

  EXPECT_THAT(store_->LoadDeltas(0, 4),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("versions 1..4")));
  EXPECT_THAT(store_->LoadDeltas(1, 4), StatusIs(absl::StatusCode::kNotFound, HasSubstr("pruned")));
  EXPECT_THAT(store_->LoadDeltas(1, 2), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  auto kept = store_->LoadDeltas(2, 4);
  ASSERT_THAT(kept, IsOk());
  EXPECT_THAT(ToVersions(*kept), ElementsAre(3, 4));

  // A hole anywhere in the range, and versions not written yet, are
  // missing too.
  ASSERT_THAT(pg_->Psql("DELETE FROM change_log WHERE version = 4"), IsOk());
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("b5"));
  EXPECT_THAT(store_->LoadDeltas(2, 5), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  auto after_hole = store_->LoadDeltas(4, 5);
  ASSERT_THAT(after_hole, IsOk());
  EXPECT_THAT(ToVersions(*after_hole), ElementsAre(5));
  EXPECT_THAT(store_->LoadDeltas(4, 9), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
}

TEST_F(WatchStoreTest, SaveAndListClientsRoundTripOnBothPaths) {
  std::unique_ptr<PgStore> copy_store = OpenCopyStore();
  ASSERT_NE(copy_store, nullptr);
  for (PgStore* store : {store_.get(), copy_store.get()}) {
    SCOPED_TRACE(store == copy_store.get() ? "COPY path" : "prepared path");
    ASSERT_THAT(pg_->Psql("TRUNCATE watch_clients"), IsOk());
    const absl::Time lease = absl::Now() + absl::Seconds(30);

    ClientState full = Client("consumer-1", 42);
    // Microseconds survive; COPY's special characters are escaped.
    full.connected_at = BaseTime() + absl::Microseconds(123456);
    full.last_nack = BaseTime() + absl::Seconds(2) + absl::Microseconds(7);
    full.last_nack_error = "bad delta:\tvalue\\x01\nline two, \xc3\xa9t\xc3\xa9 \\N";
    full.nacks = 3;
    full.peer = "ipv6:[::1]:5000";
    ClientState never;  // no times at all: NULL columns
    never.client_id = "producer-\xc3\xa9 \t\\";
    never.role = 1;
    ClientState observer = Client("Observer-2", 7);
    observer.role = 3;
    observer.connected = false;
    observer.last_ack = absl::InfinitePast();

    ASSERT_THAT(store->SaveClients({full, never, observer}, lease), IsOk());
    EXPECT_EQ(QueryInt("SELECT count(*) FROM watch_clients WHERE last_ack IS NULL AND "
                       "last_nack IS NULL AND connected_at IS NULL"),
              1);

    auto listed = store->ListClients(absl::Now());
    ASSERT_THAT(listed, IsOk());
    ASSERT_THAT(*listed, SizeIs(3));
    // Byte order: 'O' < 'c' < 'p'.
    const absl::Time stored_lease = absl::FromUnixMicros(absl::ToUnixMicros(lease));
    for (ClientState* c : {&full, &never, &observer}) c->lease_expires = stored_lease;
    EXPECT_EQ(Fields((*listed)[0]), Fields(observer));
    EXPECT_EQ(Fields((*listed)[1]), Fields(full));
    EXPECT_EQ(Fields((*listed)[2]), Fields(never));
    EXPECT_EQ((*listed)[2].connected_at, absl::InfinitePast());
    EXPECT_EQ((*listed)[2].last_ack, absl::InfinitePast());
    EXPECT_EQ((*listed)[2].last_nack, absl::InfinitePast());
  }
}

TEST_F(WatchStoreTest, SaveClientsOverwritesEarlierStates) {
  std::unique_ptr<PgStore> copy_store = OpenCopyStore();
  ASSERT_NE(copy_store, nullptr);
  const absl::Time now = absl::Now();
  ClientState c = Client("consumer-1", 10);
  c.last_nack = BaseTime();
  c.last_nack_error = "old";
  c.nacks = 1;
  ASSERT_THAT(store_->SaveClients({c, Client("consumer-2", 10)}, now + absl::Seconds(10)), IsOk());

  c.applied_version = 11;
  c.drained_version = 11;
  c.last_ack = BaseTime() + absl::Seconds(9);
  c.last_nack = absl::InfinitePast();  // back to never: NULL again
  c.last_nack_error = "";
  // The client moved to replica-b. (A disconnect reported by a replica
  // other than the one holding the client is ignored: see
  // tests/replicas/replica_test.cc.)
  c.replica = "replica-b";
  c.connected = true;
  ASSERT_THAT(store_->SaveClients({c}, now + absl::Seconds(20)), IsOk());
  auto listed = store_->ListClients(now);
  ASSERT_THAT(listed, IsOk());
  ASSERT_THAT(*listed, SizeIs(2));
  c.lease_expires = absl::FromUnixMicros(absl::ToUnixMicros(now + absl::Seconds(20)));
  EXPECT_EQ(Fields((*listed)[0]), Fields(c));
  EXPECT_EQ((*listed)[1].client_id, "consumer-2");
  EXPECT_EQ((*listed)[1].applied_version, 10);

  // The COPY path overwrites as well; a client listed twice keeps its last
  // state on both paths.
  ClientState first = c;
  first.applied_version = 12;
  c.applied_version = 13;
  ASSERT_THAT(copy_store->SaveClients({first, Client("consumer-3", 1), c}, now + absl::Seconds(30)),
              IsOk());
  ASSERT_THAT(store_->SaveClients({Client("consumer-2", 20), Client("consumer-2", 21)},
                                  now + absl::Seconds(30)),
              IsOk());
  listed = store_->ListClients(now);
  ASSERT_THAT(listed, IsOk());
  ASSERT_THAT(*listed, SizeIs(3));
  EXPECT_EQ((*listed)[0].applied_version, 13);
  EXPECT_EQ((*listed)[1].applied_version, 21);
  EXPECT_EQ((*listed)[2].client_id, "consumer-3");
  EXPECT_EQ(QueryInt("SELECT count(*) FROM watch_clients"), 3);
}

TEST_F(WatchStoreTest, ExpiredLeasesHideClients) {
  const absl::Time now = absl::Now();
  ASSERT_THAT(store_->SaveClients({Client("short", 1)}, now + absl::Seconds(10)), IsOk());
  ASSERT_THAT(store_->SaveClients({Client("long", 1)}, now + absl::Seconds(60)), IsOk());

  auto names = [&](absl::Time at) {
    std::vector<std::string> ids;
    auto listed = store_->ListClients(at);
    EXPECT_THAT(listed, IsOk());
    if (listed.ok()) {
      for (const ClientState& c : *listed) ids.push_back(c.client_id);
    }
    return ids;
  };
  EXPECT_THAT(names(now), ElementsAre("long", "short"));
  EXPECT_THAT(names(now + absl::Seconds(30)), ElementsAre("long"));
  // The lease ends at lease_expires itself.
  EXPECT_THAT(names(absl::FromUnixMicros(absl::ToUnixMicros(now + absl::Seconds(60)))), IsEmpty());
  EXPECT_THAT(names(absl::InfinitePast()), ElementsAre("long", "short"));
  EXPECT_THAT(names(absl::InfiniteFuture()), IsEmpty());

  // Renewing the lease brings a client back.
  ASSERT_THAT(store_->SaveClients({Client("short", 2)}, now + absl::Seconds(90)), IsOk());
  EXPECT_THAT(names(now + absl::Seconds(75)), ElementsAre("short"));
}

TEST_F(WatchStoreTest, SaveClientsRejectsBadInput) {
  const absl::Time lease = absl::Now() + absl::Seconds(10);
  EXPECT_THAT(store_->SaveClients({Client("a", 1), Client("", 1)}, lease),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("states[1].client_id")));
  ClientState future = Client("b", 1);
  future.last_ack = absl::InfiniteFuture();
  EXPECT_THAT(store_->SaveClients({future}, lease),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("states[0].last_ack")));
  EXPECT_THAT(store_->SaveClients({Client("c", 1)}, absl::InfiniteFuture()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("lease_until")));
  EXPECT_EQ(QueryInt("SELECT count(*) FROM watch_clients"), 0);
  EXPECT_THAT(store_->SaveClients({}, lease), IsOk());
}

TEST_F(WatchStoreTest, TenThousandClientsInOneCall) {
  constexpr int kClients = 10000;
  std::vector<ClientState> states;
  states.reserve(kClients);
  for (int i = 0; i < kClients; ++i) {
    ClientState c = Client(absl::StrFormat("client-%05d", i), i);
    c.role = 1 + i % 3;
    c.replica = absl::StrCat("replica-", i % 3);
    if (i % 7 == 0) c.last_ack = absl::InfinitePast();
    states.push_back(std::move(c));
  }
  const absl::Time now = absl::Now();
  // First call inserts; the second, as every later second does, updates.
  for (int round = 0; round < 2; ++round) {
    for (ClientState& c : states) c.applied_version += round;
    const absl::Time start = absl::Now();
    ASSERT_THAT(store_->SaveClients(states, now + absl::Seconds(30 + round)), IsOk());
    const absl::Duration took = absl::Now() - start;
    std::printf("SaveClients of %d clients (%s): %s\n", kClients, round == 0 ? "insert" : "update",
                absl::FormatDuration(took).c_str());
    // Generous bound: the suite shares two cores with other tests.
    EXPECT_LT(took, absl::Seconds(1));
  }

  const absl::Time start = absl::Now();
  auto listed = store_->ListClients(now);
  std::printf("ListClients of %d clients: %s\n", kClients,
              absl::FormatDuration(absl::Now() - start).c_str());
  ASSERT_THAT(listed, IsOk());
  ASSERT_THAT(*listed, SizeIs(kClients));
  const absl::Time lease = absl::FromUnixMicros(absl::ToUnixMicros(now + absl::Seconds(31)));
  for (int i = 0; i < kClients; ++i) {
    states[i].lease_expires = lease;
    ASSERT_EQ(Fields((*listed)[i]), Fields(states[i])) << i;
  }
}

TEST_F(WatchStoreTest, PostgresDownIsUnavailableThenRecovers) {
  MustWrite(Ctx("CreateBucket"), CreateBucketPlan("alpha"));
  const absl::Time lease = absl::Now() + absl::Seconds(30);
  std::vector<ClientState> many;  // beyond copy_threshold: the COPY path
  for (int i = 0; i < 100; ++i) many.push_back(Client(absl::StrCat("c", i), i));
  ASSERT_THAT(store_->SaveClients(many, lease), IsOk());
  ASSERT_THAT(pg_->Stop(), IsOk());
  EXPECT_THAT(store_->LoadDeltas(0, 1), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT(store_->SaveClients({Client("a", 1)}, lease),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT(store_->ListClients(absl::Now()),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));

  ASSERT_THAT(pg_->StartAgain(), IsOk());
  EXPECT_THAT(store_->LoadDeltas(0, 1), IsOk());
  // New sessions: the COPY path's staging table is created again.
  EXPECT_THAT(store_->SaveClients(many, lease), IsOk());
  EXPECT_THAT(store_->SaveClients(many, lease), IsOk());
  auto listed = store_->ListClients(absl::Now());
  ASSERT_THAT(listed, IsOk());
  EXPECT_THAT(*listed, SizeIs(100));
}

}  // namespace
}  // namespace store_test
}  // namespace bucketmap
