// RouteResult: the value Route() returns (SPEC §6), and RouteStatus.
//
// Split from client.h so that the inline read path
// (bucketmap/internal/read_path.h) can build one. Include client.h.
//
// Thread safety: a RouteResult is a plain value.
#ifndef BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_ROUTE_RESULT_H_
#define BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_ROUTE_RESULT_H_

#include <cstdint>

#include "domain/model.h"

namespace bucketmap {

namespace client_internal {
class RouteIndex;
struct RouteTable;
}  // namespace client_internal

// Why a RouteResult has, or has no, bucket.
enum class RouteStatus : uint8_t {
  // bucket_id names the team's bucket.
  kOk = 0,
  // No mapping has been loaded yet (no snapshot, no cache file).
  kNoMapping = 1,
  // The team's pool has no ACTIVE or PAUSED bucket (SPEC §2): the event
  // must not be routed by guesswork.
  kNoPlaceableBucket = 2,
  // team_id < 1.
  kInvalidTeam = 3,
};

// The route of one team at one version: a 16-byte trivially copyable value
// (it comes back in two registers), decoded by inline accessors so that a
// caller pays only for the fields it reads.
class RouteResult {
 public:
  // No mapping: status() is kNoMapping.
  RouteResult() = default;

  // The version this result was computed from; 0 with kNoMapping.
  int64_t version() const { return version_; }
  // Why there is, or is no, bucket.
  RouteStatus status() const {
    const uint64_t forced = (bits_ >> kStatusShift) & 0x3;
    if (forced != 0) return static_cast<RouteStatus>(forced);
    return bucket_id() > 0 ? RouteStatus::kOk : RouteStatus::kNoPlaceableBucket;
  }
  bool routable() const { return status() == RouteStatus::kOk; }
  // The team's bucket; 0 unless routable().
  int32_t bucket_id() const { return static_cast<int32_t>(static_cast<uint32_t>(bits_)); }
  // State of bucket_id(); BucketState{} (0, no named value) unless
  // routable().
  BucketState bucket_state() const {
    return static_cast<BucketState>((bits_ >> kStateShift) & 0x7);
  }
  bool paused() const { return routable() && bucket_state() == BucketState::kPaused; }
  // Pin, pool assignment or default placement. kDefault without a mapping
  // and for an invalid team.
  RouteSource source() const { return static_cast<RouteSource>((bits_ >> kSourceShift) & 0x3); }
  // Index into MappingView::pools() of the team's pool (kPool, kDefault);
  // -1 for pins, without a mapping and for an invalid team.
  int32_t pool_index() const { return static_cast<int32_t>((bits_ >> kPoolShift) & kPoolMask) - 1; }
  // True while the team is part of an open handoff (SPEC §5).
  bool handoff() const { return ((bits_ >> kHandoffShift) & 1) != 0; }
  // True when the team has team rules at this version (docs/rules.md):
  // MappingView::RouteEvent() then applies them. False for every team
  // without one, at no cost to Route().
  bool has_rules() const { return ((bits_ >> kRulesShift) & 1) != 0; }

 private:
  friend class client_internal::RouteIndex;
  friend struct client_internal::RouteTable;
  friend class Client;

  // The packed form (see route_index.h):
  //   bits  0..31  bucket id          bits 54..56  BucketState
  //   bits 32..53  pool index + 1     bits 57..58  RouteSource
  //   bit  59      handoff            bits 60..61  forced RouteStatus (0: by bucket id)
  //   bit  62      team rules
  static constexpr int kPoolShift = 32;
  static constexpr uint64_t kPoolMask = (uint64_t{1} << 22) - 1;
  static constexpr int kStateShift = 54;
  static constexpr int kSourceShift = 57;
  static constexpr int kHandoffShift = 59;
  static constexpr int kStatusShift = 60;
  static constexpr int kRulesShift = 62;

  static constexpr uint64_t Forced(RouteStatus status) {
    // Only kNoMapping (1) and kInvalidTeam (3) are forced; kOk and
    // kNoPlaceableBucket follow from the bucket id.
    return (static_cast<uint64_t>(RouteSource::kDefault) << kSourceShift) |
           (static_cast<uint64_t>(status) << kStatusShift);
  }
  constexpr RouteResult(int64_t version, uint64_t bits) : version_(version), bits_(bits) {}

  int64_t version_ = 0;
  uint64_t bits_ = Forced(RouteStatus::kNoMapping);
};

}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_ROUTE_RESULT_H_
