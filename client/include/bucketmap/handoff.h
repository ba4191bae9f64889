// Handoff state as the client library sees it (SPEC §5, docs/handoff.md):
// the values Client::HandoffState() and the completion callback hand out.
// Include bucketmap/client.h.
//
// A handoff is open (SWITCHING or DRAINING) from the version that opened
// it until the version that ends it (COMPLETED, FORCED or CANCELLED). A
// team is "in" a handoff when it is listed in it (teams with an override)
// or, for a team placed by the handoff's source pool, when placement over
// the pool's members before the move gives the source and its route now
// does not.
//
// Thread safety: plain values.
#ifndef BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_HANDOFF_H_
#define BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_HANDOFF_H_

#include <cstdint>
#include <string>
#include <vector>

#include "bucketmap/v1/types.pb.h"

namespace bucketmap {

// One open handoff that involves a team.
struct TeamHandoff {
  int64_t handoff_id = 0;
  // HANDOFF_SWITCHING or HANDOFF_DRAINING.
  v1::HandoffPhase phase = v1::HANDOFF_PHASE_UNSPECIFIED;
  // The version whose route change opened the handoff (v in SPEC §5).
  int64_t opened_version = 0;
  int32_t source_bucket_id = 0;
  // Where the team goes: its listed target, or its route now.
  int32_t target_bucket_id = 0;
  // False for an emergency move (ordered=false): consumers hold nothing.
  bool ordered = true;
};

// HandoffState(team): every open handoff involving the team.
struct HandoffStatus {
  // The version this answer was computed from; 0 without a mapping.
  int64_t version = 0;
  // Ascending by handoff id; empty when the team is in no open handoff.
  std::vector<TeamHandoff> handoffs;

  bool open() const { return !handoffs.empty(); }
};

// Passed to a completion callback (Client::OnHandoffDone()) once the last
// open handoff involving the team has ended.
struct HandoffEnd {
  int64_t team_id = 0;
  // The handoff that ended last.
  int64_t handoff_id = 0;
  // HANDOFF_COMPLETED, HANDOFF_FORCED or HANDOFF_CANCELLED; or
  // HANDOFF_PHASE_UNSPECIFIED when the client never saw the final phase (it
  // resynchronized from a snapshot that no longer lists the handoff, or
  // the cluster was reset).
  v1::HandoffPhase end_state = v1::HANDOFF_PHASE_UNSPECIFIED;
  // Why it was FORCED or CANCELLED (from the server), empty otherwise.
  std::string end_reason;
  // Producers that missed the switch barrier (FORCED on its grace
  // deadline).
  std::vector<std::string> missing_producers;
  // The version at which the client learned that it ended.
  int64_t version = 0;
};

// True for SWITCHING and DRAINING.
inline bool IsOpenPhase(v1::HandoffPhase phase) {
  return phase == v1::HANDOFF_SWITCHING || phase == v1::HANDOFF_DRAINING;
}

}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_HANDOFF_H_
