// The pipeline around the mapping (SPEC §9, "Artifacts"): what `bucketctl
// render <kind>` and `bucketctl check-pipeline` share.
//
// A render kind is self-contained: its name, flags and help, and a pure
// function from a RenderInput (the live buckets, the parsed flags, and the
// sources behind PipelineSources) to the artifact's text. Each kind lives
// in its own render_<kind>.cc and adds one line to RenderKinds()
// (pipeline.cc); the runner fetches the mapping and calls it.
//
// Everything here is a pure function of its inputs: I/O (Kafka metadata,
// ClickHouse queries) happens behind PipelineSources, which the runner
// implements over the network (pipeline_io.h) and tests fake.
// Thread-compatible.
#ifndef BUCKETMAP_TOOLS_BUCKETCTL_PIPELINE_H_
#define BUCKETMAP_TOOLS_BUCKETCTL_PIPELINE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "bucketmap/v1/types.pb.h"
#include "tools/bucketctl/args.h"

namespace bucketmap::bucketctl {

// What the pipeline commands read besides the mapping.
class PipelineSources {
 public:
  virtual ~PipelineSources() = default;

  // PartitionCounts()
  //
  // The partition count of every topic of the bucket topics' Kafka cluster
  // (--kafka_brokers), by name. FailedPrecondition when no cluster was
  // given; Unavailable when it does not answer.
  virtual absl::StatusOr<std::map<std::string, int32_t>> PartitionCounts() = 0;

  // QueryClickHouse()
  //
  // Runs one read-only `sql` statement on ClickHouse (--clickhouse_url) and
  // returns the response body. FailedPrecondition when no ClickHouse was
  // given; Unavailable when it does not answer; Internal with ClickHouse's
  // message when it refuses the query.
  virtual absl::StatusOr<std::string> QueryClickHouse(const std::string& sql) = 0;

  // ReadFile()
  //
  // The contents of the file at `path` (a template, an artifact to check),
  // given by the flag `what`. NotFound "<what> <path>: cannot read" when it
  // cannot be read.
  virtual absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view what) = 0;
};

// What a render kind (and check-pipeline) works from.
struct RenderInput {
  // The mapping version the buckets were read at.
  int64_t version = 0;
  // Every bucket, by ascending id.
  std::vector<v1::Bucket> buckets;
  // The command's parsed flags.
  const ParsedArgs* args = nullptr;
  // Where PipelineSources' answers come from; never null.
  PipelineSources* sources = nullptr;
  // The --server address bucketctl reads the mapping from (the default
  // bucketmap address of rendered deployments).
  std::string server;
};

// One kind of `bucketctl render`.
struct RenderKind {
  std::string name;             // e.g. "clickhouse"
  std::string usage;            // its flags, for the usage line
  std::string summary;          // one line
  std::string details;          // more lines for `bucketctl help render`
  std::vector<FlagSpec> flags;  // its own flags, besides --kafka_brokers
  // Returns the artifact (ends with a newline). InvalidArgument is a usage
  // error (exit 2); any other error is printed with its code (exit 1).
  absl::StatusOr<std::string> (*render)(const RenderInput& input);
};

// Every render kind, in the order `bucketctl help render` lists them.
const std::vector<RenderKind>& RenderKinds();

// The kind named `name`, or nullptr.
const RenderKind* FindRenderKind(absl::string_view name);

// The flags of `render`: --kafka_brokers and every kind's flags (each
// name once).
std::vector<FlagSpec> RenderFlags();

// Usage error unless every flag given in `args` besides `global` is
// --kafka_brokers or one of `kind`'s: a flag of another kind is refused by
// name.
absl::Status CheckKindFlags(const RenderKind& kind, const ParsedArgs& args,
                            const std::vector<FlagSpec>& global);

// The buckets that consume a role: every bucket but the RETIRED ones that
// has a topic for `role`.
std::vector<const v1::Bucket*> BucketsWithRole(const RenderInput& input, const std::string& role);

// The partition count of `topic`: FailedPrecondition naming the bucket
// and role when the topic is missing from `partitions`.
absl::StatusOr<int32_t> PartitionsOf(const std::map<std::string, int32_t>& partitions,
                                     const v1::Bucket& bucket, const std::string& role);

// How many consumers a role's deployment may run: `wanted` (>= 1) capped
// at the topic's partition count, which is read from Kafka. Without a
// cluster (no --kafka_brokers), only 1 is allowed (every topic has at
// least one partition): a larger `wanted` is a usage error naming `flag`.
// `partitions` is the cluster's answer, or nullopt without a cluster.
absl::StatusOr<int32_t> ConsumersFor(
    const std::optional<std::map<std::string, int32_t>>& partitions, const v1::Bucket& bucket,
    const std::string& role, int64_t wanted, absl::string_view flag);

// The cluster's partition counts, or nullopt when no --kafka_brokers was
// given (the sources answer FailedPrecondition); other errors pass.
absl::StatusOr<std::optional<std::map<std::string, int32_t>>> OptionalPartitionCounts(
    PipelineSources* sources);

// "bucket 3 (b3)"
std::string BucketText(const v1::Bucket& bucket);

// The integer flag `name` in [min, max], or `def` when absent.
absl::StatusOr<int64_t> IntFlagOr(const ParsedArgs& args, absl::string_view name, int64_t def,
                                  int64_t min, int64_t max);

// CheckPipeline()
//
// What `bucketctl check-pipeline` finds wrong (each problem one sentence
// naming it; empty when none):
//   - a topic used by two buckets, a (topic, group) pair used by two roles,
//     or a group used by two buckets;
//   - a bucket other than RETIRED lacking a topic or a group for one of
//     the pipeline's roles (--roles; default: every role an ACTIVE bucket
//     has a topic for);
//   - a topic of such a bucket missing from Kafka, or with fewer
//     partitions than a consumer count that render would use (helm-values'
//     --replicas, clickhouse's --consumers) or that the live ClickHouse
//     has (--clickhouse_url);
//   - a RETIRED bucket still present in the rendered output: in the Kafka
//     tables and views of the live ClickHouse (--clickhouse_url), or named
//     by its topics or groups in an artifact given with --file (its path and
//     text in `files`).
// Errors: those of the sources (Kafka is required: FailedPrecondition
// without --kafka_brokers), InvalidArgument for bad flags.
absl::StatusOr<std::vector<std::string>> CheckPipeline(
    const RenderInput& input, const std::map<std::string, std::string>& files);

}  // namespace bucketmap::bucketctl

#endif  // BUCKETMAP_TOOLS_BUCKETCTL_PIPELINE_H_
