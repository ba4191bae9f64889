#include "server/state/mapping_manager.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bucketmap/v1/types.pb.h"
#include "codec/codec.h"
#include "domain/status_macros.h"
#include "spdlog/spdlog.h"

namespace bucketmap {

const std::string& ServedSnapshot::Serialized() const {
  absl::call_once(once_, [this] {
    v1::MappingSnapshot proto;
    ToProto(*snapshot_, &proto);
    serialized_ = proto.SerializeAsString();
  });
  return serialized_;
}

struct MappingManager::Writer {
  Writer(const WriteContext& ctx, const ReadingPlanFn& plan) : ctx(ctx), plan(plan) {}

  const WriteContext& ctx;
  const ReadingPlanFn& plan;
  // `plan`, keeping the change of its last call, so watchers get the
  // write's version as a delta.
  ReadingPlanFn keep_change;
  Change change;
  absl::StatusOr<WriteResult> result = absl::InternalError("write: not run");
  bool done = false;
};

MappingManager::MappingManager(Store* store, int max_write_group)
    : store_(store), max_write_group_(std::max(1, max_write_group)) {}

absl::Status MappingManager::Init() {
  absl::MutexLock lock(&write_mu_);
  return ReloadLocked();
}

std::shared_ptr<const ServedSnapshot> MappingManager::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

void MappingManager::AddListener(Listener listener) { listeners_.push_back(std::move(listener)); }

void MappingManager::Publish(std::shared_ptr<const Snapshot> snapshot, const Change* change,
                             std::shared_ptr<const std::string> encoded_delta) {
  auto served = std::make_shared<const ServedSnapshot>(std::move(snapshot));
  {
    absl::MutexLock lock(&mu_);
    if (current_ != nullptr) {
      // A database restored or replaced under us has another cluster id;
      // its versions restart, and clients reset on the new id.
      const bool same_cluster =
          current_->snapshot().cluster_id() == served->snapshot().cluster_id();
      if (same_cluster && current_->version() >= served->version()) return;
      if (!same_cluster || current_->version() + 1 != served->version()) change = nullptr;
    }
    current_ = served;
  }
  if (change == nullptr) {
    encoded_delta = nullptr;
  } else if (encoded_delta == nullptr) {
    v1::MappingDelta delta;
    ToProto(*change, served->version(), &delta);
    encoded_delta = std::make_shared<const std::string>(delta.SerializeAsString());
  }
  const Published published{served, change, std::move(encoded_delta)};
  for (const auto& listener : listeners_) listener(published);
}

absl::Status MappingManager::ReloadLocked() {
  ASSIGN_OR_RETURN(std::shared_ptr<const Snapshot> loaded, store_->LoadSnapshot());
  Publish(std::move(loaded), nullptr, nullptr);
  return absl::OkStatus();
}

absl::StatusOr<WriteResult> MappingManager::Write(const WriteContext& ctx, const PlanFn& plan) {
  return Write(
      ctx, ReadingPlanFn([&plan](const Snapshot& current, WriteReads&) { return plan(current); }));
}

absl::StatusOr<WriteResult> MappingManager::Write(const WriteContext& ctx,
                                                  const ReadingPlanFn& plan) {
  Writer writer(ctx, plan);
  std::vector<Writer*> group;
  {
    absl::MutexLock lock(&queue_mu_);
    queue_.push_back(&writer);
    auto turn = [this, &writer]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
      return writer.done || queue_.front() == &writer;
    };
    queue_mu_.Await(absl::Condition(&turn));
    if (writer.done) return std::move(writer.result);
    // This writer leads: it takes the writers queued behind it.
    for (Writer* next : queue_) {
      if (group.size() == static_cast<size_t>(max_write_group_)) break;
      group.push_back(next);
    }
  }
  RunGroup(group);
  absl::MutexLock lock(&queue_mu_);
  for (Writer* done : group) {
    queue_.pop_front();
    done->done = true;
  }
  return std::move(writer.result);
}

void MappingManager::RunGroup(const std::vector<Writer*>& group) {
  if (group_observer_) group_observer_(group.size());
  absl::MutexLock lock(&write_mu_);
  std::vector<GroupedWrite> writes;
  writes.reserve(group.size());
  for (Writer* writer : group) {
    writer->keep_change = [writer](const Snapshot& current,
                                   WriteReads& reads) -> absl::StatusOr<PlannedWrite> {
      absl::StatusOr<PlannedWrite> planned = writer->plan(current, reads);
      if (planned.ok()) writer->change = planned->plan.change;
      return planned;
    };
    writes.push_back(GroupedWrite{&writer->ctx, &writer->keep_change});
  }
  std::shared_ptr<const ServedSnapshot> cached = Current();
  std::vector<absl::StatusOr<WriteResult>> results =
      store_->WriteGroup(writes, cached ? cached->shared() : nullptr);
  for (size_t i = 0; i < group.size(); ++i) {
    Writer* writer = group[i];
    if (i < results.size()) {
      writer->result = std::move(results[i]);
    } else {
      writer->result = absl::InternalError("write group: the store returned no result");
    }
    if (!writer->result.ok()) continue;
    const WriteResult& result = *writer->result;
    if (result.snapshot != nullptr) {
      Publish(result.snapshot, &writer->change, result.encoded_delta);
      continue;
    }
    std::shared_ptr<const ServedSnapshot> current = Current();
    if (current == nullptr || current->version() < result.version) {
      // A replay of a write this copy has not seen: it is behind.
      if (absl::Status s = ReloadLocked(); !s.ok()) {
        spdlog::warn("reload after write at version {} failed: {}", result.version, s.ToString());
      }
    }
  }
}

bool MappingManager::OtherCluster(const std::string& cluster_id) const {
  std::shared_ptr<const ServedSnapshot> current = Current();
  return !cluster_id.empty() && current != nullptr &&
         current->snapshot().cluster_id() != cluster_id;
}

absl::Status MappingManager::AdvanceLocked(int64_t target, const std::string& cluster_id) {
  if (OtherCluster(cluster_id)) {
    spdlog::warn("the database now has cluster id {} (was {}): restored or replaced; reloading",
                 cluster_id, Current()->snapshot().cluster_id());
    return ReloadLocked();
  }
  std::shared_ptr<const ServedSnapshot> current = Current();
  if (current != nullptr && current->version() >= target) return absl::OkStatus();
  if (current == nullptr || target - current->version() > kMaxDeltaCatchUp) return ReloadLocked();
  absl::StatusOr<std::vector<v1::MappingDelta>> deltas =
      store_->LoadDeltas(current->version(), target);
  if (!deltas.ok()) {
    if (deltas.status().code() != absl::StatusCode::kNotFound) return deltas.status();
    return ReloadLocked();  // pruned: only the snapshot has them
  }
  std::shared_ptr<const Snapshot> snapshot = current->shared();
  for (const v1::MappingDelta& delta : *deltas) {
    absl::StatusOr<Change> change =
        ChangeFromProto(delta, absl::StrCat("change_log[", delta.to_version(), "].delta"));
    absl::StatusOr<std::shared_ptr<const Snapshot>> next =
        change.ok() ? snapshot->Apply(*change) : change.status();
    if (!next.ok() || (*next)->version() != delta.to_version()) {
      spdlog::warn("catch-up: delta of version {} does not apply to version {} ({}); reloading",
                   delta.to_version(), snapshot->version(),
                   next.ok() ? "version mismatch" : next.status().ToString());
      return ReloadLocked();
    }
    snapshot = *std::move(next);
    // Encoded again here: the deltas come parsed from the change log.
    Publish(snapshot, &*change, nullptr);
  }
  return absl::OkStatus();
}

absl::Status MappingManager::Advance(int64_t version, const std::string& cluster_id) {
  std::shared_ptr<const ServedSnapshot> current = Current();
  if (current != nullptr && current->version() >= version && !OtherCluster(cluster_id)) {
    return absl::OkStatus();
  }
  absl::MutexLock lock(&write_mu_);
  return AdvanceLocked(version, cluster_id);
}

absl::StatusOr<std::shared_ptr<const ServedSnapshot>> MappingManager::CatchUp(int64_t min_version) {
  std::shared_ptr<const ServedSnapshot> current = Current();
  if (current != nullptr && current->version() >= min_version) return current;
  {
    absl::MutexLock lock(&write_mu_);
    current = Current();
    if (current == nullptr || current->version() < min_version) {
      absl::StatusOr<std::pair<int64_t, std::string>> stored = store_->CurrentVersionAndCluster();
      absl::Status s = stored.ok() ? AdvanceLocked(stored->first, stored->second) : stored.status();
      if (!s.ok()) {
        return absl::UnavailableError(absl::StrCat("replica is behind min_version ", min_version,
                                                   " and cannot catch up: ", s.message()));
      }
    }
  }
  current = Current();
  if (current->version() < min_version) {
    return absl::UnavailableError(absl::StrCat(
        "min_version ", min_version, " is ahead of the committed version ", current->version()));
  }
  return current;
}

absl::StatusOr<int64_t> MappingManager::Refresh() {
  ASSIGN_OR_RETURN(const auto stored_at, store_->CurrentVersionAndCluster());
  const auto& [stored, cluster_id] = stored_at;
  std::shared_ptr<const ServedSnapshot> current = Current();
  if (current != nullptr && current->version() >= stored && !OtherCluster(cluster_id)) {
    return current->version();
  }
  absl::MutexLock lock(&write_mu_);
  RETURN_IF_ERROR(AdvanceLocked(stored, cluster_id));
  return Current()->version();
}

}  // namespace bucketmap
