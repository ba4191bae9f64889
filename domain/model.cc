#include "domain/model.h"

#include <string>

namespace bucketmap {

const char* BucketStateName(BucketState state) {
  switch (state) {
    case BucketState::kActive:
      return "ACTIVE";
    case BucketState::kPaused:
      return "PAUSED";
    case BucketState::kDraining:
      return "DRAINING";
    case BucketState::kRetired:
      return "RETIRED";
  }
  return "UNKNOWN";
}

bool operator==(const Bucket& a, const Bucket& b) {
  return a.id == b.id && a.name == b.name && a.state == b.state && a.weight == b.weight &&
         a.pool == b.pool && a.topics == b.topics && a.consumer_groups == b.consumer_groups &&
         a.drain_order == b.drain_order && a.labels == b.labels &&
         a.created_version == b.created_version && a.updated_version == b.updated_version;
}

std::string RouteSourceString(const Route& route) {
  switch (route.source) {
    case RouteSource::kPin:
      return "pin";
    case RouteSource::kPool:
      return "pool:" + std::string(route.pool);
    case RouteSource::kDefault:
      return "default";
  }
  return "default";
}

}  // namespace bucketmap
