// MappingManager's group commit (server/state/mapping_manager.h) over a
// FakeStore: concurrent writers queue and the first leads a group, each
// write keeps its own version and outcome, the snapshots are published in
// version order, and max_write_group bounds a group. PgStore's one
// transaction per group is tested against PostgreSQL in
// tests/store/pg_store_test.cc.
#include "server/state/mapping_manager.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/fake_store.h"
#include "tests/unit/unit_test_util.h"

namespace bucketmap {
namespace unit_test {
namespace {

using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::Le;

class GroupCommitTest : public ::testing::Test {
 protected:
  // Buckets 1 and 2, no assignment, at version 1.
  GroupCommitTest()
      : store_(SnapshotOf(1, {RoleBucket(1, "a", "default", {{"ingestion", "in_a"}}),
                              RoleBucket(2, "b", "default", {{"ingestion", "in_b"}})})) {}

  // A manager over store_ that records the versions it publishes after
  // Init().
  std::unique_ptr<MappingManager> Manager(int max_write_group) {
    auto manager = std::make_unique<MappingManager>(&store_, max_write_group);
    EXPECT_THAT(manager->Init(), IsOk());
    manager->AddListener([this](const MappingManager::Published& p) {
      absl::MutexLock lock(&mu_);
      published_.push_back(p.snapshot->version());
      with_delta_.push_back(p.encoded_delta != nullptr);
    });
    return manager;
  }

  // Holds the first WriteGroup() until Release(), so that the writers
  // started meanwhile queue behind it.
  void HoldFirstGroup() {
    store_.set_on_write_group([this](size_t) {
      if (!held_.exchange(true)) release_.WaitForNotification();
    });
  }
  void Release() { release_.Notify(); }

  // Pins team 100 + i to bucket 1 + i % 2 on `writers` threads, the first
  // alone before the others start (so that it leads a group of one, held
  // by HoldFirstGroup()). Returns each write's result.
  std::vector<absl::StatusOr<WriteResult>> ConcurrentPins(MappingManager& manager, int writers,
                                                          const std::vector<PlanFn>& plans = {}) {
    std::vector<absl::StatusOr<WriteResult>> results(writers, absl::UnknownError("not run"));
    auto write = [&](int i) {
      const PlanFn plan = i < static_cast<int>(plans.size()) && plans[i]
                              ? plans[i]
                              : PinPlan(100 + i, static_cast<int32_t>(1 + i % 2));
      results[i] = manager.Write(Ctx("AssignTeam"), plan);
    };
    std::vector<std::thread> threads;
    threads.emplace_back(write, 0);
    EXPECT_TRUE(WaitUntil([this] { return held_.load(); }));
    for (int i = 1; i < writers; ++i) threads.emplace_back(write, i);
    // The writers reach the queue well within this; one that does not
    // only makes a later group.
    absl::SleepFor(absl::Milliseconds(200));
    Release();
    for (std::thread& t : threads) t.join();
    return results;
  }

  std::vector<int64_t> Published() {
    absl::MutexLock lock(&mu_);
    return published_;
  }

  FakeStore store_;
  std::atomic<bool> held_{false};
  absl::Notification release_;
  absl::Mutex mu_;
  std::vector<int64_t> published_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> with_delta_ ABSL_GUARDED_BY(mu_);
};

TEST_F(GroupCommitTest, QueuedWritersCommitAsOneGroupEachWithItsOwnVersion) {
  std::unique_ptr<MappingManager> manager = Manager(MappingManager::kDefaultMaxWriteGroup);
  HoldFirstGroup();
  std::vector<absl::StatusOr<WriteResult>> results = ConcurrentPins(*manager, 6);

  std::vector<int64_t> versions;
  for (const absl::StatusOr<WriteResult>& r : results) {
    ASSERT_THAT(r, IsOk());
    versions.push_back(r->version);
  }
  // Each write has its own version, gapless after 1.
  std::sort(versions.begin(), versions.end());
  EXPECT_THAT(versions, ElementsAre(2, 3, 4, 5, 6, 7));
  // The first wrote alone; the five that queued behind it, together.
  EXPECT_THAT(store_.write_groups(), ElementsAre(1, 5));
  // Published once each, in version order, each as a delta.
  EXPECT_THAT(Published(), ElementsAre(2, 3, 4, 5, 6, 7));
  absl::MutexLock lock(&mu_);
  EXPECT_THAT(with_delta_, Each(true));
  EXPECT_EQ(manager->Current()->version(), 7);
  EXPECT_EQ(manager->Current()->snapshot().assignment_count(), 6);
}

TEST_F(GroupCommitTest, AFailingWriteFailsAloneInItsGroup) {
  std::unique_ptr<MappingManager> manager = Manager(MappingManager::kDefaultMaxWriteGroup);
  HoldFirstGroup();
  std::vector<PlanFn> plans(4);
  plans[2] = [](const Snapshot&) -> absl::StatusOr<PlannedWrite> {
    return absl::InvalidArgumentError("bucket_id: no such bucket");
  };
  std::vector<absl::StatusOr<WriteResult>> results = ConcurrentPins(*manager, 4, plans);
  EXPECT_THAT(results[2], StatusIs(absl::StatusCode::kInvalidArgument));
  std::vector<int64_t> versions;
  for (int i : {0, 1, 3}) {
    ASSERT_THAT(results[i], IsOk());
    versions.push_back(results[i]->version);
  }
  std::sort(versions.begin(), versions.end());
  EXPECT_THAT(versions, ElementsAre(2, 3, 4));
  EXPECT_THAT(store_.write_groups(), ElementsAre(1, 3));
  EXPECT_THAT(Published(), ElementsAre(2, 3, 4));
  EXPECT_EQ(store_.ChangeLog().size(), 3u);
}

TEST_F(GroupCommitTest, MaxWriteGroupBoundsAGroup) {
  std::unique_ptr<MappingManager> manager = Manager(3);
  HoldFirstGroup();
  std::vector<absl::StatusOr<WriteResult>> results = ConcurrentPins(*manager, 8);
  for (const absl::StatusOr<WriteResult>& r : results) ASSERT_THAT(r, IsOk());
  const std::vector<size_t> groups = store_.write_groups();
  EXPECT_THAT(groups, Each(Le(3u)));
  EXPECT_EQ(std::accumulate(groups.begin(), groups.end(), size_t{0}), 8u);
  EXPECT_EQ(groups[0], 1u);
  EXPECT_THAT(Published(), ElementsAre(2, 3, 4, 5, 6, 7, 8, 9));
}

TEST_F(GroupCommitTest, MaxWriteGroupOfOneCommitsEveryWriteAlone) {
  std::unique_ptr<MappingManager> manager = Manager(1);
  HoldFirstGroup();
  std::vector<absl::StatusOr<WriteResult>> results = ConcurrentPins(*manager, 5);
  for (const absl::StatusOr<WriteResult>& r : results) ASSERT_THAT(r, IsOk());
  EXPECT_THAT(store_.write_groups(), ElementsAre(1, 1, 1, 1, 1));
  EXPECT_THAT(Published(), ElementsAre(2, 3, 4, 5, 6));
}

}  // namespace
}  // namespace unit_test
}  // namespace bucketmap
