// The bucketmap domain model: buckets, assignment targets and routes.
//
// Plain value types. They hold no locks; share them between threads only
// as const (for example inside an immutable Snapshot).
#ifndef BUCKETMAP_DOMAIN_MODEL_H_
#define BUCKETMAP_DOMAIN_MODEL_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace bucketmap {

// The pool of every team without an override.
inline constexpr char kDefaultPool[] = "default";

// Numeric values match bucketmap.v1.BucketState.
enum class BucketState : int { kActive = 1, kPaused = 2, kDraining = 3, kRetired = 4 };

// Returns "ACTIVE", "PAUSED", "DRAINING" or "RETIRED".
const char* BucketStateName(BucketState state);

// ACTIVE and PAUSED buckets are in placement.
inline bool IsPlaceable(BucketState s) {
  return s == BucketState::kActive || s == BucketState::kPaused;
}

struct Bucket {
  int32_t id = 0;
  std::string name;
  BucketState state = BucketState::kActive;
  int32_t weight = 100;
  std::string pool = kDefaultPool;
  std::map<std::string, std::string> topics;           // role -> topic
  std::map<std::string, std::string> consumer_groups;  // role -> group id
  std::vector<std::string> drain_order;                // roles, pipeline order
  std::map<std::string, std::string> labels;
  int64_t created_version = 0;
  int64_t updated_version = 0;

  friend bool operator==(const Bucket& a, const Bucket& b);
  friend bool operator!=(const Bucket& a, const Bucket& b) { return !(a == b); }
};

// The target of an override: a pin (bucket_id > 0) or a pool (non-empty).
// Exactly one of the two is set.
struct Target {
  int32_t bucket_id = 0;
  std::string pool;

  static Target Pin(int32_t bucket_id) { return Target{bucket_id, {}}; }
  static Target Pool(std::string pool) { return Target{0, std::move(pool)}; }
  bool is_pin() const { return bucket_id > 0; }
  friend bool operator==(const Target& a, const Target& b) {
    return a.bucket_id == b.bucket_id && a.pool == b.pool;
  }
  friend bool operator!=(const Target& a, const Target& b) { return !(a == b); }
};

// Where a team's events go at one version.
enum class RouteSource { kPin, kPool, kDefault };

struct Route {
  // 0 when unroutable: the team's pool has no placeable bucket.
  int32_t bucket_id = 0;
  RouteSource source = RouteSource::kDefault;
  // The team's pool (for kPool and kDefault); empty for pins.
  std::string_view pool;

  bool routable() const { return bucket_id > 0; }
};

// Returns "pin", "pool:<name>" or "default", as in TeamRoute.source.
std::string RouteSourceString(const Route& route);

}  // namespace bucketmap

#endif  // BUCKETMAP_DOMAIN_MODEL_H_
