#include "tests/support/fake_store.h"

#include <algorithm>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bucketmap/v1/mapping.pb.h"
#include "codec/codec.h"
#include "domain/placement.h"
#include "domain/status_macros.h"

namespace bucketmap {
namespace {

// PostgreSQL keeps timestamptz to the microsecond; infinite times stand
// for NULL and stay as they are.
absl::Time Micros(absl::Time t) {
  if (t == absl::InfinitePast() || t == absl::InfiniteFuture()) return t;
  return absl::FromUnixMicros(absl::ToUnixMicros(t));
}

std::shared_ptr<const Snapshot> EmptySnapshot() {
  MappingState state;
  state.cluster_id = FakeStore::kClusterId;
  absl::StatusOr<std::shared_ptr<const Snapshot>> built = Snapshot::Build(std::move(state));
  return *std::move(built);  // an empty state always builds
}

// With the cluster id every stored mapping has (PgStore's is a UUID).
std::shared_ptr<const Snapshot> WithClusterId(std::shared_ptr<const Snapshot> snapshot) {
  if (snapshot == nullptr) return EmptySnapshot();
  if (!snapshot->cluster_id().empty()) return snapshot;
  MappingState state = snapshot->ToState();
  state.cluster_id = FakeStore::kClusterId;
  absl::StatusOr<std::shared_ptr<const Snapshot>> built = Snapshot::Build(std::move(state));
  return built.ok() ? *std::move(built) : snapshot;
}

// Whether `h` may involve `team_id`: listed, or placed on the source by
// its pool_before (ListHandoffs' team filter, as PgStore's).
bool Involves(const Handoff& h, int64_t team_id) {
  if (h.Lists(team_id)) return true;
  if (h.pool_before.empty()) return false;
  return PlacementTable::Build(h.pool_before).BucketForTeam(team_id) == h.source_bucket_id;
}

}  // namespace

FakeStore::FakeStore(const Clock* clock) : FakeStore(nullptr, clock) {}

FakeStore::FakeStore(std::shared_ptr<const Snapshot> initial, const Clock* clock)
    : clock_(clock), current_(WithClusterId(std::move(initial))) {
  for (const Handoff& h : current_->handoffs()) handoffs_[h.id] = h;
}

absl::Time FakeStore::Now() const {
  absl::MutexLock lock(&mu_);
  return clock_->Now();
}

void FakeStore::set_clock(const Clock* clock) {
  absl::MutexLock lock(&mu_);
  clock_ = clock;
}

void FakeStore::SetLeaderEpoch(int64_t epoch) {
  absl::MutexLock write_lock(&write_mu_);
  absl::MutexLock lock(&mu_);
  leader_epoch_ = epoch;
}

int64_t FakeStore::leader_epoch() const {
  absl::MutexLock lock(&mu_);
  return leader_epoch_;
}

int64_t FakeStore::version() const {
  absl::MutexLock lock(&mu_);
  return current_->version();
}

std::shared_ptr<const Snapshot> FakeStore::snapshot() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

std::vector<OutboxRow> FakeStore::ChangeLog() const {
  absl::MutexLock lock(&mu_);
  std::vector<OutboxRow> out;
  for (const auto& [version, row] : log_) out.push_back(row.row);
  return out;
}

absl::Status FakeStore::CheckEpoch(int64_t epoch) const {
  if (epoch != leader_epoch_) {
    return absl::FailedPreconditionError(absl::StrCat("not the leader: leader epoch ", epoch,
                                                      " was superseded by epoch ", leader_epoch_));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const Snapshot>> FakeStore::LoadSnapshot() {
  RETURN_IF_ERROR(calls_.Enter(kLoadSnapshot));
  absl::MutexLock lock(&mu_);
  return current_;
}

absl::StatusOr<int64_t> FakeStore::CurrentVersion() {
  RETURN_IF_ERROR(calls_.Enter(kCurrentVersion));
  absl::MutexLock lock(&mu_);
  return current_->version();
}

absl::StatusOr<std::pair<int64_t, std::string>> FakeStore::CurrentVersionAndCluster() {
  RETURN_IF_ERROR(calls_.Enter(kCurrentVersionAndCluster));
  absl::MutexLock lock(&mu_);
  return std::make_pair(current_->version(), current_->cluster_id());
}

namespace {

// What a plan may read inside a FakeStore write.
class FakeWriteReads final : public WriteReads {
 public:
  explicit FakeWriteReads(std::function<bool()> producer_leased)
      : producer_leased_(std::move(producer_leased)) {}
  absl::StatusOr<bool> ProducerLeased() override { return producer_leased_(); }

 private:
  std::function<bool()> producer_leased_;
};

}  // namespace

std::vector<absl::StatusOr<WriteResult>> FakeStore::WriteGroup(
    const std::vector<GroupedWrite>& writes, std::shared_ptr<const Snapshot> cached) {
  {
    absl::MutexLock lock(&mu_);
    write_groups_.push_back(writes.size());
  }
  if (on_write_group_) on_write_group_(writes.size());
  return Store::WriteGroup(writes, std::move(cached));
}

std::vector<size_t> FakeStore::write_groups() const {
  absl::MutexLock lock(&mu_);
  return write_groups_;
}

absl::StatusOr<WriteResult> FakeStore::Write(const WriteContext& ctx,
                                             std::shared_ptr<const Snapshot> cached,
                                             const ReadingPlanFn& plan) {
  RETURN_IF_ERROR(calls_.Enter(kWrite));
  const std::string what = ctx.kind.empty() ? "write" : ctx.kind;
  if (ctx.deadline <= Now()) {
    return absl::UnavailableError(absl::StrCat(what, ": deadline passed before the write"));
  }
  // 1. The global write order.
  absl::MutexLock write_lock(&write_mu_);
  std::shared_ptr<const Snapshot> before;
  {
    absl::MutexLock lock(&mu_);
    const int64_t current = current_->version();
    // 2. The fence: a stale leader is refused, even for a replay.
    if (ctx.leader_epoch != 0) RETURN_IF_ERROR(CheckEpoch(ctx.leader_epoch));
    // 3. request_id replay, then the version check.
    if (!ctx.request_id.empty()) {
      auto seen = requests_.find(ctx.request_id);
      if (seen != requests_.end()) {
        if (seen->second.fingerprint != ctx.fingerprint) {
          return absl::InvalidArgumentError(
              absl::StrCat("request_id: \"", ctx.request_id,
                           "\" was already used for a different request; use a new request_id"));
        }
        WriteResult replay;
        replay.replayed = true;
        replay.response = seen->second.response;
        replay.version = seen->second.version;
        return replay;
      }
    }
    if (ctx.expected_version != 0 && ctx.expected_version != current) {
      return absl::AbortedError(absl::StrCat("expected_version ", ctx.expected_version,
                                             " does not match current version ", current));
    }
    // 4. The caller's snapshot when it is the stored one.
    before = cached != nullptr && cached->version() == current &&
                     cached->cluster_id() == current_->cluster_id()
                 ? std::move(cached)
                 : current_;
  }
  return PlanAndCommit(ctx, std::move(before), plan);
}

absl::StatusOr<WriteResult> FakeStore::PlanAndCommit(const WriteContext& ctx,
                                                     std::shared_ptr<const Snapshot> before,
                                                     const ReadingPlanFn& plan) {
  const std::string what = ctx.kind.empty() ? "write" : ctx.kind;
  FakeWriteReads reads([this] {
    const absl::Time now = Now();
    absl::MutexLock lock(&mu_);
    for (const auto& [id, c] : clients_) {
      if (c.role == v1::PRODUCER && c.lease_expires > now) return true;
    }
    return false;
  });
  ASSIGN_OR_RETURN(PlannedWrite planned, plan(*before, reads));

  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  const int64_t current = current_->version();
  auto deadline_passed = [&what] {
    return absl::UnavailableError(
        absl::StrCat(what, ": deadline passed before COMMIT; rolled back, nothing was written"));
  };
  auto remember = [&](int64_t version) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ctx.request_id.empty()) return;
    requests_[ctx.request_id] =
        RememberedRequest{ctx.fingerprint, planned.response, version, Micros(now)};
  };

  WriteResult result;
  result.response = planned.response;
  result.effect = planned.plan.effect;
  if (!planned.plan.effect.changed) {
    if (!ctx.request_id.empty() && now >= ctx.deadline) return deadline_passed();
    remember(current);
    result.version = current;
    result.snapshot = std::move(before);
    return result;
  }

  // 5. The new version: everything is checked before anything is kept.
  const int64_t version = current + 1;
  const Change& change = planned.plan.change;
  if (planned.plan.after == nullptr || planned.plan.after->version() != version) {
    return absl::InternalError(
        absl::StrCat(ctx.kind, ": plan produced no snapshot at version ", version));
  }
  for (const Handoff& h : change.handoffs) {
    auto stored = handoffs_.find(h.id);
    if (stored != handoffs_.end() && !stored->second.open()) {
      return absl::FailedPreconditionError(
          absl::StrCat("handoff ", h.id, " has already ended; it cannot change again"));
    }
  }
  absl::StatusOr<std::shared_ptr<const Snapshot>> next = current_->Apply(change);
  if (!next.ok() || (*next)->version() != version) {
    return absl::InternalError(absl::StrCat(what, ": the plan's change does not apply to version ",
                                            current, ": ",
                                            next.ok() ? "wrong version" : next.status().message()));
  }
  // 7. The deadline, once more, before COMMIT.
  if (now >= ctx.deadline) return deadline_passed();

  LogRow row;
  row.row.version = version;
  row.row.kind = ctx.kind;
  row.row.actor = ctx.actor;
  row.row.reason = ctx.reason;
  row.row.request_id = ctx.request_id;
  row.row.created_at = Micros(now);
  v1::MappingDelta delta;
  ToProto(change, version, &delta);
  row.row.delta = delta.SerializeAsString();
  row.assignments_changed = static_cast<int64_t>(change.set.size() + change.unset.size());
  for (const Bucket& b : change.buckets) row.bucket_ids.push_back(b.id);
  std::set<int64_t> teams(change.unset.begin(), change.unset.end());
  for (const auto& [team, target] : change.set) teams.insert(team);
  row.team_ids.assign(teams.begin(), teams.end());
  log_[version] = std::move(row);

  for (const Handoff& h : change.handoffs) {
    handoffs_[h.id] = h;
    if (h.opened_version != version) continue;
    const absl::Time moved_at = Micros(h.open_time);
    for (int64_t team : h.team_ids) team_moves_[team] = moved_at;
    if (!h.pool_before.empty()) pool_moves_[h.source_pool] = moved_at;
  }
  remember(version);
  current_ = *std::move(next);
  // 6. (NOTIFY) has no equivalent: other replicas are not faked.

  result.version = version;
  result.snapshot = std::move(planned.plan.after);
  return result;
}

absl::StatusOr<HistoryPage> FakeStore::GetHistory(const HistoryQuery& query) {
  RETURN_IF_ERROR(calls_.Enter(kGetHistory));
  const int32_t page_size =
      query.page_size <= 0 ? 100 : std::min(query.page_size, kMaxHistoryPageSize);
  const int64_t from = std::max<int64_t>(query.from_version, 0);
  const int64_t to = query.to_version <= 0 ? std::numeric_limits<int64_t>::max() : query.to_version;
  absl::MutexLock lock(&mu_);
  HistoryPage page;
  for (auto it = log_.lower_bound(from); it != log_.end() && it->first <= to; ++it) {
    const LogRow& row = it->second;
    if (query.team_id != 0 &&
        !std::binary_search(row.team_ids.begin(), row.team_ids.end(), query.team_id)) {
      continue;
    }
    if (page.records.size() == static_cast<size_t>(page_size)) {
      page.next_from_version = row.row.version;
      break;
    }
    v1::ChangeRecord& record = page.records.emplace_back();
    record.set_version(row.row.version);
    record.set_kind(row.row.kind);
    record.set_actor(row.row.actor);
    record.set_reason(row.row.reason);
    record.set_request_id(row.row.request_id);
    const int64_t micros = absl::ToUnixMicros(row.row.created_at);
    record.mutable_create_time()->set_seconds(micros / 1000000);
    record.mutable_create_time()->set_nanos(static_cast<int32_t>(micros % 1000000) * 1000);
    record.set_assignments_changed(row.assignments_changed);
    for (int32_t id : row.bucket_ids) record.add_bucket_ids(id);
    if (query.include_delta && !record.mutable_delta()->ParseFromString(row.row.delta)) {
      return absl::InternalError(
          absl::StrCat("get history: corrupt delta at version ", row.row.version));
    }
  }
  return page;
}

absl::StatusOr<std::vector<v1::MappingDelta>> FakeStore::LoadDeltas(int64_t after_version,
                                                                    int64_t up_to) {
  RETURN_IF_ERROR(calls_.Enter(kLoadDeltas));
  if (after_version < 0) return absl::InvalidArgumentError("after_version: must not be negative");
  if (up_to <= after_version) return std::vector<v1::MappingDelta>{};
  absl::MutexLock lock(&mu_);
  std::vector<v1::MappingDelta> deltas;
  for (int64_t v = after_version + 1; v <= up_to; ++v) {
    auto it = log_.find(v);
    if (it == log_.end()) {
      return absl::NotFoundError(absl::StrCat("load deltas: versions ", after_version + 1, "..",
                                              up_to, " are not all in the change log (version ", v,
                                              " is not kept): pruned or not written"));
    }
    if (!deltas.emplace_back().ParseFromString(it->second.row.delta)) {
      return absl::InternalError(absl::StrCat("load deltas: corrupt delta at version ", v));
    }
  }
  return deltas;
}

absl::Status FakeStore::SaveClients(const std::vector<ClientState>& states,
                                    absl::Time lease_until) {
  RETURN_IF_ERROR(calls_.Enter(kSaveClients));
  if (lease_until == absl::InfinitePast() || lease_until == absl::InfiniteFuture()) {
    return absl::InvalidArgumentError("lease_until: must be finite");
  }
  for (size_t i = 0; i < states.size(); ++i) {
    const ClientState& s = states[i];
    if (s.client_id.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("states[", i, "].client_id: must not be empty"));
    }
    const char* infinite = s.connected_at == absl::InfiniteFuture() ? "connected_at"
                           : s.last_ack == absl::InfiniteFuture()   ? "last_ack"
                           : s.last_nack == absl::InfiniteFuture()  ? "last_nack"
                                                                    : nullptr;
    if (infinite != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "states[", i, "].", infinite, ": must be finite, or InfinitePast() for never"));
    }
  }
  // The last state of a client_id listed twice wins.
  std::map<std::string, const ClientState*> rows;
  for (const ClientState& s : states) rows[s.client_id] = &s;

  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  for (const auto& [id, s] : rows) {
    ClientState next = *s;
    next.connected_at = Micros(s->connected_at);
    next.last_ack = Micros(s->last_ack);
    next.last_nack = Micros(s->last_nack);
    next.lease_expires = Micros(lease_until);
    auto it = clients_.find(id);
    if (it == clients_.end()) {
      clients_.emplace(id, std::move(next));
      continue;
    }
    ClientState& old = it->second;
    // PgStore's upsert guard: a disconnect saved by another replica under
    // a live lease is stale (the client has moved on).
    if (!(next.connected || !old.connected || old.replica == next.replica ||
          old.lease_expires < now)) {
      continue;
    }
    next.applied_version = std::max(old.applied_version, next.applied_version);
    next.drained_version = std::max(old.drained_version, next.drained_version);
    old = std::move(next);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ClientState>> FakeStore::ListClients(absl::Time now) {
  RETURN_IF_ERROR(calls_.Enter(kListClients));
  std::vector<ClientState> out;
  if (now == absl::InfiniteFuture()) return out;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, c] : clients_) {
    if (c.lease_expires > now) out.push_back(c);
  }
  return out;
}

absl::StatusOr<int64_t> FakeStore::Prune(absl::Time now, absl::Duration history_retention,
                                         absl::Duration request_id_retention) {
  RETURN_IF_ERROR(calls_.Enter(kPrune));
  const absl::Time history_cutoff = now - history_retention;
  const absl::Time request_cutoff = now - request_id_retention;
  absl::MutexLock lock(&mu_);
  int64_t deleted = 0;
  for (auto it = log_.begin(); it != log_.end();) {
    if (it->second.row.created_at < history_cutoff && it->second.published_at.has_value()) {
      it = log_.erase(it);
      ++deleted;
    } else {
      ++it;
    }
  }
  for (auto it = requests_.begin(); it != requests_.end();) {
    if (it->second.created_at < request_cutoff) {
      it = requests_.erase(it);
      ++deleted;
    } else {
      ++it;
    }
  }
  return deleted;
}

absl::StatusOr<std::vector<OutboxRow>> FakeStore::LoadUnpublished(int64_t after_version,
                                                                  int limit) {
  RETURN_IF_ERROR(calls_.Enter(kLoadUnpublished));
  if (limit < 1) return absl::InvalidArgumentError("limit: must be at least 1");
  absl::MutexLock lock(&mu_);
  std::vector<OutboxRow> out;
  for (auto it = log_.upper_bound(after_version);
       it != log_.end() && static_cast<int>(out.size()) < limit; ++it) {
    if (!it->second.published_at.has_value()) out.push_back(it->second.row);
  }
  return out;
}

absl::Status FakeStore::MarkPublished(int64_t up_to_version, int64_t leader_epoch) {
  RETURN_IF_ERROR(calls_.Enter(kMarkPublished));
  absl::MutexLock lock(&mu_);
  if (leader_epoch != 0) RETURN_IF_ERROR(CheckEpoch(leader_epoch));
  const absl::Time now = Micros(clock_->Now());
  for (auto it = log_.begin(); it != log_.end() && it->first <= up_to_version; ++it) {
    if (!it->second.published_at.has_value()) it->second.published_at = now;
  }
  return absl::OkStatus();
}

absl::StatusOr<OutboxStats> FakeStore::GetOutboxStats() {
  RETURN_IF_ERROR(calls_.Enter(kGetOutboxStats));
  absl::MutexLock lock(&mu_);
  OutboxStats stats;
  for (const auto& [version, row] : log_) {
    if (row.published_at.has_value()) {
      stats.last_published_version = version;
    } else if (stats.backlog++ == 0) {
      stats.oldest_age = std::max(absl::ZeroDuration(), clock_->Now() - row.row.created_at);
    }
  }
  return stats;
}

absl::StatusOr<std::vector<v1::Handoff>> FakeStore::ListHandoffs(const HandoffQuery& query) {
  RETURN_IF_ERROR(calls_.Enter(kListHandoffs));
  const size_t limit = query.page_size <= 0 ? 100 : std::min(query.page_size, 1000);
  absl::MutexLock lock(&mu_);
  std::vector<const Handoff*> picked;
  auto consider = [&](const Handoff& h) {
    if (picked.size() >= limit) return;
    if (query.team_id != 0 && !Involves(h, query.team_id)) return;
    picked.push_back(&h);
  };
  for (const auto& [id, h] : handoffs_) {
    if (h.open()) consider(h);
  }
  if (query.include_ended) {
    for (auto it = handoffs_.rbegin(); it != handoffs_.rend(); ++it) {
      if (!it->second.open()) consider(it->second);
    }
  }
  std::vector<v1::Handoff> out(picked.size());
  for (size_t i = 0; i < picked.size(); ++i) ToProto(*picked[i], &out[i]);
  return out;
}

absl::StatusOr<MoveTimes> FakeStore::LoadMoveTimes(const std::vector<int64_t>& team_ids) {
  RETURN_IF_ERROR(calls_.Enter(kLoadMoveTimes));
  absl::MutexLock lock(&mu_);
  MoveTimes times;
  for (int64_t team : team_ids) {
    auto it = team_moves_.find(team);
    if (it != team_moves_.end()) times.teams[team] = it->second;
  }
  for (const auto& [pool, at] : pool_moves_) times.pools[pool] = at;
  return times;
}

absl::Status FakeStore::SaveLagReadings(const std::vector<LagReading>& readings) {
  RETURN_IF_ERROR(calls_.Enter(kSaveLagReadings));
  absl::MutexLock lock(&mu_);
  lag_.clear();
  for (const LagReading& r : readings) {
    LagReading kept = r;
    // Unknown lag is stored without numbers (NULL), as PgStore does.
    if (!kept.up) {
      kept.messages = 0;
      kept.seconds = 0;
    }
    kept.read_at = absl::FromUnixMicros(absl::ToUnixMicros(r.read_at));
    lag_.emplace(std::make_pair(r.bucket_id, r.role), kept);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<LagReading>> FakeStore::LoadLagReadings() {
  RETURN_IF_ERROR(calls_.Enter(kLoadLagReadings));
  absl::MutexLock lock(&mu_);
  std::vector<LagReading> out;
  for (const auto& [key, r] : lag_) out.push_back(r);
  return out;
}

absl::Status FakeStore::AddLoad(const LoadConfig&, const LoadSlots& slots, int64_t fold_through,
                                double) {
  RETURN_IF_ERROR(calls_.Enter(kAddLoad));
  absl::MutexLock lock(&mu_);
  for (const auto& [slot, rates] : slots) {
    for (const auto& [key, rate] : rates) load_added_[slot][key] += rate;
  }
  last_fold_through_ = fold_through;
  return absl::OkStatus();
}

LoadSlots FakeStore::load_added() const {
  absl::MutexLock lock(&mu_);
  return load_added_;
}

int64_t FakeStore::last_fold_through() const {
  absl::MutexLock lock(&mu_);
  return last_fold_through_;
}

}  // namespace bucketmap
