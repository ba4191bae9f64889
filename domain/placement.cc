#include "domain/placement.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

namespace bucketmap {

uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  uint64_t z = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint32_t TeamSlot(int64_t team_id) {
  return static_cast<uint32_t>(Mix64(static_cast<uint64_t>(team_id)) >> 48);
}

namespace {

// The rendezvous score of one (slot, member) pair; see placement.h.
double Score(uint32_t slot, const PlacementMember& m) {
  const uint64_t h = Mix64((static_cast<uint64_t>(static_cast<uint32_t>(m.bucket_id)) << 32) ^
                           static_cast<uint64_t>(slot) ^ kPlacementSalt);
  // The top 53 bits plus a half step: never 0 and never 1, so log(u) is
  // finite and strictly negative.
  const double u = (static_cast<double>(h >> 11) + 0.5) * 0x1.0p-53;
  return -static_cast<double>(m.weight) / std::log(u);
}

}  // namespace

PlacementTable PlacementTable::Build(std::vector<PlacementMember> members) {
  PlacementTable table;
  std::sort(members.begin(), members.end(), [](const PlacementMember& a, const PlacementMember& b) {
    return a.bucket_id < b.bucket_id;
  });
  table.members_ = std::move(members);
  if (table.members_.empty()) return table;
  table.slots_.resize(kSlotCount);
  for (uint32_t slot = 0; slot < static_cast<uint32_t>(kSlotCount); ++slot) {
    // Members are ascending by id and only a strictly higher score replaces
    // the best, so an exact tie keeps the lower id.
    int32_t best_id = table.members_[0].bucket_id;
    double best = Score(slot, table.members_[0]);
    for (size_t i = 1; i < table.members_.size(); ++i) {
      const double s = Score(slot, table.members_[i]);
      if (s > best) {
        best = s;
        best_id = table.members_[i].bucket_id;
      }
    }
    table.slots_[slot] = best_id;
  }
  return table;
}

double PlacementTable::ShareMoved(const PlacementTable& a, const PlacementTable& b) {
  if (a.slots_.empty() && b.slots_.empty()) return 0.0;
  int64_t moved = 0;
  for (uint32_t slot = 0; slot < static_cast<uint32_t>(kSlotCount); ++slot) {
    if (a.BucketForSlot(slot) != b.BucketForSlot(slot)) ++moved;
  }
  return static_cast<double>(moved) / kSlotCount;
}

}  // namespace bucketmap
