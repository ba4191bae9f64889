// Change: what one version does to the mapping (the domain form of
// bucketmap.v1.MappingDelta).
#ifndef BUCKETMAP_DOMAIN_CHANGE_H_
#define BUCKETMAP_DOMAIN_CHANGE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "domain/handoff.h"
#include "domain/model.h"
#include "domain/team_rule.h"

namespace bucketmap {

struct Change {
  // Full new state of each bucket created or changed (ids unique).
  std::vector<Bucket> buckets;
  // Overrides set or replaced, ascending and unique by team_id.
  std::vector<std::pair<int64_t, Target>> set;
  // Overrides removed, ascending and unique; disjoint from `set`.
  std::vector<int64_t> unset;
  // The next bucket id after this change (only grows).
  int32_t next_bucket_id = 0;
  // Full new state of each handoff opened or changed by this change (ids
  // unique). An open one enters (or stays in) the snapshot's open set; a
  // final one leaves it.
  std::vector<Handoff> handoffs;
  // The next handoff id after this change (only grows; 0: unchanged).
  int64_t next_handoff_id = 0;
  // Full new state of each pool object set (names unique). Pool objects
  // are never removed.
  std::vector<Pool> pool_objects;
  // Team rules set or replaced, ascending and unique by (team_id, kind).
  std::vector<TeamRule> rules;
  // Team rules removed, ascending and unique; disjoint from `rules`.
  std::vector<TeamRuleKey> cleared_rules;

  bool empty() const {
    return buckets.empty() && set.empty() && unset.empty() && handoffs.empty() &&
           pool_objects.empty() && rules.empty() && cleared_rules.empty();
  }
};

}  // namespace bucketmap

#endif  // BUCKETMAP_DOMAIN_CHANGE_H_
