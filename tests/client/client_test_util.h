// Helpers shared by the client library tests: wire encoders for domain
// snapshots and changes, random mappings, and a fake clock.
#ifndef BUCKETMAP_TESTS_CLIENT_CLIENT_TEST_UTIL_H_
#define BUCKETMAP_TESTS_CLIENT_CLIENT_TEST_UTIL_H_

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "bucketmap/client.h"
#include "bucketmap/v1/types.pb.h"
#include "codec/codec.h"
#include "domain/change.h"
#include "domain/snapshot.h"
#include "tests/domain/domain_test_util.h"

namespace bucketmap {
namespace client_testing {

using ::bucketmap::testing_util::IsOk;
using ::bucketmap::testing_util::MakeBucket;
using ::bucketmap::testing_util::MustBuild;
using ::bucketmap::testing_util::StatusIs;

inline v1::MappingSnapshot ToProto(const Snapshot& snapshot) {
  v1::MappingSnapshot out;
  ToProto(snapshot, &out);
  return out;
}

inline v1::MappingSnapshot SnapshotProto(MappingState state) {
  return ToProto(*MustBuild(std::move(state)));
}

// Encodes `change` as the delta from `from_version`. With `reverse_pools`,
// the delta's pool table lists pools in descending order, so its indexes
// differ from the snapshot's sorted pool table: the client must decode them
// by name.
inline v1::MappingDelta DeltaProto(const Change& change, int64_t from_version,
                                   bool reverse_pools = true) {
  v1::MappingDelta out;
  out.set_from_version(from_version);
  out.set_to_version(from_version + 1);
  for (const Bucket& b : change.buckets) ToProto(b, out.add_buckets());
  std::vector<std::string> pools;
  for (const auto& [team, target] : change.set) {
    if (!target.is_pin()) pools.push_back(target.pool);
  }
  std::sort(pools.begin(), pools.end());
  pools.erase(std::unique(pools.begin(), pools.end()), pools.end());
  if (reverse_pools) std::reverse(pools.begin(), pools.end());
  for (const std::string& p : pools) out.add_pools(p);
  for (const auto& [team, target] : change.set) {
    out.mutable_set()->add_team_ids(team);
    if (target.is_pin()) {
      out.mutable_set()->add_targets(target.bucket_id);
    } else {
      const auto idx = std::find(pools.begin(), pools.end(), target.pool) - pools.begin();
      out.mutable_set()->add_targets(static_cast<int32_t>(-idx - 1));
    }
  }
  for (int64_t t : change.unset) out.add_unset_team_ids(t);
  return out;
}

// A random mapping: buckets in several pools and states (so some pools have
// no placeable bucket), pins to any bucket, assignments to pools with and
// without placeable buckets, "default" included.
inline MappingState RandomState(std::mt19937_64& rng, int64_t version, size_t teams,
                                int64_t max_team, const std::string& cluster = "cluster-a") {
  MappingState state;
  state.version = version;
  state.cluster_id = cluster;
  const std::vector<std::string> pools = {"default", "paid", "free", "enterprise", "drained"};
  std::uniform_int_distribution<int> pool_pick(0, 3);
  std::uniform_int_distribution<int> weight(1, 1000);
  std::uniform_int_distribution<int> state_pick(0, 9);
  int32_t id = 1;
  for (int i = 0; i < 12; ++i, ++id) {
    BucketState s = BucketState::kActive;
    const int roll = state_pick(rng);
    if (roll == 0) s = BucketState::kPaused;
    if (roll == 1) s = BucketState::kDraining;
    if (roll == 2) s = BucketState::kRetired;
    state.buckets.push_back(MakeBucket(id, pools[pool_pick(rng)], s, weight(rng)));
  }
  // A pool whose only bucket is draining: unroutable.
  state.buckets.push_back(MakeBucket(id++, "drained", BucketState::kDraining));
  std::uniform_int_distribution<int64_t> team(1, max_team);
  std::map<int64_t, Target> assignments;
  std::uniform_int_distribution<int> kind(0, 9);
  std::uniform_int_distribution<int32_t> bucket(1, id - 1);
  const std::vector<std::string> targets = {"default", "paid", "free", "enterprise",
                                            "drained", "ghost"};  // "ghost" has no bucket at all
  std::uniform_int_distribution<size_t> target_pick(0, targets.size() - 1);
  while (assignments.size() < teams) {
    const int k = kind(rng);
    assignments[team(rng)] =
        k < 5 ? Target::Pin(bucket(rng)) : Target::Pool(targets[target_pick(rng)]);
  }
  state.assignments.assign(assignments.begin(), assignments.end());
  return state;
}

// Settable time for Staleness() and cache confirmation times.
class FakeClock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1700000000)) : now_ns_(0) {
    Set(start);
  }
  absl::Time Now() const { return absl::FromUnixNanos(now_ns_.load()); }
  void Set(absl::Time t) { now_ns_.store(absl::ToUnixNanos(t)); }
  void Advance(absl::Duration d) { Set(Now() + d); }
  std::function<absl::Time()> AsFunction() {
    return [this] { return Now(); };
  }

 private:
  std::atomic<int64_t> now_ns_;
};

}  // namespace client_testing
}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_CLIENT_CLIENT_TEST_UTIL_H_
