// HandoffSet: the open handoffs at one version, as the client keeps them
// beside its mapping (SPEC §5): built from MappingSnapshot.handoffs, then
// carried from version to version by MappingDelta.handoffs (a handoff in a
// final phase leaves the set).
//
// It answers "which open handoffs involve team T?" for two kinds of teams:
//   - teams listed in a handoff (team_ids/to_bucket_ids: pins and pool
//     assignments that left the source);
//   - teams placed by the handoff's source pool (no pin): such a team
//     moved iff placement over pool_before gives the source and its route
//     now is another bucket. pool_before is kept as a PlacementTable, built
//     once per handoff and shared by every later version.
//
// Thread safety: immutable once built; share freely.
#ifndef BUCKETMAP_CLIENT_SRC_HANDOFF_SET_H_
#define BUCKETMAP_CLIENT_SRC_HANDOFF_SET_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "bucketmap/handoff.h"
#include "bucketmap/v1/types.pb.h"
#include "domain/placement.h"

namespace bucketmap {
namespace client_internal {

class HandoffSet {
 public:
  struct Entry {
    v1::Handoff handoff;
    // Placement over pool_before; nullptr when pool_before is empty.
    std::shared_ptr<const PlacementTable> before;
  };

  // The empty set, shared.
  static const std::shared_ptr<const HandoffSet>& Empty();

  // Returns the set of `handoffs` (MappingSnapshot.handoffs). Handoffs in
  // a final phase are left out. InvalidArgument, naming the field under
  // `field` (e.g. "snapshot.handoffs"), for mismatched columns, a bad
  // pool_before or a duplicate id.
  static absl::StatusOr<std::shared_ptr<const HandoffSet>> Build(
      const google::protobuf::RepeatedPtrField<v1::Handoff>& handoffs, const std::string& field);

  // Returns the set after `changes` (MappingDelta.handoffs): each one opens
  // or replaces the handoff with its id, or, in a final phase, removes it.
  // `previous` itself when `changes` is empty. Appends to `ended` the
  // handoffs that reached a final phase.
  static absl::StatusOr<std::shared_ptr<const HandoffSet>> Apply(
      const std::shared_ptr<const HandoffSet>& previous,
      const google::protobuf::RepeatedPtrField<v1::Handoff>& changes, const std::string& field,
      std::vector<v1::Handoff>* ended);

  bool empty() const { return entries_.empty(); }
  // Ascending by handoff id.
  const std::vector<std::shared_ptr<const Entry>>& entries() const { return entries_; }
  // True when some entry has a pool_before placement (default-placed or
  // pool-assigned teams move with it).
  bool has_pool_handoffs() const { return has_pool_handoffs_; }

  // Appends to `out` the open handoffs involving `team_id`, ascending by id.
  //   pinned: the team is pinned now (pool-based moves never apply);
  //   pool:   the team's pool now (its pool assignment, or "default");
  //   bucket: the team's route now (0 when unroutable).
  void Find(int64_t team_id, bool pinned, std::string_view pool, int32_t bucket,
            std::vector<TeamHandoff>* out) const;
  // Find() without the details.
  bool Involves(int64_t team_id, bool pinned, std::string_view pool, int32_t bucket) const;
  // True when teams of `pool` in `slot`, routed to `bucket` now, are moving
  // in an open pool-based handoff.
  bool SlotMoved(std::string_view pool, uint32_t slot, int32_t bucket) const;
  // The teams listed in any entry (ascending, unique).
  std::vector<int64_t> ListedTeams() const;

 private:
  void Index();

  std::vector<std::shared_ptr<const Entry>> entries_;
  // (team, index into entries_) for listed teams, ascending.
  std::vector<std::pair<int64_t, uint32_t>> listed_;
  bool has_pool_handoffs_ = false;
};

}  // namespace client_internal
}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_SRC_HANDOFF_SET_H_
