// The PipelineSources of a bucketctl run (pipeline.h): partition counts
// from the Kafka cluster of --kafka_brokers (librdkafka metadata), queries
// to the ClickHouse of --clickhouse_url over its HTTP interface, and local
// files.
//
// Why HTTP for ClickHouse, not clickhouse-client: bucketctl then needs no
// ClickHouse binary where it runs (an init container, a CI job), reads a
// stable machine format (TabSeparated) instead of a human tool's output,
// and speaks the interface ClickHouse keeps for programs, the same in 18.16
// and later. Plain http:// only; a user and password in the URL
// (http://user:password@host:8123) are sent as X-ClickHouse-User and
// X-ClickHouse-Key.
//
// Thread-compatible: bucketctl runs one command, from main().
#ifndef BUCKETMAP_TOOLS_BUCKETCTL_PIPELINE_IO_H_
#define BUCKETMAP_TOOLS_BUCKETCTL_PIPELINE_IO_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tools/bucketctl/pipeline.h"

namespace bucketmap::bucketctl {

class NetworkSources final : public PipelineSources {
 public:
  // Empty `kafka_brokers` or `clickhouse_url`: that source is not given
  // (FailedPrecondition). `timeout` bounds each request.
  NetworkSources(std::string kafka_brokers, std::string clickhouse_url, absl::Duration timeout);

  // Reads the metadata of every topic once, then answers from it.
  absl::StatusOr<std::map<std::string, int32_t>> PartitionCounts() override;
  // One HTTP POST per query. InvalidArgument for a URL that is not
  // http://[user[:password]@]host[:port][/].
  absl::StatusOr<std::string> QueryClickHouse(const std::string& sql) override;
  absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view what) override;

 private:
  const std::string kafka_brokers_;
  const std::string clickhouse_url_;
  const absl::Duration timeout_;
  std::optional<std::map<std::string, int32_t>> partitions_;
};

}  // namespace bucketmap::bucketctl

#endif  // BUCKETMAP_TOOLS_BUCKETCTL_PIPELINE_IO_H_
