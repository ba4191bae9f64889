// Conversions between domain types and bucketmap.v1 protos. The only
// place that knows both; the gRPC services, storage and tools use it.
#ifndef BUCKETMAP_SERVER_CONVERT_H_
#define BUCKETMAP_SERVER_CONVERT_H_

#include <string>

#include "absl/status/statusor.h"
#include "bucketmap/v1/admin.pb.h"
#include "bucketmap/v1/types.pb.h"
#include "domain/change.h"
#include "domain/handoff.h"
#include "domain/model.h"
#include "domain/planner.h"
#include "domain/snapshot.h"

namespace bucketmap {

void ToProto(const Handoff& handoff, v1::Handoff* out);
Handoff FromProto(const v1::Handoff& handoff);

void ToProto(const Bucket& bucket, v1::Bucket* out);
// Copies every field; the wire state (0 for unspecified) is not checked
// here: map it with the validators first.
Bucket FromProto(const v1::Bucket& bucket);

// Full snapshot with packed assignment columns.
void ToProto(const Snapshot& snapshot, v1::MappingSnapshot* out);
// The delta of `change`, which took the mapping from `to_version - 1`.
void ToProto(const Change& change, int64_t to_version, v1::MappingDelta* out);
// Inverse of ToProto(Change); InvalidArgument on an inconsistent delta.
absl::StatusOr<Change> FromProto(const v1::MappingDelta& delta);
void ToProto(const Effect& effect, bool dry_run, v1::WriteEffect* out);

// Bucket specs are stored in PostgreSQL as the proto's JSON form.
std::string BucketToJson(const Bucket& bucket);
absl::StatusOr<Bucket> BucketFromJson(const std::string& json);

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_CONVERT_H_
