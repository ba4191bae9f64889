// HandoffView: what the layers above the state need from the handoff
// coordinator (server/handoff/), and no more: the move policy of a write,
// and the live view of an open handoff for read answers. The coordinator
// implements it; the RPC layer and the write path see only this, so no
// arrow runs from them to the handoff layer.
//
// Implementations are thread-safe.
#ifndef BUCKETMAP_SERVER_STATE_HANDOFF_VIEW_H_
#define BUCKETMAP_SERVER_STATE_HANDOFF_VIEW_H_

#include "bucketmap/v1/types.pb.h"
#include "domain/move_policy.h"

namespace bucketmap {

class HandoffView {
 public:
  virtual ~HandoffView() = default;

  // Policy()
  //
  // The move policy of a write made now, without the move times (the write
  // path reads those from the store when the policy's cooldown is on).
  virtual MovePolicy Policy(MoveScope scope, bool ordered, bool force) const = 0;

  // Decorate()
  //
  // Adds this replica's live view of an open handoff (committed offsets
  // and lag of the draining role, producers still missing the barrier) to
  // `handoff`. A no-op for ended handoffs or when this replica does not
  // coordinate it.
  virtual void Decorate(v1::Handoff* handoff) const = 0;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_STATE_HANDOFF_VIEW_H_
