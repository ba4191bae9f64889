// bucketctl's load and autoscaling commands (issue 11, docs/autoscaling.md):
//   top             GetLoad as a table (refreshing, or --once);
//   render keda     one KEDA ScaledObject per bucket and role, scaling the
//                   role's deployment on the bucket's lag series.
//   rebalance       PlanRebalance as a table, and with --apply
//                   ApplyRebalance of the plan (docs/rebalancing.md).
// Pure functions: request building, the table and the YAML; no I/O.
// Thread-compatible.
#ifndef BUCKETMAP_TOOLS_BUCKETCTL_LOAD_COMMANDS_H_
#define BUCKETMAP_TOOLS_BUCKETCTL_LOAD_COMMANDS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bucketmap/v1/admin.pb.h"
#include "bucketmap/v1/mapping.pb.h"
#include "tools/bucketctl/args.h"
#include "tools/bucketctl/pipeline.h"

namespace bucketmap::bucketctl {

// `top`'s request from --pool, --top-teams, --include-retired.
absl::StatusOr<v1::GetLoadRequest> BuildGetLoad(const ParsedArgs& args);

// `top`'s refresh period (--interval, default 2s; at least 100ms).
absl::StatusOr<absl::Duration> TopInterval(const ParsedArgs& args);

// FormatLoad()
//
// The table `top` prints: a header (version, the EWMA's windows, as-of
// time), then one row per bucket: id and name, pool, state, weight share,
// events/s and share of the pool, processing s/s, each role's lag
// ("messages / seconds", or "?" with the reason when unknown), and the
// top teams ("team:events/s"). `now` dates the lag readings' age.
std::string FormatLoad(const v1::GetLoadResponse& response, absl::Time now);

// What `render keda` needs besides the buckets.
struct KedaOptions {
  // Bucket ids or names (--bucket, repeated); empty: every bucket that
  // is not RETIRED.
  std::vector<std::string> buckets;
  // Roles (--role, repeated); empty: every role with a consumer group.
  std::vector<std::string> roles;
  std::string ns = "default";                                    // --namespace
  std::string prometheus = "http://prometheus.monitoring:9090";  // --prometheus
  // scaleTargetRef.name; {bucket} and {role} are replaced (--deployment).
  std::string deployment = "{bucket}-{role}";
  // The lag series: "seconds" or "messages" (--metric), and the lag one
  // replica is expected to absorb (--threshold): KEDA asks for
  // ceil(lag / threshold) replicas.
  std::string metric = "seconds";
  std::string threshold = "30";
  int64_t min_replicas = 1;
  int64_t max_replicas = 10;
  // Replicas while the query fails (the series is absent: the lag is
  // unknown) for failure_threshold checks in a row.
  int64_t fallback_replicas = 4;
  int64_t failure_threshold = 3;
  int64_t polling_interval = 30;
};

absl::StatusOr<KedaOptions> BuildKedaOptions(const ParsedArgs& args);

// KedaQuery()
//
// The PromQL of a bucket role's trigger, e.g.
//   max(bucketmap_bucket_lag_seconds{bucket_id="3",role="ingestion"})
// max() because during a leader failover two replicas may export the same
// series for a moment; it is empty, never 0, when no replica can read the
// lag, which KEDA (ignoreNullValues false) treats as an error.
std::string KedaQuery(const std::string& metric, int32_t bucket_id, const std::string& role);

// RenderKeda()
//
// The ScaledObjects of `buckets` (ListBuckets) as one YAML stream, one
// document per bucket and role, in bucket id then role order.
// InvalidArgument naming --bucket or --role when one matches nothing.
absl::StatusOr<std::string> RenderKeda(const std::vector<v1::Bucket>& buckets,
                                       const KedaOptions& options);

// `render keda` in render's table of kinds (pipeline.h): BuildKedaOptions
// from the command's flags, then RenderKeda.
RenderKind KedaRenderKind();

// `rebalance`'s plan request from --pool (required), --metric
// (events|processing), --max-load-moved (a share: "5%" or "0.05"),
// --max-teams and --target; absent flags take the server's defaults.
absl::StatusOr<v1::PlanRebalanceRequest> BuildPlanRebalance(const ParsedArgs& args);

// FormatRebalancePlan()
//
// The table `rebalance` prints: the pool, version, metric and budget; one
// row per bucket (state, weight, load before, after and ideal, after /
// ideal); the imbalance before and after against the target and why the
// planner stopped; the moves (team, from, to, load) with the share of
// load moved; the giants and anchored teams; the frozen teams.
std::string FormatRebalancePlan(const v1::PlanRebalanceResponse& plan);

// The ApplyRebalance of `plan`'s moves at its version.
v1::ApplyRebalanceRequest ApplyRebalanceOf(const v1::PlanRebalanceResponse& plan,
                                           const std::string& reason,
                                           const std::string& request_id);

}  // namespace bucketmap::bucketctl

#endif  // BUCKETMAP_TOOLS_BUCKETCTL_LOAD_COMMANDS_H_
