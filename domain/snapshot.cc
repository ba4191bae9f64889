#include "domain/snapshot.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <string_view>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "domain/status_macros.h"

namespace bucketmap {
namespace {

// One shared empty table, so that "no placeable bucket" compares equal by
// address across snapshots and costs no allocation.
const std::shared_ptr<const PlacementTable>& EmptyTable() {
  static const auto* const kEmpty =
      new std::shared_ptr<const PlacementTable>(std::make_shared<const PlacementTable>());
  return *kEmpty;
}

bool ValidState(BucketState s) {
  const int raw = static_cast<int>(s);
  return raw >= static_cast<int>(BucketState::kActive) &&
         raw <= static_cast<int>(BucketState::kRetired);
}

absl::Status CheckBucket(const Bucket& b, const std::string& field) {
  if (b.id < 1) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".id: must be >= 1, got ", b.id));
  }
  if (b.name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".name: bucket ", b.id, " has no name"));
  }
  if (b.pool.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".pool: bucket ", b.id, " has no pool"));
  }
  if (!ValidState(b.state)) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".state: bucket ", b.id, " has invalid state ", static_cast<int>(b.state)));
  }
  if (b.weight < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".weight: bucket ", b.id, " has weight ", b.weight, " (< 1)"));
  }
  return absl::OkStatus();
}

absl::Status CheckTarget(const Target& t, const std::string& field) {
  if (t.bucket_id < 0 || (t.bucket_id > 0) == !t.pool.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": exactly one of bucket_id (>= 1) or pool must be set"));
  }
  return absl::OkStatus();
}

int32_t PoolIndex(const std::vector<std::string>& pools, std::string_view pool) {
  auto it = std::lower_bound(pools.begin(), pools.end(), pool,
                             [](const std::string& a, std::string_view b) { return a < b; });
  if (it == pools.end() || *it != pool) return -1;
  return static_cast<int32_t>(it - pools.begin());
}

bool SameMembers(const std::vector<PlacementMember>& a, const std::vector<PlacementMember>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const PlacementMember& x, const PlacementMember& y) {
                      return x.bucket_id == y.bucket_id && x.weight == y.weight;
                    });
}

// The sorted pool table: every bucket pool, every pool with assignments,
// and "default" (which holds every team without an override).
template <typename CountMap>
std::vector<std::string> PoolList(const std::vector<Bucket>& buckets, const CountMap& pool_counts) {
  std::vector<std::string> pools;
  pools.reserve(buckets.size() + pool_counts.size() + 1);
  pools.emplace_back(kDefaultPool);
  for (const Bucket& b : buckets) pools.push_back(b.pool);
  for (const auto& [pool, count] : pool_counts) {
    if (count > 0) pools.push_back(pool);
  }
  std::sort(pools.begin(), pools.end());
  pools.erase(std::unique(pools.begin(), pools.end()), pools.end());
  return pools;
}

bool RuleLess(const TeamRule& a, const TeamRule& b) { return KeyOf(a) < KeyOf(b); }
TeamRuleKey Key(const TeamRule& rule) { return KeyOf(rule); }
TeamRuleKey Key(const TeamRuleKey& key) { return key; }

// Sorts `pools` by name and checks each; InvalidArgument for a malformed
// or duplicate one.
absl::Status SortPools(std::vector<Pool>* pools, const std::string& field) {
  std::sort(pools->begin(), pools->end(),
            [](const Pool& a, const Pool& b) { return a.name < b.name; });
  for (size_t i = 0; i < pools->size(); ++i) {
    RETURN_IF_ERROR(CheckPool((*pools)[i], absl::StrCat(field, "[", (*pools)[i].name, "]")));
    if (i > 0 && (*pools)[i - 1].name == (*pools)[i].name) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: duplicate pool \"%s\"", field, (*pools)[i].name));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Snapshot>> Snapshot::Build(MappingState state) {
  std::shared_ptr<Snapshot> s(new Snapshot());
  s->version_ = state.version;
  s->cluster_id_ = std::move(state.cluster_id);
  s->buckets_ = std::move(state.buckets);
  std::sort(s->buckets_.begin(), s->buckets_.end(),
            [](const Bucket& a, const Bucket& b) { return a.id < b.id; });

  absl::flat_hash_set<std::string_view> names;
  int32_t max_id = 0;
  for (size_t i = 0; i < s->buckets_.size(); ++i) {
    const Bucket& b = s->buckets_[i];
    RETURN_IF_ERROR(CheckBucket(b, absl::StrCat("buckets[id=", b.id, "]")));
    if (i > 0 && s->buckets_[i - 1].id == b.id) {
      return absl::InvalidArgumentError(absl::StrCat("buckets: duplicate bucket id ", b.id));
    }
    if (!names.insert(b.name).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("buckets: duplicate bucket name \"%s\"", b.name));
    }
    max_id = std::max(max_id, b.id);
  }
  // Ids are never reused, so the counter must lie beyond every existing id;
  // a stale counter is repaired rather than trusted.
  // (in 64 bits: max_id may be INT32_MAX; the next create then fails).
  s->next_bucket_id_ = static_cast<int32_t>(std::min<int64_t>(
      std::max<int64_t>({state.next_bucket_id, int64_t{max_id} + 1, 1}), INT32_MAX));

  const size_t n = state.assignments.size();
  for (size_t i = 0; i < n; ++i) {
    const auto& [team, target] = state.assignments[i];
    const std::string field = absl::StrCat("assignments[", i, "]");
    if (team < 1) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".team_id: must be >= 1, got ", team));
    }
    if (i > 0 && state.assignments[i - 1].first >= team) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".team_id: assignments must be ascending and unique by team; team ",
                       team, " follows team ", state.assignments[i - 1].first));
    }
    RETURN_IF_ERROR(CheckTarget(target, field));
    if (target.is_pin() && s->FindBucket(target.bucket_id) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".bucket_id: team ", team, " is pinned to missing bucket ", target.bucket_id));
    }
    if (target.is_pin()) {
      ++s->pinned_counts_[target.bucket_id];
    } else {
      ++s->pool_counts_[target.pool];
    }
  }

  s->pools_ = PoolList(s->buckets_, s->pool_counts_);
  {
    std::vector<int64_t> team_ids;
    std::vector<int32_t> targets;
    team_ids.reserve(n);
    targets.reserve(n);
    for (auto& [team, target] : state.assignments) {
      team_ids.push_back(team);
      targets.push_back(target.is_pin() ? target.bucket_id
                                        : -PoolIndex(s->pools_, target.pool) - 1);
    }
    s->columns_ = AssignmentColumns(team_ids, targets);
  }
  s->BuildDerived(nullptr, nullptr);
  s->next_handoff_id_ = std::max<int64_t>(state.next_handoff_id, 1);
  RETURN_IF_ERROR(s->MergeHandoffs(state.handoffs, 0, nullptr));

  RETURN_IF_ERROR(SortPools(&state.pool_objects, "pool_objects"));
  s->pool_objects_ = std::move(state.pool_objects);
  std::sort(state.rules.begin(), state.rules.end(), RuleLess);
  for (size_t i = 0; i < state.rules.size(); ++i) {
    const TeamRule& rule = state.rules[i];
    const std::string field = absl::StrCat("team_rules[", i, "]");
    RETURN_IF_ERROR(CheckTeamRule(rule, field));
    if (i > 0 && KeyOf(state.rules[i - 1]) == KeyOf(rule)) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": team ", rule.team_id, " has two rules of kind ", RuleKindName(rule.kind)));
    }
  }
  s->rules_ = std::move(state.rules);
  return std::shared_ptr<const Snapshot>(std::move(s));
}

absl::StatusOr<std::shared_ptr<const Snapshot>> Snapshot::Apply(const Change& change) const {
  std::shared_ptr<Snapshot> s(new Snapshot());
  s->version_ = version_ + 1;
  s->cluster_id_ = cluster_id_;

  // Buckets: replace by id or insert, keeping ids ascending.
  s->buckets_ = buckets_;
  absl::flat_hash_set<int32_t> changed_ids;
  int32_t max_id = 0;
  for (size_t i = 0; i < change.buckets.size(); ++i) {
    const Bucket& b = change.buckets[i];
    RETURN_IF_ERROR(CheckBucket(b, absl::StrCat("change.buckets[", i, "]")));
    if (!changed_ids.insert(b.id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("change.buckets[", i, "].id: duplicate bucket id ", b.id));
    }
    auto it = std::lower_bound(s->buckets_.begin(), s->buckets_.end(), b.id,
                               [](const Bucket& x, int32_t id) { return x.id < id; });
    if (it != s->buckets_.end() && it->id == b.id) {
      *it = b;
    } else {
      s->buckets_.insert(it, b);
    }
    max_id = std::max(max_id, b.id);
  }
  if (!change.buckets.empty()) {
    absl::flat_hash_set<std::string_view> names;
    for (const Bucket& b : s->buckets_) {
      if (!names.insert(b.name).second) {
        return absl::InvalidArgumentError(
            absl::StrFormat("change.buckets: duplicate bucket name \"%s\"", b.name));
      }
    }
  }
  s->next_bucket_id_ = static_cast<int32_t>(std::min<int64_t>(
      std::max<int64_t>({next_bucket_id_, change.next_bucket_id, int64_t{max_id} + 1}), INT32_MAX));

  // Validate the assignment changes and update the counts from them alone,
  // so that the new pool table is known before the columns are merged.
  s->pinned_counts_ = pinned_counts_;
  s->pool_counts_ = pool_counts_;
  auto forget_old = [&](int64_t team) {
    const int32_t* found = columns_.Find(team);
    if (found == nullptr) return;
    const int32_t enc = *found;
    if (enc > 0) {
      --s->pinned_counts_[enc];
    } else {
      --s->pool_counts_.find(pools_[-enc - 1])->second;
    }
  };
  for (size_t i = 0; i < change.unset.size(); ++i) {
    const int64_t team = change.unset[i];
    if (team < 1 || (i > 0 && change.unset[i - 1] >= team)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "change.unset[", i, "]: team ids must be >= 1, ascending and unique; got ", team));
    }
    // Removing an override the team does not have changes nothing.
    forget_old(team);
  }
  {
    size_t k = 0;  // walks change.unset to check disjointness linearly
    for (size_t i = 0; i < change.set.size(); ++i) {
      const auto& [team, target] = change.set[i];
      const std::string field = absl::StrCat("change.set[", i, "]");
      if (team < 1 || (i > 0 && change.set[i - 1].first >= team)) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ".team_id: team ids must be >= 1, ascending and unique; got ", team));
      }
      while (k < change.unset.size() && change.unset[k] < team) ++k;
      if (k < change.unset.size() && change.unset[k] == team) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".team_id: team ", team, " is both set and unset"));
      }
      RETURN_IF_ERROR(CheckTarget(target, field));
      if (target.is_pin()) {
        if (s->FindBucket(target.bucket_id) == nullptr) {
          return absl::InvalidArgumentError(absl::StrCat(
              field, ".bucket_id: team ", team, " pinned to missing bucket ", target.bucket_id));
        }
      }
      forget_old(team);
      if (target.is_pin()) {
        ++s->pinned_counts_[target.bucket_id];
      } else {
        ++s->pool_counts_[target.pool];
      }
    }
  }
  for (auto it = s->pinned_counts_.begin(); it != s->pinned_counts_.end();) {
    it = it->second == 0 ? s->pinned_counts_.erase(it) : std::next(it);
  }
  for (auto it = s->pool_counts_.begin(); it != s->pool_counts_.end();) {
    it = it->second == 0 ? s->pool_counts_.erase(it) : std::next(it);
  }

  s->pools_ = PoolList(s->buckets_, s->pool_counts_);
  // Pool indexes refer to the new pool table; re-encode every row when it
  // moved (a pool gained its first or lost its last bucket or assignment).
  const AssignmentColumns* base = &columns_;
  AssignmentColumns remapped;
  if (s->pools_ != pools_) {
    std::vector<int32_t> remap(pools_.size());
    for (size_t i = 0; i < pools_.size(); ++i) remap[i] = PoolIndex(s->pools_, pools_[i]);
    remapped =
        columns_.MapTargets([&remap](int32_t enc) { return enc > 0 ? enc : -remap[-enc - 1] - 1; });
    base = &remapped;
  }
  std::vector<std::pair<int64_t, int32_t>> set_rows;
  set_rows.reserve(change.set.size());
  for (const auto& [team, target] : change.set) {
    set_rows.emplace_back(
        team, target.is_pin() ? target.bucket_id : -PoolIndex(s->pools_, target.pool) - 1);
  }
  s->columns_ = base->Apply(set_rows, change.unset);

  s->BuildDerived(this, &change);
  s->handoffs_ = handoffs_;
  s->handoff_tables_ = handoff_tables_;
  s->next_handoff_id_ = next_handoff_id_;
  RETURN_IF_ERROR(s->MergeHandoffs(change.handoffs, change.next_handoff_id, this));

  // Pool objects: upserted by name.
  s->pool_objects_ = pool_objects_;
  {
    std::vector<Pool> changed = change.pool_objects;
    RETURN_IF_ERROR(SortPools(&changed, "change.pool_objects"));
    for (Pool& pool : changed) {
      auto it = std::lower_bound(s->pool_objects_.begin(), s->pool_objects_.end(), pool.name,
                                 [](const Pool& p, const std::string& n) { return p.name < n; });
      if (it != s->pool_objects_.end() && it->name == pool.name) {
        *it = std::move(pool);
      } else {
        s->pool_objects_.insert(it, std::move(pool));
      }
    }
  }

  // Team rules: a linear merge of the sorted rules with the sorted set and
  // cleared lists. Clearing a rule the team does not have changes nothing.
  if (change.rules.empty() && change.cleared_rules.empty()) {
    s->rules_ = rules_;
  } else {
    for (size_t i = 0; i < change.rules.size(); ++i) {
      const std::string field = absl::StrCat("change.rules[", i, "]");
      RETURN_IF_ERROR(CheckTeamRule(change.rules[i], field));
      if (i > 0 && !(KeyOf(change.rules[i - 1]) < KeyOf(change.rules[i]))) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": rules must be ascending and unique by (team_id, kind)"));
      }
    }
    for (size_t i = 0; i < change.cleared_rules.size(); ++i) {
      const TeamRuleKey& key = change.cleared_rules[i];
      const std::string field = absl::StrCat("change.cleared_rules[", i, "]");
      if (key.team_id < 1 || !ValidRuleKind(static_cast<int>(key.kind))) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": needs a team_id >= 1 and a valid kind"));
      }
      if (i > 0 && !(change.cleared_rules[i - 1] < key)) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": cleared rules must be ascending and unique"));
      }
      if (std::binary_search(change.rules.begin(), change.rules.end(), key,
                             [](const auto& a, const auto& b) { return Key(a) < Key(b); })) {
        return absl::InvalidArgumentError(absl::StrCat(field, ": team ", key.team_id, "'s ",
                                                       RuleKindName(key.kind),
                                                       " rule is both set and cleared"));
      }
    }
    s->rules_.reserve(rules_.size() + change.rules.size());
    size_t i = 0, j = 0, k = 0;
    const size_t n = rules_.size(), ns = change.rules.size(), nc = change.cleared_rules.size();
    while (i < n || j < ns) {
      if (j < ns && (i >= n || !(KeyOf(rules_[i]) < KeyOf(change.rules[j])))) {
        if (i < n && KeyOf(rules_[i]) == KeyOf(change.rules[j])) ++i;
        s->rules_.push_back(change.rules[j++]);
        continue;
      }
      const TeamRuleKey key = KeyOf(rules_[i]);
      while (k < nc && change.cleared_rules[k] < key) ++k;
      if (k < nc && change.cleared_rules[k] == key) {
        ++i;
        continue;
      }
      s->rules_.push_back(rules_[i++]);
    }
  }
  return std::shared_ptr<const Snapshot>(std::move(s));
}

absl::StatusOr<std::shared_ptr<const Snapshot>> Snapshot::WithHandoffs(
    const std::vector<Handoff>& handoffs, int64_t next_handoff_id) const {
  std::shared_ptr<Snapshot> s(new Snapshot(*this));
  RETURN_IF_ERROR(s->MergeHandoffs(handoffs, next_handoff_id, this));
  return std::shared_ptr<const Snapshot>(std::move(s));
}

absl::Status Snapshot::MergeHandoffs(const std::vector<Handoff>& changed, int64_t next_handoff_id,
                                     const Snapshot* previous) {
  int64_t max_id = 0;
  absl::flat_hash_set<int64_t> ids;
  for (size_t i = 0; i < changed.size(); ++i) {
    const Handoff& h = changed[i];
    const std::string field = absl::StrCat("handoffs[", i, "]");
    if (h.id < 1) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".id: must be >= 1, got ", h.id));
    }
    if (!ids.insert(h.id).second) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".id: duplicate handoff id ", h.id));
    }
    if (h.team_ids.size() != h.to_bucket_ids.size()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".to_bucket_ids: handoff ", h.id,
                                                     " has ", h.team_ids.size(), " team ids but ",
                                                     h.to_bucket_ids.size(), " target buckets"));
    }
    if (!std::is_sorted(h.team_ids.begin(), h.team_ids.end())) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".team_ids: handoff ", h.id, " lists teams out of order"));
    }
    max_id = std::max(max_id, h.id);
    auto it = std::lower_bound(handoffs_.begin(), handoffs_.end(), h.id,
                               [](const Handoff& x, int64_t id) { return x.id < id; });
    const bool present = it != handoffs_.end() && it->id == h.id;
    if (h.open()) {
      if (present) {
        *it = h;
      } else {
        handoffs_.insert(it, h);
      }
      std::shared_ptr<const PlacementTable> table;
      if (!h.pool_before.empty()) {
        const Snapshot* src = previous != nullptr ? previous : this;
        auto old = src->handoff_tables_.find(h.id);
        const Handoff* was = src->FindHandoff(h.id);
        if (old != src->handoff_tables_.end() && was != nullptr &&
            SameMembers(was->pool_before, h.pool_before)) {
          table = old->second;
        } else {
          table = std::make_shared<const PlacementTable>(PlacementTable::Build(h.pool_before));
        }
      }
      handoff_tables_[h.id] = std::move(table);
    } else {
      if (present) handoffs_.erase(it);
      handoff_tables_.erase(h.id);
    }
  }
  next_handoff_id_ = std::max({next_handoff_id_, next_handoff_id, max_id + 1});
  return absl::OkStatus();
}

const Handoff* Snapshot::FindHandoff(int64_t id) const {
  auto it = std::lower_bound(handoffs_.begin(), handoffs_.end(), id,
                             [](const Handoff& x, int64_t v) { return x.id < v; });
  return it != handoffs_.end() && it->id == id ? &*it : nullptr;
}

std::vector<const Handoff*> Snapshot::HandoffsOf(int64_t team_id) const {
  std::vector<const Handoff*> out;
  if (handoffs_.empty()) return out;
  const std::optional<Target> target = FindAssignment(team_id);
  for (const Handoff& h : handoffs_) {
    if (h.Lists(team_id)) {
      out.push_back(&h);
      continue;
    }
    if (h.pool_before.empty() || (target.has_value() && target->is_pin())) continue;
    const std::string_view pool =
        target.has_value() ? std::string_view(target->pool) : std::string_view(kDefaultPool);
    if (pool != h.source_pool) continue;
    auto table = handoff_tables_.find(h.id);
    if (table == handoff_tables_.end() || table->second == nullptr) continue;
    if (table->second->BucketForTeam(team_id) != h.source_bucket_id) continue;
    if (RouteOf(team_id).bucket_id == h.source_bucket_id) continue;
    out.push_back(&h);
  }
  return out;
}

const PlacementTable* Snapshot::HandoffPlacement(int64_t id) const {
  auto it = handoff_tables_.find(id);
  return it == handoff_tables_.end() ? nullptr : it->second.get();
}

void Snapshot::BuildDerived(const Snapshot* previous, const Change* /*change*/) {
  // Pools whose placeable members (ids and weights) are unchanged keep their
  // table: building one costs 65,536 x members score evaluations.
  std::map<std::string_view, std::vector<PlacementMember>> members;
  for (const Bucket& b : buckets_) {
    if (IsPlaceable(b.state)) members[b.pool].push_back(PlacementMember{b.id, b.weight});
  }
  pool_tables_.clear();
  for (const std::string& pool : pools_) {
    auto m = members.find(pool);
    if (m == members.end()) {
      pool_tables_.emplace(pool, EmptyTable());
      continue;
    }
    if (previous != nullptr) {
      auto old = previous->pool_tables_.find(pool);
      if (old != previous->pool_tables_.end() && SameMembers(old->second->members(), m->second)) {
        pool_tables_.emplace(pool, old->second);
        continue;
      }
    }
    pool_tables_.emplace(pool,
                         std::make_shared<const PlacementTable>(PlacementTable::Build(m->second)));
  }
}

const Bucket* Snapshot::FindBucket(int32_t id) const {
  auto it = std::lower_bound(buckets_.begin(), buckets_.end(), id,
                             [](const Bucket& b, int32_t v) { return b.id < v; });
  return it != buckets_.end() && it->id == id ? &*it : nullptr;
}

const Bucket* Snapshot::FindBucketByName(std::string_view name) const {
  for (const Bucket& b : buckets_) {
    if (b.name == name) return &b;
  }
  return nullptr;
}

const PlacementTable& Snapshot::PoolTable(std::string_view pool) const {
  auto it = pool_tables_.find(pool);
  return it == pool_tables_.end() ? *EmptyTable() : *it->second;
}

std::optional<Target> Snapshot::FindAssignment(int64_t team_id) const {
  const int32_t* found = columns_.Find(team_id);
  if (found == nullptr) return std::nullopt;
  const int32_t enc = *found;
  if (enc > 0) return Target::Pin(enc);
  return Target::Pool(pools_[-enc - 1]);
}

Route Snapshot::RouteOf(int64_t team_id) const {
  if (const int32_t* found = columns_.Find(team_id)) {
    const int32_t enc = *found;
    if (enc > 0) return Route{enc, RouteSource::kPin, {}};
    const std::string& pool = pools_[-enc - 1];
    return Route{PoolTable(pool).BucketForTeam(team_id), RouteSource::kPool, pool};
  }
  // "default" is always in pools_; point into it so the view lives as long
  // as the snapshot.
  const std::string& pool = pools_[PoolIndex(pools_, kDefaultPool)];
  return Route{PoolTable(pool).BucketForTeam(team_id), RouteSource::kDefault, pool};
}

std::map<int32_t, int64_t> Snapshot::PinnedCounts() const { return pinned_counts_; }

int64_t Snapshot::PoolAssignedCount(std::string_view pool) const {
  auto it = pool_counts_.find(pool);
  return it == pool_counts_.end() ? 0 : it->second;
}

int64_t Snapshot::PinnedCount(int32_t bucket_id) const {
  auto it = pinned_counts_.find(bucket_id);
  return it == pinned_counts_.end() ? 0 : it->second;
}

const Pool* Snapshot::FindPoolObject(std::string_view pool) const {
  auto it = std::lower_bound(pool_objects_.begin(), pool_objects_.end(), pool,
                             [](const Pool& p, std::string_view n) { return p.name < n; });
  return it != pool_objects_.end() && it->name == pool ? &*it : nullptr;
}

Pool Snapshot::PoolOf(std::string_view pool) const {
  if (const Pool* found = FindPoolObject(pool)) return *found;
  Pool p;
  p.name = std::string(pool);
  return p;
}

absl::Span<const TeamRule> Snapshot::RulesOf(int64_t team_id) const {
  auto first = std::lower_bound(rules_.begin(), rules_.end(), team_id,
                                [](const TeamRule& r, int64_t t) { return r.team_id < t; });
  auto last = first;
  while (last != rules_.end() && last->team_id == team_id) ++last;
  return absl::Span<const TeamRule>(rules_.data() + (first - rules_.begin()), last - first);
}

const TeamRule* Snapshot::FindRule(int64_t team_id, RuleKind kind) const {
  for (const TeamRule& rule : RulesOf(team_id)) {
    if (rule.kind == kind) return &rule;
  }
  return nullptr;
}

absl::Time Snapshot::NextRuleExpiry() const {
  absl::Time next = absl::InfiniteFuture();
  for (const TeamRule& rule : rules_) next = std::min(next, rule.expire_time);
  return next;
}

MappingState Snapshot::ToState() const {
  MappingState state;
  state.pool_objects = pool_objects_;
  state.rules = rules_;
  state.version = version_;
  state.cluster_id = cluster_id_;
  state.next_bucket_id = next_bucket_id_;
  state.buckets = buckets_;
  state.handoffs = handoffs_;
  state.next_handoff_id = next_handoff_id_;
  state.assignments.reserve(columns_.size());
  columns_.ForEach([&](int64_t team, int32_t enc) {
    state.assignments.emplace_back(team,
                                   enc > 0 ? Target::Pin(enc) : Target::Pool(pools_[-enc - 1]));
  });
  return state;
}

}  // namespace bucketmap
