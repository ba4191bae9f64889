#include "server/handoff/kafka_offsets.h"

#include <librdkafka/rdkafka.h>

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

absl::StatusOr<rd_kafka_t*> NewHandle(const std::string& brokers, const std::string& group) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char error[512];
  std::vector<std::pair<std::string, std::string>> settings = {
      {"bootstrap.servers", brokers},
      {"client.id", "bucketmap-handoff"},
      // Never create topics by asking about them.
      {"allow.auto.create.topics", "false"},
      {"enable.auto.commit", "false"},
  };
  if (!group.empty()) settings.emplace_back("group.id", group);
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
  absl::MutexLock lock(&mu_);
  const absl::Time deadline = absl::Now() + timeout;
  std::vector<int64_t> out;
  for (int32_t p = 0; p < partitions; ++p) {
    int64_t low = 0;
    int64_t high = 0;
    rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(meta_, topic.c_str(), p, &low, &high,
                                                               TimeoutMs(deadline - absl::Now()));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return KafkaError(err, absl::StrCat("read end offset of ", topic, "[", p, "]"));
    }
    out.push_back(high);
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
