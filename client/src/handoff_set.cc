#include "client/src/handoff_set.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bucketmap {
namespace client_internal {
namespace {

bool IsFinal(v1::HandoffPhase phase) {
  return phase == v1::HANDOFF_COMPLETED || phase == v1::HANDOFF_FORCED ||
         phase == v1::HANDOFF_CANCELLED;
}

// What every handoff of a snapshot or a delta must be, ended or not (the
// server's Snapshot::MergeHandoffs refuses the same): an id >= 1 that the
// list does not repeat, and ascending team ids, each with its target.
absl::Status CheckHandoffs(const google::protobuf::RepeatedPtrField<v1::Handoff>& handoffs,
                           const std::string& field) {
  std::set<int64_t> ids;
  for (int i = 0; i < handoffs.size(); ++i) {
    const v1::Handoff& h = handoffs.Get(i);
    const std::string at = absl::StrCat(field, "[", i, "]");
    if (h.id() < 1) {
      return absl::InvalidArgumentError(absl::StrCat(at, ".id: must be >= 1, got ", h.id()));
    }
    if (!ids.insert(h.id()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(at, ".id: handoff ", h.id(), " appears twice"));
    }
    if (h.team_ids_size() != h.to_bucket_ids_size()) {
      return absl::InvalidArgumentError(absl::StrCat(at, ".to_bucket_ids: ", h.to_bucket_ids_size(),
                                                     " targets for ", h.team_ids_size(),
                                                     " team ids"));
    }
    if (!std::is_sorted(h.team_ids().begin(), h.team_ids().end())) {
      return absl::InvalidArgumentError(absl::StrCat(at, ".team_ids: not in ascending order"));
    }
  }
  return absl::OkStatus();
}

// An open handoff, checked by CheckHandoffs, as the set keeps it.
absl::StatusOr<std::shared_ptr<const HandoffSet::Entry>> MakeEntry(const v1::Handoff& h,
                                                                   const std::string& field) {
  auto entry = std::make_shared<HandoffSet::Entry>();
  entry->handoff = h;
  if (h.pool_before_size() > 0) {
    std::vector<PlacementMember> members;
    std::set<int32_t> ids;
    for (int i = 0; i < h.pool_before_size(); ++i) {
      const v1::PlacementMember& m = h.pool_before(i);
      if (m.bucket_id() < 1 || m.weight() < 1 || !ids.insert(m.bucket_id()).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".pool_before[", i, "]: bucket ", m.bucket_id(), " weight ",
                         m.weight(), " (ids must be unique and >= 1, weights >= 1)"));
      }
      members.push_back(PlacementMember{m.bucket_id(), m.weight()});
    }
    entry->before = std::make_shared<const PlacementTable>(PlacementTable::Build(members));
  }
  return std::shared_ptr<const HandoffSet::Entry>(std::move(entry));
}

bool PoolMoved(const HandoffSet::Entry& e, std::string_view pool, uint32_t slot, int32_t bucket) {
  const v1::Handoff& h = e.handoff;
  return e.before != nullptr && h.source_pool() == pool &&
         e.before->BucketForSlot(slot) == h.source_bucket_id() && bucket != h.source_bucket_id();
}

}  // namespace

const std::shared_ptr<const HandoffSet>& HandoffSet::Empty() {
  static const auto* const kEmpty =
      new std::shared_ptr<const HandoffSet>(std::make_shared<const HandoffSet>());
  return *kEmpty;
}

absl::StatusOr<std::shared_ptr<const HandoffSet>> HandoffSet::Build(
    const google::protobuf::RepeatedPtrField<v1::Handoff>& handoffs, const std::string& field) {
  if (handoffs.empty()) return Empty();
  if (absl::Status s = CheckHandoffs(handoffs, field); !s.ok()) return s;
  auto set = std::make_shared<HandoffSet>();
  for (int i = 0; i < handoffs.size(); ++i) {
    const v1::Handoff& h = handoffs.Get(i);
    if (IsFinal(h.state())) continue;
    absl::StatusOr<std::shared_ptr<const Entry>> entry =
        MakeEntry(h, absl::StrCat(field, "[", i, "]"));
    if (!entry.ok()) return entry.status();
    set->entries_.push_back(*std::move(entry));
  }
  std::sort(set->entries_.begin(), set->entries_.end(),
            [](const auto& a, const auto& b) { return a->handoff.id() < b->handoff.id(); });
  set->Index();
  return std::shared_ptr<const HandoffSet>(std::move(set));
}

absl::StatusOr<std::shared_ptr<const HandoffSet>> HandoffSet::Apply(
    const std::shared_ptr<const HandoffSet>& previous,
    const google::protobuf::RepeatedPtrField<v1::Handoff>& changes, const std::string& field,
    std::vector<v1::Handoff>* ended) {
  // Shared while unchanged: handoffs change at a few versions only.
  if (changes.empty()) return previous;
  if (absl::Status s = CheckHandoffs(changes, field); !s.ok()) return s;
  auto set = std::make_shared<HandoffSet>();
  set->entries_ = previous->entries_;
  for (int i = 0; i < changes.size(); ++i) {
    const v1::Handoff& h = changes.Get(i);
    auto it = std::lower_bound(
        set->entries_.begin(), set->entries_.end(), h.id(),
        [](const std::shared_ptr<const Entry>& e, int64_t id) { return e->handoff.id() < id; });
    const bool present = it != set->entries_.end() && (*it)->handoff.id() == h.id();
    if (IsFinal(h.state())) {
      if (present) set->entries_.erase(it);
      if (ended != nullptr) ended->push_back(h);
      continue;
    }
    absl::StatusOr<std::shared_ptr<const Entry>> entry =
        MakeEntry(h, absl::StrCat(field, "[", i, "]"));
    if (!entry.ok()) return entry.status();
    if (present) {
      *it = *std::move(entry);
    } else {
      set->entries_.insert(it, *std::move(entry));
    }
  }
  if (set->entries_.empty()) return Empty();
  set->Index();
  return std::shared_ptr<const HandoffSet>(std::move(set));
}

void HandoffSet::Index() {
  listed_.clear();
  has_pool_handoffs_ = false;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = *entries_[i];
    for (int64_t team : e.handoff.team_ids()) listed_.emplace_back(team, static_cast<uint32_t>(i));
    has_pool_handoffs_ = has_pool_handoffs_ || e.before != nullptr;
  }
  std::sort(listed_.begin(), listed_.end());
}

void HandoffSet::Find(int64_t team_id, bool pinned, std::string_view pool, int32_t bucket,
                      std::vector<TeamHandoff>* out) const {
  if (entries_.empty()) return;
  const size_t first = out->size();
  auto add = [&](const Entry& e, int32_t target) {
    const v1::Handoff& h = e.handoff;
    out->push_back(TeamHandoff{h.id(), h.state(), h.opened_version(), h.source_bucket_id(),
                               target, h.ordered()});
  };
  std::vector<bool> seen(entries_.size(), false);
  for (auto it = std::lower_bound(listed_.begin(), listed_.end(), std::make_pair(team_id, 0u));
       it != listed_.end() && it->first == team_id; ++it) {
    const Entry& e = *entries_[it->second];
    const auto& teams = e.handoff.team_ids();
    // team_ids is ascending (CheckHandoffs) and lists team_id (listed_).
    const int index =
        static_cast<int>(std::lower_bound(teams.begin(), teams.end(), team_id) - teams.begin());
    seen[it->second] = true;
    add(e, e.handoff.to_bucket_ids(index));
  }
  if (!pinned && has_pool_handoffs_) {
    const uint32_t slot = TeamSlot(team_id);
    for (size_t i = 0; i < entries_.size(); ++i) {
      if (!seen[i] && PoolMoved(*entries_[i], pool, slot, bucket)) add(*entries_[i], bucket);
    }
  }
  std::sort(out->begin() + static_cast<std::ptrdiff_t>(first), out->end(),
            [](const TeamHandoff& a, const TeamHandoff& b) { return a.handoff_id < b.handoff_id; });
}

bool HandoffSet::Involves(int64_t team_id, bool pinned, std::string_view pool,
                          int32_t bucket) const {
  if (entries_.empty()) return false;
  auto it = std::lower_bound(listed_.begin(), listed_.end(), std::make_pair(team_id, 0u));
  if (it != listed_.end() && it->first == team_id) return true;
  return !pinned && SlotMoved(pool, TeamSlot(team_id), bucket);
}

bool HandoffSet::SlotMoved(std::string_view pool, uint32_t slot, int32_t bucket) const {
  if (!has_pool_handoffs_) return false;
  for (const auto& e : entries_) {
    if (PoolMoved(*e, pool, slot, bucket)) return true;
  }
  return false;
}

std::vector<int64_t> HandoffSet::ListedTeams() const {
  std::vector<int64_t> teams;
  teams.reserve(listed_.size());
  for (const auto& [team, index] : listed_) {
    if (teams.empty() || teams.back() != team) teams.push_back(team);
  }
  return teams;
}

}  // namespace client_internal
}  // namespace bucketmap
