#include "tools/bucketctl/render_helm.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "domain/status_macros.h"

namespace bucketmap::bucketctl {
namespace {

constexpr char kDefaultRoles[] = "ingestion,async";
constexpr int64_t kMaxReplicas = 1000;
constexpr size_t kMaxKubernetesName = 63;

// A YAML double-quoted scalar: every value is quoted, so no topic or group
// id can be read as a number, a boolean or YAML syntax.
std::string Yaml(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out += c;
        break;
    }
  }
  out += '"';
  return out;
}

// The inverse of Yaml() (a bare value is taken as it is).
std::string Unyaml(absl::string_view s) {
  s = absl::StripAsciiWhitespace(s);
  if (s.size() < 2 || s.front() != '"' || s.back() != '"') return std::string(s);
  std::string out;
  for (size_t i = 1; i + 1 < s.size(); ++i) {
    if (s[i] == '\\' && i + 2 < s.size()) {
      const char c = s[++i];
      out += c == 'n' ? '\n' : c == 't' ? '\t' : c;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

std::vector<RenderedDeployment> ParseHelmValues(absl::string_view text) {
  std::vector<RenderedDeployment> out;
  bool topic_next = false;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    absl::string_view rest = line;
    if (absl::ConsumePrefix(&rest, "    - name: ")) {
      out.push_back(RenderedDeployment{Unyaml(rest), "", 0});
      continue;
    }
    if (out.empty()) continue;
    rest = absl::StripAsciiWhitespace(rest);
    if (topic_next && absl::ConsumePrefix(&rest, "value: ")) {
      out.back().topic = Unyaml(rest);
    } else if (absl::ConsumePrefix(&rest, "replicaCount: ") ||
               absl::ConsumePrefix(&rest, "maxReplicas: ")) {
      absl::SimpleAtoi(rest, &out.back().replicas);
    }
    topic_next = rest == "- name: KAFKA_CONSUMPTION_TOPIC";
  }
  return out;
}

absl::StatusOr<std::string> RenderHelmValues(const RenderInput& input) {
  const ParsedArgs& args = *input.args;
  const std::vector<std::string> roles = ParseList(args.Get("roles", kDefaultRoles));
  if (roles.empty()) return absl::InvalidArgumentError("--roles: give at least one role");
  ASSIGN_OR_RETURN(int64_t wanted, IntFlagOr(args, "replicas", 1, 1, kMaxReplicas));
  const bool autoscaling = args.GetBool("autoscaling");
  const std::string address = args.Get("bucketmap-address", input.server);
  ASSIGN_OR_RETURN(auto partitions, OptionalPartitionCounts(input.sources));

  std::string body;
  for (const std::string& role : roles) {
    for (const v1::Bucket* bucket : BucketsWithRole(input, role)) {
      const std::string& topic = bucket->topics().at(role);
      auto group = bucket->consumer_groups().find(role);
      if (group == bucket->consumer_groups().end()) {
        return absl::FailedPreconditionError(absl::StrCat(BucketText(*bucket), " has a ", role,
                                                          " topic (", topic,
                                                          ") but no consumer group for it"));
      }
      std::string name = absl::StrCat("plugins-", role, "-b", bucket->id());
      std::replace(name.begin(), name.end(), '_', '-');
      if (name.size() > kMaxKubernetesName) {
        return absl::InvalidArgumentError(absl::StrCat("role ", role, ": the deployment name ",
                                                       name, " is longer than 63 characters"));
      }
      ASSIGN_OR_RETURN(int32_t replicas,
                       ConsumersFor(partitions, *bucket, role, wanted, "--replicas"));
      absl::StrAppend(&body, "    - name: ", Yaml(name), "\n", "      role: ", Yaml(role), "\n",
                      "      bucket:\n", "        id: ", bucket->id(), "\n",
                      "        name: ", Yaml(bucket->name()), "\n");
      if (autoscaling) {
        absl::StrAppend(&body, "      autoscaling:\n", "        enabled: true\n",
                        "        scaledObject: ", Yaml(name), "\n",
                        "        maxReplicas: ", replicas, "\n");
      } else {
        absl::StrAppend(&body, "      replicaCount: ", replicas, "\n");
      }
      const std::vector<std::pair<std::string, std::string>> env = {
          {"PLUGIN_SERVER_MODE", role},
          {"KAFKA_CONSUMPTION_TOPIC", topic},
          {"KAFKA_CONSUMPTION_GROUP", group->second},
          {"BUCKETMAP_BUCKET_ID", absl::StrCat(bucket->id())},
          {"BUCKETMAP_BUCKET_NAME", bucket->name()},
          {"BUCKETMAP_SERVERS", address},
      };
      absl::StrAppend(&body, "      env:\n");
      for (const auto& [key, value] : env) {
        absl::StrAppend(&body, "        - name: ", key, "\n", "          value: ", Yaml(value),
                        "\n");
      }
    }
  }
  return absl::StrCat(
      "# bucketctl render helm-values: one plugin-server deployment per bucket and role\n"
      "# (",
      absl::StrJoin(roles, ", "), ").\n", "plugins:\n",
      body.empty() ? "  deployments: []\n" : absl::StrCat("  deployments:\n", body));
}

RenderKind HelmValuesRenderKind() {
  return RenderKind{
      "helm-values",
      "[--roles R1,R2] [--replicas N] [--autoscaling] [--bucketmap_address HOST:PORT] "
      "[--kafka_brokers B]",
      "Helm values: plugins.deployments, one plugin-server deployment per bucket and role.",
      "Every bucket other than RETIRED with a topic for a role of --roles (default\n"
      "ingestion,async) gets a deployment plugins-<role>-b<ID> whose env names the role\n"
      "(PLUGIN_SERVER_MODE), the topic and consumer group to consume, the bucket's id and\n"
      "name, and the bucketmap address (--bucketmap_address, default --server).\n"
      "replicaCount is --replicas (default 1) capped at the topic's partition count, read\n"
      "from --kafka_brokers; without it only 1 is allowed. --autoscaling replaces it by a\n"
      "reference to the KEDA ScaledObject of the deployment's name, with --replicas (capped)\n"
      "as maxReplicas.\n",
      {{"roles", FlagKind::kValue},
       {"replicas", FlagKind::kValue},
       {"autoscaling", FlagKind::kBool},
       {"bucketmap-address", FlagKind::kValue}},
      RenderHelmValues};
}

}  // namespace bucketmap::bucketctl
