// RouteIndex: the read-optimized form of one Snapshot, answering
// Route(team_id) with one cache line of hash table and, for teams without
// an override, one slot-table entry.
//
// Layout.
//   - Overrides (pins and pool assignments) live in a hash table keyed by
//     team id, split into 2^k partitions by bits 32.. of the team's hash.
//     A partition is an array of 64-byte buckets of four entries, probed
//     linearly bucket by bucket, and at most half full (a quarter up to
//     128Ki overrides, see route_index.cc). Each entry holds
//     the team's final route at this version (bucket id, state, pool
//     index, source, and whether the team has team rules), precomputed
//     with the domain library's placement, so a hit needs no further
//     lookup. A team without an override that has team rules, or is
//     listed in an open handoff, gets an entry too: its default route
//     with the bit set.
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
// The lookup itself is RouteTable::Lookup() in bucketmap/internal/read_path.h,
// inlined into callers of Client::Route().
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
#include "bucketmap/internal/read_path.h"
#include "client/src/handoff_set.h"
#include "domain/placement.h"
#include "domain/snapshot.h"

namespace bucketmap {
namespace client_internal {

class RouteIndex {
 public:
  // Aim for about this many overrides per partition.
  static constexpr size_t kTargetPartitionSize = 1024;

  // Builds the index of `snapshot` from scratch, with the handoff bit set
  // for the teams in an open handoff of `handoffs` (the open set at the
  // snapshot's version). ResourceExhausted when the snapshot exceeds the
  // index's encoding (more than 2^24 - 2 pools, or more than 65,536
  // placeable buckets in the default pool, counting each bucket twice when
  // some of its slots are in a pool-based handoff).
  static absl::StatusOr<std::unique_ptr<const RouteIndex>> Build(const Snapshot& snapshot,
                                                                 const HandoffSet& handoffs);
  static absl::StatusOr<std::unique_ptr<const RouteIndex>> Build(const Snapshot& snapshot) {
    return Build(snapshot, *HandoffSet::Empty());
  }

  // Builds the index of `snapshot` from `previous`, the index of its
  // predecessor. Requires that the two snapshots have the same buckets and
  // the same pool table, and differ only in the overrides and team rules
  // of the teams in `touched` (ascending, unique); and that the handoff bit
  // of no other team changed (no pool-based handoff opened or ended).
  // Untouched partitions, and the default slots, are shared.
  static absl::StatusOr<std::unique_ptr<const RouteIndex>> Update(
      const RouteIndex& previous, const Snapshot& snapshot, const HandoffSet& handoffs,
      absl::Span<const int64_t> touched);
  static absl::StatusOr<std::unique_ptr<const RouteIndex>> Update(
      const RouteIndex& previous, const Snapshot& snapshot, absl::Span<const int64_t> touched) {
    return Update(previous, snapshot, *HandoffSet::Empty(), touched);
  }

  // Returns the route of `team_id`. Wait-free; never allocates.
  RouteResult Lookup(int64_t team_id) const { return table_.Lookup(team_id); }
  // What Lookup() reads; its pointers are valid for the index's lifetime.
  const RouteTable& table() const { return table_; }

  // The packed form of a route, as RouteResult holds it.
  static uint64_t PackRoute(int32_t bucket_id, int32_t pool_index, BucketState state,
                            RouteSource source, bool handoff = false, bool rules = false) {
    return static_cast<uint64_t>(static_cast<uint32_t>(bucket_id)) |
           (static_cast<uint64_t>(pool_index + 1) << RouteResult::kPoolShift) |
           (static_cast<uint64_t>(state) << RouteResult::kStateShift) |
           (static_cast<uint64_t>(source) << RouteResult::kSourceShift) |
           (static_cast<uint64_t>(handoff) << RouteResult::kHandoffShift) |
           (static_cast<uint64_t>(rules) << RouteResult::kRulesShift);
  }
  // The handoff and team-rules bits of the packed form.
  static constexpr uint64_t kHandoffBit = uint64_t{1} << RouteResult::kHandoffShift;
  static constexpr uint64_t kRulesBit = uint64_t{1} << RouteResult::kRulesShift;
  // Pool index + 1 must fit in the packed form.
  static constexpr size_t kMaxPools = RouteResult::kPoolMask - 1;
  // The result of a query without a mapping.
  static RouteResult NoMapping() { return RouteResult(); }

  int64_t version() const { return version_; }
  // Number of entries indexed: the overrides, plus the teams without one
  // that are listed in an open handoff or have team rules (see
  // MakeDefaultEntry in the .cc).
  size_t size() const { return size_; }
  size_t partition_count() const { return refs_.size(); }
  // True when partition `i` is the same object in both indexes (tests).
  bool TEST_SharesPartition(const RouteIndex& other, size_t i) const;

  using Entry = RouteEntry;
  using Bucket = RouteBucket;

 private:
  struct Partition {
    // A power of two, at most half (or a quarter) of the entries used.
    absl::Span<const Bucket> buckets;
    size_t size = 0;
    // Owns `buckets`: a slab shared with the other partitions of one
    // Build() or repack, or this partition's own allocation.
    std::shared_ptr<const void> storage;
  };
  // What Lookup() reads: no shared_ptr control block on the hot path.
  using PartitionRef = RoutePartitionRef;

  RouteIndex() = default;
  // Builds a partition of `entries` in `buckets` (zeroed, a power of two
  // large enough for them, see BucketsFor()), owned by `storage`.
  static std::shared_ptr<const Partition> BuildPartition(const std::vector<Entry>& entries,
                                                         absl::Span<Bucket> buckets,
                                                         std::shared_ptr<const void> storage);
  // Copies every partition into one new slab, when most of them have left
  // the last one (see route_index.cc).
  void MaybeRepack();
  void Publish(size_t i, std::shared_ptr<const Partition> partition);
  // Points table_ at this index's arrays; last step of Build()/Update().
  void Seal();

  RouteTable table_;
  int64_t version_ = 0;
  size_t size_ = 0;
  uint64_t partition_mask_ = 0;
  std::vector<PartitionRef> refs_;
  std::vector<std::shared_ptr<const Partition>> partitions_;
  // Partitions are at most 1/2^load_shift_ full (chosen by Build()).
  int load_shift_ = 1;
  // The slab the last Build() or repack put every partition in.
  std::shared_ptr<const void> slab_;

  // Default placement: slot -> index into the default members' packed
  // routes. When the default pool has no placeable bucket, every slot maps
  // to one unroutable route. A member some of whose slots are moving in an
  // open pool-based handoff has a second route, with the handoff bit, for
  // those slots: the bit costs Route() nothing.
  std::shared_ptr<const std::vector<uint16_t>> default_slots_;
  std::shared_ptr<const std::vector<uint64_t>> default_routes_;
};

}  // namespace client_internal
}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_SRC_ROUTE_INDEX_H_
