#include "domain/handoff.h"

#include <algorithm>

namespace bucketmap {

const char* HandoffPhaseName(HandoffPhase phase) {
  switch (phase) {
    case HandoffPhase::kSwitching:
      return "SWITCHING";
    case HandoffPhase::kDraining:
      return "DRAINING";
    case HandoffPhase::kCompleted:
      return "COMPLETED";
    case HandoffPhase::kForced:
      return "FORCED";
    case HandoffPhase::kCancelled:
      return "CANCELLED";
    case HandoffPhase::kUnspecified:
      break;
  }
  return "UNSPECIFIED";
}

bool operator==(const RoleDrain& a, const RoleDrain& b) {
  return a.role == b.role && a.topic == b.topic && a.consumer_group == b.consumer_group &&
         a.partition_count == b.partition_count && a.end_offsets == b.end_offsets &&
         a.committed_offsets == b.committed_offsets && a.lag == b.lag && a.drained == b.drained;
}

bool Handoff::Lists(int64_t team_id) const {
  return std::binary_search(team_ids.begin(), team_ids.end(), team_id);
}

bool operator==(const Handoff& a, const Handoff& b) {
  auto same_members = [](const std::vector<PlacementMember>& x,
                         const std::vector<PlacementMember>& y) {
    return std::equal(x.begin(), x.end(), y.begin(), y.end(),
                      [](const PlacementMember& m, const PlacementMember& n) {
                        return m.bucket_id == n.bucket_id && m.weight == n.weight;
                      });
  };
  return a.id == b.id && a.opened_version == b.opened_version &&
         a.source_bucket_id == b.source_bucket_id && a.state == b.state &&
         a.target_bucket_ids == b.target_bucket_ids && a.team_ids == b.team_ids &&
         a.to_bucket_ids == b.to_bucket_ids && a.source_pool == b.source_pool &&
         same_members(a.pool_before, b.pool_before) && a.ordered == b.ordered &&
         a.open_time == b.open_time && a.grace_deadline == b.grace_deadline &&
         a.hold_deadline == b.hold_deadline && a.drains == b.drains &&
         a.drain_index == b.drain_index && a.missing_producers == b.missing_producers &&
         a.end_reason == b.end_reason && a.phase_version == b.phase_version &&
         a.phase_time == b.phase_time;
}

}  // namespace bucketmap
