// Readers route continuously while a writer publishes a new version every
// millisecond. Every result must be internally consistent with its own
// version (the version determines the pinned bucket and bucket 4's state),
// versions never go backwards on one thread, and views held through
// handles stay valid. Built and run under ThreadSanitizer too (see
// tests/client/CMakeLists.txt).
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "bucketmap/client.h"
#include "client_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bucketmap {
namespace {

using ::bucketmap::client_testing::DeltaProto;
using ::bucketmap::client_testing::IsOk;
using ::bucketmap::client_testing::MakeBucket;
using ::bucketmap::client_testing::MustBuild;
using ::bucketmap::client_testing::ToProto;

constexpr int kPinnedTeams = 16;
constexpr int kBuckets = 4;

// What version v must look like.
int32_t PinnedBucket(int64_t v) { return 1 + static_cast<int32_t>(v % kBuckets); }
bool Bucket4Paused(int64_t v) { return (v / 5) % 2 == 1; }
BucketState StateOf(int32_t bucket, int64_t v) {
  return bucket == 4 && Bucket4Paused(v) ? BucketState::kPaused : BucketState::kActive;
}

MappingState StateAt(int64_t v) {
  MappingState s;
  s.version = v;
  s.cluster_id = "c";
  for (int32_t id = 1; id <= kBuckets; ++id)
    s.buckets.push_back(MakeBucket(id, "default", StateOf(id, v)));
  for (int64_t t = 1; t <= kPinnedTeams; ++t)
    s.assignments.emplace_back(t, Target::Pin(PinnedBucket(v)));
  return s;
}

// The delta from v to v + 1: every pinned team moves; every fifth version
// bucket 4 flips between ACTIVE and PAUSED, which rebuilds the index
// rather than updating it.
v1::MappingDelta DeltaTo(int64_t v) {
  Change c;
  for (int64_t t = 1; t <= kPinnedTeams; ++t)
    c.set.emplace_back(t, Target::Pin(PinnedBucket(v + 1)));
  if ((v + 1) % 5 == 0) c.buckets.push_back(MakeBucket(4, "default", StateOf(4, v + 1)));
  return DeltaProto(c, v);
}

class Failures {
 public:
  void Add(const std::string& what) {
    std::lock_guard<std::mutex> lock(mu_);
    if (messages_.size() < 10) messages_.push_back(what);
    ++count_;
  }
  int count() {
    std::lock_guard<std::mutex> lock(mu_);
    return count_;
  }
  std::vector<std::string> messages() {
    std::lock_guard<std::mutex> lock(mu_);
    return messages_;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> messages_;
  int count_ = 0;
};

void CheckRoute(const RouteResult& r, int64_t team, Failures& failures) {
  const int64_t v = r.version();
  if (!r.routable()) {
    failures.Add("team " + std::to_string(team) + " unroutable at " + std::to_string(v));
    return;
  }
  if (team <= kPinnedTeams &&
      (r.bucket_id() != PinnedBucket(v) || r.source() != RouteSource::kPin)) {
    failures.Add("team " + std::to_string(team) + " at version " + std::to_string(v) +
                 " routed to " + std::to_string(r.bucket_id()));
  }
  if (r.bucket_state() != StateOf(r.bucket_id(), v)) {
    failures.Add("bucket " + std::to_string(r.bucket_id()) + " has the wrong state at version " +
                 std::to_string(v));
  }
}

TEST(ClientConcurrencyTest, ReadersSeeWholeVersionsWhileWriterPublishes) {
  Client client({});
  ASSERT_THAT(client.ApplySnapshot(ToProto(*MustBuild(StateAt(1)))), IsOk());

  std::atomic<bool> stop{false};
  std::atomic<int64_t> reads{0};
  Failures failures;
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&, r] {
      int64_t last = 0;
      int64_t n = 0;
      for (uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        // Pinned teams, then default-placed ones.
        const int64_t team = (i % 3 == 0) ? 1000 + static_cast<int64_t>(i % 5000)
                                          : 1 + static_cast<int64_t>(i % kPinnedTeams);
        const RouteResult res = client.Route(team);
        if (res.version() < last) failures.Add("version went back on reader " + std::to_string(r));
        last = res.version();
        CheckRoute(res, team, failures);
        ++n;
        if (i % 64 == 0) {
          // A handle: strings and routes from one version, however long held.
          std::shared_ptr<const MappingView> view = client.Current();
          const RouteResult vr = view->Route(3);
          if (vr.version() != view->version()) failures.Add("view route from another version");
          CheckRoute(vr, 3, failures);
          const std::string* topic = view->Topic(vr.bucket_id(), "ingestion");
          if (topic == nullptr ||
              *topic != "events_plugin_ingestion_" + std::to_string(vr.bucket_id())) {
            failures.Add("topic of bucket " + std::to_string(vr.bucket_id()));
          }
          if (client.GetBucketState(4) == std::nullopt) failures.Add("bucket 4 missing");
          if (!view->Owns(vr.bucket_id(), 3)) failures.Add("Owns disagrees with Route");
        }
      }
      reads += n;
    });
  }

  // The writer: 500 publications about a millisecond apart; mostly deltas,
  // every 50th a full snapshot. A count, not a duration, so a loaded
  // machine (TSan in CI) slows the test down rather than failing it.
  int64_t v = 1;
  int snapshots = 0;
  while (v < 500) {
    if ((v + 1) % 50 == 0) {
      ASSERT_THAT(client.ApplySnapshot(ToProto(*MustBuild(StateAt(v + 1)))), IsOk());
      ++snapshots;
    } else {
      ASSERT_THAT(client.ApplyDeltas({DeltaTo(v)}), IsOk());
    }
    ++v;
    absl::SleepFor(absl::Milliseconds(1));
  }
  stop = true;
  for (auto& t : readers) t.join();

  EXPECT_EQ(client.version(), v);
  EXPECT_GT(snapshots, 1);
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(failures.count(), 0) << ::testing::PrintToString(failures.messages());
  std::printf("published %lld versions (%d snapshots); %lld reads\n", static_cast<long long>(v),
              snapshots, static_cast<long long>(reads.load()));
}

TEST(ClientConcurrencyTest, ReplacedViewIsFreedWithoutWaitingForAnotherPublication) {
  // With no reader inside a read-side section, the publication that
  // replaces a view frees it before it returns.
  Client client({});
  ASSERT_THAT(client.ApplySnapshot(ToProto(*MustBuild(StateAt(1)))), IsOk());
  std::weak_ptr<const MappingView> v1 = client.Current();
  ASSERT_FALSE(v1.expired());
  ASSERT_THAT(client.ApplyDeltas({DeltaTo(1)}), IsOk());
  EXPECT_TRUE(v1.expired());

  // A reader that is inside a section on another thread holds the replaced
  // view back, but never the publication; the next confirmation frees it.
  std::weak_ptr<const MappingView> v2 = client.Current();
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    while (!stop.load()) client.Route(1);
  });
  ASSERT_THAT(client.ApplyDeltas({DeltaTo(2)}), IsOk());
  stop = true;
  reader.join();
  client.ConfirmCurrent(client.version());
  EXPECT_TRUE(v2.expired());
}

TEST(ClientConcurrencyTest, ReadersOnShortLivedThreads) {
  // Each thread takes an epoch record on its first read and gives it back at
  // exit; publications keep going meanwhile.
  Client client({});
  ASSERT_THAT(client.ApplySnapshot(ToProto(*MustBuild(StateAt(1)))), IsOk());
  std::atomic<bool> stop{false};
  Failures failures;
  std::thread writer([&] {
    int64_t v = 1;
    while (!stop.load()) {
      if (!client.ApplyDeltas({DeltaTo(v)}).ok()) failures.Add("apply");
      ++v;
    }
  });
  for (int i = 0; i < 50; ++i) {
    std::thread reader([&] {
      for (int j = 0; j < 200; ++j)
        CheckRoute(client.Route(1 + j % kPinnedTeams), 1 + j % kPinnedTeams, failures);
    });
    reader.join();
  }
  stop = true;
  writer.join();
  EXPECT_EQ(failures.count(), 0) << ::testing::PrintToString(failures.messages());
}

}  // namespace
}  // namespace bucketmap
