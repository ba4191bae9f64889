// Change: what one version does to the mapping (the domain form of
// bucketmap.v1.MappingDelta).
#ifndef BUCKETMAP_DOMAIN_CHANGE_H_
#define BUCKETMAP_DOMAIN_CHANGE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "domain/model.h"

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

  bool empty() const { return buckets.empty() && set.empty() && unset.empty(); }
};

}  // namespace bucketmap

#endif  // BUCKETMAP_DOMAIN_CHANGE_H_
