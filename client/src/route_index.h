// RouteIndex: the read-optimized form of one Snapshot, answering
// Route(team_id) with one hash probe and, for teams without an override,
// one slot lookup.
//
// Layout.
//   - Overrides (pins and pool assignments) live in an open-addressing hash
//     table keyed by team id, split into 2^k partitions by bits 32.. of
//     Mix64(team_id). Each entry holds the team's final route at this
//     version (bucket id, state, pool index), precomputed with the domain
//     library's placement, so a hit needs no further lookup.
//   - Teams without an override are placed by default: Mix64(team_id) >> 48
//     is the domain's TeamSlot(), which indexes a 65,536-entry table of the
//     default pool's members (16 bits each, 128 KiB), each holding its
//     bucket id and state.
//   One Mix64() serves the probe, the partition and the slot.
//
// Why partitions: a delta that touches a few teams copies only their
// partitions (about 1,024 entries each) and shares the rest with the
// previous index, so applying a small delta to a 1M-team mapping costs
// microseconds for the index, not a copy of the whole table.
//
// Thread safety: immutable after Build()/Update(); Lookup() may be called
// concurrently from any number of threads and never allocates.
#ifndef BUCKETMAP_CLIENT_SRC_ROUTE_INDEX_H_
#define BUCKETMAP_CLIENT_SRC_ROUTE_INDEX_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bucketmap/client.h"
#include "domain/placement.h"
#include "domain/snapshot.h"

namespace bucketmap {
namespace client_internal {

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
  RouteResult Lookup(int64_t team_id) const;

  int64_t version() const { return version_; }
  // Number of overrides indexed.
  size_t size() const { return size_; }
  size_t partition_count() const { return refs_.size(); }
  // True when partition `i` is the same object in both indexes (tests).
  bool TEST_SharesPartition(const RouteIndex& other, size_t i) const;

  // One override with its precomputed route. 16 bytes: four per cache line.
  struct Entry {
    int64_t team_id = 0;    // 0: an empty slot (team ids are >= 1)
    int32_t bucket_id = 0;  // 0: the team's pool has no placeable bucket
    // Bits 0..23: pool index + 1 (0 for a pin). Bits 24..31: BucketState.
    uint32_t aux = 0;
  };

 private:
  struct Partition {
    std::vector<Entry> slots;  // capacity: a power of two, at most half full
    size_t size = 0;
  };
  // What Lookup() reads: no shared_ptr control block on the hot path.
  struct PartitionRef {
    const Entry* slots;
    uint64_t mask;
  };
  struct Member {
    int32_t bucket_id;
    uint8_t state;
  };

  RouteIndex() = default;
  void Publish(size_t i, std::shared_ptr<const Partition> partition);

  int64_t version_ = 0;
  size_t size_ = 0;
  uint64_t partition_mask_ = 0;
  std::vector<PartitionRef> refs_;
  std::vector<std::shared_ptr<const Partition>> partitions_;

  // Default placement. Empty slots: the default pool has no placeable
  // bucket, and default-placed teams are unroutable.
  int32_t default_pool_index_ = -1;
  std::shared_ptr<const std::vector<uint16_t>> default_slots_;
  const uint16_t* default_slots_raw_ = nullptr;
  std::vector<Member> default_members_;
};

}  // namespace client_internal
}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_SRC_ROUTE_INDEX_H_
