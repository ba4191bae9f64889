#include "client/src/wire.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace bucketmap {
namespace client_internal {
namespace {

Bucket BucketFromProto(const v1::Bucket& b) {
  Bucket out;
  out.id = b.id();
  out.name = b.name();
  // Snapshot::Build/Apply reject values outside ACTIVE..RETIRED.
  out.state = static_cast<BucketState>(b.state());
  out.weight = b.weight();
  out.pool = b.pool();
  out.topics.insert(b.topics().begin(), b.topics().end());
  out.consumer_groups.insert(b.consumer_groups().begin(), b.consumer_groups().end());
  out.drain_order.assign(b.drain_order().begin(), b.drain_order().end());
  out.labels.insert(b.labels().begin(), b.labels().end());
  out.created_version = b.created_version();
  out.updated_version = b.updated_version();
  return out;
}

// Decodes packed assignment columns against the message's pool table.
absl::Status DecodeAssignments(const v1::Assignments& a,
                               const google::protobuf::RepeatedPtrField<std::string>& pools,
                               const std::string& field,
                               std::vector<std::pair<int64_t, Target>>* out) {
  if (a.team_ids_size() != a.targets_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".targets: ", a.targets_size(), " targets for ", a.team_ids_size(), " team ids"));
  }
  out->reserve(a.team_ids_size());
  for (int i = 0; i < a.team_ids_size(); ++i) {
    const int32_t t = a.targets(i);
    if (t > 0) {
      out->emplace_back(a.team_ids(i), Target::Pin(t));
      continue;
    }
    const int64_t index = -static_cast<int64_t>(t) - 1;
    if (t == 0 || index >= pools.size()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".targets[", i, "]: target ", t,
                                                     " names neither a bucket nor one of ",
                                                     pools.size(), " pools"));
    }
    if (pools.Get(index).empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".targets[", i, "]: refers to an empty pool name"));
    }
    out->emplace_back(a.team_ids(i), Target::Pool(pools.Get(index)));
  }
  return absl::OkStatus();
}

}  // namespace

void BucketToProto(const Bucket& b, v1::Bucket* out) {
  out->set_id(b.id);
  out->set_name(b.name);
  out->set_state(static_cast<v1::BucketState>(b.state));
  out->set_weight(b.weight);
  out->set_pool(b.pool);
  out->mutable_topics()->insert(b.topics.begin(), b.topics.end());
  out->mutable_consumer_groups()->insert(b.consumer_groups.begin(), b.consumer_groups.end());
  for (const std::string& role : b.drain_order) out->add_drain_order(role);
  out->mutable_labels()->insert(b.labels.begin(), b.labels.end());
  out->set_created_version(b.created_version);
  out->set_updated_version(b.updated_version);
}

absl::StatusOr<MappingState> StateFromProto(const v1::MappingSnapshot& snapshot) {
  if (snapshot.version() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot.version: must be >= 0, got ", snapshot.version()));
  }
  if (snapshot.cluster_id().empty()) {
    return absl::InvalidArgumentError("snapshot.cluster_id: empty");
  }
  MappingState state;
  state.version = snapshot.version();
  state.cluster_id = snapshot.cluster_id();
  state.buckets.reserve(snapshot.buckets_size());
  for (const v1::Bucket& b : snapshot.buckets()) state.buckets.push_back(BucketFromProto(b));
  absl::Status s = DecodeAssignments(snapshot.assignments(), snapshot.pools(),
                                     "snapshot.assignments", &state.assignments);
  if (!s.ok()) return s;
  return state;
}

absl::StatusOr<Change> ChangeFromProto(const v1::MappingDelta& delta, const std::string& field) {
  Change change;
  change.buckets.reserve(delta.buckets_size());
  for (const v1::Bucket& b : delta.buckets()) change.buckets.push_back(BucketFromProto(b));
  absl::Status s =
      DecodeAssignments(delta.set(), delta.pools(), absl::StrCat(field, ".set"), &change.set);
  if (!s.ok()) return s;
  change.unset.assign(delta.unset_team_ids().begin(), delta.unset_team_ids().end());
  return change;
}

void SnapshotToProto(const Snapshot& snapshot, v1::MappingSnapshot* out) {
  out->Clear();
  out->set_version(snapshot.version());
  out->set_cluster_id(snapshot.cluster_id());
  for (const Bucket& b : snapshot.buckets()) BucketToProto(b, out->add_buckets());
  for (const std::string& pool : snapshot.pools()) out->add_pools(pool);
  // The snapshot's columns already use the wire encoding of targets.
  v1::Assignments* a = out->mutable_assignments();
  a->mutable_team_ids()->Add(snapshot.team_ids().begin(), snapshot.team_ids().end());
  a->mutable_targets()->Add(snapshot.targets().begin(), snapshot.targets().end());
}

}  // namespace client_internal
}  // namespace bucketmap
