#include "tools/bucketctl/format.h"

#include <algorithm>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/time_util.h"
#include "tools/bucketctl/args.h"

namespace bucketmap::bucketctl {
namespace {

// The first line of every write's output. `done` describes the committed
// write, `would` the dry run, `unchanged` a no-op.
std::string Headline(int64_t version, const v1::WriteEffect& effect, absl::string_view done,
                     absl::string_view would, absl::string_view unchanged) {
  if (effect.dry_run()) {
    if (!effect.changed()) {
      return absl::StrCat("dry run at version ", version, ": no change (", unchanged, ")\n");
    }
    return absl::StrCat("dry run at version ", version, " (nothing committed): ", would, "\n");
  }
  std::string line = effect.changed() || effect.replayed()
                         ? absl::StrCat("version ", version, ": ", done)
                         : absl::StrCat("version ", version, ": no change (", unchanged, ")");
  if (effect.replayed()) {
    absl::StrAppend(&line, " [replay of an earlier request with this request id; nothing written]");
  }
  return line + "\n";
}

std::string BucketRef(int32_t id) { return id == 0 ? "unroutable" : absl::StrCat("bucket ", id); }

std::string BucketLabel(const v1::Bucket& bucket) {
  if (bucket.id() == 0) return absl::StrCat("bucket ", bucket.name());
  return absl::StrCat("bucket ", bucket.id(), " (", bucket.name(), ")");
}

std::string TargetText(int32_t target,
                       const google::protobuf::RepeatedPtrField<std::string>& pools) {
  if (target > 0) return absl::StrCat("bucket ", target);
  const int64_t index = -static_cast<int64_t>(target) - 1;
  if (target < 0 && index < pools.size())
    return absl::StrCat("pool:", pools[static_cast<int>(index)]);
  return absl::StrCat("target ", target);
}

std::string FieldValue(const v1::Bucket& bucket, absl::string_view path) {
  if (path == "state") return StateName(bucket.state());
  if (path == "weight") return absl::StrCat(bucket.weight());
  if (path == "pool") return bucket.pool();
  if (path == "topics") return JoinMap(bucket.topics());
  if (path == "consumer_groups") return JoinMap(bucket.consumer_groups());
  if (path == "drain_order") {
    return bucket.drain_order().empty() ? "-" : absl::StrJoin(bucket.drain_order(), ",");
  }
  if (path == "labels") return JoinMap(bucket.labels());
  return "?";
}

template <typename Response>
std::string TeamWrite(int64_t team, const Response& response, absl::string_view verb) {
  const std::string now = RouteText(response.bucket_id(), response.source());
  const std::string before = RouteText(response.previous_bucket_id(), response.previous_source());
  const std::string done = absl::StrCat("team ", team, " -> ", now, ", was ", before);
  const std::string would =
      absl::StrCat(verb, " team ", team, ": it would go to ", now, ", now ", before);
  const std::string unchanged = absl::StrCat("team ", team, " stays on ", now);
  return Headline(response.version(), response.effect(), done, would, unchanged) +
         FormatEffect(response.effect());
}

}  // namespace

Table::Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
}

std::string Table::Render() const {
  const size_t n = headers_.size();
  std::vector<size_t> width(n);
  std::vector<bool> numeric(n, !rows_.empty());
  for (size_t c = 0; c < n; ++c) width[c] = headers_[c].size();
  for (const auto& row : rows_) {
    for (size_t c = 0; c < n; ++c) {
      width[c] = std::max(width[c], row[c].size());
      if (!IsInteger(row[c])) numeric[c] = false;
    }
  }
  std::string out;
  auto emit = [&](const std::vector<std::string>& cells) {
    std::string line;
    for (size_t c = 0; c < n; ++c) {
      if (c > 0) line += "  ";
      const size_t pad = width[c] - cells[c].size();
      if (numeric[c]) {
        line.append(pad, ' ');
        line += cells[c];
      } else {
        line += cells[c];
        if (c + 1 < n) line.append(pad, ' ');
      }
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  };
  emit(headers_);
  for (const auto& row : rows_) emit(row);
  return out;
}

std::string StateName(int state) {
  if (state != 0 && v1::BucketState_IsValid(state)) {
    return v1::BucketState_Name(static_cast<v1::BucketState>(state));
  }
  return state == 0 ? "UNSPECIFIED" : absl::StrCat(state);
}

std::string JoinMap(const google::protobuf::Map<std::string, std::string>& map) {
  if (map.empty()) return "-";
  std::map<std::string, std::string> sorted(map.begin(), map.end());
  return absl::StrJoin(sorted, ",", absl::PairFormatter("="));
}

std::string RouteText(int32_t bucket_id, absl::string_view source) {
  std::string text = BucketRef(bucket_id);
  if (!source.empty()) absl::StrAppend(&text, " (", source, ")");
  return text;
}

std::string TimeText(const google::protobuf::Timestamp& time) {
  if (time.seconds() == 0 && time.nanos() == 0) return "-";
  // Second precision keeps tables narrow; --json has the exact time.
  google::protobuf::Timestamp truncated = time;
  truncated.set_nanos(0);
  return google::protobuf::util::TimeUtil::ToString(truncated);
}

std::string FormatEffect(const v1::WriteEffect& effect, size_t max_moves) {
  std::string out;
  for (const v1::PoolShift& shift : effect.pool_shifts()) {
    absl::StrAppendFormat(&out, "  pool %s: %.2f%% of default placement %s\n", shift.pool(),
                          shift.share_moved() * 100, effect.dry_run() ? "would move" : "moved");
  }
  const int64_t moved = std::max<int64_t>(effect.moved_team_count(), effect.moved_teams_size());
  if (moved > 0) {
    absl::StrAppend(&out, "  ", moved, moved == 1 ? " known team " : " known teams ",
                    effect.dry_run() ? "would move:\n" : "moved:\n");
    int64_t listed = 0;
    for (const v1::TeamMove& move : effect.moved_teams()) {
      if (static_cast<size_t>(listed) == max_moves) break;
      absl::StrAppend(&out, "    team ", move.team_id(), ": ", BucketRef(move.from_bucket_id()),
                      " -> ", BucketRef(move.to_bucket_id()), "\n");
      ++listed;
    }
    if (listed < moved) {
      absl::StrAppend(&out, "    ... and ", moved - listed, " more (--json lists up to 10000)\n");
    }
  }
  return out;
}

std::string FormatCreateBucket(const v1::CreateBucketResponse& response) {
  const v1::Bucket& b = response.bucket();
  const std::string details =
      absl::StrCat(" in pool ", b.pool(), ", weight ", b.weight(), ", ", StateName(b.state()));
  return Headline(response.version(), response.effect(),
                  absl::StrCat("created ", BucketLabel(b), details),
                  absl::StrCat("would create ", BucketLabel(b), details), BucketLabel(b)) +
         FormatEffect(response.effect());
}

std::string FormatUpdateBucket(const v1::UpdateBucketRequest& request,
                               const v1::UpdateBucketResponse& response) {
  const v1::Bucket& b = response.has_bucket() ? response.bucket() : request.bucket();
  std::vector<std::string> fields;
  for (const std::string& path : request.update_mask().paths()) {
    fields.push_back(absl::StrCat(path, "=", FieldValue(b, path)));
  }
  const std::string what = absl::StrCat(BucketLabel(b), ": ", absl::StrJoin(fields, ", "));
  return Headline(response.version(), response.effect(), absl::StrCat("updated ", what),
                  absl::StrCat("would update ", what), absl::StrCat(what, " already")) +
         FormatEffect(response.effect());
}

std::string FormatAssignTeam(const v1::AssignTeamRequest& request,
                             const v1::AssignTeamResponse& response) {
  return TeamWrite(request.team_id(), response, "assign");
}

std::string FormatUnassignTeam(const v1::UnassignTeamRequest& request,
                               const v1::UnassignTeamResponse& response) {
  return TeamWrite(request.team_id(), response, "unassign");
}

std::string FormatBulkAssign(const v1::BulkAssignRequest& request,
                             const v1::BulkAssignResponse& response) {
  const v1::WriteEffect& e = response.effect();
  const std::string what = absl::StrCat("bulk assign of ", request.assignments_size(),
                                        " teams: ", e.assignments_changed(), " assignment rows ");
  return Headline(response.version(), e, absl::StrCat(what, "changed"),
                  absl::StrCat(what, "would change"),
                  absl::StrCat("all ", request.assignments_size(), " teams already assigned so")) +
         FormatEffect(e);
}

std::string FormatBucketTable(const google::protobuf::RepeatedPtrField<v1::Bucket>& buckets,
                              const std::vector<int64_t>& pinned) {
  Table table({"ID", "NAME", "STATE", "POOL", "WEIGHT", "PINNED", "TOPICS", "LABELS"});
  for (int i = 0; i < buckets.size(); ++i) {
    const v1::Bucket& b = buckets[i];
    table.AddRow({absl::StrCat(b.id()), b.name(), StateName(b.state()), b.pool(),
                  absl::StrCat(b.weight()),
                  static_cast<size_t>(i) < pinned.size() ? absl::StrCat(pinned[i]) : "-",
                  JoinMap(b.topics()), JoinMap(b.labels())});
  }
  return table.Render();
}

std::string FormatListBuckets(const v1::ListBucketsResponse& response) {
  if (response.buckets().empty()) {
    return absl::StrCat("no buckets (version ", response.version(), ")\n");
  }
  std::vector<int64_t> pinned(response.pinned_teams().begin(), response.pinned_teams().end());
  return FormatBucketTable(response.buckets(), pinned);
}

std::string FormatListAssignments(const v1::ListAssignmentsResponse& response) {
  if (response.assignments().empty()) {
    return absl::StrCat("no assignments (version ", response.version(), ")\n");
  }
  Table table({"TEAM", "TARGET"});
  for (const v1::Assignment& a : response.assignments()) {
    table.AddRow({absl::StrCat(a.team_id()), a.target_case() == v1::Assignment::kPool
                                                 ? absl::StrCat("pool:", a.pool())
                                                 : absl::StrCat("bucket ", a.bucket_id())});
  }
  return table.Render();
}

std::string FormatDelta(const v1::MappingDelta& delta, absl::string_view indent, size_t max_rows) {
  std::string out;
  for (const v1::Bucket& b : delta.buckets()) {
    absl::StrAppend(&out, indent, BucketLabel(b), ": ", StateName(b.state()), ", pool ", b.pool(),
                    ", weight ", b.weight(), ", topics ", JoinMap(b.topics()), "\n");
  }
  const v1::Assignments& set = delta.set();
  const int n = std::min(set.team_ids_size(), set.targets_size());
  for (int i = 0; i < n; ++i) {
    if (static_cast<size_t>(i) == max_rows) {
      absl::StrAppend(&out, indent, "... and ", n - i, " more assignments\n");
      break;
    }
    absl::StrAppend(&out, indent, "team ", set.team_ids(i), " -> ",
                    TargetText(set.targets(i), delta.pools()), "\n");
  }
  for (int i = 0; i < delta.unset_team_ids_size(); ++i) {
    if (static_cast<size_t>(i) == max_rows) {
      absl::StrAppend(&out, indent, "... and ", delta.unset_team_ids_size() - i,
                      " more removed overrides\n");
      break;
    }
    absl::StrAppend(&out, indent, "team ", delta.unset_team_ids(i), ": override removed\n");
  }
  for (const v1::Handoff& h : delta.handoffs()) {
    absl::StrAppend(&out, indent, "handoff ", h.id(), " from bucket ", h.source_bucket_id(), ": ",
                    v1::HandoffPhase_Name(h.state()), "\n");
  }
  return out;
}

std::string FormatHistory(const v1::GetHistoryResponse& response, bool include_delta) {
  if (response.records().empty()) return "no history records\n";
  auto changes = [](const v1::ChangeRecord& r) {
    std::vector<std::string> parts;
    if (!r.bucket_ids().empty()) {
      parts.push_back(absl::StrCat(r.bucket_ids_size() == 1 ? "bucket " : "buckets ",
                                   absl::StrJoin(r.bucket_ids(), ",")));
    }
    if (r.assignments_changed() > 0) {
      parts.push_back(absl::StrCat(r.assignments_changed(), " assignment",
                                   r.assignments_changed() == 1 ? "" : "s"));
    }
    return parts.empty() ? std::string("-") : absl::StrJoin(parts, "; ");
  };
  if (!include_delta) {
    Table table({"VERSION", "TIME", "KIND", "ACTOR", "CHANGES", "REQUEST ID", "REASON"});
    for (const v1::ChangeRecord& r : response.records()) {
      table.AddRow({absl::StrCat(r.version()), TimeText(r.create_time()), r.kind(), r.actor(),
                    changes(r), r.request_id().empty() ? "-" : r.request_id(), r.reason()});
    }
    return table.Render();
  }
  std::string out;
  for (const v1::ChangeRecord& r : response.records()) {
    absl::StrAppend(&out, "version ", r.version(), "  ", TimeText(r.create_time()), "  ", r.kind(),
                    " by ", r.actor(), ": ", r.reason());
    if (!r.request_id().empty()) absl::StrAppend(&out, "  [request id ", r.request_id(), "]");
    absl::StrAppend(&out, "\n", FormatDelta(r.delta(), "    "));
  }
  return out;
}

std::string FormatMapping(const v1::MappingSnapshot& snapshot) {
  const v1::Assignments& a = snapshot.assignments();
  const int n = std::min(a.team_ids_size(), a.targets_size());
  std::map<int32_t, int64_t> pinned_by_bucket;
  int64_t pins = 0;
  for (int i = 0; i < n; ++i) {
    if (a.targets(i) > 0) {
      ++pins;
      ++pinned_by_bucket[a.targets(i)];
    }
  }
  std::vector<int64_t> pinned;
  for (const v1::Bucket& b : snapshot.buckets()) pinned.push_back(pinned_by_bucket[b.id()]);

  std::string out;
  absl::StrAppend(&out, "version      ", snapshot.version(), "\n");
  absl::StrAppend(&out, "cluster id   ",
                  snapshot.cluster_id().empty() ? "-" : snapshot.cluster_id(), "\n");
  if (snapshot.has_create_time()) {
    absl::StrAppend(&out, "created      ", TimeText(snapshot.create_time()), "\n");
  }
  absl::StrAppend(&out, "pools        ",
                  snapshot.pools().empty() ? "-" : absl::StrJoin(snapshot.pools(), ", "), "\n");
  absl::StrAppend(&out, "buckets      ", snapshot.buckets_size(), "\n");
  absl::StrAppend(&out, "assignments  ", n, " (", pins, " pinned, ", n - pins, " to pools)\n");
  absl::StrAppend(&out, "handoffs     ", snapshot.handoffs_size(), " open\n");
  if (!snapshot.buckets().empty()) {
    absl::StrAppend(&out, "\n", FormatBucketTable(snapshot.buckets(), pinned));
  }
  // Small mappings (a fresh install, the quick start) are listed in full.
  constexpr int kListedAssignments = 20;
  if (n > 0 && n <= kListedAssignments) {
    Table table({"TEAM", "TARGET"});
    for (int i = 0; i < n; ++i) {
      table.AddRow({absl::StrCat(a.team_ids(i)), TargetText(a.targets(i), snapshot.pools())});
    }
    absl::StrAppend(&out, "\n", table.Render());
  }
  return out;
}

std::string FormatTeam(const v1::TeamRoute& route) {
  std::string source = route.source() == "default" ? "default placement" : route.source();
  std::string out = absl::StrCat("team ", route.team_id(), " -> ", BucketRef(route.bucket_id()));
  if (!route.bucket_name().empty()) absl::StrAppend(&out, " (", route.bucket_name(), ")");
  absl::StrAppend(&out, " via ", source, ", at version ", route.version(), "\n");
  absl::StrAppend(&out, "  bucket state  ", StateName(route.bucket_state()), "\n");
  absl::StrAppend(&out, "  topics        ", JoinMap(route.topics()), "\n");
  if (route.has_handoff()) {
    const v1::Handoff& h = route.handoff();
    absl::StrAppend(&out, "  handoff       ", h.id(), " from bucket ", h.source_bucket_id(),
                    ", opened at version ", h.opened_version(), ", phase ",
                    v1::HandoffPhase_Name(h.state()), "\n");
  }
  return out;
}

std::string FormatClients(const v1::ListClientsResponse& response) {
  if (response.clients().empty()) return "no clients\n";
  Table table({"CLIENT", "ROLE", "STATE", "REPLICA", "PEER", "APPLIED", "DRAINED", "LAST ACK",
               "NACKS", "LAST NACK ERROR"});
  for (const v1::ClientInfo& c : response.clients()) {
    table.AddRow({c.client_id(), v1::ClientRole_Name(c.role()),
                  c.connected() ? "connected" : "gone", c.replica().empty() ? "-" : c.replica(),
                  c.peer().empty() ? "-" : c.peer(), absl::StrCat(c.applied_version()),
                  absl::StrCat(c.drained_version()), TimeText(c.last_ack_time()),
                  absl::StrCat(c.nacks()),
                  c.last_nack_error().empty() ? "-" : c.last_nack_error()});
  }
  return table.Render();
}

namespace {

std::string PhaseText(v1::HandoffPhase phase) {
  std::string name = v1::HandoffPhase_Name(phase);
  return absl::StartsWith(name, "HANDOFF_") ? name.substr(8) : name;
}

// The draining role and its lag, e.g. "ingestion 42"; "-" when none.
std::string DrainText(const v1::Handoff& h) {
  if (h.state() != v1::HANDOFF_DRAINING || h.drain_index() >= h.drains_size()) return "-";
  const v1::RoleDrain& d = h.drains(h.drain_index());
  if (d.end_offsets().empty()) return absl::StrCat(d.role(), " (starting)");
  return absl::StrCat(d.role(), " lag ", d.lag() < 0 ? std::string("?") : absl::StrCat(d.lag()));
}

}  // namespace

std::string FormatHandoffs(const v1::ListHandoffsResponse& response) {
  if (response.handoffs().empty()) return "no open handoffs\n";
  Table table({"ID", "OPENED AT", "SOURCE", "TARGETS", "TEAMS", "PHASE", "OPENED", "DRAIN",
               "MISSING PRODUCERS", "END REASON"});
  for (const v1::Handoff& h : response.handoffs()) {
    std::string teams = absl::StrCat(h.team_ids_size());
    if (!h.source_pool().empty()) absl::StrAppend(&teams, " + pool ", h.source_pool());
    table.AddRow({absl::StrCat(h.id()), absl::StrCat(h.opened_version()),
                  absl::StrCat(h.source_bucket_id()), absl::StrJoin(h.target_bucket_ids(), ","),
                  teams, PhaseText(h.state()) + (h.ordered() ? "" : " (unordered)"),
                  TimeText(h.open_time()), DrainText(h),
                  h.missing_producers().empty() ? "-" : absl::StrJoin(h.missing_producers(), ","),
                  h.end_reason().empty() ? "-" : h.end_reason()});
  }
  return table.Render();
}

std::string FormatCancelHandoff(const v1::CancelHandoffRequest& request,
                                const v1::CancelHandoffResponse& response) {
  if (request.dry_run()) {
    return absl::StrCat("dry run at version ", response.version(),
                        " (nothing committed): would cancel handoff ", request.handoff_id(), "\n");
  }
  return absl::StrCat("version ", response.version(), ": handoff ", response.handoff().id(),
                      " from bucket ", response.handoff().source_bucket_id(), " cancelled\n");
}

std::string FormatUpdatePool(const v1::UpdatePoolRequest& request,
                             const v1::UpdatePoolResponse& response) {
  const v1::Pool& pool = response.pool();
  std::vector<std::string> ids;
  for (const v1::Bucket& b : response.buckets()) ids.push_back(absl::StrCat(b.id()));
  const std::string what = absl::StrCat("pool ", request.name(), " ", StateName(pool.state()),
                                        ", priority ", pool.priority());
  std::string buckets;
  if (!ids.empty()) {
    absl::StrAppend(&buckets, "; bucket", ids.size() == 1 ? " " : "s ", absl::StrJoin(ids, ", "),
                    " ", pool.state() == v1::PAUSED ? "paused" : "resumed");
  }
  return Headline(response.version(), response.effect(), absl::StrCat(what, buckets),
                  absl::StrCat(what, buckets),
                  absl::StrCat("pool ", request.name(), " is ", StateName(pool.state()),
                               " with priority ", pool.priority()));
}

std::string FormatListPools(const v1::ListPoolsResponse& response) {
  if (response.pools().empty()) return "no pools\n";
  Table table({"POOL", "STATE", "PRIORITY", "BUCKETS", "ASSIGNED", "PINNED", "EVENTS/S",
               "PAUSED BY POOL", "CHANGED AT", "BY", "REASON"});
  for (const v1::PoolInfo& info : response.pools()) {
    const v1::Pool& p = info.pool();
    // "-": no load known (none reported yet, or a server without signals),
    // which is not 0.
    const std::string rate = info.has_rate() && info.load_windows() > 0
                                 ? absl::StrFormat("%.1f", info.rate().events_per_second())
                                 : "-";
    table.AddRow({p.name(), StateName(p.state()), absl::StrCat(p.priority()),
                  info.bucket_ids().empty() ? "-" : absl::StrJoin(info.bucket_ids(), ","),
                  absl::StrCat(info.assigned_teams()), absl::StrCat(info.pinned_teams()), rate,
                  p.paused_bucket_ids().empty() ? "-" : absl::StrJoin(p.paused_bucket_ids(), ","),
                  info.has_object() ? absl::StrCat(p.updated_version()) : "-",
                  p.actor().empty() ? "-" : p.actor(), p.reason().empty() ? "-" : p.reason()});
  }
  return table.Render();
}

std::string RuleText(const v1::TeamRule& rule) {
  std::string text = v1::TeamRuleKind_Name(rule.kind());
  if (text.empty()) text = absl::StrCat("kind ", static_cast<int>(rule.kind()));
  if (rule.kind() == v1::RATE_LIMIT) {
    absl::StrAppend(&text, " ", rule.rate_limit().events_per_second(), "/s burst ",
                    rule.rate_limit().burst());
  }
  return text;
}

std::string FormatTeamRules(const v1::ListTeamRulesResponse& response) {
  if (response.rules().empty()) return "no team rules\n";
  Table table({"TEAM", "RULE", "EXPIRES", "SET AT", "BY", "REASON"});
  for (const v1::TeamRule& r : response.rules()) {
    table.AddRow({absl::StrCat(r.team_id()), RuleText(r),
                  r.has_expire_time() ? TimeText(r.expire_time()) : "never",
                  absl::StrCat(r.version()), r.actor().empty() ? "-" : r.actor(),
                  r.reason().empty() ? "-" : r.reason()});
  }
  return table.Render();
}

std::string FormatSetTeamRule(const v1::SetTeamRuleRequest& request,
                              const v1::SetTeamRuleResponse& response) {
  const v1::TeamRule& rule = response.rule();
  std::string text = absl::StrCat("team ", request.team_id(), " ", RuleText(rule));
  if (rule.has_expire_time()) absl::StrAppend(&text, ", expires ", TimeText(rule.expire_time()));
  return Headline(response.version(), response.effect(), text, absl::StrCat("would set ", text),
                  absl::StrCat("team ", request.team_id(), " already has this rule"));
}

std::string FormatClearTeamRule(const v1::ClearTeamRuleRequest& request,
                                const v1::ClearTeamRuleResponse& response) {
  std::vector<std::string> cleared;
  for (const v1::TeamRule& r : response.cleared()) cleared.push_back(RuleText(r));
  const std::string text =
      absl::StrCat("team ", request.team_id(), ": ", absl::StrJoin(cleared, ", "), " cleared");
  return Headline(
      response.version(), response.effect(), text,
      absl::StrCat("team ", request.team_id(), ": would clear ", absl::StrJoin(cleared, ", ")),
      absl::StrCat("team ", request.team_id(), " has no such rule"));
}

}  // namespace bucketmap::bucketctl
