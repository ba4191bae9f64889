#include "tools/bucketctl/pipeline.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "domain/status_macros.h"
#include "tools/bucketctl/render_clickhouse.h"
#include "tools/bucketctl/render_helm.h"

namespace bucketmap::bucketctl {
namespace {

bool IsTopicChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
}

// Whether `token` occurs in `text` as a whole topic-like word (not inside
// a longer topic name or group id).
bool MentionsToken(absl::string_view text, absl::string_view token) {
  for (size_t at = text.find(token); at != absl::string_view::npos; at = text.find(token, at + 1)) {
    const bool starts = at == 0 || !IsTopicChar(text[at - 1]);
    const size_t end = at + token.size();
    const bool ends = end == text.size() || !IsTopicChar(text[end]);
    if (starts && ends) return true;
  }
  return false;
}

std::string Names(const std::set<int32_t>& ids, const std::map<int32_t, const v1::Bucket*>& by_id) {
  std::vector<std::string> names;
  for (int32_t id : ids) names.push_back(BucketText(*by_id.at(id)));
  return absl::StrJoin(names, " and ");
}

// A protobuf map in key order: protobuf randomises its iteration order, and
// the check's output must not vary between runs.
std::map<std::string, std::string> Sorted(
    const google::protobuf::Map<std::string, std::string>& m) {
  return std::map<std::string, std::string>(m.begin(), m.end());
}

// Who uses each topic and group, and each (topic, group) pair.
struct Usage {
  std::map<int32_t, const v1::Bucket*> by_id;
  std::map<std::string, std::set<int32_t>> topic_buckets;
  std::map<std::string, std::set<int32_t>> group_buckets;
  std::map<std::pair<std::string, std::string>, std::vector<std::string>> pair_users;
};

Usage UsageOf(const std::vector<v1::Bucket>& buckets) {
  Usage u;
  for (const v1::Bucket& b : buckets) {
    u.by_id[b.id()] = &b;
    for (const auto& [role, topic] : Sorted(b.topics())) {
      u.topic_buckets[topic].insert(b.id());
      auto group = b.consumer_groups().find(role);
      if (group == b.consumer_groups().end()) continue;
      u.group_buckets[group->second].insert(b.id());
      u.pair_users[{topic, group->second}].push_back(absl::StrCat(BucketText(b), " role ", role));
    }
  }
  return u;
}

// No topic, group, or (topic, group) pair shared.
void SharingProblems(const Usage& u, std::vector<std::string>* problems) {
  for (const auto& [topic, ids] : u.topic_buckets) {
    if (ids.size() > 1) {
      problems->push_back(absl::StrCat("topic ", topic, " is used by ", Names(ids, u.by_id),
                                       ": their consumers would read each other's events"));
    }
  }
  for (const auto& [pair, users] : u.pair_users) {
    if (users.size() > 1) {
      problems->push_back(absl::StrCat("topic ", pair.first, " with group ", pair.second,
                                       " is consumed by ", absl::StrJoin(users, " and "),
                                       ": they split its partitions, and one role's commits "
                                       "satisfy the other's drain"));
    }
  }
  for (const auto& [group, ids] : u.group_buckets) {
    if (ids.size() > 1) {
      problems->push_back(absl::StrCat("group ", group, " is used by ", Names(ids, u.by_id),
                                       ": each bucket needs groups of its own"));
    }
  }
}

// Every bucket in service has a topic and a group for each role of
// --roles (default: every role an ACTIVE bucket has), and a group for each
// topic it has.
void RoleProblems(const RenderInput& input, std::vector<std::string>* problems) {
  std::vector<std::string> roles = ParseList(input.args->Get("roles"));
  if (roles.empty()) {
    std::set<std::string> seen;
    for (const v1::Bucket& b : input.buckets) {
      if (b.state() != v1::ACTIVE) continue;
      for (const auto& [role, topic] : b.topics()) seen.insert(role);
    }
    roles.assign(seen.begin(), seen.end());
  }
  for (const v1::Bucket& b : input.buckets) {
    if (b.state() == v1::RETIRED) continue;
    std::set<std::string> wanted(roles.begin(), roles.end());
    for (const auto& [role, topic] : b.topics()) wanted.insert(role);
    for (const std::string& role : wanted) {
      if (!b.topics().count(role)) {
        problems->push_back(absl::StrCat(BucketText(b), " (", v1::BucketState_Name(b.state()),
                                         ") has no topic for role ", role));
      } else if (!b.consumer_groups().count(role)) {
        problems->push_back(absl::StrCat(BucketText(b), " (", v1::BucketState_Name(b.state()),
                                         ") has no consumer group for role ", role));
      }
    }
  }
}

// The live ClickHouse: no Kafka table with more consumers than partitions,
// no topic read twice, no managed table of a RETIRED bucket.
absl::Status LiveClickHouseProblems(const RenderInput& input, const Usage& u,
                                    const std::map<std::string, int32_t>& partitions,
                                    std::vector<std::string>* problems) {
  ASSIGN_OR_RETURN(ClickHouseTemplate tmpl, TemplateFor(input));
  ASSIGN_OR_RETURN(std::vector<LiveTable> live, ReadLiveTables(input.sources, tmpl.database));
  std::map<std::string, std::vector<std::string>> readers;  // topic -> Kafka tables
  for (const LiveTable& table : live) {
    if (std::optional<int32_t> id = ManagedBucketId(tmpl, table.name)) {
      auto bucket = u.by_id.find(*id);
      if (bucket != u.by_id.end() && bucket->second->state() == v1::RETIRED) {
        problems->push_back(absl::StrCat("ClickHouse still has ", tmpl.database, ".", table.name,
                                         " of ", BucketText(*bucket->second),
                                         ", which is RETIRED (see render clickhouse --diff)"));
      }
    }
    if (table.engine != "Kafka") continue;
    const std::map<std::string, std::string> settings = ParseKafkaSettings(table.engine_full);
    auto topic = settings.find("kafka_topic_list");
    if (topic == settings.end()) continue;
    readers[topic->second].push_back(table.name);
    auto consumers = settings.find("kafka_num_consumers");
    auto count = partitions.find(topic->second);
    int64_t n = 1;
    if (consumers != settings.end() && absl::SimpleAtoi(consumers->second, &n) &&
        count != partitions.end() && n > count->second) {
      problems->push_back(absl::StrCat("ClickHouse table ", tmpl.database, ".", table.name,
                                       " runs ", n, " consumers on topic ", topic->second,
                                       ", which has ", count->second, " partitions"));
    }
  }
  for (const auto& [topic, tables] : readers) {
    if (tables.size() > 1) {
      problems->push_back(absl::StrCat("topic ", topic, " is read by ClickHouse tables ",
                                       absl::StrJoin(tables, " and "), " of ", tmpl.database));
    }
  }
  return absl::OkStatus();
}

// No RETIRED bucket's topic or group in the artifacts given.
// And no deployment in them with more replicas than its topic has
// partitions.
void FileProblems(const std::vector<v1::Bucket>& buckets, const Usage& u,
                  const std::map<std::string, int32_t>& partitions,
                  const std::map<std::string, std::string>& files,
                  std::vector<std::string>* problems) {
  for (const auto& [path, text] : files) {
    for (const RenderedDeployment& d : ParseHelmValues(text)) {
      auto count = partitions.find(d.topic);
      if (count != partitions.end() && d.replicas > count->second) {
        problems->push_back(absl::StrCat(path, ": deployment ", d.name, " runs up to ", d.replicas,
                                         " replicas on topic ", d.topic, ", which has ",
                                         count->second, " partitions"));
      }
    }
    for (const v1::Bucket& b : buckets) {
      if (b.state() != v1::RETIRED) continue;
      std::set<std::string> names;
      for (const auto& [role, topic] : b.topics()) names.insert(topic);
      for (const auto& [role, group] : b.consumer_groups()) names.insert(group);
      for (const std::string& name : names) {
        // A name shared with another bucket is reported as shared.
        auto topic = u.topic_buckets.find(name);
        auto group = u.group_buckets.find(name);
        if ((topic != u.topic_buckets.end() && topic->second.size() > 1) ||
            (group != u.group_buckets.end() && group->second.size() > 1)) {
          continue;
        }
        if (MentionsToken(text, name)) {
          problems->push_back(absl::StrCat(path, " still names ", name, " of ", BucketText(b),
                                           ", which is RETIRED: render it again"));
        }
      }
    }
  }
}

}  // namespace

const std::vector<RenderKind>& RenderKinds() {
  // One line per kind; each kind lives in its own render_<kind>.cc.
  static const auto* kinds = new std::vector<RenderKind>{
      ClickHouseRenderKind(),
      HelmValuesRenderKind(),
  };
  return *kinds;
}

const RenderKind* FindRenderKind(absl::string_view name) {
  for (const RenderKind& kind : RenderKinds()) {
    if (kind.name == name) return &kind;
  }
  return nullptr;
}

std::vector<FlagSpec> RenderFlags() {
  std::vector<FlagSpec> flags = {{"kafka-brokers", FlagKind::kValue}};
  std::set<std::string> seen = {"kafka-brokers"};
  for (const RenderKind& kind : RenderKinds()) {
    for (const FlagSpec& flag : kind.flags) {
      if (seen.insert(flag.name).second) flags.push_back(flag);
    }
  }
  return flags;
}

absl::Status CheckKindFlags(const RenderKind& kind, const ParsedArgs& args,
                            const std::vector<FlagSpec>& global) {
  for (const FlagSpec& flag : RenderFlags()) {
    if (!args.Has(flag.name) || flag.name == "kafka-brokers") continue;
    bool own = false;
    for (const FlagSpec& f : kind.flags) own = own || f.name == flag.name;
    for (const FlagSpec& f : global) own = own || f.name == flag.name;
    if (!own) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag.name, " is not a flag of render ", kind.name));
    }
  }
  return absl::OkStatus();
}

std::vector<const v1::Bucket*> BucketsWithRole(const RenderInput& input, const std::string& role) {
  std::vector<const v1::Bucket*> out;
  for (const v1::Bucket& bucket : input.buckets) {
    if (bucket.state() != v1::RETIRED && bucket.topics().count(role)) out.push_back(&bucket);
  }
  return out;
}

absl::StatusOr<int32_t> PartitionsOf(const std::map<std::string, int32_t>& partitions,
                                     const v1::Bucket& bucket, const std::string& role) {
  const std::string& topic = bucket.topics().at(role);
  auto it = partitions.find(topic);
  if (it == partitions.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "topic ", topic, " (", BucketText(bucket), ", role ", role, ") does not exist in Kafka"));
  }
  return it->second;
}

absl::StatusOr<int32_t> ConsumersFor(
    const std::optional<std::map<std::string, int32_t>>& partitions, const v1::Bucket& bucket,
    const std::string& role, int64_t wanted, absl::string_view flag) {
  if (!partitions) {
    if (wanted > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " ", wanted,
                       " needs --kafka_brokers: consumers are capped at the topic's partition "
                       "count, read from Kafka"));
    }
    return 1;
  }
  ASSIGN_OR_RETURN(int32_t count, PartitionsOf(*partitions, bucket, role));
  return static_cast<int32_t>(std::min<int64_t>(wanted, count));
}

absl::StatusOr<std::optional<std::map<std::string, int32_t>>> OptionalPartitionCounts(
    PipelineSources* sources) {
  absl::StatusOr<std::map<std::string, int32_t>> counts = sources->PartitionCounts();
  if (counts.ok()) return std::optional<std::map<std::string, int32_t>>(*std::move(counts));
  if (counts.status().code() == absl::StatusCode::kFailedPrecondition) {
    return std::optional<std::map<std::string, int32_t>>();
  }
  return counts.status();
}

std::string BucketText(const v1::Bucket& bucket) {
  return absl::StrCat("bucket ", bucket.id(), " (", bucket.name(), ")");
}

absl::StatusOr<int64_t> IntFlagOr(const ParsedArgs& args, absl::string_view name, int64_t def,
                                  int64_t min, int64_t max) {
  if (!args.Has(name)) return def;
  return ParseInteger(args.Get(name), absl::StrCat("--", name), min, max);
}

absl::StatusOr<std::vector<std::string>> CheckPipeline(
    const RenderInput& input, const std::map<std::string, std::string>& files) {
  std::vector<std::string> problems;
  const Usage usage = UsageOf(input.buckets);
  SharingProblems(usage, &problems);
  RoleProblems(input, &problems);
  ASSIGN_OR_RETURN(auto partitions, input.sources->PartitionCounts());
  for (const v1::Bucket& b : input.buckets) {
    if (b.state() == v1::RETIRED) continue;
    for (const auto& [role, topic] : Sorted(b.topics())) {
      if (absl::StatusOr<int32_t> n = PartitionsOf(partitions, b, role); !n.ok()) {
        problems.push_back(std::string(n.status().message()));
      }
    }
  }
  if (input.args->Has("clickhouse-url")) {
    RETURN_IF_ERROR(LiveClickHouseProblems(input, usage, partitions, &problems));
  }
  FileProblems(input.buckets, usage, partitions, files, &problems);
  return problems;
}

}  // namespace bucketmap::bucketctl
