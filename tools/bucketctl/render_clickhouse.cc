#include "tools/bucketctl/render_clickhouse.h"

#include <algorithm>
#include <set>

#include "absl/algorithm/container.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "domain/status_macros.h"

namespace bucketmap::bucketctl {
namespace {

constexpr char kDefaultRole[] = "clickhouse";
constexpr char kTopicColumn[] = "_topic";
constexpr int64_t kMaxConsumers = 64;
constexpr int64_t kMaxBlockSize = 1 << 24;

bool IsIdentifier(absl::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  if (!absl::ascii_isalpha(static_cast<unsigned char>(s[0])) && s[0] != '_') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

// A ClickHouse string literal: quotes, with backslash and quote escaped.
std::string Quote(absl::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\\' || c == '\'') out += '\\';
    out += c;
  }
  out += '\'';
  return out;
}

// Whitespace runs to one space, trimmed: ClickHouse re-spaces what it
// stores.
std::string Collapse(absl::string_view s) {
  std::string out;
  for (absl::string_view word : absl::StrSplit(s, absl::ByAnyChar(" \t\n\r"), absl::SkipEmpty())) {
    if (!out.empty()) out += ' ';
    absl::StrAppend(&out, word);
  }
  return out;
}

std::string NoSpace(absl::string_view s) {
  std::string out;
  for (char c : s) {
    if (!absl::ascii_isspace(static_cast<unsigned char>(c))) out += c;
  }
  return out;
}

std::string KafkaTableName(const ClickHouseTemplate& t, int32_t bucket) {
  return absl::StrCat("kafka_", t.table, "_b", bucket);
}
std::string ViewName(const ClickHouseTemplate& t, int32_t bucket) {
  return absl::StrCat(t.table, "_b", bucket, "_mv");
}
std::string Qualified(const ClickHouseTemplate& t, absl::string_view name) {
  return absl::StrCat(t.database, ".", name);
}

std::string ColumnList(const std::vector<std::pair<std::string, std::string>>& columns) {
  std::vector<std::string> lines;
  for (const auto& [name, type] : columns) lines.push_back(absl::StrCat("    ", name, " ", type));
  return absl::StrCat("(\n", absl::StrJoin(lines, ",\n"), "\n)");
}

std::vector<std::pair<std::string, std::string>> EventsColumns(const ClickHouseTemplate& t) {
  auto columns = t.columns;
  columns.emplace_back(kTopicColumn, "String");
  return columns;
}

ClickHouseObject EventsTable(const ClickHouseTemplate& t) {
  ClickHouseObject o;
  o.kind = ClickHouseObject::Kind::kEventsTable;
  o.name = t.table;
  o.columns = EventsColumns(t);
  o.create = absl::StrCat("CREATE TABLE IF NOT EXISTS ", Qualified(t, t.table), "\n",
                          ColumnList(o.columns), "\nENGINE = ", t.engine);
  if (!t.partition_by.empty()) absl::StrAppend(&o.create, "\nPARTITION BY ", t.partition_by);
  absl::StrAppend(&o.create, "\nORDER BY ", t.order_by);
  return o;
}

ClickHouseObject KafkaTable(const ClickHouseTemplate& t, int32_t bucket, const std::string& brokers,
                            const std::string& topic, const std::string& group, int32_t consumers,
                            int64_t max_block_size) {
  ClickHouseObject o;
  o.kind = ClickHouseObject::Kind::kKafkaTable;
  o.name = KafkaTableName(t, bucket);
  o.bucket_id = bucket;
  o.columns = t.columns;
  // In the order ClickHouse 18.16 prints them in engine_full.
  const std::vector<std::pair<std::string, std::string>> settings = {
      {"kafka_broker_list", brokers},
      {"kafka_topic_list", topic},
      {"kafka_group_name", group},
      {"kafka_format", t.format},
  };
  std::vector<std::string> text;
  for (const auto& [name, value] : settings) {
    o.settings[name] = value;
    text.push_back(absl::StrCat(name, " = ", Quote(value)));
  }
  o.settings["kafka_num_consumers"] = absl::StrCat(consumers);
  text.push_back(absl::StrCat("kafka_num_consumers = ", consumers));
  if (max_block_size > 0) {
    o.settings["kafka_max_block_size"] = absl::StrCat(max_block_size);
    text.push_back(absl::StrCat("kafka_max_block_size = ", max_block_size));
  }
  o.create =
      absl::StrCat("CREATE TABLE IF NOT EXISTS ", Qualified(t, o.name), "\n", ColumnList(o.columns),
                   "\nENGINE = Kafka\nSETTINGS ", absl::StrJoin(text, ", "));
  return o;
}

ClickHouseObject View(const ClickHouseTemplate& t, int32_t bucket, const std::string& topic) {
  ClickHouseObject o;
  o.kind = ClickHouseObject::Kind::kView;
  o.name = ViewName(t, bucket);
  o.bucket_id = bucket;
  std::vector<std::string> names;
  for (const auto& column : t.columns) names.push_back(column.first);
  // The view stamps the topic: 18.16's Kafka engine has no _topic virtual
  // column, and each Kafka table reads exactly one topic.
  const std::string select =
      absl::StrCat("SELECT ", absl::StrJoin(names, ", "), ", ", Quote(topic), " AS ", kTopicColumn,
                   " FROM ", Qualified(t, KafkaTableName(t, bucket)));
  o.query = absl::StrCat("TO ", Qualified(t, t.table), " AS ", select);
  o.create = absl::StrCat("CREATE MATERIALIZED VIEW IF NOT EXISTS ", Qualified(t, o.name), " TO ",
                          Qualified(t, t.table), "\nAS ", select);
  return o;
}

// TabSeparated unescaping (\t, \n, \\, \', \0, ...).
std::string Unescape(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    const char c = s[++i];
    switch (c) {
      case 't':
        out += '\t';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case '0':
        out += '\0';
        break;
      default:
        out += c;
        break;
    }
  }
  return out;
}

absl::StatusOr<std::vector<std::vector<std::string>>> ParseTsv(absl::string_view tsv, size_t fields,
                                                               absl::string_view what) {
  std::vector<std::vector<std::string>> rows;
  for (absl::string_view line : absl::StrSplit(tsv, '\n', absl::SkipEmpty())) {
    std::vector<std::string> row;
    for (absl::string_view field : absl::StrSplit(line, '\t')) row.push_back(Unescape(field));
    if (row.size() != fields) {
      return absl::InternalError(absl::StrCat("ClickHouse's answer about ", what, ": expected ",
                                              fields, " fields, got '", line.substr(0, 200), "'"));
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

// "TO <target> AS SELECT ..." of a view's create_table_query.
std::string LiveViewQuery(absl::string_view create) {
  const size_t to = create.find(" TO ");
  const size_t as = create.find(" AS SELECT ");
  if (to == absl::string_view::npos || as == absl::string_view::npos || as < to) {
    return Collapse(create);
  }
  absl::string_view target = create.substr(to + 4);
  target = target.substr(0, target.find_first_of(" \t\n("));
  return Collapse(absl::StrCat("TO ", target, create.substr(as)));
}

bool SameColumns(const std::vector<std::pair<std::string, std::string>>& a,
                 const std::vector<std::pair<std::string, std::string>>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].first != b[i].first || NoSpace(a[i].second) != NoSpace(b[i].second)) return false;
  }
  return true;
}

// What differs between a desired object and its live table; empty when
// nothing does.
std::vector<std::string> Differences(const ClickHouseObject& want, const LiveTable& live) {
  std::vector<std::string> out;
  if (want.kind == ClickHouseObject::Kind::kView) {
    if (live.engine != "MaterializedView") {
      out.push_back(absl::StrCat("engine ", live.engine, ", not MaterializedView"));
    } else if (Collapse(want.query) != LiveViewQuery(live.create_query)) {
      out.push_back(absl::StrCat("query '", LiveViewQuery(live.create_query), "', not '",
                                 Collapse(want.query), "'"));
    }
    return out;
  }
  if (live.engine != "Kafka") {
    out.push_back(absl::StrCat("engine ", live.engine, ", not Kafka"));
    return out;
  }
  const std::map<std::string, std::string> settings = ParseKafkaSettings(live.engine_full);
  for (const auto& [name, value] : want.settings) {
    auto it = settings.find(name);
    const std::string have = it == settings.end() ? "(unset)" : it->second;
    if (have != value) out.push_back(absl::StrCat(name, " ", have, " -> ", value));
  }
  if (!SameColumns(want.columns, live.columns)) out.push_back("columns differ from the template");
  return out;
}

// Why a managed table of bucket `id` is not rendered.
std::string DropReason(const RenderInput& input, int32_t id, const std::string& role) {
  for (const v1::Bucket& b : input.buckets) {
    if (b.id() != id) continue;
    if (b.state() == v1::RETIRED) return absl::StrCat(BucketText(b), " is RETIRED");
    return absl::StrCat(BucketText(b), " has no ", role, " topic");
  }
  return absl::StrCat("no bucket ", id, " in the mapping");
}

std::string RoleOf(const RenderInput& input) {
  return input.args->Get("clickhouse-role", kDefaultRole);
}

absl::StatusOr<std::string> RenderClickHouse(const RenderInput& input) {
  if (input.args->GetBool("diff") && !input.args->Has("clickhouse-url")) {
    return absl::InvalidArgumentError("--diff needs --clickhouse_url (e.g. http://localhost:8123)");
  }
  ASSIGN_OR_RETURN(ClickHouseDdl ddl, RenderClickHouseDdl(input));
  if (!input.args->GetBool("diff")) return ClickHouseDdlText(ddl);
  ASSIGN_OR_RETURN(std::vector<LiveTable> live, ReadLiveTables(input.sources, ddl.tmpl.database));
  return DiffClickHouse(ddl, live, input);
}

}  // namespace

absl::StatusOr<ClickHouseTemplate> ParseClickHouseTemplate(absl::string_view text,
                                                           absl::string_view file_name) {
  ClickHouseTemplate t;
  std::set<std::string> names;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    if (size_t hash = line.find('#'); hash != absl::string_view::npos) line = line.substr(0, hash);
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    auto error = [&](absl::string_view message) {
      return absl::InvalidArgumentError(absl::StrCat(file_name, ":", line_number, ": ", message));
    };
    const size_t space = line.find_first_of(" \t");
    const absl::string_view directive = line.substr(0, space);
    const absl::string_view value =
        space == absl::string_view::npos ? "" : absl::StripAsciiWhitespace(line.substr(space));
    if (value.empty()) return error(absl::StrCat("'", directive, "' needs a value"));
    if (absl::StrContains(value, ';')) return error("';' is not allowed in a template");
    auto identifier = [&](std::string* field) -> absl::Status {
      if (!IsIdentifier(value)) {
        return error(absl::StrCat(
            directive, ": expected an identifier ([A-Za-z_][A-Za-z0-9_]*), got '", value, "'"));
      }
      *field = std::string(value);
      return absl::OkStatus();
    };
    if (directive == "database") {
      RETURN_IF_ERROR(identifier(&t.database));
    } else if (directive == "table") {
      RETURN_IF_ERROR(identifier(&t.table));
    } else if (directive == "format") {
      RETURN_IF_ERROR(identifier(&t.format));
    } else if (directive == "max_block_size") {
      if (!absl::SimpleAtoi(value, &t.max_block_size) || t.max_block_size < 1 ||
          t.max_block_size > kMaxBlockSize) {
        return error(
            absl::StrCat("max_block_size: expected 1..", kMaxBlockSize, ", got '", value, "'"));
      }
    } else if (directive == "engine") {
      t.engine = std::string(value);
    } else if (directive == "partition_by") {
      t.partition_by = std::string(value);
    } else if (directive == "order_by") {
      t.order_by = std::string(value);
    } else if (directive == "column") {
      const size_t gap = value.find_first_of(" \t");
      const absl::string_view name = value.substr(0, gap);
      const absl::string_view type =
          gap == absl::string_view::npos ? "" : absl::StripAsciiWhitespace(value.substr(gap));
      if (!IsIdentifier(name)) {
        return error(
            absl::StrCat("column: expected a name ([A-Za-z_][A-Za-z0-9_]*), got '", name, "'"));
      }
      if (type.empty()) return error(absl::StrCat("column ", name, ": needs a type"));
      if (name == kTopicColumn) {
        return error("column _topic is bucketctl's own (the topic an event was read from)");
      }
      if (!names.insert(std::string(name)).second) {
        return error(absl::StrCat("column ", name, " given twice"));
      }
      t.columns.emplace_back(std::string(name), std::string(type));
    } else {
      return error(absl::StrCat("unknown directive '", directive,
                                "' (database, table, format, max_block_size, engine, "
                                "partition_by, order_by, column)"));
    }
  }
  if (t.columns.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(file_name, ": no column"));
  }
  if (t.order_by.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(file_name, ": no order_by"));
  }
  return t;
}

absl::StatusOr<ClickHouseTemplate> TemplateFor(const RenderInput& input) {
  if (!input.args->Has("template")) {
    return ParseClickHouseTemplate(DefaultClickHouseTemplate(), "(built-in template)");
  }
  const std::string path = input.args->Get("template");
  absl::StatusOr<std::string> text = input.sources->ReadFile(path, "--template");
  if (!text.ok()) return text.status();
  return ParseClickHouseTemplate(*text, path);
}

absl::StatusOr<ClickHouseDdl> RenderClickHouseDdl(const RenderInput& input) {
  const ParsedArgs& args = *input.args;
  ClickHouseDdl ddl;
  ASSIGN_OR_RETURN(ddl.tmpl, TemplateFor(input));
  const std::string role = RoleOf(input);
  ASSIGN_OR_RETURN(int64_t wanted, IntFlagOr(args, "consumers", 1, 1, kMaxConsumers));
  ASSIGN_OR_RETURN(int64_t max_block_size,
                   IntFlagOr(args, "max-block-size", ddl.tmpl.max_block_size, 1, kMaxBlockSize));
  const std::string brokers = args.Get("clickhouse-kafka-brokers", args.Get("kafka-brokers"));
  if (brokers.empty()) {
    return absl::InvalidArgumentError(
        "the Kafka tables need a broker list: give --kafka_brokers (or "
        "--clickhouse_kafka_brokers when ClickHouse reaches Kafka at another address)");
  }
  ASSIGN_OR_RETURN(auto partitions, OptionalPartitionCounts(input.sources));
  ddl.objects.push_back(EventsTable(ddl.tmpl));
  for (const v1::Bucket* bucket : BucketsWithRole(input, role)) {
    const std::string& topic = bucket->topics().at(role);
    auto group = bucket->consumer_groups().find(role);
    if (group == bucket->consumer_groups().end()) {
      return absl::FailedPreconditionError(
          absl::StrCat(BucketText(*bucket), " has a ", role, " topic (", topic,
                       ") but no consumer group for it: set one with `bucketctl update-bucket ",
                       bucket->id(), " --consumer-group ", role, "=GROUP ...`"));
    }
    ASSIGN_OR_RETURN(int32_t consumers,
                     ConsumersFor(partitions, *bucket, role, wanted, "--consumers"));
    std::string note =
        absl::StrCat("-- ", BucketText(*bucket), ": topic ", topic, ", group ", group->second);
    if (partitions) absl::StrAppend(&note, ", ", partitions->at(topic), " partitions");
    absl::StrAppend(&note, ", ", consumers, consumers == 1 ? " consumer" : " consumers");
    ddl.notes.push_back(std::move(note));
    ddl.objects.push_back(KafkaTable(ddl.tmpl, bucket->id(), brokers, topic, group->second,
                                     consumers, max_block_size));
    ddl.objects.push_back(View(ddl.tmpl, bucket->id(), topic));
  }
  return ddl;
}

std::string ClickHouseDdlText(const ClickHouseDdl& ddl) {
  std::string out = absl::StrCat(
      "-- bucketctl render clickhouse: ", ddl.tmpl.database, ".", ddl.tmpl.table,
      " and, per bucket, a Kafka engine table and a\n"
      "-- materialized view into it. Idempotent: apply with clickhouse-client --multiquery.\n",
      "CREATE DATABASE IF NOT EXISTS ", ddl.tmpl.database, ";\n");
  size_t note = 0;
  for (const ClickHouseObject& o : ddl.objects) {
    absl::StrAppend(&out, "\n");
    if (o.kind == ClickHouseObject::Kind::kKafkaTable && note < ddl.notes.size()) {
      absl::StrAppend(&out, ddl.notes[note++], "\n");
    }
    absl::StrAppend(&out, o.create, ";\n");
  }
  return out;
}

std::string LiveTablesQuery(const std::string& database) {
  return absl::StrCat(
      "SELECT name, engine, engine_full, create_table_query FROM system.tables WHERE database = ",
      Quote(database), " ORDER BY name FORMAT TabSeparated");
}

std::string LiveColumnsQuery(const std::string& database) {
  // system.columns lists a table's columns in their order.
  return absl::StrCat("SELECT table, name, type FROM system.columns WHERE database = ",
                      Quote(database), " FORMAT TabSeparated");
}

absl::StatusOr<std::vector<LiveTable>> ParseLiveTables(absl::string_view tables_tsv,
                                                       absl::string_view columns_tsv) {
  ASSIGN_OR_RETURN(auto table_rows, ParseTsv(tables_tsv, 4, "system.tables"));
  ASSIGN_OR_RETURN(auto column_rows, ParseTsv(columns_tsv, 3, "system.columns"));
  std::vector<LiveTable> tables;
  std::map<std::string, size_t> index;
  for (auto& row : table_rows) {
    index[row[0]] = tables.size();
    tables.push_back(LiveTable{row[0], row[1], row[2], row[3], {}});
  }
  for (auto& row : column_rows) {
    auto it = index.find(row[0]);
    if (it != index.end()) tables[it->second].columns.emplace_back(row[1], row[2]);
  }
  return tables;
}

absl::StatusOr<std::vector<LiveTable>> ReadLiveTables(PipelineSources* sources,
                                                      const std::string& database) {
  ASSIGN_OR_RETURN(std::string tables, sources->QueryClickHouse(LiveTablesQuery(database)));
  ASSIGN_OR_RETURN(std::string columns, sources->QueryClickHouse(LiveColumnsQuery(database)));
  return ParseLiveTables(tables, columns);
}

std::map<std::string, std::string> ParseKafkaSettings(absl::string_view engine_full) {
  std::map<std::string, std::string> out;
  const size_t at = engine_full.find("SETTINGS ");
  if (at == absl::string_view::npos) return out;
  absl::string_view s = engine_full.substr(at + 9);
  while (!s.empty()) {
    s = absl::StripLeadingAsciiWhitespace(s);
    const size_t eq = s.find('=');
    if (eq == absl::string_view::npos) break;
    const std::string name(absl::StripAsciiWhitespace(s.substr(0, eq)));
    s = absl::StripLeadingAsciiWhitespace(s.substr(eq + 1));
    std::string value;
    if (!s.empty() && s[0] == '\'') {
      size_t i = 1;
      for (; i < s.size() && s[i] != '\''; ++i) {
        if (s[i] == '\\' && i + 1 < s.size()) ++i;
        value += s[i];
      }
      s = s.substr(std::min(i + 1, s.size()));
    } else {
      const size_t end = s.find(',');
      value = std::string(absl::StripAsciiWhitespace(s.substr(0, end)));
      s = end == absl::string_view::npos ? "" : s.substr(end);
    }
    out[name] = value;
    s = absl::StripLeadingAsciiWhitespace(s);
    if (!absl::ConsumePrefix(&s, ",")) break;
  }
  return out;
}

std::optional<int32_t> ManagedBucketId(const ClickHouseTemplate& tmpl, absl::string_view name) {
  absl::string_view digits;
  const std::string kafka_prefix = absl::StrCat("kafka_", tmpl.table, "_b");
  const std::string view_prefix = absl::StrCat(tmpl.table, "_b");
  if (absl::StartsWith(name, kafka_prefix)) {
    digits = name.substr(kafka_prefix.size());
  } else if (absl::StartsWith(name, view_prefix) && absl::EndsWith(name, "_mv")) {
    digits = name.substr(view_prefix.size(), name.size() - view_prefix.size() - 3);
  } else {
    return std::nullopt;
  }
  int32_t id = 0;
  if (digits.empty() || digits[0] == '0' || !absl::c_all_of(digits, absl::ascii_isdigit) ||
      !absl::SimpleAtoi(digits, &id)) {
    return std::nullopt;
  }
  return id;
}

std::string DiffClickHouse(const ClickHouseDdl& desired, const std::vector<LiveTable>& live,
                           const RenderInput& input) {
  const ClickHouseTemplate& t = desired.tmpl;
  std::map<std::string, const LiveTable*> by_name;
  for (const LiveTable& table : live) by_name[table.name] = &table;
  std::string out;
  auto step = [&](const std::string& comment, const std::string& sql) {
    absl::StrAppend(&out, "-- ", comment, "\n", sql, ";\n");
  };
  auto drop = [&](const std::string& name) {
    return absl::StrCat("DROP TABLE IF EXISTS ", Qualified(t, name));
  };

  // The events table: created when missing, never dropped; only missing
  // columns are added.
  const ClickHouseObject& events = desired.objects.front();
  if (auto it = by_name.find(events.name); it == by_name.end()) {
    step(absl::StrCat("add: ", events.name, " (the events table)"), events.create);
  } else {
    std::map<std::string, std::string> have(it->second->columns.begin(), it->second->columns.end());
    std::set<std::string> wanted;
    for (const auto& [name, type] : events.columns) {
      wanted.insert(name);
      auto col = have.find(name);
      if (col == have.end()) {
        step(absl::StrCat("add: column ", name, " of ", events.name),
             absl::StrCat("ALTER TABLE ", Qualified(t, events.name), " ADD COLUMN ", name, " ",
                          type));
      } else if (NoSpace(col->second) != NoSpace(type)) {
        absl::StrAppend(&out, "-- differs (not changed by bucketctl): ", events.name, ".", name,
                        " is ", col->second, ", the template says ", type, "\n");
      }
    }
    for (const auto& [name, type] : it->second->columns) {
      if (!wanted.count(name)) {
        absl::StrAppend(&out, "-- differs (not changed by bucketctl): ", events.name, ".", name,
                        " is not in the template\n");
      }
    }
  }

  // Per bucket: the desired pair, and managed tables of buckets not
  // rendered.
  std::map<int32_t, std::vector<const ClickHouseObject*>> wanted_by_bucket;
  for (const ClickHouseObject& o : desired.objects) {
    if (o.bucket_id != 0) wanted_by_bucket[o.bucket_id].push_back(&o);
  }
  std::map<int32_t, std::vector<const LiveTable*>> stale;
  for (const LiveTable& table : live) {
    std::optional<int32_t> id = ManagedBucketId(t, table.name);
    if (id && !wanted_by_bucket.count(*id)) stale[*id].push_back(&table);
  }
  const std::string role = RoleOf(input);
  for (const auto& [id, tables] : stale) {
    const std::string reason = DropReason(input, id, role);
    // The view first: it reads the Kafka table.
    for (const std::string& name : {ViewName(t, id), KafkaTableName(t, id)}) {
      for (const LiveTable* table : tables) {
        if (table->name == name) step(absl::StrCat("drop: ", name, " (", reason, ")"), drop(name));
      }
    }
  }
  for (const auto& [id, objects] : wanted_by_bucket) {
    const ClickHouseObject* kafka = objects[0];
    const ClickHouseObject* view = objects[1];
    auto live_kafka = by_name.find(kafka->name);
    auto live_view = by_name.find(view->name);
    std::vector<std::string> kafka_diff;
    if (live_kafka != by_name.end()) kafka_diff = Differences(*kafka, *live_kafka->second);
    std::vector<std::string> view_diff;
    if (live_view != by_name.end()) view_diff = Differences(*view, *live_view->second);
    const bool recreate_kafka = !kafka_diff.empty();
    const bool recreate_view = recreate_kafka || !view_diff.empty();
    if (recreate_view && live_view != by_name.end()) {
      step(absl::StrCat(
               "recreate: ", view->name, " (",
               view_diff.empty() ? "its Kafka table is recreated" : absl::StrJoin(view_diff, "; "),
               ")"),
           drop(view->name));
    }
    if (recreate_kafka) {
      step(absl::StrCat("recreate: ", kafka->name, " (", absl::StrJoin(kafka_diff, "; "),
                        "); the group's committed offsets keep its place"),
           drop(kafka->name));
    }
    if (live_kafka == by_name.end() || recreate_kafka) {
      step(absl::StrCat(live_kafka == by_name.end() ? "add: " : "recreate: ", kafka->name),
           kafka->create);
    }
    if (live_view == by_name.end() || recreate_view) {
      step(absl::StrCat(live_view == by_name.end() ? "add: " : "recreate: ", view->name),
           view->create);
    }
  }
  return out.empty() ? "-- in sync\n" : out;
}

RenderKind ClickHouseRenderKind() {
  return RenderKind{
      "clickhouse",
      "[--template FILE] [--clickhouse_role R] [--consumers N] [--max_block_size N] "
      "[--kafka_brokers B] "
      "[--clickhouse_kafka_brokers B] [--diff --clickhouse_url URL]",
      "ClickHouse DDL: per bucket a Kafka engine table and a materialized view into the "
      "events table.",
      "Every bucket other than RETIRED with a topic for --clickhouse_role (default\n"
      "clickhouse) gets a Kafka engine table kafka_<table>_b<ID> reading that topic with\n"
      "the role's consumer group, and a view <table>_b<ID>_mv into the events table,\n"
      "which records each event's topic in _topic. The columns come from --template\n"
      "(default: the built-in PostHog-like schema, deploy/clickhouse/posthog_events.template).\n"
      "kafka_num_consumers is --consumers (default 1) capped at the topic's partition\n"
      "count, read from --kafka_brokers; without it only 1 is allowed. kafka_max_block_size\n"
      "is --max_block_size (default: the template's). The tables connect\n"
      "to --clickhouse_kafka_brokers (default --kafka_brokers).\n"
      "--diff compares with the ClickHouse at --clickhouse_url (HTTP interface) and prints\n"
      "the SQL that brings it in line: tables to add, tables to drop (RETIRED buckets),\n"
      "tables to recreate; \"-- in sync\" when nothing differs.\n",
      {{"template", FlagKind::kValue},
       {"clickhouse-role", FlagKind::kValue},
       {"consumers", FlagKind::kValue},
       {"max-block-size", FlagKind::kValue},
       {"clickhouse-kafka-brokers", FlagKind::kValue},
       {"diff", FlagKind::kBool},
       {"clickhouse-url", FlagKind::kValue}},
      RenderClickHouse};
}

}  // namespace bucketmap::bucketctl
