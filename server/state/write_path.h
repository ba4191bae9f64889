// WritePath: one admin write, from its plan to its committed (or dry-run)
// response, with the move policy of SPEC §5 composed in.
//
// The RPC layer describes a write (MoveWrite: its context, how its route
// changes count, the plan, and how to answer) and hands it here; this layer
// builds the move policy (HandoffView::Policy, plus the move times the
// cooldown needs, read from the Store), runs the plan and the policy's
// guards against the current snapshot, and commits through the
// MappingManager, or, for a dry run, plans against this replica's snapshot
// and commits nothing.
//
// Thread safety: Run() is thread-safe. It blocks on the Store: call it from
// worker threads, never from a gRPC reactor.
#ifndef BUCKETMAP_SERVER_STATE_WRITE_PATH_H_
#define BUCKETMAP_SERVER_STATE_WRITE_PATH_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "domain/move_policy.h"
#include "domain/planner.h"
#include "domain/snapshot.h"
#include "server/state/handoff_view.h"
#include "server/state/mapping_manager.h"
#include "server/store/store.h"

namespace bucketmap {

// One write, as the RPC layer describes it.
struct MoveWrite {
  // Kind, actor, reason, request_id and its fingerprint, expected_version,
  // deadline. A forced write is recorded with kind "<kind>+force".
  WriteContext context;
  bool dry_run = false;
  // How the write's route changes count (domain/move_policy.h).
  MoveScope scope = MoveScope::kExplicit;
  bool ordered = true;
  bool force = false;
  // Not subject to the move cooldown (CreateBucket: adding capacity is not
  // flapping, and it has no `force` to override one).
  bool exempt_cooldown = false;
  // The teams of an explicit move, whose last move times the cooldown
  // needs.
  std::vector<int64_t> teams;
  // Plans the write against `before`.
  std::function<absl::StatusOr<Plan>(const Snapshot& before)> plan;
  // The serialized response of the planned write at `version`: the new
  // version, or the current one for a dry run or a no-op.
  std::function<std::string(const Snapshot& before, const Plan& plan, int64_t version,
                            bool dry_run)>
      respond;
};

struct WriteOutcome {
  // The serialized response: this write's, or, for a replayed request_id,
  // the first write's.
  std::string response;
  bool replayed = false;
};

class WritePath {
 public:
  // `manager` and `store` must outlive the path; `handoffs` may be null
  // (no handoff is opened, and only the RETIRED guard applies).
  WritePath(MappingManager* manager, Store* store, const HandoffView* handoffs)
      : manager_(manager), store_(store), handoffs_(handoffs) {}

  // Run()
  //
  // Plans, guards and commits `write` (see Store::Write for the version,
  // request_id and expected_version rules), or dry-runs it. Returns the
  // plan's, the guards' (FailedPrecondition) and the store's errors
  // unchanged; Aborted for a dry run whose expected_version is not this
  // replica's version.
  absl::StatusOr<WriteOutcome> Run(const MoveWrite& write) const;

 private:
  MappingManager* const manager_;
  Store* const store_;
  const HandoffView* const handoffs_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_STATE_WRITE_PATH_H_
