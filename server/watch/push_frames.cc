#include "server/watch/push_frames.h"

#include <algorithm>
#include <utility>

#include "bucketmap/v1/types.pb.h"
#include "server/watch/shared_slice.h"

namespace bucketmap {
namespace {

// A packed target is kept by a filtered stream: pool rows always (their
// placement may land in a filtered bucket), pins only to filtered buckets.
bool KeepPacked(int32_t target, const std::vector<int32_t>& filter) {
  return target < 0 || (target > 0 && std::binary_search(filter.begin(), filter.end(), target));
}

}  // namespace

void AppendVarint(std::string* out, uint64_t v) {
  char bytes[kMaxVarint];
  out->append(bytes, static_cast<size_t>(WriteVarint(bytes, v) - bytes));
}

std::string FieldPrefix(uint8_t tag, size_t size) {
  std::string out(1, static_cast<char>(tag));
  AppendVarint(&out, size);
  return out;
}

VersionFrame::VersionFrame(int64_t version, absl::Time time,
                           std::shared_ptr<const std::string> delta,
                           std::optional<PriorTargets> prior)
    : version_(version),
      time_(time),
      delta_(std::move(delta)),
      prefix_(FieldPrefix(kPushDeltasTag, delta_->size())),
      prior_(std::move(prior)) {}

size_t VersionFrame::bytes() const {
  size_t n = sizeof(*this) + delta_->capacity() + prefix_.capacity();
  if (prior_.has_value()) n += 4 * (prior_->set.capacity() + prior_->unset.capacity());
  return n;
}

std::string VersionFrame::Filtered(const std::vector<int32_t>& filter) const {
  v1::MappingDelta delta;
  delta.ParseFromString(*delta_);
  // Filters narrow only the assignment rows: everything else (buckets,
  // pools, handoffs, pool objects, team rules) is kept whole.
  v1::MappingDelta out = delta;
  out.clear_set();
  out.clear_unset_team_ids();
  std::vector<int64_t> unset;
  const v1::Assignments& set = delta.set();
  for (int i = 0; i < set.team_ids_size(); ++i) {
    if (KeepPacked(set.targets(i), filter)) {
      out.mutable_set()->add_team_ids(set.team_ids(i));
      out.mutable_set()->add_targets(set.targets(i));
    } else if (KeepPacked(prior_->set[i], filter)) {
      unset.push_back(set.team_ids(i));  // the team leaves this stream's view
    }
  }
  for (int i = 0; i < delta.unset_team_ids_size(); ++i) {
    if (KeepPacked(prior_->unset[i], filter)) unset.push_back(delta.unset_team_ids(i));
  }
  std::sort(unset.begin(), unset.end());
  out.mutable_unset_team_ids()->Add(unset.begin(), unset.end());
  const std::string body = out.SerializeAsString();
  return FieldPrefix(kPushDeltasTag, body.size()) + body;
}

bool VersionFrame::AppendField(const std::vector<int32_t>& filter,
                               const std::shared_ptr<const VersionFrame>& owner,
                               std::vector<grpc::Slice>* slices, size_t* size) const {
  if (filter.empty()) {
    slices->push_back(SharedSlice(prefix_, owner));
    slices->push_back(SharedSlice(*delta_, owner));
    *size += prefix_.size() + delta_->size();
    return true;
  }
  if (!prior_.has_value()) return false;
  const std::string* field;
  {
    absl::MutexLock lock(&mu_);
    auto it = filtered_.find(filter);
    if (it == filtered_.end()) it = filtered_.emplace(filter, Filtered(filter)).first;
    field = &it->second;  // std::map nodes do not move
  }
  slices->push_back(SharedSlice(*field, owner));
  *size += field->size();
  return true;
}

}  // namespace bucketmap
