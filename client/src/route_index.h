// RouteIndex: the read-optimized form of one Snapshot, answering
// Route(team_id) with one cache line of hash table and, for teams without
// an override, one slot-table entry.
//
// Layout.
//   - Overrides (pins and pool assignments) live in a hash table keyed by
//     team id, split into 2^k partitions by bits 32.. of the team's hash.
//     A partition is an array of 64-byte buckets of four entries, probed
//     linearly bucket by bucket, and at most half full. Each entry holds
//     the team's final route at this version (bucket id, state, pool
//     index, source), precomputed with the domain library's placement, so
//     a hit needs no further lookup.
//   - Teams without an override are placed by default: hash >> 48 is the
//     domain's TeamSlot(), which indexes a 65,536-entry table (16 bits
//     each, 128 KiB) of the default pool's members, each holding its route
//     in the same packed form as an entry.
//   One hash serves the bucket (low bits), the partition (bits 32..) and
//   the slot (bits 48..63).
//
// Why it looks like this: Route() is usually limited by cache misses, and
// a CPU overlaps the misses of consecutive lookups only while it predicts
// their branches right. So Lookup() reads the override bucket and the
// default slot unconditionally and picks between them without a branch;
// the only data-dependent branch left is "this bucket is full and holds
// neither the team nor a free entry", taken by a few per cent of lookups.
//
// Why partitions: a delta that touches a few teams rebuilds only their
// partitions (about 1,024 overrides each) and shares the rest with the
// previous index, so applying a small delta to a 1M-team mapping costs the
// index microseconds, not a copy of the whole table.
//
// Thread safety: immutable after Build()/Update(); Lookup() may be called
// concurrently from any number of threads and never allocates.
#ifndef BUCKETMAP_CLIENT_SRC_ROUTE_INDEX_H_
#define BUCKETMAP_CLIENT_SRC_ROUTE_INDEX_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/optimization.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bucketmap/client.h"
#include "domain/placement.h"
#include "domain/snapshot.h"

namespace bucketmap {
namespace client_internal {

// Mix64() of domain/placement.h, inlined: Route() is dominated by its
// instruction count and branches, and the domain's copy is out of line in
// another library. RouteIndexTest.HashIsTheDomainHash holds the two equal.
inline uint64_t HashTeam(int64_t team_id) {
  uint64_t x = static_cast<uint64_t>(team_id) + 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

class RouteIndex {
 public:
  // Aim for about this many overrides per partition.
  static constexpr size_t kTargetPartitionSize = 1024;

  // Builds the index of `snapshot` from scratch. ResourceExhausted when the
  // snapshot exceeds the index's encoding (more than 2^24 - 2 pools, or
  // more than 65,536 placeable buckets in the default pool).
  static absl::StatusOr<std::unique_ptr<const RouteIndex>> Build(const Snapshot& snapshot);

  // Builds the index of `snapshot` from `previous`, the index of its
  // predecessor. Requires that the two snapshots have the same buckets and
  // the same pool table, and differ only in the overrides of the teams in
  // `touched` (ascending, unique). Untouched partitions are shared.
  static absl::StatusOr<std::unique_ptr<const RouteIndex>> Update(
      const RouteIndex& previous, const Snapshot& snapshot, absl::Span<const int64_t> touched);

  // Returns the route of `team_id`. Wait-free; never allocates.
  inline RouteResult Lookup(int64_t team_id) const;

  // The packed form of a route, as RouteResult holds it.
  static uint64_t PackRoute(int32_t bucket_id, int32_t pool_index, BucketState state,
                            RouteSource source) {
    return static_cast<uint64_t>(static_cast<uint32_t>(bucket_id)) |
           (static_cast<uint64_t>(pool_index + 1) << RouteResult::kPoolShift) |
           (static_cast<uint64_t>(state) << RouteResult::kStateShift) |
           (static_cast<uint64_t>(source) << RouteResult::kSourceShift);
  }
  // Pool index + 1 must fit in the packed form.
  static constexpr size_t kMaxPools = RouteResult::kPoolMask - 1;
  // The result of a query without a mapping.
  static RouteResult NoMapping() { return RouteResult(); }

  int64_t version() const { return version_; }
  // Number of overrides indexed.
  size_t size() const { return size_; }
  size_t partition_count() const { return refs_.size(); }
  // True when partition `i` is the same object in both indexes (tests).
  bool TEST_SharesPartition(const RouteIndex& other, size_t i) const;

  struct Entry {
    int64_t team_id = 0;  // 0: a free entry (team ids are >= 1)
    uint64_t route = 0;   // PackRoute()
  };
  // One cache line. Entries fill from the front and are never removed in
  // place (a partition is rebuilt instead), so a bucket whose last entry
  // is free ends every probe that reaches it.
  struct alignas(64) Bucket {
    Entry entries[4];
  };

 private:
  struct Partition {
    std::vector<Bucket> buckets;  // a power of two, at most half the entries used
    size_t size = 0;
  };
  // What Lookup() reads: no shared_ptr control block on the hot path.
  struct PartitionRef {
    const Bucket* buckets;
    uint64_t mask;
  };

  RouteIndex() = default;
  static std::shared_ptr<const Partition> BuildPartition(const std::vector<Entry>& entries);
  void Publish(size_t i, std::shared_ptr<const Partition> partition);

  int64_t version_ = 0;
  size_t size_ = 0;
  uint64_t partition_mask_ = 0;
  std::vector<PartitionRef> refs_;
  std::vector<std::shared_ptr<const Partition>> partitions_;

  // Default placement: slot -> index into the default members' packed
  // routes. When the default pool has no placeable bucket, every slot maps
  // to one unroutable route.
  std::shared_ptr<const std::vector<uint16_t>> default_slots_;
  std::shared_ptr<const std::vector<uint64_t>> default_routes_;
  const uint16_t* default_slots_raw_ = nullptr;
  const uint64_t* default_routes_raw_ = nullptr;
};

inline RouteResult RouteIndex::Lookup(int64_t team_id) const {
  if (ABSL_PREDICT_FALSE(team_id < 1)) {
    return RouteResult(version_, RouteResult::Forced(RouteStatus::kInvalidTeam));
  }
  const uint64_t h = HashTeam(team_id);
  // Issued before the probe and independent of it, so the two loads
  // overlap.
  const uint64_t default_route = default_routes_raw_[default_slots_raw_[h >> 48]];
  const PartitionRef& part = refs_[(h >> 32) & partition_mask_];
  uint64_t b = h & part.mask;
  const Entry* e;
  uint32_t match;
  for (;;) {
    e = part.buckets[b].entries;
    // One bit per entry holding the team, built with setcc and shifts: the
    // compiler turns a chain of ternaries back into jumps, and a
    // mispredicted jump on a cache-missing key stalls the lookups behind it.
    match = static_cast<uint32_t>(e[0].team_id == team_id) |
            static_cast<uint32_t>(e[1].team_id == team_id) << 1 |
            static_cast<uint32_t>(e[2].team_id == team_id) << 2 |
            static_cast<uint32_t>(e[3].team_id == team_id) << 3;
    // Found, or a free entry proves the team is not further on.
    if (ABSL_PREDICT_TRUE((match | static_cast<uint32_t>(e[3].team_id == 0)) != 0)) break;
    b = (b + 1) & part.mask;
  }
  // Picks the entry's route or the default one with a mask, not a branch.
  // With no match, the index is 4 & 3 = 0: a valid load, then discarded.
  const uint32_t hit = static_cast<uint32_t>(__builtin_ctz(match | 0x10u)) & 3;
  const uint64_t found = uint64_t{0} - static_cast<uint64_t>(match != 0);
  return RouteResult(version_, (e[hit].route & found) | (default_route & ~found));
}

}  // namespace client_internal
}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_SRC_ROUTE_INDEX_H_
