#include "bucketmap/handoff_gate.h"

#include "absl/strings/numbers.h"

namespace bucketmap {

std::string_view GateReasonName(GateDecision::Reason reason) {
  switch (reason) {
    case GateDecision::Reason::kNoHandoff:
      return "no_handoff";
    case GateDecision::Reason::kSource:
      return "source";
    case GateDecision::Reason::kUnordered:
      return "unordered";
    case GateDecision::Reason::kOtherBucket:
      return "other_bucket";
    case GateDecision::Reason::kClientBehind:
      return "client_behind";
    case GateDecision::Reason::kTargetOfOpenHandoff:
      return "target_of_open_handoff";
  }
  return "unknown";
}

int64_t ParseVersionHeader(std::string_view value) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(absl::string_view(value.data(), value.size()), &v) || v < 0) return 0;
  return v;
}

GateDecision HandoffGate::Check(int64_t team_id, int32_t bucket_id,
                                int64_t stamped_version) const {
  GateDecision d;
  // The version first: a Route() that starts after version() returned v
  // answers from v or newer (client.h), so the handoff test below sees
  // every change the producer saw.
  if (client_->version() < stamped_version) {
    d.process = false;
    d.reason = GateDecision::Reason::kClientBehind;
    d.wait_version = stamped_version;
    return d;
  }
  if (!client_->Route(team_id).handoff()) return d;
  const HandoffStatus status = client_->HandoffState(team_id);
  if (!status.open()) return d;  // ended between the two reads
  d.reason = GateDecision::Reason::kOtherBucket;
  for (const TeamHandoff& h : status.handoffs) {
    if (h.target_bucket_id == bucket_id && h.source_bucket_id != bucket_id) {
      if (!h.ordered) {
        d.reason = GateDecision::Reason::kUnordered;
        continue;
      }
      d.process = false;
      d.reason = GateDecision::Reason::kTargetOfOpenHandoff;
      d.handoff_id = h.handoff_id;
      return d;
    }
    if (h.source_bucket_id == bucket_id) d.reason = GateDecision::Reason::kSource;
  }
  return d;
}

}  // namespace bucketmap
