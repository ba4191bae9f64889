// FakeOffsetReader: an OffsetReader (server/kafka/kafka_offsets.h) in
// memory, for unit tests of the handoff coordinator without Kafka: the
// test sets each topic's partition count and end offsets and each
// consumer group's committed offsets, and moves them between rounds.
// Integration tests read librdkafka's mock cluster instead.
//
// As RdKafkaOffsetReader: EndOffsets of a topic the cluster does not have,
// or of a partition past its count, is Unavailable; CommittedOffsets is -1
// where the group has committed nothing (whatever the topic).
// FailNext(method, status) makes the next call(s) fail with `status` and
// do nothing else; calls() counts the calls, failed ones included.
//
// Thread safety: all methods are thread-safe. Header-only.
#ifndef BUCKETMAP_TESTS_SUPPORT_FAKE_OFFSETS_H_
#define BUCKETMAP_TESTS_SUPPORT_FAKE_OFFSETS_H_

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/kafka/kafka_offsets.h"
#include "tests/support/fake_calls.h"

namespace bucketmap {

class FakeOffsetReader final : public OffsetReader {
 public:
  enum Method { kPartitionCounts, kEndOffsets, kCommittedOffsets, kWatermarks, kTimestamps };

  FakeOffsetReader() = default;
  FakeOffsetReader(const FakeOffsetReader&) = delete;
  FakeOffsetReader& operator=(const FakeOffsetReader&) = delete;

  // OffsetReader. `timeout` is ignored: the fake answers at once.
  absl::StatusOr<std::map<std::string, int32_t>> PartitionCounts(absl::Duration) override {
    if (absl::Status s = calls_.Enter(kPartitionCounts); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    std::map<std::string, int32_t> out;
    for (const auto& [name, end] : topics_) out[name] = static_cast<int32_t>(end.size());
    return out;
  }

  absl::StatusOr<std::vector<int64_t>> EndOffsets(const std::string& topic, int32_t partitions,
                                                  absl::Duration) override {
    if (absl::Status s = calls_.Enter(kEndOffsets); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    auto it = topics_.find(topic);
    if (it == topics_.end()) {
      return absl::UnavailableError(absl::StrCat("read end offset of ", topic, ": unknown topic"));
    }
    if (partitions < 0 || static_cast<size_t>(partitions) > it->second.size()) {
      return absl::UnavailableError(absl::StrCat("read end offset of ", topic, "[",
                                                 it->second.size(), "]: unknown partition"));
    }
    return std::vector<int64_t>(it->second.begin(), it->second.begin() + partitions);
  }

  absl::StatusOr<std::vector<int64_t>> CommittedOffsets(const std::string& group,
                                                        const std::string& topic,
                                                        int32_t partitions,
                                                        absl::Duration) override {
    if (absl::Status s = calls_.Enter(kCommittedOffsets); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    std::vector<int64_t> out(std::max<int32_t>(partitions, 0), -1);
    auto it = committed_.find({group, topic});
    if (it != committed_.end()) {
      for (size_t p = 0; p < out.size() && p < it->second.size(); ++p) out[p] = it->second[p];
    }
    return out;
  }

  // Low watermarks are 0 unless SetLowWatermarks says otherwise.
  absl::StatusOr<std::vector<Watermarks>> PartitionWatermarks(const std::string& topic,
                                                              int32_t partitions,
                                                              absl::Duration) override {
    if (absl::Status s = calls_.Enter(kWatermarks); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    auto it = topics_.find(topic);
    if (it == topics_.end() || partitions < 0 ||
        static_cast<size_t>(partitions) > it->second.size()) {
      return absl::UnavailableError(absl::StrCat("read end offset of ", topic, ": unknown"));
    }
    std::vector<Watermarks> out;
    const std::vector<int64_t>& lows = low_[topic];
    for (int32_t p = 0; p < partitions; ++p) {
      out.push_back({static_cast<size_t>(p) < lows.size() ? lows[p] : 0, it->second[p]});
    }
    return out;
  }

  // A message without a timestamp set by SetMessageTimestamp is
  // Unavailable, as a message the real reader cannot fetch in time.
  absl::StatusOr<std::vector<int64_t>> MessageTimestamps(const std::string& topic,
                                                         const std::vector<PartitionOffset>& at,
                                                         absl::Duration) override {
    if (absl::Status s = calls_.Enter(kTimestamps); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    std::vector<int64_t> out;
    for (const PartitionOffset& po : at) {
      auto it = timestamps_.find({topic, po.partition, po.offset});
      if (it == timestamps_.end()) {
        return absl::UnavailableError(absl::StrCat("read message timestamps of ", topic,
                                                   ": no message at ", po.partition, "@",
                                                   po.offset));
      }
      out.push_back(it->second);
    }
    return out;
  }

  // Test controls.

  void SetLowWatermarks(const std::string& topic, std::vector<int64_t> lows) {
    absl::MutexLock lock(&mu_);
    low_[topic] = std::move(lows);
  }
  // The timestamp (ms since the epoch) of the message at `offset`.
  void SetMessageTimestamp(const std::string& topic, int32_t partition, int64_t offset,
                           int64_t ts_ms) {
    absl::MutexLock lock(&mu_);
    timestamps_[{topic, partition, offset}] = ts_ms;
  }

  // SetTopic()
  //
  // Creates or replaces `topic` with one partition per end offset.
  void SetTopic(const std::string& topic, std::vector<int64_t> end_offsets) {
    absl::MutexLock lock(&mu_);
    topics_[topic] = std::move(end_offsets);
  }
  // Changes the partition count of `topic` (created when missing); new
  // partitions are empty (end offset 0).
  void SetPartitionCount(const std::string& topic, int32_t partitions) {
    absl::MutexLock lock(&mu_);
    topics_[topic].resize(partitions, 0);
  }
  void RemoveTopic(const std::string& topic) {
    absl::MutexLock lock(&mu_);
    topics_.erase(topic);
  }
  // `group`'s committed offsets of partitions 0.. of `topic`; -1 for none.
  void SetCommitted(const std::string& group, const std::string& topic,
                    std::vector<int64_t> offsets) {
    absl::MutexLock lock(&mu_);
    committed_[{group, topic}] = std::move(offsets);
  }

  // The next `times` calls of `method` (or of any method) fail with
  // `status` and do nothing else.
  void FailNext(Method method, absl::Status status, int times = 1) {
    calls_.FailNext(method, std::move(status), times);
  }
  void FailNext(absl::Status status, int times = 1) { calls_.FailNext(std::move(status), times); }
  int64_t calls(Method method) const { return calls_.calls(method); }

 private:
  FakeCalls<Method> calls_;
  mutable absl::Mutex mu_;
  // End offset of each partition, by topic.
  std::map<std::string, std::vector<int64_t>> topics_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, std::string>, std::vector<int64_t>> committed_
      ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<int64_t>> low_ ABSL_GUARDED_BY(mu_);
  std::map<std::tuple<std::string, int32_t, int64_t>, int64_t> timestamps_ ABSL_GUARDED_BY(mu_);
};

}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_SUPPORT_FAKE_OFFSETS_H_
