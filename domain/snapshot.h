// Snapshot: the whole mapping at one version, immutable once built.
//
// A Snapshot owns its buckets, its packed assignment columns and one
// PlacementTable per pool. It is built once (Build) or derived from its
// predecessor (Apply) and then only read: any number of threads may call
// its const methods without synchronization. Publish it through a
// std::shared_ptr<const Snapshot> with release/acquire ordering.
#ifndef BUCKETMAP_DOMAIN_SNAPSHOT_H_
#define BUCKETMAP_DOMAIN_SNAPSHOT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "domain/assignment_columns.h"
#include "domain/change.h"
#include "domain/handoff.h"
#include "domain/model.h"
#include "domain/placement.h"
#include "domain/team_rule.h"

namespace bucketmap {

// The raw state a Snapshot is built from; what storage loads.
struct MappingState {
  int64_t version = 0;
  std::string cluster_id;
  int32_t next_bucket_id = 1;
  std::vector<Bucket> buckets;  // any order; ids and names unique
  // Overrides, ascending and unique by team_id.
  std::vector<std::pair<int64_t, Target>> assignments;
  // Open handoffs (any order; ids unique) and the next handoff id.
  std::vector<Handoff> handoffs;
  int64_t next_handoff_id = 1;
  // Pool objects (any order; names unique) and team rules (any order;
  // unique by (team_id, kind)).
  std::vector<Pool> pool_objects;
  std::vector<TeamRule> rules;
};

class Snapshot {
 public:
  // Builds a snapshot. Returns InvalidArgument if `state` is inconsistent
  // (duplicate ids or names, unsorted assignments, a pin to a missing
  // bucket, a malformed or duplicate pool object or team rule).
  static absl::StatusOr<std::shared_ptr<const Snapshot>> Build(MappingState state);

  // Returns the snapshot after `change`, at version() + 1. Placement tables
  // of pools the change does not touch, and the assignment chunks holding
  // none of its teams, are shared with this snapshot: the cost follows the
  // change's size and the number of buckets, not the number of assignments
  // (except when the pool table changes, which re-encodes every row).
  absl::StatusOr<std::shared_ptr<const Snapshot>> Apply(const Change& change) const;

  int64_t version() const { return version_; }
  const std::string& cluster_id() const { return cluster_id_; }
  int32_t next_bucket_id() const { return next_bucket_id_; }

  // Buckets ascending by id.
  const std::vector<Bucket>& buckets() const { return buckets_; }
  // Returns nullptr when there is no such bucket.
  const Bucket* FindBucket(int32_t id) const;
  const Bucket* FindBucketByName(std::string_view name) const;

  // Pool table: every pool that has a bucket or an assignment, sorted.
  const std::vector<std::string>& pools() const { return pools_; }
  // Returns the placement table of `pool`; an empty table if it has no
  // placeable bucket.
  const PlacementTable& PoolTable(std::string_view pool) const;

  // Packed assignment columns, ascending by team id. targets[i] > 0 is a
  // pinned bucket id; targets[i] < 0 is pool index -targets[i] - 1. Held in
  // chunks shared with the snapshots before and after this one.
  const AssignmentColumns& assignments() const { return columns_; }
  AssignmentColumns::TeamIds team_ids() const { return columns_.team_ids(); }
  AssignmentColumns::Targets targets() const { return columns_.targets(); }
  size_t assignment_count() const { return columns_.size(); }

  // Returns the override of a team, if any.
  std::optional<Target> FindAssignment(int64_t team_id) const;

  // Returns the route of `team_id` (>= 1) at this version.
  Route RouteOf(int64_t team_id) const;

  // Number of teams pinned to each bucket id.
  std::map<int32_t, int64_t> PinnedCounts() const;
  // Number of teams assigned to `pool` by override.
  int64_t PoolAssignedCount(std::string_view pool) const;
  // Number of teams pinned to `bucket_id`.
  int64_t PinnedCount(int32_t bucket_id) const;

  // Open handoffs (SWITCHING or DRAINING), ascending by id.
  const std::vector<Handoff>& handoffs() const { return handoffs_; }
  int64_t next_handoff_id() const { return next_handoff_id_; }
  // Returns the open handoff `id`, or nullptr.
  const Handoff* FindHandoff(int64_t id) const;
  // Returns the open handoffs involving `team_id`, ascending by id: those
  // that list it, and those whose pool_before placed it (unpinned, in the
  // source pool) on the source while it now routes elsewhere.
  std::vector<const Handoff*> HandoffsOf(int64_t team_id) const;
  // Returns the placement over open handoff `id`'s pool_before (where its
  // default-placed teams were before it opened), or nullptr when the
  // handoff is not open or has no pool_before.
  const PlacementTable* HandoffPlacement(int64_t id) const;

  // WithHandoffs()
  //
  // Returns a copy of this snapshot, at the same version, with `handoffs`
  // merged into its open set as Apply() would (open ones upserted, final
  // ones removed). For the planner, which learns a write's handoffs only
  // after applying its route changes. InvalidArgument on a malformed
  // handoff.
  absl::StatusOr<std::shared_ptr<const Snapshot>> WithHandoffs(const std::vector<Handoff>& handoffs,
                                                               int64_t next_handoff_id) const;

  // Pool objects (SPEC §9), ascending by name: the pools whose state or
  // priority was ever set. Other pools are ACTIVE with the default
  // priority.
  const std::vector<Pool>& pool_objects() const { return pool_objects_; }
  // Returns the object of `pool`, or nullptr when it has none.
  const Pool* FindPoolObject(std::string_view pool) const;
  // Returns the object of `pool`, or the default one (ACTIVE,
  // kDefaultPoolPriority) named `pool`.
  Pool PoolOf(std::string_view pool) const;
  bool PoolPaused(std::string_view pool) const {
    const Pool* p = FindPoolObject(pool);
    return p != nullptr && p->paused();
  }

  // Team rules, ascending by (team_id, kind).
  const std::vector<TeamRule>& team_rules() const { return rules_; }
  // The rules of `team_id`, ascending by kind (empty when it has none).
  absl::Span<const TeamRule> RulesOf(int64_t team_id) const;
  bool HasRules(int64_t team_id) const { return !RulesOf(team_id).empty(); }
  // Returns the rule of `team_id` of `kind`, or nullptr.
  const TeamRule* FindRule(int64_t team_id, RuleKind kind) const;
  // The earliest expire_time among the rules; InfiniteFuture() when none
  // expires.
  absl::Time NextRuleExpiry() const;

  // The state this snapshot was built from (copies the columns).
  MappingState ToState() const;

 private:
  Snapshot() = default;
  void BuildDerived(const Snapshot* previous, const Change* change);
  // Upserts/removes `changed` in handoffs_ and refreshes the placement
  // tables of their pool_before (shared with `previous` when unchanged).
  absl::Status MergeHandoffs(const std::vector<Handoff>& changed, int64_t next_handoff_id,
                             const Snapshot* previous);

  int64_t version_ = 0;
  std::string cluster_id_;
  int32_t next_bucket_id_ = 1;
  std::vector<Bucket> buckets_;
  std::vector<std::string> pools_;
  AssignmentColumns columns_;
  std::map<std::string, std::shared_ptr<const PlacementTable>, std::less<>> pool_tables_;
  std::map<int32_t, int64_t> pinned_counts_;
  std::map<std::string, int64_t, std::less<>> pool_counts_;
  std::vector<Handoff> handoffs_;
  int64_t next_handoff_id_ = 1;
  // Placement over each open handoff's pool_before, by handoff id.
  std::map<int64_t, std::shared_ptr<const PlacementTable>> handoff_tables_;
  std::vector<Pool> pool_objects_;  // ascending by name
  std::vector<TeamRule> rules_;     // ascending by (team_id, kind)
};

}  // namespace bucketmap

#endif  // BUCKETMAP_DOMAIN_SNAPSHOT_H_
