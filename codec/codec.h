// codec: conversions between the domain types (domain/) and the
// bucketmap.v1 wire messages (proto/). The one place that knows both; the
// server (storage, gRPC services, watch streams, change events) and the
// client library (snapshots, deltas, its cache file) use it, so both read
// the wire by the same rules.
//
// Decoding is strict: what a peer sends is checked, and a bad message is
// InvalidArgument naming the field (e.g. "deltas[2].set.targets[5]: ..."),
// never half-decoded. Ids, names, states and ordering are checked when the
// decoded state is built (Snapshot::Build / Snapshot::Apply).
//
// It links protobuf's messages only (never gRPC), so that the client and
// its ThreadSanitizer build can use it. Pure functions; thread-safe.
#ifndef BUCKETMAP_CODEC_CODEC_H_
#define BUCKETMAP_CODEC_CODEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bucketmap/v1/admin.pb.h"
#include "bucketmap/v1/mapping.pb.h"
#include "bucketmap/v1/types.pb.h"
#include "domain/change.h"
#include "domain/handoff.h"
#include "domain/load.h"
#include "domain/model.h"
#include "domain/planner.h"
#include "domain/rebalance.h"
#include "domain/snapshot.h"
#include "domain/team_rule.h"

namespace bucketmap {

void ToProto(const Bucket& bucket, v1::Bucket* out);
// Copies every field; the wire state (0 for unspecified) is not checked
// here: the validators (domain/validation.h) or Snapshot::Build do that.
Bucket FromProto(const v1::Bucket& bucket);

void ToProto(const Handoff& handoff, v1::Handoff* out);
Handoff FromProto(const v1::Handoff& handoff);

// Pools and team rules. The wire state and kind are copied as they are:
// Snapshot::Build/Apply (CheckPool, CheckTeamRule) judge them.
void ToProto(const Pool& pool, v1::Pool* out);
Pool FromProto(const v1::Pool& pool);
void ToProto(const TeamRule& rule, v1::TeamRule* out);
TeamRule FromProto(const v1::TeamRule& rule);

// ToProto(Snapshot)
//
// The full snapshot with packed assignment columns, its open handoffs, its
// pool objects and its team rules.
void ToProto(const Snapshot& snapshot, v1::MappingSnapshot* out);

// StateFromProto()
//
// The state `snapshot` describes (pool objects and team rules included),
// without its handoffs (see Snapshot::WithHandoffs). InvalidArgument, naming the field, for a
// negative version, an empty cluster id, or inconsistent assignment
// columns or pool references.
absl::StatusOr<MappingState> StateFromProto(const v1::MappingSnapshot& snapshot);

// ToProto(Change)
//
// The delta of `change`, which took the mapping from `to_version - 1`.
void ToProto(const Change& change, int64_t to_version, v1::MappingDelta* out);

// ChangeFromProto()
//
// The change `delta` describes, handoffs, pool objects and team rules
// included. InvalidArgument, naming
// the field under `field` (e.g. "deltas[2]"), when it is inconsistent.
absl::StatusOr<Change> ChangeFromProto(const v1::MappingDelta& delta, const std::string& field);

void ToProto(const Effect& effect, bool dry_run, v1::WriteEffect* out);

// The load report as the domain validates it (ValidateLoadReport); the
// conversion itself cannot fail. The client library builds its reports
// with ToProto.
LoadReport FromProto(const v1::WatchRequest::LoadReport& report);
void ToProto(const LoadReport& report, v1::WatchRequest::LoadReport* out);
void ToProto(const LoadRate& rate, v1::LoadRate* out);

// Rebalancing (AdminService.PlanRebalance / ApplyRebalance). The budget's
// absent fields take the defaults of domain/rebalance.h; its ranges are
// checked by PlanRebalance(). An unknown metric is InvalidArgument naming
// `field`.
RebalanceBudget FromProto(const v1::RebalanceBudget& budget);
void ToProto(const RebalanceBudget& budget, v1::RebalanceBudget* out);
absl::StatusOr<LoadMetric> LoadMetricFromProto(int metric, const std::string& field);
v1::LoadMetric ToProto(LoadMetric metric);
// The moves' loads are not read (ApplyRebalance ignores them).
std::vector<RebalanceMove> FromProto(
    const google::protobuf::RepeatedPtrField<v1::RebalanceMove>& moves);
// Every field of the response but frozen_team_ids and load_windows,
// which the plan does not hold.
void ToProto(const RebalancePlan& plan, LoadMetric metric, v1::PlanRebalanceResponse* out);

}  // namespace bucketmap

#endif  // BUCKETMAP_CODEC_CODEC_H_
