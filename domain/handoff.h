// Handoff: the domain form of a coordinated move out of one source bucket
// (SPEC §5; bucketmap.v1.Handoff is its wire form, server/convert.h maps
// the two).
//
// A handoff opens at version v, when a write moves teams out of a bucket:
// one handoff per source bucket covers every team that left it at v. Teams
// with an override are listed by id; default-placed teams are described by
// the source pool's placement before v (`pool_before`). The handoff then
// goes SWITCHING -> DRAINING -> COMPLETED, or ends FORCED or CANCELLED;
// every phase change is a version of its own (domain/move_policy.h plans
// them, server/handoff_coordinator.h drives them).
//
// Plain value types: no locks. Share them between threads only as const.
#ifndef BUCKETMAP_DOMAIN_HANDOFF_H_
#define BUCKETMAP_DOMAIN_HANDOFF_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "domain/placement.h"

namespace bucketmap {

// Numeric values match bucketmap.v1.HandoffPhase.
enum class HandoffPhase : int {
  kUnspecified = 0,
  kSwitching = 1,
  kDraining = 2,
  kCompleted = 3,
  kForced = 4,
  kCancelled = 5,
};

// SWITCHING and DRAINING are open; the rest are final.
inline bool IsOpenPhase(HandoffPhase p) {
  return p == HandoffPhase::kSwitching || p == HandoffPhase::kDraining;
}

// Returns "SWITCHING", "DRAINING", "COMPLETED", "FORCED", "CANCELLED" or
// "UNSPECIFIED".
const char* HandoffPhaseName(HandoffPhase phase);

// Drain progress of one role of the source bucket.
struct RoleDrain {
  std::string role;
  std::string topic;
  std::string consumer_group;   // empty: the role has no group to wait for
  int32_t partition_count = 0;  // when the handoff opened; 0: unknown
  // The drain point (end offset per partition), read when the role's drain
  // starts; empty until then.
  std::vector<int64_t> end_offsets;
  // The group's committed offsets as last seen (-1: none committed).
  std::vector<int64_t> committed_offsets;
  int64_t lag = 0;
  bool drained = false;

  friend bool operator==(const RoleDrain& a, const RoleDrain& b);
};

struct Handoff {
  int64_t id = 0;
  int64_t opened_version = 0;  // v
  int32_t source_bucket_id = 0;
  HandoffPhase state = HandoffPhase::kUnspecified;
  std::vector<int32_t> target_bucket_ids;  // ascending
  // Teams with overrides that left the source at v, ascending, and the
  // bucket each went to (parallel).
  std::vector<int64_t> team_ids;
  std::vector<int32_t> to_bucket_ids;
  // The source pool and its placement members before v; empty when the
  // pool's placement did not change at v.
  std::string source_pool;
  std::vector<PlacementMember> pool_before;
  bool ordered = true;
  absl::Time open_time = absl::InfinitePast();
  absl::Time grace_deadline = absl::InfinitePast();
  absl::Time hold_deadline = absl::InfinitePast();
  std::vector<RoleDrain> drains;  // the source's roles, in drain_order
  int32_t drain_index = 0;
  std::vector<std::string> missing_producers;
  std::string end_reason;
  int64_t phase_version = 0;
  absl::Time phase_time = absl::InfinitePast();

  bool open() const { return IsOpenPhase(state); }
  // Whether `team_id` is listed (has an override and left the source at v).
  bool Lists(int64_t team_id) const;

  friend bool operator==(const Handoff& a, const Handoff& b);
  friend bool operator!=(const Handoff& a, const Handoff& b) { return !(a == b); }
};

}  // namespace bucketmap

#endif  // BUCKETMAP_DOMAIN_HANDOFF_H_
