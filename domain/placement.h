// Placement: the pure function from (team_id, a pool's buckets) to a bucket.
//
// Step 1: TeamSlot() maps a team_id to one of kSlotCount slots with a fixed
//         64-bit hash (SplitMix64's finalizer), never std::hash/absl::Hash.
// Step 2: each slot goes to a bucket by weighted rendezvous (HRW) hashing
//         over the pool's placeable buckets. The committed test vector in
//         tests/testdata/placement_vector.txt pins both steps down; every
//         client must reproduce it bit for bit.
//
// The exact functions (all arithmetic on uint64 wraps; doubles are IEEE-754
// binary64 with round-to-nearest):
//
//   Mix64(x):  x += 0x9e3779b97f4a7c15
//              z  = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
//              z  = (z ^ (z >> 27)) * 0x94d049bb133111eb
//              return z ^ (z >> 31)
//   TeamSlot(team_id) = Mix64(uint64(team_id)) >> 48           (0..65535)
//
//   For slot s and each member (bucket id b, weight w):
//     h     = Mix64((uint64(b) << 32) ^ uint64(s) ^ kPlacementSalt)
//     u     = (double(h >> 11) + 0.5) * 2^-53                   (strictly in (0, 1))
//     score = -double(w) / log(u)                              (natural log; > 0)
//   The slot goes to the member with the highest score; on an exact tie, to
//   the lower bucket id.
//
// Why this score: -ln(u) is Exp(1)-distributed, so -ln(u)/w is Exp(w) and
// the member with the smallest one (the highest score) wins with
// probability w / sum(w). Adding a member moves only the slots it wins;
// removing one moves only its own slots; other members' scores never change.
// A port must use a natural log that is accurate to within an ulp (glibc,
// musl, Java's StrictMath and Go's math.Log all qualify); scores of distinct
// members are never that close in practice, and the vector would catch it.
//
// Thread safety: PlacementTable is immutable after Build(); share it freely.
#ifndef BUCKETMAP_DOMAIN_PLACEMENT_H_
#define BUCKETMAP_DOMAIN_PLACEMENT_H_

#include <cstdint>
#include <vector>

#include "domain/model.h"

namespace bucketmap {

inline constexpr int kSlotCount = 65536;

// Salt of the rendezvous hash: ASCII "bktmap01". Changing it moves every
// team; it is part of the wire contract like the test vector.
inline constexpr uint64_t kPlacementSalt = 0x626b746d61703031ULL;

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
  int32_t BucketForSlot(uint32_t slot) const { return slots_.empty() ? 0 : slots_[slot]; }
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
