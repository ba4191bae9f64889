// HandoffGate: tells a consumer whether an event may be processed now
// (SPEC §5, rules 5 and 6).
//
// Producers stamp each event with the version of the route they used
// (header `bucketmap-version`). For an event of team T, read from bucket B,
// stamped with version s, Check() answers:
//   - hold while the client's own version is below s: the producer knew of
//     a change this consumer has not applied yet (it may be the handoff
//     that moves T into B);
//   - hold while an open, ordered handoff moves T into B (B is the
//     target): the source may still hold T's earlier events;
//   - process otherwise: in particular on the source bucket, which keeps
//     serving every team whose handoff from it is open, and for events
//     stamped before the move that still sit in the source.
// A hold ends with a new version (OnChange): the client catches up to s,
// or the handoff reaches COMPLETED, FORCED or CANCELLED.
//
// What the consumer does with a hold (bucketmap/kafka_hold.h does it for
// librdkafka): pause the event's partition at the event's offset, store
// no offset past it, and resume from it when Check() says process. Never
// buffer held events in memory.
//
// Thread safety: Check() may be called from any thread; it is lock-free
// and allocation-free unless the team is in an open handoff. The Client
// must outlive the gate.
#ifndef BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_HANDOFF_GATE_H_
#define BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_HANDOFF_GATE_H_

#include <cstdint>
#include <string_view>

#include "bucketmap/client.h"

namespace bucketmap {

struct GateDecision {
  enum class Reason : uint8_t {
    // Process: the team is in no open handoff.
    kNoHandoff,
    // Process: this bucket is the source of the team's open handoff.
    kSource,
    // Process: the team's open handoff is unordered (ordered=false).
    kUnordered,
    // Process: the team is in an open handoff that does not involve this
    // bucket (the event is a stray; processing it is at least once).
    kOtherBucket,
    // Hold: the client is below the event's stamped version.
    kClientBehind,
    // Hold: an open handoff moves the team into this bucket.
    kTargetOfOpenHandoff,
  };

  bool process = true;
  Reason reason = Reason::kNoHandoff;
  // kClientBehind: the version to wait for. kTargetOfOpenHandoff: the
  // handoff's id.
  int64_t wait_version = 0;
  int64_t handoff_id = 0;

  bool hold() const { return !process; }
};

// Returns a short name of `reason`, for logs.
std::string_view GateReasonName(GateDecision::Reason reason);

// Parses a `bucketmap-version` header value (decimal). Returns 0 (no
// stamp) for an empty or malformed value.
int64_t ParseVersionHeader(std::string_view value);

class HandoffGate {
 public:
  explicit HandoffGate(const Client* client) : client_(client) {}

  // Check()
  //
  // May the event of `team_id`, read from bucket `bucket_id` and stamped
  // with `stamped_version` (0: unstamped, no version wait), be processed
  // now? See the file comment.
  GateDecision Check(int64_t team_id, int32_t bucket_id, int64_t stamped_version) const;

 private:
  const Client* const client_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_HANDOFF_GATE_H_
