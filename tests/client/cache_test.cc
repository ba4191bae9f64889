// The last-known-good cache file: round trips, atomic replacement, and
// every kind of damage being refused with a Status, never loaded.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bucketmap/client.h"
#include "client/src/cache_file.h"
#include "client_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bucketmap {
namespace {

using ::bucketmap::client_testing::FakeClock;
using ::bucketmap::client_testing::IsOk;
using ::bucketmap::client_testing::MakeBucket;
using ::bucketmap::client_testing::MustBuild;
using ::bucketmap::client_testing::RandomState;
using ::bucketmap::client_testing::SnapshotProto;
using ::bucketmap::client_testing::StatusIs;
using ::bucketmap::client_testing::ToProto;
using ::testing::HasSubstr;

class CacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bucketmap_cache_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/mapping.cache";
  }
  void TearDown() override {
    for (const std::string& f : Files()) std::remove((dir_ + "/" + f).c_str());
    ::rmdir(dir_.c_str());
  }

  std::vector<std::string> Files() const {
    std::vector<std::string> out;
    DIR* d = ::opendir(dir_.c_str());
    if (d == nullptr) return out;
    while (dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") out.push_back(name);
    }
    ::closedir(d);
    return out;
  }
  std::string ReadBytes() const {
    std::ifstream in(path_, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  void WriteBytes(const std::string& bytes) const {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  ClientOptions Options() {
    ClientOptions o;
    o.cache_path = path_;
    o.clock = clock_.AsFunction();
    return o;
  }
  MappingState State(int64_t version = 42) const {
    MappingState s;
    s.version = version;
    s.cluster_id = "cluster-x";
    s.buckets = {MakeBucket(1), MakeBucket(2, "paid", BucketState::kPaused)};
    s.assignments = {{5, Target::Pin(2)}, {6, Target::Pool("paid")}};
    return s;
  }

  FakeClock clock_;
  std::string dir_;
  std::string path_;
};

TEST_F(CacheTest, RoundTripSeedsAClientWithTheFilesAge) {
  std::mt19937_64 rng(3);
  auto expected = MustBuild(RandomState(rng, 321, 3000, 10000));
  const absl::Time written = clock_.Now();
  {
    Client writer(Options());
    EXPECT_THAT(writer.WriteCache(),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no mapping")));
    ASSERT_THAT(writer.ApplySnapshot(ToProto(*expected)), IsOk());
    ASSERT_THAT(writer.WriteCache(), IsOk());
  }
  EXPECT_THAT(Files(), ::testing::ElementsAre("mapping.cache")) << "no temporary file left";

  clock_.Advance(absl::Minutes(7));
  Client reader(Options());
  EXPECT_EQ(reader.Staleness(), absl::InfiniteDuration());
  int changes = 0;
  reader.OnChange([&](const ChangeEvent& e) {
    ++changes;
    EXPECT_EQ(e.new_version, 321);
  });
  ASSERT_THAT(reader.LoadCache(), IsOk());
  EXPECT_EQ(changes, 1);
  EXPECT_EQ(reader.version(), 321);
  EXPECT_EQ(reader.cluster_id(), "cluster-a");
  EXPECT_EQ(reader.Staleness(), absl::Minutes(7)) << "the file's age, not zero";
  (void)written;
  for (int64_t team = 1; team < 12000; team += 3) {
    ASSERT_EQ(reader.Route(team).bucket_id(), expected->RouteOf(team).bucket_id) << team;
  }
  // Catching up with the server makes it fresh.
  reader.ConfirmCurrent(321);
  EXPECT_EQ(reader.Staleness(), absl::ZeroDuration());
}

TEST_F(CacheTest, RewriteReplacesAtomically) {
  Client client(Options());
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(State(1))), IsOk());
  ASSERT_THAT(client.WriteCache(), IsOk());
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(State(2))), IsOk());
  ASSERT_THAT(client.WriteCache(), IsOk());
  EXPECT_THAT(Files(), ::testing::ElementsAre("mapping.cache"));
  auto contents = client_internal::ReadCacheFile(path_);
  ASSERT_TRUE(contents.ok()) << contents.status();
  EXPECT_EQ(contents->snapshot.version(), 2);
}

TEST_F(CacheTest, EncodingIsDeterministicAndChecksummed) {
  const v1::MappingSnapshot s = SnapshotProto(State());
  const absl::Time t = absl::FromUnixSeconds(1700000123);
  const std::string a = client_internal::EncodeCacheFile(s, t);
  EXPECT_EQ(a, client_internal::EncodeCacheFile(s, t));
  EXPECT_EQ(a.substr(0, 8), "BKTMAPLK");
  auto decoded = client_internal::DecodeCacheFile(a);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->confirmed_at, t);
  EXPECT_EQ(decoded->snapshot.SerializeAsString(), s.SerializeAsString());
}

TEST_F(CacheTest, EveryFlippedByteIsRefused) {
  const std::string good = client_internal::EncodeCacheFile(SnapshotProto(State()), clock_.Now());
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ (1 << (i % 8)));
    WriteBytes(bad);
    Client client(Options());
    const absl::Status s = client.LoadCache();
    ASSERT_FALSE(s.ok()) << "byte " << i;
    // The format version (bytes 8..11) says "unknown format"; anything else
    // is corruption.
    const auto want =
        (i >= 8 && i < 12) ? absl::StatusCode::kFailedPrecondition : absl::StatusCode::kDataLoss;
    ASSERT_EQ(s.code(), want) << "byte " << i << ": " << s;
    ASSERT_EQ(client.Current(), nullptr);
    ASSERT_EQ(client.Staleness(), absl::InfiniteDuration());
  }
}

TEST_F(CacheTest, TruncatedFilesAreRefused) {
  const std::string good = client_internal::EncodeCacheFile(SnapshotProto(State()), clock_.Now());
  for (size_t len : {size_t{0}, size_t{5}, size_t{11}, size_t{12}, size_t{47}, size_t{48},
                     size_t{49}, good.size() / 2, good.size() - 1}) {
    WriteBytes(good.substr(0, len));
    Client client(Options());
    EXPECT_THAT(client.LoadCache(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("cache file")))
        << len;
    EXPECT_EQ(client.version(), 0);
  }
  WriteBytes(good + "x");
  Client client(Options());
  EXPECT_THAT(client.LoadCache(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("payload")));
}

TEST_F(CacheTest, WrongMagicAndFormatVersion) {
  std::string bytes = client_internal::EncodeCacheFile(SnapshotProto(State()), clock_.Now());
  std::string magic = bytes;
  magic.replace(0, 8, "NOTMAGIC");
  WriteBytes(magic);
  Client a(Options());
  EXPECT_THAT(a.LoadCache(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("magic")));

  std::string version = bytes;
  version[8] = 2;  // format 2, from a newer release
  WriteBytes(version);
  Client b(Options());
  EXPECT_THAT(b.LoadCache(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("format version 2")));
  EXPECT_EQ(b.Current(), nullptr);
}

TEST_F(CacheTest, ValidFileWithInvalidMappingIsDataLoss) {
  v1::MappingSnapshot s = SnapshotProto(State());
  s.mutable_assignments()->set_targets(0, 99);  // pin to a missing bucket
  WriteBytes(client_internal::EncodeCacheFile(s, clock_.Now()));
  Client client(Options());
  EXPECT_THAT(client.LoadCache(), StatusIs(absl::StatusCode::kDataLoss, ::testing::_));
  EXPECT_EQ(client.Current(), nullptr);
}

TEST_F(CacheTest, MissingFileAndMissingPath) {
  Client client(Options());
  EXPECT_THAT(client.LoadCache(), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  Client no_path({});
  EXPECT_THAT(no_path.LoadCache(), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(no_path.WriteCache(), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST_F(CacheTest, WriteErrorsAreReported) {
  Client client(Options());
  ASSERT_THAT(client.ApplySnapshot(SnapshotProto(State())), IsOk());
  const absl::Status s = client.WriteCache(dir_ + "/no/such/dir/file");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
}

TEST_F(CacheTest, LiveMappingWinsOverOlderOrForeignFile) {
  Client writer(Options());
  ASSERT_THAT(writer.ApplySnapshot(SnapshotProto(State(40))), IsOk());
  ASSERT_THAT(writer.WriteCache(), IsOk());

  Client newer(Options());
  ASSERT_THAT(newer.ApplySnapshot(SnapshotProto(State(50))), IsOk());
  EXPECT_THAT(newer.LoadCache(), IsOk());
  EXPECT_EQ(newer.version(), 50) << "an older file does not go back";

  Client older(Options());
  ASSERT_THAT(older.ApplySnapshot(SnapshotProto(State(30))), IsOk());
  EXPECT_THAT(older.LoadCache(), IsOk());
  EXPECT_EQ(older.version(), 40);

  Client foreign(Options());
  MappingState other = State(10);
  other.cluster_id = "cluster-y";
  ASSERT_THAT(foreign.ApplySnapshot(SnapshotProto(other)), IsOk());
  EXPECT_THAT(foreign.LoadCache(), StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
  EXPECT_EQ(foreign.cluster_id(), "cluster-y");
}

TEST_F(CacheTest, StartFromCacheThenCatchUpWithDeltas) {
  {
    Client writer(Options());
    ASSERT_THAT(writer.ApplySnapshot(SnapshotProto(State(42))), IsOk());
    ASSERT_THAT(writer.WriteCache(), IsOk());
  }
  clock_.Advance(absl::Hours(2));
  Client client(Options());
  ASSERT_THAT(client.LoadCache(), IsOk());
  EXPECT_EQ(client.Staleness(), absl::Hours(2));
  EXPECT_EQ(client.Route(5).bucket_id(), 2);
  // The server comes back: resume from version 42 with deltas.
  Change c;
  c.set = {{5, Target::Pin(1)}};
  ASSERT_THAT(client.ApplyDeltas({client_testing::DeltaProto(c, 42)}), IsOk());
  EXPECT_EQ(client.Route(5).bucket_id(), 1);
  EXPECT_EQ(client.Staleness(), absl::ZeroDuration());
}

}  // namespace
}  // namespace bucketmap
