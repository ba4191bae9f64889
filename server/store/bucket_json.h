// How a bucket's spec is stored: the `buckets.spec` column holds the JSON
// form of bucketmap.v1.Bucket (proto field names), so that a release that
// adds fields can still read what an older one wrote and the other way
// round (unknown fields are ignored). Pure functions; thread-safe.
#ifndef BUCKETMAP_SERVER_STORE_BUCKET_JSON_H_
#define BUCKETMAP_SERVER_STORE_BUCKET_JSON_H_

#include <string>

#include "absl/status/statusor.h"
#include "domain/model.h"

namespace bucketmap {

std::string BucketToJson(const Bucket& bucket);

// DataLoss when `json` is not a bucket's JSON form.
absl::StatusOr<Bucket> BucketFromJson(const std::string& json);

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_STORE_BUCKET_JSON_H_
