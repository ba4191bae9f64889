#include "server/kafka/kafka_offsets.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace bucketmap {
namespace {

int TimeoutMs(absl::Duration d) {
  return static_cast<int>(std::max<int64_t>(1, absl::ToInt64Milliseconds(d)));
}

void QuietLog(const rd_kafka_t*, int level, const char* facility, const char* message) {
  if (level <= 3) spdlog::debug("librdkafka (offsets) {}: {}", facility, message);
}

absl::StatusOr<rd_kafka_t*> NewHandle(
    const std::string& brokers, const std::string& group,
    const std::vector<std::pair<std::string, std::string>>& extra = {}) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char error[512];
  std::vector<std::pair<std::string, std::string>> settings = {
      {"bootstrap.servers", brokers},
      {"client.id", "bucketmap-offsets"},
      // Never create topics by asking about them.
      {"allow.auto.create.topics", "false"},
      {"enable.auto.commit", "false"},
  };
  if (!group.empty()) settings.emplace_back("group.id", group);
  settings.insert(settings.end(), extra.begin(), extra.end());
  for (const auto& [name, value] : settings) {
    if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), error, sizeof(error)) !=
        RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return absl::InvalidArgumentError(absl::StrCat("Kafka property ", name, ": ", error));
    }
  }
  rd_kafka_conf_set_log_cb(conf, QuietLog);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, error, sizeof(error));
  if (rk == nullptr) {
    rd_kafka_conf_destroy(conf);
    return absl::InvalidArgumentError(absl::StrCat("cannot create a Kafka client: ", error));
  }
  return rk;
}

// The group.id of MessageTimestamps' handle (never joined, never committed).
constexpr char kTimestampGroup[] = "bucketmap-lag-timestamps";

absl::Status KafkaError(rd_kafka_resp_err_t err, const std::string& what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", rd_kafka_err2str(err)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<RdKafkaOffsetReader>> RdKafkaOffsetReader::Create(
    const std::string& brokers) {
  std::unique_ptr<RdKafkaOffsetReader> reader(new RdKafkaOffsetReader(brokers));
  absl::MutexLock lock(&reader->mu_);
  absl::StatusOr<rd_kafka_t*> rk = NewHandle(brokers, "");
  if (!rk.ok()) return rk.status();
  reader->meta_ = *rk;
  return reader;
}

RdKafkaOffsetReader::~RdKafkaOffsetReader() {
  absl::MutexLock lock(&mu_);
  for (auto& [group, rk] : groups_) rd_kafka_destroy(rk);
  if (fetch_ != nullptr) {
    rd_kafka_consumer_close(fetch_);
    rd_kafka_destroy(fetch_);
  }
  if (meta_ != nullptr) rd_kafka_destroy(meta_);
}

absl::StatusOr<std::map<std::string, int32_t>> RdKafkaOffsetReader::PartitionCounts(
    absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  const rd_kafka_metadata_t* md = nullptr;
  rd_kafka_resp_err_t err = rd_kafka_metadata(meta_, 1, nullptr, &md, TimeoutMs(timeout));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) return KafkaError(err, "read topic metadata");
  std::map<std::string, int32_t> out;
  for (int i = 0; i < md->topic_cnt; ++i) {
    const rd_kafka_metadata_topic_t& t = md->topics[i];
    if (t.err == RD_KAFKA_RESP_ERR_NO_ERROR) out[t.topic] = t.partition_cnt;
  }
  rd_kafka_metadata_destroy(md);
  return out;
}

absl::StatusOr<std::vector<int64_t>> RdKafkaOffsetReader::EndOffsets(const std::string& topic,
                                                                     int32_t partitions,
                                                                     absl::Duration timeout) {
  absl::StatusOr<std::vector<Watermarks>> marks = PartitionWatermarks(topic, partitions, timeout);
  if (!marks.ok()) return marks.status();
  std::vector<int64_t> out;
  out.reserve(marks->size());
  for (const Watermarks& m : *marks) out.push_back(m.high);
  return out;
}

absl::StatusOr<std::vector<Watermarks>> RdKafkaOffsetReader::PartitionWatermarks(
    const std::string& topic, int32_t partitions, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  const absl::Time deadline = absl::Now() + timeout;
  std::vector<Watermarks> out;
  for (int32_t p = 0; p < partitions; ++p) {
    Watermarks m;
    rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
        meta_, topic.c_str(), p, &m.low, &m.high, TimeoutMs(deadline - absl::Now()));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return KafkaError(err, absl::StrCat("read end offset of ", topic, "[", p, "]"));
    }
    out.push_back(m);
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> RdKafkaOffsetReader::MessageTimestamps(
    const std::string& topic, const std::vector<PartitionOffset>& at, absl::Duration timeout) {
  std::vector<int64_t> out(at.size(), -1);
  if (at.empty()) return out;
  absl::MutexLock lock(&mu_);
  if (fetch_ == nullptr) {
    // librdkafka's assign() wants a group.id, but this handle never
    // subscribes (so it never joins the group) and never commits: the
    // group is a name only. Small fetches: one message per partition is
    // all that is wanted. queued.min.messages stays at its default: at 1,
    // a partition leaves the fetch list once a message is queued, and the
    // broker thread only looks again at its next 1 s wake-up, which cost
    // every read after the first about a second (bench/lag_bench).
    absl::StatusOr<rd_kafka_t*> rk = NewHandle(brokers_, kTimestampGroup,
                                               {{"fetch.wait.max.ms", "50"},
                                                {"max.partition.fetch.bytes", "65536"},
                                                {"queued.max.messages.kbytes", "1024"},
                                                {"enable.partition.eof", "false"}});
    if (!rk.ok()) return rk.status();
    fetch_ = *rk;
  }
  std::map<int32_t, size_t> index;  // partition -> position in `at`
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(at.size());
  for (size_t i = 0; i < at.size(); ++i) {
    if (!index.emplace(at[i].partition, i).second) {
      rd_kafka_topic_partition_list_destroy(list);
      return absl::InvalidArgumentError(
          absl::StrCat("MessageTimestamps: partition ", at[i].partition, " asked twice"));
    }
    rd_kafka_topic_partition_list_add(list, topic.c_str(), at[i].partition)->offset = at[i].offset;
  }
  // Ask for the topic's metadata first: assign() of a topic the handle
  // does not know waits for librdkafka's topic scan (once a second) to
  // request it, which cost every read of another topic about a second
  // (bench/lag_bench). The handle is held until the read ends, so that
  // the answer is kept for the topic.
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(fetch_, topic.c_str(), nullptr);
  if (rkt == nullptr) {
    rd_kafka_topic_partition_list_destroy(list);
    return KafkaError(rd_kafka_last_error(), absl::StrCat("open topic ", topic));
  }
  const rd_kafka_metadata_t* md = nullptr;
  rd_kafka_resp_err_t err = rd_kafka_metadata(fetch_, 0, rkt, &md, TimeoutMs(timeout));
  if (md != nullptr) rd_kafka_metadata_destroy(md);
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) err = rd_kafka_assign(fetch_, list);
  rd_kafka_topic_partition_list_destroy(list);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_topic_destroy(rkt);
    return KafkaError(err, absl::StrCat("read message timestamps of ", topic));
  }
  absl::Status status;
  size_t missing = at.size();
  const absl::Time deadline = absl::Now() + timeout;
  while (missing > 0) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      status = absl::UnavailableError(absl::StrCat("read message timestamps of ", topic, ": ",
                                                   missing, " partitions did not answer in ",
                                                   absl::FormatDuration(timeout)));
      break;
    }
    rd_kafka_message_t* m =
        rd_kafka_consumer_poll(fetch_, TimeoutMs(std::min(left, absl::Milliseconds(100))));
    if (m == nullptr) continue;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        status = KafkaError(m->err, absl::StrCat("read message timestamps of ", topic));
      }
      rd_kafka_message_destroy(m);
      if (!status.ok()) break;
      continue;
    }
    auto it = index.find(m->partition);
    if (it != index.end() && out[it->second] == -1 && m->offset >= at[it->second].offset) {
      rd_kafka_timestamp_type_t type;
      const int64_t ts = rd_kafka_message_timestamp(m, &type);
      out[it->second] = type == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -2 : ts;
      --missing;
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_assign(fetch_, nullptr);
  rd_kafka_topic_destroy(rkt);
  if (!status.ok()) return status;
  for (int64_t& ts : out) {
    if (ts == -2) ts = -1;
  }
  return out;
}

absl::StatusOr<rd_kafka_t*> RdKafkaOffsetReader::GroupHandle(const std::string& group) {
  auto it = groups_.find(group);
  if (it != groups_.end()) return it->second;
  absl::StatusOr<rd_kafka_t*> rk = NewHandle(brokers_, group);
  if (!rk.ok()) return rk.status();
  groups_[group] = *rk;
  return *rk;
}

absl::StatusOr<std::vector<int64_t>> RdKafkaOffsetReader::CommittedOffsets(const std::string& group,
                                                                           const std::string& topic,
                                                                           int32_t partitions,
                                                                           absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<rd_kafka_t*> rk = GroupHandle(group);
  if (!rk.ok()) return rk.status();
  // An explicit partition list: the offsets of exactly these partitions.
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(partitions);
  for (int32_t p = 0; p < partitions; ++p) {
    rd_kafka_topic_partition_list_add(list, topic.c_str(), p);
  }
  rd_kafka_resp_err_t err = rd_kafka_committed(*rk, list, TimeoutMs(timeout));
  std::vector<int64_t> out(partitions, -1);
  absl::Status status;
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    status = KafkaError(err, absl::StrCat("read offsets of group ", group, " on ", topic));
  } else {
    for (int i = 0; i < list->cnt; ++i) {
      const rd_kafka_topic_partition_t& tp = list->elems[i];
      if (tp.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        status = KafkaError(tp.err, absl::StrCat("read offset of group ", group, " on ", topic, "[",
                                                 tp.partition, "]"));
        break;
      }
      if (tp.partition >= 0 && tp.partition < partitions) {
        out[tp.partition] = tp.offset < 0 ? -1 : tp.offset;  // RD_KAFKA_OFFSET_INVALID: none
      }
    }
  }
  rd_kafka_topic_partition_list_destroy(list);
  if (!status.ok()) return status;
  return out;
}

}  // namespace bucketmap
