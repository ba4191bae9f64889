// `bucketctl render helm-values`: the values fragment of the plugin-server
// chart, `plugins.deployments: [...]`, with one deployment per bucket and
// role (default roles: ingestion, async). Each deployment has its name, its
// env (the role, the topic and consumer group to consume, the bucket's id
// and name, the bucketmap address) and a replica count, or with
// --autoscaling a reference to the KEDA ScaledObject of the same name.
// docs/pipeline.md shows a full example.
//
// Pure functions of their inputs (see pipeline.h); thread-compatible.
#ifndef BUCKETMAP_TOOLS_BUCKETCTL_RENDER_HELM_H_
#define BUCKETMAP_TOOLS_BUCKETCTL_RENDER_HELM_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "tools/bucketctl/pipeline.h"

namespace bucketmap::bucketctl {

// RenderHelmValues()
//
// The YAML fragment for `input` with the flags of render helm-values:
// --roles (default "ingestion,async"), --replicas (default 1; with
// --autoscaling the most replicas), --autoscaling, --bucketmap_address
// (default: the --server bucketctl uses). Buckets other than RETIRED with
// a topic for a role get a deployment `plugins-<role>-b<ID>` ('_' in a
// role becomes '-'). Replicas are capped at the topic's partition count
// (see ConsumersFor). FailedPrecondition naming the bucket when it has a
// topic for a role but no consumer group; InvalidArgument for bad flags
// or a name longer than Kubernetes' 63 characters. Deterministic: the
// mapping version is not in it.
absl::StatusOr<std::string> RenderHelmValues(const RenderInput& input);

// One deployment of a values fragment as RenderHelmValues writes it.
struct RenderedDeployment {
  std::string name;
  std::string topic;     // KAFKA_CONSUMPTION_TOPIC
  int64_t replicas = 0;  // replicaCount, or autoscaling's maxReplicas
};

// ParseHelmValues()
//
// The deployments of `text`, read in the layout RenderHelmValues writes
// (one key a line, values as it quotes them); lines of any other shape are
// skipped, so a hand-edited or foreign file yields what it has of that
// layout. For check-pipeline's --file.
std::vector<RenderedDeployment> ParseHelmValues(absl::string_view text);

// The render kind.
RenderKind HelmValuesRenderKind();

}  // namespace bucketmap::bucketctl

#endif  // BUCKETMAP_TOOLS_BUCKETCTL_RENDER_HELM_H_
