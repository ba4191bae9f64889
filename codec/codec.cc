#include "codec/codec.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "domain/status_macros.h"
#include "google/protobuf/util/time_util.h"

namespace bucketmap {
namespace {

// Encodes an assignment target for the wire: > 0 is a bucket id, < 0 is
// the pool index -t - 1 into `pools`. `pool_index` interns pool names.
int32_t EncodeTarget(const Target& target, std::map<std::string, int32_t>& pool_index,
                     google::protobuf::RepeatedPtrField<std::string>* pools) {
  if (target.is_pin()) return target.bucket_id;
  auto [it, inserted] = pool_index.emplace(target.pool, static_cast<int32_t>(pools->size()));
  if (inserted) *pools->Add() = target.pool;
  return -it->second - 1;
}

// absl::InfinitePast() is "never set": the field stays absent.
template <typename Mutable>
void SetTime(absl::Time t, Mutable mutable_field) {
  if (t == absl::InfinitePast()) return;
  *mutable_field() =
      google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

absl::Time GetTime(bool has, const google::protobuf::Timestamp& ts,
                   absl::Time absent = absl::InfinitePast()) {
  if (!has) return absent;
  return absl::FromUnixMicros(google::protobuf::util::TimeUtil::TimestampToMicroseconds(ts));
}

// Decodes packed assignment columns against the message's pool table.
// InvalidArgument, naming the field, for mismatched columns, a target of
// 0, a pool index out of range or an empty pool name.
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

void ToProto(const Handoff& h, v1::Handoff* out) {
  out->Clear();
  out->set_id(h.id);
  out->set_opened_version(h.opened_version);
  out->set_source_bucket_id(h.source_bucket_id);
  out->set_state(static_cast<v1::HandoffPhase>(h.state));
  out->mutable_target_bucket_ids()->Add(h.target_bucket_ids.begin(), h.target_bucket_ids.end());
  out->mutable_team_ids()->Add(h.team_ids.begin(), h.team_ids.end());
  out->mutable_to_bucket_ids()->Add(h.to_bucket_ids.begin(), h.to_bucket_ids.end());
  out->set_source_pool(h.source_pool);
  for (const PlacementMember& m : h.pool_before) {
    v1::PlacementMember* pm = out->add_pool_before();
    pm->set_bucket_id(m.bucket_id);
    pm->set_weight(m.weight);
  }
  out->set_ordered(h.ordered);
  SetTime(h.open_time, [out] { return out->mutable_open_time(); });
  SetTime(h.grace_deadline, [out] { return out->mutable_grace_deadline(); });
  SetTime(h.hold_deadline, [out] { return out->mutable_hold_deadline(); });
  for (const RoleDrain& d : h.drains) {
    v1::RoleDrain* rd = out->add_drains();
    rd->set_role(d.role);
    rd->set_topic(d.topic);
    rd->set_consumer_group(d.consumer_group);
    rd->set_partition_count(d.partition_count);
    rd->mutable_end_offsets()->Add(d.end_offsets.begin(), d.end_offsets.end());
    rd->mutable_committed_offsets()->Add(d.committed_offsets.begin(), d.committed_offsets.end());
    rd->set_lag(d.lag);
    rd->set_drained(d.drained);
  }
  out->set_drain_index(h.drain_index);
  for (const std::string& p : h.missing_producers) out->add_missing_producers(p);
  out->set_end_reason(h.end_reason);
  out->set_phase_version(h.phase_version);
  SetTime(h.phase_time, [out] { return out->mutable_phase_time(); });
}

Handoff FromProto(const v1::Handoff& p) {
  Handoff h;
  h.id = p.id();
  h.opened_version = p.opened_version();
  h.source_bucket_id = p.source_bucket_id();
  h.state = static_cast<HandoffPhase>(p.state());
  h.target_bucket_ids.assign(p.target_bucket_ids().begin(), p.target_bucket_ids().end());
  h.team_ids.assign(p.team_ids().begin(), p.team_ids().end());
  h.to_bucket_ids.assign(p.to_bucket_ids().begin(), p.to_bucket_ids().end());
  h.source_pool = p.source_pool();
  for (const v1::PlacementMember& m : p.pool_before()) {
    h.pool_before.push_back(PlacementMember{m.bucket_id(), m.weight()});
  }
  h.ordered = p.ordered();
  h.open_time = GetTime(p.has_open_time(), p.open_time());
  h.grace_deadline = GetTime(p.has_grace_deadline(), p.grace_deadline());
  h.hold_deadline = GetTime(p.has_hold_deadline(), p.hold_deadline());
  for (const v1::RoleDrain& rd : p.drains()) {
    RoleDrain d;
    d.role = rd.role();
    d.topic = rd.topic();
    d.consumer_group = rd.consumer_group();
    d.partition_count = rd.partition_count();
    d.end_offsets.assign(rd.end_offsets().begin(), rd.end_offsets().end());
    d.committed_offsets.assign(rd.committed_offsets().begin(), rd.committed_offsets().end());
    d.lag = rd.lag();
    d.drained = rd.drained();
    h.drains.push_back(std::move(d));
  }
  h.drain_index = p.drain_index();
  h.missing_producers.assign(p.missing_producers().begin(), p.missing_producers().end());
  h.end_reason = p.end_reason();
  h.phase_version = p.phase_version();
  h.phase_time = GetTime(p.has_phase_time(), p.phase_time());
  return h;
}

void ToProto(const Bucket& bucket, v1::Bucket* out) {
  out->Clear();
  out->set_id(bucket.id);
  out->set_name(bucket.name);
  out->set_state(static_cast<v1::BucketState>(bucket.state));
  out->set_weight(bucket.weight);
  out->set_pool(bucket.pool);
  out->mutable_topics()->insert(bucket.topics.begin(), bucket.topics.end());
  out->mutable_consumer_groups()->insert(bucket.consumer_groups.begin(),
                                         bucket.consumer_groups.end());
  for (const auto& role : bucket.drain_order) out->add_drain_order(role);
  out->mutable_labels()->insert(bucket.labels.begin(), bucket.labels.end());
  out->set_created_version(bucket.created_version);
  out->set_updated_version(bucket.updated_version);
}

Bucket FromProto(const v1::Bucket& bucket) {
  Bucket out;
  out.id = bucket.id();
  out.name = bucket.name();
  // Snapshot::Build/Apply and the validators reject values outside
  // ACTIVE..RETIRED; the wire value is kept as it is here.
  out.state = static_cast<BucketState>(bucket.state());
  out.weight = bucket.weight();
  out.pool = bucket.pool();
  out.topics.insert(bucket.topics().begin(), bucket.topics().end());
  out.consumer_groups.insert(bucket.consumer_groups().begin(), bucket.consumer_groups().end());
  out.drain_order.assign(bucket.drain_order().begin(), bucket.drain_order().end());
  out.labels.insert(bucket.labels().begin(), bucket.labels().end());
  out.created_version = bucket.created_version();
  out.updated_version = bucket.updated_version();
  return out;
}

void ToProto(const Pool& pool, v1::Pool* out) {
  out->Clear();
  out->set_name(pool.name);
  out->set_state(static_cast<v1::BucketState>(pool.state));
  out->set_priority(pool.priority);
  out->mutable_paused_bucket_ids()->Add(pool.paused_bucket_ids.begin(),
                                        pool.paused_bucket_ids.end());
  out->set_reason(pool.reason);
  out->set_actor(pool.actor);
  out->set_updated_version(pool.updated_version);
}

Pool FromProto(const v1::Pool& pool) {
  Pool out;
  out.name = pool.name();
  out.state = static_cast<BucketState>(pool.state());
  out.priority = pool.priority();
  out.paused_bucket_ids.assign(pool.paused_bucket_ids().begin(), pool.paused_bucket_ids().end());
  out.reason = pool.reason();
  out.actor = pool.actor();
  out.updated_version = pool.updated_version();
  return out;
}

void ToProto(const TeamRule& rule, v1::TeamRule* out) {
  out->Clear();
  out->set_team_id(rule.team_id);
  out->set_kind(static_cast<v1::TeamRuleKind>(rule.kind));
  if (rule.kind == RuleKind::kRateLimit) {
    out->mutable_rate_limit()->set_events_per_second(rule.events_per_second);
    out->mutable_rate_limit()->set_burst(rule.burst);
  }
  // InfiniteFuture(): never expires, no field.
  if (rule.expires()) SetTime(rule.expire_time, [out] { return out->mutable_expire_time(); });
  out->set_reason(rule.reason);
  out->set_actor(rule.actor);
  out->set_version(rule.version);
  SetTime(rule.create_time, [out] { return out->mutable_create_time(); });
}

TeamRule FromProto(const v1::TeamRule& rule) {
  TeamRule out;
  out.team_id = rule.team_id();
  out.kind = static_cast<RuleKind>(rule.kind());
  out.events_per_second = rule.rate_limit().events_per_second();
  out.burst = rule.rate_limit().burst();
  out.expire_time = GetTime(rule.has_expire_time(), rule.expire_time(), absl::InfiniteFuture());
  out.reason = rule.reason();
  out.actor = rule.actor();
  out.version = rule.version();
  out.create_time = GetTime(rule.has_create_time(), rule.create_time());
  return out;
}

void ToProto(const Snapshot& snapshot, v1::MappingSnapshot* out) {
  out->Clear();
  out->set_version(snapshot.version());
  out->set_cluster_id(snapshot.cluster_id());
  for (const Bucket& bucket : snapshot.buckets()) ToProto(bucket, out->add_buckets());
  for (const std::string& pool : snapshot.pools()) out->add_pools(pool);
  // The snapshot's columns already use the wire encoding of targets.
  v1::Assignments* assignments = out->mutable_assignments();
  const int count = static_cast<int>(snapshot.assignment_count());
  assignments->mutable_team_ids()->Reserve(count);
  assignments->mutable_targets()->Reserve(count);
  snapshot.team_ids().ForEachRun([assignments](absl::Span<const int64_t> run) {
    assignments->mutable_team_ids()->Add(run.begin(), run.end());
  });
  snapshot.targets().ForEachRun([assignments](absl::Span<const int32_t> run) {
    assignments->mutable_targets()->Add(run.begin(), run.end());
  });
  for (const Handoff& h : snapshot.handoffs()) ToProto(h, out->add_handoffs());
  for (const Pool& p : snapshot.pool_objects()) ToProto(p, out->add_pool_objects());
  for (const TeamRule& r : snapshot.team_rules()) ToProto(r, out->add_team_rules());
}

void ToProto(const Change& change, int64_t to_version, v1::MappingDelta* out) {
  out->Clear();
  out->set_from_version(to_version - 1);
  out->set_to_version(to_version);
  for (const Bucket& bucket : change.buckets) ToProto(bucket, out->add_buckets());
  std::map<std::string, int32_t> pool_index;
  v1::Assignments* set = out->mutable_set();
  set->mutable_team_ids()->Reserve(static_cast<int>(change.set.size()));
  set->mutable_targets()->Reserve(static_cast<int>(change.set.size()));
  for (const auto& [team_id, target] : change.set) {
    set->add_team_ids(team_id);
    set->add_targets(EncodeTarget(target, pool_index, out->mutable_pools()));
  }
  out->mutable_unset_team_ids()->Add(change.unset.begin(), change.unset.end());
  for (const Handoff& h : change.handoffs) ToProto(h, out->add_handoffs());
  for (const Pool& p : change.pool_objects) ToProto(p, out->add_pool_objects());
  for (const TeamRule& r : change.rules) ToProto(r, out->add_team_rules());
  for (const TeamRuleKey& k : change.cleared_rules) {
    v1::TeamRuleKey* key = out->add_cleared_team_rules();
    key->set_team_id(k.team_id);
    key->set_kind(static_cast<v1::TeamRuleKind>(k.kind));
  }
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
  for (const v1::Bucket& b : snapshot.buckets()) state.buckets.push_back(FromProto(b));
  RETURN_IF_ERROR(DecodeAssignments(snapshot.assignments(), snapshot.pools(),
                                    "snapshot.assignments", &state.assignments));
  for (const v1::Pool& p : snapshot.pool_objects()) state.pool_objects.push_back(FromProto(p));
  for (const v1::TeamRule& r : snapshot.team_rules()) state.rules.push_back(FromProto(r));
  return state;
}

absl::StatusOr<Change> ChangeFromProto(const v1::MappingDelta& delta, const std::string& field) {
  Change change;
  change.buckets.reserve(delta.buckets_size());
  for (const v1::Bucket& b : delta.buckets()) change.buckets.push_back(FromProto(b));
  RETURN_IF_ERROR(
      DecodeAssignments(delta.set(), delta.pools(), absl::StrCat(field, ".set"), &change.set));
  change.unset.assign(delta.unset_team_ids().begin(), delta.unset_team_ids().end());
  for (const v1::Handoff& h : delta.handoffs()) change.handoffs.push_back(FromProto(h));
  for (const v1::Pool& p : delta.pool_objects()) change.pool_objects.push_back(FromProto(p));
  for (const v1::TeamRule& r : delta.team_rules()) change.rules.push_back(FromProto(r));
  for (const v1::TeamRuleKey& k : delta.cleared_team_rules()) {
    change.cleared_rules.push_back(TeamRuleKey{k.team_id(), static_cast<RuleKind>(k.kind())});
  }
  return change;
}

void ToProto(const Effect& effect, bool dry_run, v1::WriteEffect* out) {
  out->Clear();
  out->set_dry_run(dry_run);
  out->set_changed(effect.changed);
  out->set_assignments_changed(effect.assignments_changed);
  out->set_moved_team_count(effect.moved_team_count);
  for (const TeamMove& move : effect.moved_teams) {
    v1::TeamMove* m = out->add_moved_teams();
    m->set_team_id(move.team_id);
    m->set_from_bucket_id(move.from_bucket_id);
    m->set_to_bucket_id(move.to_bucket_id);
  }
  for (const PoolShift& shift : effect.pool_shifts) {
    v1::PoolShift* s = out->add_pool_shifts();
    s->set_pool(shift.pool);
    s->set_share_moved(shift.share_moved);
  }
  for (const Handoff& h : effect.handoffs) ToProto(h, out->add_handoffs());
}

LoadReport FromProto(const v1::WatchRequest::LoadReport& r) {
  LoadReport out;
  out.window_ms = r.window_ms();
  out.team_ids.assign(r.team_ids().begin(), r.team_ids().end());
  out.events.assign(r.events().begin(), r.events().end());
  out.processing_us.assign(r.processing_us().begin(), r.processing_us().end());
  out.other_events = r.other_events();
  out.other_processing_us = r.other_processing_us();
  out.other_bucket_ids.assign(r.other_bucket_ids().begin(), r.other_bucket_ids().end());
  out.other_bucket_events.assign(r.other_bucket_events().begin(), r.other_bucket_events().end());
  out.other_bucket_processing_us.assign(r.other_bucket_processing_us().begin(),
                                        r.other_bucket_processing_us().end());
  return out;
}

void ToProto(const LoadReport& r, v1::WatchRequest::LoadReport* out) {
  out->Clear();
  out->set_window_ms(r.window_ms);
  out->mutable_team_ids()->Add(r.team_ids.begin(), r.team_ids.end());
  out->mutable_events()->Add(r.events.begin(), r.events.end());
  out->mutable_processing_us()->Add(r.processing_us.begin(), r.processing_us.end());
  out->set_other_events(r.other_events);
  out->set_other_processing_us(r.other_processing_us);
  out->mutable_other_bucket_ids()->Add(r.other_bucket_ids.begin(), r.other_bucket_ids.end());
  out->mutable_other_bucket_events()->Add(r.other_bucket_events.begin(),
                                          r.other_bucket_events.end());
  out->mutable_other_bucket_processing_us()->Add(r.other_bucket_processing_us.begin(),
                                                 r.other_bucket_processing_us.end());
}

void ToProto(const LoadRate& rate, v1::LoadRate* out) {
  out->set_events_per_second(rate.events);
  out->set_processing_seconds_per_second(rate.processing);
}

RebalanceBudget FromProto(const v1::RebalanceBudget& budget) {
  RebalanceBudget out;
  if (budget.has_max_load_share()) out.max_load_share = budget.max_load_share();
  if (budget.has_max_teams()) out.max_teams = budget.max_teams();
  if (budget.has_target_imbalance()) out.target_imbalance = budget.target_imbalance();
  return out;
}

void ToProto(const RebalanceBudget& budget, v1::RebalanceBudget* out) {
  out->set_max_load_share(budget.max_load_share);
  out->set_max_teams(budget.max_teams);
  out->set_target_imbalance(budget.target_imbalance);
}

absl::StatusOr<LoadMetric> LoadMetricFromProto(int metric, const std::string& field) {
  switch (metric) {
    case v1::LOAD_METRIC_UNSPECIFIED:
    case v1::LOAD_METRIC_EVENT_RATE:
      return LoadMetric::kEventRate;
    case v1::LOAD_METRIC_PROCESSING_TIME:
      return LoadMetric::kProcessingTime;
    default:
      return absl::InvalidArgumentError(absl::StrCat(field, ": unknown metric ", metric));
  }
}

v1::LoadMetric ToProto(LoadMetric metric) {
  return metric == LoadMetric::kEventRate ? v1::LOAD_METRIC_EVENT_RATE
                                          : v1::LOAD_METRIC_PROCESSING_TIME;
}

std::vector<RebalanceMove> FromProto(
    const google::protobuf::RepeatedPtrField<v1::RebalanceMove>& moves) {
  std::vector<RebalanceMove> out;
  out.reserve(moves.size());
  for (const v1::RebalanceMove& m : moves) {
    RebalanceMove move;
    move.team_id = m.team_id();
    move.from_bucket_id = m.from_bucket_id();
    move.to_bucket_id = m.to_bucket_id();
    out.push_back(move);
  }
  return out;
}

namespace {

void ToProto(const HeavyTeam& team, v1::RebalanceHeavyTeam* out) {
  out->set_team_id(team.team_id);
  out->set_bucket_id(team.bucket_id);
  out->set_load(team.load);
  out->set_limit(team.limit);
}

}  // namespace

void ToProto(const RebalancePlan& plan, LoadMetric metric, v1::PlanRebalanceResponse* out) {
  out->set_version(plan.version);
  out->set_pool(plan.pool);
  out->set_metric(ToProto(metric));
  ToProto(plan.budget, out->mutable_budget());
  for (const RebalanceMove& m : plan.moves) {
    v1::RebalanceMove* move = out->add_moves();
    move->set_team_id(m.team_id);
    move->set_from_bucket_id(m.from_bucket_id);
    move->set_to_bucket_id(m.to_bucket_id);
    move->set_load(m.load);
  }
  for (const BucketLoad& b : plan.buckets) {
    v1::RebalanceBucketLoad* bucket = out->add_buckets();
    bucket->set_bucket_id(b.bucket_id);
    bucket->set_state(static_cast<v1::BucketState>(b.state));
    bucket->set_weight(b.weight);
    bucket->set_before(b.before);
    bucket->set_after(b.after);
    bucket->set_background(b.background);
    bucket->set_share(b.share);
    bucket->set_floor(b.floor);
    bucket->set_ideal(b.ideal);
    bucket->set_floored(b.floored);
  }
  out->set_pool_load(plan.pool_load);
  out->set_load_moved(plan.load_moved);
  out->set_share_moved(plan.share_moved);
  for (const HeavyTeam& t : plan.giants) ToProto(t, out->add_giants());
  for (const HeavyTeam& t : plan.anchored) ToProto(t, out->add_anchored());
  out->set_imbalance_before(plan.imbalance_before);
  out->set_imbalance_after(plan.imbalance_after);
  out->set_share_imbalance_before(plan.share_imbalance_before);
  out->set_share_imbalance_after(plan.share_imbalance_after);
  out->set_target_reached(plan.target_reached);
  out->set_stop_reason(RebalanceStopName(plan.stop));
  out->set_teams_with_load(plan.teams_with_load);
  out->set_teams_frozen(plan.teams_frozen);
  out->set_teams_below_min_move(plan.teams_below_min_move);
  out->set_teams_skipped_in_handoff(plan.teams_skipped_in_handoff);
}

}  // namespace bucketmap
