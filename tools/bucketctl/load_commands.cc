#include "tools/bucketctl/load_commands.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"

namespace bucketmap::bucketctl {
namespace {

absl::Status Usage(absl::string_view message) { return absl::InvalidArgumentError(message); }

const char* StateName(v1::BucketState state) {
  switch (state) {
    case v1::ACTIVE:
      return "ACTIVE";
    case v1::PAUSED:
      return "PAUSED";
    case v1::DRAINING:
      return "DRAINING";
    case v1::RETIRED:
      return "RETIRED";
    default:
      return "?";
  }
}

std::string Rate(double per_second) {
  if (per_second >= 1000) return absl::StrFormat("%.0f", per_second);
  if (per_second >= 10) return absl::StrFormat("%.1f", per_second);
  return absl::StrFormat("%.2f", per_second);
}

std::string Seconds(double s) {
  if (s >= 3600) return absl::StrFormat("%.1fh", s / 3600);
  if (s >= 60) return absl::StrFormat("%.1fm", s / 60);
  return absl::StrFormat("%.1fs", s);
}

// A YAML double-quoted scalar: only printable ASCII reaches here (bucket
// names and roles are checked by the server), but quote and escape anyway.
std::string Quoted(absl::string_view s) {
  return absl::StrCat("\"", absl::StrReplaceAll(s, {{"\\", "\\\\"}, {"\"", "\\\""}}), "\"");
}

// A Kubernetes object name: lower case, [a-z0-9-], at most 253.
std::string K8sName(absl::string_view s) {
  std::string out;
  for (char c : s) {
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      out.push_back(c);
    } else if (c >= 'A' && c <= 'Z') {
      out.push_back(static_cast<char>(c - 'A' + 'a'));
    } else {
      out.push_back('-');
    }
  }
  return out.substr(0, 253);
}

}  // namespace

absl::StatusOr<v1::GetLoadRequest> BuildGetLoad(const ParsedArgs& args) {
  v1::GetLoadRequest request;
  request.set_pool(args.Get("pool"));
  if (args.Has("top-teams")) {
    absl::StatusOr<int64_t> top = ParseInteger(args.Get("top-teams"), "--top-teams", 1, 1000);
    if (!top.ok()) return top.status();
    request.set_top_teams(static_cast<int32_t>(*top));
  } else {
    request.set_top_teams(3);
  }
  request.set_include_retired(args.GetBool("include-retired"));
  return request;
}

absl::StatusOr<absl::Duration> TopInterval(const ParsedArgs& args) {
  if (!args.Has("interval")) return absl::Seconds(2);
  absl::Duration d;
  if (!absl::ParseDuration(args.Get("interval"), &d) || d < absl::Milliseconds(100)) {
    return Usage(absl::StrCat("--interval: expected a duration of at least 100ms (e.g. 2s), got '",
                              args.Get("interval"), "'"));
  }
  return d;
}

std::string FormatLoad(const v1::GetLoadResponse& r, absl::Time now) {
  std::string out = absl::StrCat("version ", r.version(), "  load: ");
  if (r.windows() == 0) {
    absl::StrAppend(&out, "none reported yet");
  } else {
    absl::StrAppend(&out, r.windows(), " windows of ",
                    absl::FormatDuration(absl::Seconds(r.window_seconds())), ", half-life ",
                    absl::FormatDuration(absl::Seconds(r.half_life_seconds())), ", as of ",
                    absl::FormatTime("%H:%M:%S", absl::FromUnixSeconds(r.as_of().seconds()),
                                     absl::UTCTimeZone()),
                    " UTC");
  }
  absl::StrAppend(&out, "  lag: read every ",
                  absl::FormatDuration(absl::Seconds(r.lag_interval_seconds())), "\n");
  std::vector<std::vector<std::string>> rows = {
      {"BUCKET", "POOL", "STATE", "WEIGHT", "EVENTS/S", "POOL%", "PROC S/S", "LAG", "TOP TEAMS"}};
  for (const v1::BucketLoad& b : r.buckets()) {
    std::vector<std::string> lags;
    for (const v1::RoleLag& l : b.lag()) {
      if (!l.up()) {
        lags.push_back(absl::StrCat(l.role(), ": ? (", l.error().substr(0, 40), ")"));
        continue;
      }
      const absl::Time read =
          absl::FromUnixSeconds(l.read_time().seconds()) + absl::Nanoseconds(l.read_time().nanos());
      lags.push_back(absl::StrCat(l.role(), ": ", l.messages(), " / ", Seconds(l.seconds()), " (",
                                  Seconds(std::max(0.0, absl::ToDoubleSeconds(now - read))),
                                  " ago)"));
    }
    std::vector<std::string> teams;
    for (const v1::TeamLoad& t : b.top_teams()) {
      teams.push_back(absl::StrCat(t.team_id(), ":", Rate(t.rate().events_per_second())));
    }
    rows.push_back(
        {absl::StrCat(b.bucket_id(), " ", b.bucket_name()), b.pool(), StateName(b.state()),
         absl::StrFormat("%d (%.0f%%)", b.weight(), 100 * b.weight_share()),
         Rate(b.rate().events_per_second()), absl::StrFormat("%.1f%%", 100 * b.event_share()),
         Rate(b.rate().processing_seconds_per_second()),
         lags.empty() ? "-" : absl::StrJoin(lags, ", "), absl::StrJoin(teams, " ")});
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(&line, row[i]);
      if (i + 1 < row.size()) line.append(width[i] - row[i].size() + 2, ' ');
    }
    absl::StrAppend(&out, line, "\n");
  }
  if (r.unattributed().events_per_second() > 0 ||
      r.unattributed().processing_seconds_per_second() > 0) {
    absl::StrAppend(&out, "unattributed: ", Rate(r.unattributed().events_per_second()),
                    " events/s, ", Rate(r.unattributed().processing_seconds_per_second()),
                    " processing s/s\n");
  }
  return out;
}

absl::StatusOr<KedaOptions> BuildKedaOptions(const ParsedArgs& args) {
  KedaOptions o;
  o.buckets = args.GetAll("bucket");
  o.roles = args.GetAll("role");
  if (args.Has("namespace")) o.ns = args.Get("namespace");
  if (args.Has("prometheus")) o.prometheus = args.Get("prometheus");
  if (args.Has("deployment")) o.deployment = args.Get("deployment");
  if (args.Has("metric")) {
    o.metric = args.Get("metric");
    if (o.metric != "seconds" && o.metric != "messages") {
      return Usage(absl::StrCat("--metric: seconds or messages, got '", o.metric, "'"));
    }
  }
  if (args.Has("threshold")) {
    double t = 0;
    if (!absl::SimpleAtod(args.Get("threshold"), &t) || !(t > 0)) {
      return Usage(
          absl::StrCat("--threshold: a positive number, got '", args.Get("threshold"), "'"));
    }
    o.threshold = args.Get("threshold");
  }
  struct IntFlag {
    const char* name;
    int64_t* value;
    int64_t min;
  };
  for (const IntFlag& f :
       {IntFlag{"min-replicas", &o.min_replicas, 0}, IntFlag{"max-replicas", &o.max_replicas, 1},
        IntFlag{"fallback-replicas", &o.fallback_replicas, 1},
        IntFlag{"failure-threshold", &o.failure_threshold, 1},
        IntFlag{"polling-interval", &o.polling_interval, 1}}) {
    if (!args.Has(f.name)) continue;
    absl::StatusOr<int64_t> v =
        ParseInteger(args.Get(f.name), absl::StrCat("--", f.name), f.min, 100000);
    if (!v.ok()) return v.status();
    *f.value = *v;
  }
  if (o.max_replicas < o.min_replicas) {
    return Usage("--max-replicas must be at least --min-replicas");
  }
  if (o.fallback_replicas > o.max_replicas) {
    return Usage("--fallback-replicas must not exceed --max-replicas");
  }
  if (o.ns.empty() || o.prometheus.empty() || o.deployment.empty()) {
    return Usage("--namespace, --prometheus and --deployment must not be empty");
  }
  return o;
}

std::string KedaQuery(const std::string& metric, int32_t bucket_id, const std::string& role) {
  return absl::StrCat("max(bucketmap_bucket_lag_", metric, "{bucket_id=\"", bucket_id, "\",role=\"",
                      role, "\"})");
}

absl::StatusOr<std::string> RenderKeda(const std::vector<v1::Bucket>& buckets,
                                       const KedaOptions& o) {
  std::vector<const v1::Bucket*> chosen;
  std::set<std::string> wanted(o.buckets.begin(), o.buckets.end());
  std::set<std::string> matched;
  for (const v1::Bucket& b : buckets) {
    const std::string id = absl::StrCat(b.id());
    if (wanted.empty() ? b.state() == v1::RETIRED
                       : wanted.count(id) == 0 && wanted.count(b.name()) == 0) {
      continue;
    }
    matched.insert(wanted.count(id) > 0 ? id : b.name());
    chosen.push_back(&b);
  }
  for (const std::string& w : wanted) {
    if (matched.count(w) == 0) return Usage(absl::StrCat("--bucket: no bucket '", w, "'"));
  }
  std::sort(chosen.begin(), chosen.end(),
            [](const v1::Bucket* a, const v1::Bucket* b) { return a->id() < b->id(); });
  std::set<std::string> roles_wanted(o.roles.begin(), o.roles.end());
  std::set<std::string> roles_matched;
  std::string out;
  for (const v1::Bucket* b : chosen) {
    // Only roles with a consumer group have a lag series.
    const std::map<std::string, std::string> groups(b->consumer_groups().begin(),
                                                    b->consumer_groups().end());
    for (const auto& [role, group] : groups) {
      if (!roles_wanted.empty() && roles_wanted.count(role) == 0) continue;
      roles_matched.insert(role);
      const std::string deployment =
          absl::StrReplaceAll(o.deployment, {{"{bucket}", b->name()}, {"{role}", role}});
      absl::StrAppend(
          &out, "---\n", "# Bucket ", b->id(), " (", b->name(), "), role ", role,
          ": consumer group ", group, ".\n", "apiVersion: keda.sh/v1alpha1\n",
          "kind: ScaledObject\n", "metadata:\n",
          "  name: ", Quoted(K8sName(absl::StrCat("bucketmap-", b->name(), "-", role))), "\n",
          "  namespace: ", Quoted(o.ns), "\n", "  labels:\n",
          "    app.kubernetes.io/managed-by: bucketctl\n",
          "    bucketmap.io/bucket-id: ", Quoted(absl::StrCat(b->id())), "\n",
          "    bucketmap.io/role: ", Quoted(role), "\n", "spec:\n", "  scaleTargetRef:\n",
          "    name: ", Quoted(K8sName(deployment)), "\n",
          "  pollingInterval: ", o.polling_interval, "\n", "  minReplicaCount: ", o.min_replicas,
          "\n", "  maxReplicaCount: ", o.max_replicas, "\n",
          "  # While the query fails (no lag series: the lag is unknown), run this many.\n",
          "  fallback:\n", "    failureThreshold: ", o.failure_threshold, "\n",
          "    replicas: ", o.fallback_replicas, "\n", "  triggers:\n", "    - type: prometheus\n",
          "      metadata:\n", "        serverAddress: ", Quoted(o.prometheus), "\n",
          "        query: ", Quoted(KedaQuery(o.metric, b->id(), role)), "\n",
          "        threshold: ", Quoted(o.threshold), "\n",
          "        # A missing series is an error (then the fallback), never 0.\n",
          "        ignoreNullValues: \"false\"\n");
    }
  }
  for (const std::string& r : roles_wanted) {
    if (roles_matched.count(r) == 0) {
      return Usage(absl::StrCat("--role: no chosen bucket has a consumer group for '", r, "'"));
    }
  }
  if (out.empty()) return Usage("nothing to render: no chosen bucket has a consumer group");
  return out;
}

RenderKind KedaRenderKind() {
  return RenderKind{"keda",
                    "[--bucket ID|NAME]... [--role R]... [--namespace NS] [--prometheus URL]\n"
                    "     [--deployment TEMPLATE] [--metric seconds|messages] [--threshold N]\n"
                    "     [--min-replicas N] [--max-replicas N] [--fallback-replicas N]\n"
                    "     [--failure-threshold N] [--polling-interval SECONDS]",
                    "KEDA ScaledObjects scaling each bucket role's consumers on its lag.",
                    "One ScaledObject per bucket and role with a consumer group, scaling the\n"
                    "deployment named by --deployment ({bucket} and {role} replaced; default\n"
                    "{bucket}-{role}) on max(bucketmap_bucket_lag_<metric>{bucket_id,role}) with\n"
                    "ignoreNullValues false: a missing series is an error and KEDA runs\n"
                    "--fallback-replicas, never scales down on it. See docs/autoscaling.md.\n",
                    {{"bucket", FlagKind::kRepeated},
                     {"role", FlagKind::kRepeated},
                     {"namespace", FlagKind::kValue},
                     {"prometheus", FlagKind::kValue},
                     {"deployment", FlagKind::kValue},
                     {"metric", FlagKind::kValue},
                     {"threshold", FlagKind::kValue},
                     {"min-replicas", FlagKind::kValue},
                     {"max-replicas", FlagKind::kValue},
                     {"fallback-replicas", FlagKind::kValue},
                     {"failure-threshold", FlagKind::kValue},
                     {"polling-interval", FlagKind::kValue}},
                    [](const RenderInput& input) -> absl::StatusOr<std::string> {
                      absl::StatusOr<KedaOptions> options = BuildKedaOptions(*input.args);
                      if (!options.ok()) return options.status();
                      return RenderKeda(input.buckets, *options);
                    }};
}

absl::StatusOr<v1::PlanRebalanceRequest> BuildPlanRebalance(const ParsedArgs& args) {
  v1::PlanRebalanceRequest request;
  if (args.Get("pool").empty()) return Usage("--pool is required");
  request.set_pool(args.Get("pool"));
  if (args.Has("metric")) {
    const std::string metric = args.Get("metric");
    if (metric == "events") {
      request.set_metric(v1::LOAD_METRIC_EVENT_RATE);
    } else if (metric == "processing") {
      request.set_metric(v1::LOAD_METRIC_PROCESSING_TIME);
    } else {
      return Usage(absl::StrCat("--metric: events or processing, got '", metric, "'"));
    }
  }
  v1::RebalanceBudget* budget = request.mutable_budget();
  if (args.Has("max-load-moved")) {
    std::string text = args.Get("max-load-moved");
    const bool percent = !text.empty() && text.back() == '%';
    if (percent) text.pop_back();
    double share = 0;
    if (!absl::SimpleAtod(text, &share) || !(share >= 0) || share > (percent ? 100 : 1)) {
      return Usage(absl::StrCat("--max-load-moved: a share of the load, 0%..100% or 0..1, got '",
                                args.Get("max-load-moved"), "'"));
    }
    budget->set_max_load_share(percent ? share / 100 : share);
  }
  if (args.Has("max-teams")) {
    absl::StatusOr<int64_t> teams = ParseInteger(args.Get("max-teams"), "--max-teams", 0, 1000000);
    if (!teams.ok()) return teams.status();
    budget->set_max_teams(*teams);
  }
  if (args.Has("target")) {
    double target = 0;
    if (!absl::SimpleAtod(args.Get("target"), &target) || !(target >= 1) || target > 100) {
      return Usage(absl::StrCat("--target: max bucket load / its ideal load, 1..100, got '",
                                args.Get("target"), "'"));
    }
    budget->set_target_imbalance(target);
  }
  return request;
}

std::string FormatRebalancePlan(const v1::PlanRebalanceResponse& p) {
  const bool events = p.metric() != v1::LOAD_METRIC_PROCESSING_TIME;
  const char* unit = events ? "events/s" : "processing s/s";
  std::string out = absl::StrFormat(
      "pool %s  version %d  metric %s  load %.6g (%d windows)\n"
      "budget: at most %.4g%% of the load and %d teams moved; target imbalance %.4g\n",
      p.pool(), p.version(), unit, p.pool_load(), p.load_windows(),
      100 * p.budget().max_load_share(), p.budget().max_teams(), p.budget().target_imbalance());
  if (p.load_windows() == 0) absl::StrAppend(&out, "no load reported yet: nothing to balance\n");
  absl::StrAppend(&out, absl::StrFormat("%-8s %-9s %6s %12s %12s %12s %11s\n", "BUCKET", "STATE",
                                        "WEIGHT", "BEFORE", "AFTER", "IDEAL", "AFTER/IDEAL"));
  for (const v1::RebalanceBucketLoad& b : p.buckets()) {
    const std::string ratio =
        b.ideal() > 0 ? absl::StrFormat("%.3f", b.after() / b.ideal()) : std::string("-");
    absl::StrAppend(&out, absl::StrFormat("%-8d %-9s %6d %12.6g %12.6g %12s %11s%s\n", b.bucket_id(),
                                          StateName(b.state()), b.weight(), b.before(), b.after(),
                                          b.ideal() > 0 ? absl::StrFormat("%.6g", b.ideal()) : "-",
                                          ratio, b.floored() ? "  (floored)" : ""));
  }
  absl::StrAppend(
      &out, absl::StrFormat("imbalance %.3f -> %.3f (target %.4g): %s\n", p.imbalance_before(),
                            p.imbalance_after(), p.budget().target_imbalance(), p.stop_reason()));
  absl::StrAppend(&out,
                  absl::StrFormat("moves: %d teams, %.6g %s, %.2f%% of the load\n", p.moves_size(),
                                  p.load_moved(), unit, 100 * p.share_moved()));
  if (!p.moves().empty()) {
    absl::StrAppend(&out,
                    absl::StrFormat("  %-12s %-8s %-8s %12s\n", "TEAM", "FROM", "TO", "LOAD"));
    for (const v1::RebalanceMove& m : p.moves()) {
      absl::StrAppend(&out, absl::StrFormat("  %-12d %-8d %-8d %12.6g\n", m.team_id(),
                                            m.from_bucket_id(), m.to_bucket_id(), m.load()));
    }
  }
  auto heavy = [&out](const char* title, const auto& teams) {
    if (teams.empty()) return;
    absl::StrAppend(&out, title, "\n");
    absl::StrAppend(&out,
                    absl::StrFormat("  %-12s %-8s %12s %12s\n", "TEAM", "BUCKET", "LOAD", "LIMIT"));
    for (const v1::RebalanceHeavyTeam& t : teams) {
      absl::StrAppend(&out, absl::StrFormat("  %-12d %-8d %12.6g %12.6g\n", t.team_id(),
                                            t.bucket_id(), t.load(), t.limit()));
    }
  };
  heavy("giants (each needs a bucket of its own):", p.giants());
  heavy("anchored (too heavy for the load budget):", p.anchored());
  if (!p.frozen_team_ids().empty()) {
    absl::StrAppend(
        &out, "frozen (in their move cooldown): ", absl::StrJoin(p.frozen_team_ids(), " "), "\n");
  }
  return out;
}

v1::ApplyRebalanceRequest ApplyRebalanceOf(const v1::PlanRebalanceResponse& plan,
                                           const std::string& reason,
                                           const std::string& request_id) {
  v1::ApplyRebalanceRequest request;
  request.set_pool(plan.pool());
  *request.mutable_moves() = plan.moves();
  request.set_reason(reason);
  request.set_expected_version(plan.version());
  request.set_request_id(request_id);
  return request;
}

}  // namespace bucketmap::bucketctl
