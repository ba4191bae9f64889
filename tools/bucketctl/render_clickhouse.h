// `bucketctl render clickhouse`: per bucket with a ClickHouse role, a
// Kafka engine table reading the role's topic with the role's consumer
// group, and a materialized view from it into one events table, whose
// columns come from a template (deploy/clickhouse/posthog_events.template
// is the default). Written for ClickHouse 18.16 and later: `IF NOT EXISTS`
// everywhere, the Kafka engine's SETTINGS syntax, one topic per table.
//
// `--diff` compares that with the tables of a running ClickHouse
// (system.tables and system.columns) and prints the statements that bring
// it in line: what to create, what to drop (the tables of a bucket that is
// RETIRED, or no longer has the role), and what to recreate.
//
// Pure functions of their inputs (see pipeline.h); thread-compatible.
#ifndef BUCKETMAP_TOOLS_BUCKETCTL_RENDER_CLICKHOUSE_H_
#define BUCKETMAP_TOOLS_BUCKETCTL_RENDER_CLICKHOUSE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "tools/bucketctl/pipeline.h"

namespace bucketmap::bucketctl {

// The column template; see deploy/clickhouse/posthog_events.template for
// the file format.
struct ClickHouseTemplate {
  std::string database = "default";
  std::string table = "events";
  std::string format = "JSONEachRow";
  // kafka_max_block_size; 0: not set (ClickHouse's max_block_size, 65536).
  int64_t max_block_size = 0;
  std::string engine = "MergeTree()";
  std::string partition_by;  // empty: none
  std::string order_by;
  std::vector<std::pair<std::string, std::string>> columns;  // name, type
};

// The built-in template: deploy/clickhouse/posthog_events.template, as
// built into bucketctl.
absl::string_view DefaultClickHouseTemplate();

// ParseClickHouseTemplate()
//
// Parses a template file. InvalidArgument naming `file_name` and the line
// for an unknown directive, a bad identifier (database, table, format and
// column names are [A-Za-z_][A-Za-z0-9_]*), a type or expression holding
// ';', a repeated column, a column named `_topic` (bucketctl's own), no
// column, or no order_by.
absl::StatusOr<ClickHouseTemplate> ParseClickHouseTemplate(absl::string_view text,
                                                           absl::string_view file_name);

// One table or view that render clickhouse manages.
struct ClickHouseObject {
  enum class Kind { kEventsTable, kKafkaTable, kView };
  Kind kind = Kind::kEventsTable;
  std::string name;       // without the database
  int32_t bucket_id = 0;  // 0 for the events table
  std::string create;     // CREATE ... IF NOT EXISTS ..., without ';'
  // What --diff compares with the live table:
  std::vector<std::pair<std::string, std::string>> columns;  // events, Kafka
  std::map<std::string, std::string> settings;               // Kafka: kafka_* = value
  std::string query;                                         // view: "TO <db.table> AS SELECT ..."
};

// What render clickhouse writes.
struct ClickHouseDdl {
  ClickHouseTemplate tmpl;
  // The events table, then per bucket (by id) its Kafka table and view.
  std::vector<ClickHouseObject> objects;
  // One comment line per bucket: id, name, topic, group, partitions,
  // consumers.
  std::vector<std::string> notes;
};

// RenderClickHouseDdl()
//
// The DDL for `input` with the flags of render clickhouse: --template,
// --clickhouse_role (default "clickhouse"), --consumers (default 1),
// --max_block_size (default: the template's),
// --clickhouse_kafka_brokers (default --kafka_brokers; one is required).
// Buckets other than RETIRED that have a topic for the role get tables;
// each needs a consumer group for the role (FailedPrecondition naming the
// bucket otherwise). kafka_num_consumers is --consumers capped at the
// topic's partition count (read from Kafka; see ConsumersFor).
absl::StatusOr<ClickHouseDdl> RenderClickHouseDdl(const RenderInput& input);

// The template of --template (read through the sources), or the built-in
// one. InvalidArgument as ParseClickHouseTemplate; NotFound for a file
// that cannot be read.
absl::StatusOr<ClickHouseTemplate> TemplateFor(const RenderInput& input);

// The SQL text: a header, CREATE DATABASE, and each object's statement,
// each ending with ";". Deterministic: the same buckets and flags give the
// same bytes (the mapping version is not in it, so team moves change
// nothing).
std::string ClickHouseDdlText(const ClickHouseDdl& ddl);

// A table or view of the live ClickHouse, from system.tables and
// system.columns.
struct LiveTable {
  std::string name;
  std::string engine;        // "Kafka", "MaterializedView", "MergeTree", ...
  std::string engine_full;   // e.g. "Kafka SETTINGS kafka_broker_list = '...', ..."
  std::string create_query;  // create_table_query
  std::vector<std::pair<std::string, std::string>> columns;
};

// The queries --diff and check-pipeline send, for `database`.
std::string LiveTablesQuery(const std::string& database);
std::string LiveColumnsQuery(const std::string& database);

// The tables of `database` on the ClickHouse behind `sources`: both
// queries, parsed. The sources' errors pass.
absl::StatusOr<std::vector<LiveTable>> ReadLiveTables(PipelineSources* sources,
                                                      const std::string& database);

// ParseLiveTables()
//
// Parses the TabSeparated answers to LiveTablesQuery and LiveColumnsQuery.
// Internal for a malformed line.
absl::StatusOr<std::vector<LiveTable>> ParseLiveTables(absl::string_view tables_tsv,
                                                       absl::string_view columns_tsv);

// The kafka_* settings of a Kafka engine's `engine_full`, values unquoted.
std::map<std::string, std::string> ParseKafkaSettings(absl::string_view engine_full);

// The bucket id of a Kafka table (kafka_<table>_b<ID>) or view
// (<table>_b<ID>_mv) that render clickhouse manages; nullopt for any other
// name.
std::optional<int32_t> ManagedBucketId(const ClickHouseTemplate& tmpl, absl::string_view name);

// DiffClickHouse()
//
// SQL that brings `live` in line with `desired`, with a comment before
// each step saying why; "-- in sync\n" when nothing differs:
//   - create what is missing;
//   - drop managed tables and views of buckets that are not rendered (the
//     comment names the reason: RETIRED, no longer has the role, unknown),
//     the view before its Kafka table;
//   - recreate a Kafka table or view that differs (columns, settings, the
//     view's query), saying what differs: the group's committed offsets
//     keep its place across the recreation;
//   - add the events table's missing columns; a column the template lacks
//     or a type that differs is only reported in a comment (bucketctl never
//     drops or changes data columns).
std::string DiffClickHouse(const ClickHouseDdl& desired, const std::vector<LiveTable>& live,
                           const RenderInput& input);

// The render kind: its render function prints ClickHouseDdlText, or with
// --diff the DiffClickHouse against --clickhouse_url.
RenderKind ClickHouseRenderKind();

}  // namespace bucketmap::bucketctl

#endif  // BUCKETMAP_TOOLS_BUCKETCTL_RENDER_CLICKHOUSE_H_
