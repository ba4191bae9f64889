// How a WatchResponse.Push is put together from shared, pre-encoded parts
// (docs/protocol.md, "How the server encodes pushes"): the wire tags and
// varints of its per-stream header, and VersionFrame, one version's delta
// as a ready `Push.deltas` field.
//
// A frame holds the version's MappingDelta bytes as the store encoded them
// for the change log (WriteResult::encoded_delta), shared, not copied: a
// delta is encoded once, at the write, and carried to every push.
//
// Thread safety: VersionFrame is immutable but for a lazily filled,
// internally locked cache of filtered encodings; share it freely.
#ifndef BUCKETMAP_SERVER_WATCH_PUSH_FRAMES_H_
#define BUCKETMAP_SERVER_WATCH_PUSH_FRAMES_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/support/slice.h"

namespace bucketmap {

// Wire tags of the messages a push is assembled from (mapping.proto):
// WatchResponse.push = 1; Push.from_version = 1, to_version = 2, nonce = 3,
// snapshot = 4, deltas = 5, reset = 6, ack_requested = 7.
inline constexpr uint8_t kResponsePushTag = (1 << 3) | 2;
inline constexpr uint8_t kPushFromTag = (1 << 3) | 0;
inline constexpr uint8_t kPushToTag = (2 << 3) | 0;
inline constexpr uint8_t kPushNonceTag = (3 << 3) | 0;
inline constexpr uint8_t kPushSnapshotTag = (4 << 3) | 2;
inline constexpr uint8_t kPushDeltasTag = (5 << 3) | 2;
inline constexpr uint8_t kPushResetTag = (6 << 3) | 0;
inline constexpr uint8_t kPushAckRequestedTag = (7 << 3) | 0;

// Appends `v` as a protobuf varint.
void AppendVarint(std::string* out, uint64_t v);

// The most bytes a varint takes.
inline constexpr size_t kMaxVarint = 10;

// Writes `v` as a varint at `out` (room for kMaxVarint bytes); returns the
// end of what it wrote.
inline char* WriteVarint(char* out, uint64_t v) {
  while (v >= 0x80) {
    *out++ = static_cast<char>(v | 0x80);
    v >>= 7;
  }
  *out++ = static_cast<char>(v);
  return out;
}

// The tag and length of a length-delimited field of `size` bytes.
std::string FieldPrefix(uint8_t tag, size_t size);

// The targets rows had before a version: > 0 a pinned bucket, < 0 a pool
// (filters keep every pool row, so which pool does not matter), 0 none.
struct PriorTargets {
  std::vector<int32_t> set;    // parallel to the delta's set rows
  std::vector<int32_t> unset;  // parallel to its unset_team_ids
};

// One version's shared encodings.
class VersionFrame {
 public:
  // `delta` is the version's serialized MappingDelta. `prior` is needed to
  // filter (a team leaving the filtered buckets must arrive as unset);
  // frames loaded from the change log have none.
  VersionFrame(int64_t version, absl::Time time, std::shared_ptr<const std::string> delta,
               std::optional<PriorTargets> prior);

  int64_t version() const { return version_; }
  absl::Time time() const { return time_; }
  // Memory held, for the hub's byte budget.
  size_t bytes() const;

  // AppendField()
  //
  // Appends the `Push.deltas` field (tag, length, MappingDelta) for streams
  // with `filter` (sorted bucket ids; empty: no filter) to `slices`, as
  // slices that share this frame's bytes (`owner` must be this frame, kept
  // alive by the slices), and adds its size to *size. False, appending
  // nothing, when this frame cannot be filtered: the stream then takes the
  // snapshot.
  bool AppendField(const std::vector<int32_t>& filter,
                   const std::shared_ptr<const VersionFrame>& owner,
                   std::vector<grpc::Slice>* slices, size_t* size) const;

 private:
  // The filtered delta, serialized.
  std::string Filtered(const std::vector<int32_t>& filter) const;

  const int64_t version_;
  const absl::Time time_;
  const std::shared_ptr<const std::string> delta_;
  const std::string prefix_;  // of the unfiltered field: tag and length
  const std::optional<PriorTargets> prior_;
  mutable absl::Mutex mu_;
  // Filtered fields, prefix included, by filter.
  mutable std::map<std::vector<int32_t>, std::string> filtered_ ABSL_GUARDED_BY(mu_);
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_WATCH_PUSH_FRAMES_H_
