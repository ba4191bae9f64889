// Placement: the pure function from (team_id, a pool's buckets) to a bucket.
//
// Step 1: TeamSlot() maps a team_id to one of kSlotCount slots with a fixed
//         64-bit hash (SplitMix64's finalizer), never std::hash/absl::Hash.
// Step 2: each slot goes to a bucket by weighted rendezvous (HRW) hashing
//         over the pool's placeable buckets (see placement.cc for the exact
//         score function). The committed test vector in
//         tests/testdata/placement_vector.txt pins both steps down; every
//         client must reproduce it bit for bit.
//
// Thread safety: PlacementTable is immutable after Build(); share it freely.
#ifndef BUCKETMAP_DOMAIN_PLACEMENT_H_
#define BUCKETMAP_DOMAIN_PLACEMENT_H_

#include <cstdint>
#include <vector>

#include "domain/model.h"

namespace bucketmap {

inline constexpr int kSlotCount = 65536;

// SplitMix64 finalizer (Steele, Lea, Flood 2014). Bijective on uint64.
uint64_t Mix64(uint64_t x);

// Returns the slot of a team: Mix64(team_id) >> 48.
uint32_t TeamSlot(int64_t team_id);

// The weight and id of one placeable bucket, as seen by placement.
struct PlacementMember {
  int32_t bucket_id;
  int32_t weight;
};

// Slot -> bucket table of one pool.
class PlacementTable {
 public:
  // Builds the table over `members` (any order; ids unique, weights >= 1).
  // With no member, every slot maps to 0 (unroutable).
  static PlacementTable Build(std::vector<PlacementMember> members);

  // Returns the bucket of `slot` (< kSlotCount); 0 when the pool is empty.
  int32_t BucketForSlot(uint32_t slot) const {
    return slots_.empty() ? 0 : slots_[slot];
  }
  int32_t BucketForTeam(int64_t team_id) const { return BucketForSlot(TeamSlot(team_id)); }
  bool empty() const { return slots_.empty(); }
  // Members sorted by bucket id.
  const std::vector<PlacementMember>& members() const { return members_; }

  // Fraction of slots whose bucket differs between a and b, in [0, 1].
  static double ShareMoved(const PlacementTable& a, const PlacementTable& b);

 private:
  std::vector<PlacementMember> members_;
  std::vector<int32_t> slots_;  // kSlotCount entries, or empty
};

}  // namespace bucketmap

#endif  // BUCKETMAP_DOMAIN_PLACEMENT_H_
