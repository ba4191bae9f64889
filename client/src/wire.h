// Decoding of the bucketmap.v1 wire messages the client receives into the
// domain types the domain library builds snapshots from, and the encoding
// of a snapshot for the cache file.
//
// The client cannot link server/convert (it lives with the server and its
// JSON helpers), and it must check what it is sent more strictly: a bad
// frame is NACKed with the field named, never half-applied.
//
// Thread safety: pure functions.
#ifndef BUCKETMAP_CLIENT_SRC_WIRE_H_
#define BUCKETMAP_CLIENT_SRC_WIRE_H_

#include "absl/status/statusor.h"
#include "bucketmap/v1/types.pb.h"
#include "domain/change.h"
#include "domain/snapshot.h"

namespace bucketmap {
namespace client_internal {

// Returns the state `snapshot` describes. InvalidArgument, naming the
// field, when the columns or the pool references are inconsistent; the
// rest (ids, names, states, ordering) is checked by Snapshot::Build().
absl::StatusOr<MappingState> StateFromProto(const v1::MappingSnapshot& snapshot);

// Returns the change `delta` describes. InvalidArgument, naming the field
// under `field` (e.g. "deltas[2]"), when it is inconsistent.
absl::StatusOr<Change> ChangeFromProto(const v1::MappingDelta& delta, const std::string& field);

void BucketToProto(const Bucket& bucket, v1::Bucket* out);

// Encodes `snapshot` with packed columns, as the server does.
void SnapshotToProto(const Snapshot& snapshot, v1::MappingSnapshot* out);

}  // namespace client_internal
}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_SRC_WIRE_H_
