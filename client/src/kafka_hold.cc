#include "bucketmap/kafka_hold.h"

#include <string_view>

#include "spdlog/spdlog.h"

namespace bucketmap {
namespace {

// Bounded so a broker that does not answer cannot stall the poll thread
// for long; on a timeout librdkafka still applies the seek, but may first
// hand out messages it had fetched, which Admit() skips.
constexpr int kSeekTimeoutMs = 2000;

}  // namespace

int64_t StampedVersion(const rd_kafka_message_t* message) {
  rd_kafka_headers_t* headers = nullptr;
  if (rd_kafka_message_headers(message, &headers) != RD_KAFKA_RESP_ERR_NO_ERROR) return 0;
  const void* value = nullptr;
  size_t size = 0;
  if (rd_kafka_header_get_last(headers, kVersionHeader, &value, &size) !=
      RD_KAFKA_RESP_ERR_NO_ERROR) {
    return 0;
  }
  return ParseVersionHeader(std::string_view(static_cast<const char*>(value), size));
}

PartitionHold::PartitionHold(rd_kafka_t* consumer, Client* client)
    : consumer_(consumer), client_(client), gate_(client) {
  listener_ = client_->OnChange(
      [this](const ChangeEvent&) { changed_.store(true, std::memory_order_release); });
}

PartitionHold::~PartitionHold() { client_->RemoveListener(listener_); }

void PartitionHold::Seek(const Key& key, int64_t offset) {
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(list, key.first.c_str(), key.second)->offset = offset;
  if (rd_kafka_error_t* error = rd_kafka_seek_partitions(consumer_, list, kSeekTimeoutMs)) {
    spdlog::warn("bucketmap hold: seek {}[{}] to {}: {}", key.first, key.second, offset,
                 rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
  }
  rd_kafka_topic_partition_list_destroy(list);
}

void PartitionHold::SetPaused(const Key& key, bool paused) {
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(list, key.first.c_str(), key.second);
  const rd_kafka_resp_err_t err = paused ? rd_kafka_pause_partitions(consumer_, list)
                                         : rd_kafka_resume_partitions(consumer_, list);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    spdlog::warn("bucketmap hold: {} {}[{}]: {}", paused ? "pause" : "resume", key.first,
                 key.second, rd_kafka_err2str(err));
  }
  rd_kafka_topic_partition_list_destroy(list);
}

PartitionHold::Admission PartitionHold::Admit(const rd_kafka_message_t* message, int64_t team_id,
                                              int32_t bucket_id) {
  Key key(rd_kafka_topic_name(message->rkt), message->partition);
  if (held_.count(key) > 0) {
    ++stats_.skipped;
    return Admission::kSkip;
  }
  if (auto it = resuming_.find(key); it != resuming_.end()) {
    if (message->offset > it->second) {
      // Fetched before the seek took effect: it comes again after the
      // held one. Seek again in case the first seek was lost.
      ++stats_.skipped;
      Seek(key, it->second);
      return Admission::kSkip;
    }
    resuming_.erase(it);
  }
  const GateDecision d = gate_.Check(team_id, bucket_id, StampedVersion(message));
  if (d.process) return Admission::kProcess;
  // Pause first so nothing more is fetched, then move the fetch position
  // back to this message: it is the first one not processed.
  SetPaused(key, true);
  Seek(key, message->offset);
  held_[key] = Held{message->offset, team_id, bucket_id, StampedVersion(message), absl::Now()};
  ++stats_.holds;
  spdlog::debug("bucketmap hold: {}[{}] held at offset {} for team {} ({})", key.first, key.second,
                message->offset, team_id, GateReasonName(d.reason));
  // The version may have moved on between Check() and the pause.
  changed_.store(true, std::memory_order_release);
  return Admission::kHeld;
}

int PartitionHold::ResumeReady() {
  if (held_.empty() || !changed_.exchange(false, std::memory_order_acq_rel)) return 0;
  int resumed = 0;
  for (auto it = held_.begin(); it != held_.end();) {
    const Held& h = it->second;
    if (gate_.Check(h.team_id, h.bucket_id, h.stamped_version).hold()) {
      ++it;
      continue;
    }
    Seek(it->first, h.offset);
    SetPaused(it->first, false);
    resuming_[it->first] = h.offset;
    stats_.held_time += absl::Now() - h.since;
    ++stats_.resumes;
    ++resumed;
    it = held_.erase(it);
  }
  return resumed;
}

void PartitionHold::Forget(const rd_kafka_topic_partition_list_t* partitions) {
  for (int i = 0; i < partitions->cnt; ++i) {
    const Key key(partitions->elems[i].topic, partitions->elems[i].partition);
    held_.erase(key);
    resuming_.erase(key);
  }
}

}  // namespace bucketmap
