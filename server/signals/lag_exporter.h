// LagExporter: the leader's reader of consumer lag (SPEC §9, issue 11,
// docs/autoscaling.md). Every `interval`, for each bucket that is not
// RETIRED and each role with both a topic and a consumer group, it reads
// the group's committed offsets and the partitions' watermarks, and the
// timestamp of the message at each lagging partition's committed offset:
//
//   messages = sum over partitions of high - max(committed, low), where a
//              group that never committed on a partition counts from the
//              low watermark (the earliest offset kept);
//   seconds  = max over lagging partitions of now - the timestamp of the
//              message at max(committed, low); 0 only when messages is 0
//              (a positive lag never reads as 0 seconds, whatever the
//              clocks say: it is at least 1 ms).
//
// A reading that fails in any part (metadata, watermarks, committed
// offsets, a timestamp, the round's deadline) is `up` false with the
// error: Metrics::SetBucketLags then exports lag_up 0 and no lag series.
//
// Cost bounds: one thread, rounds never overlap (a round that overruns
// delays the next; it never queues a second); each Kafka call waits at
// most `read_timeout`, and the round stops reading at its deadline (one
// interval after its start); at most `max_partitions` partitions are read
// per round, the groups taken in turn from where the last round stopped.
// A group not read in a round keeps its last reading while that is
// younger than 3 intervals, and is then reported `up` false ("not read").
//
// Each round's readings go to the metrics (this replica, the leader) and
// to the store (Store::SaveLagReadings), so GetLoad on any replica shows
// them with their age. Stop() removes the series: a replica that no longer
// leads exports no lag, so a stale reading can never pass for a fresh one.
//
// Thread safety: Start/Stop are called by the leader election (never
// concurrently); RunRound() is for tests and must not run while started.
#ifndef BUCKETMAP_SERVER_SIGNALS_LAG_EXPORTER_H_
#define BUCKETMAP_SERVER_SIGNALS_LAG_EXPORTER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "server/base/clock.h"
#include "server/kafka/kafka_offsets.h"
#include "server/metrics/metrics.h"
#include "server/state/mapping_manager.h"
#include "server/store/store.h"

namespace bucketmap {

struct LagOptions {
  // Period of the rounds (--lag_interval); 0 turns the exporter off.
  absl::Duration interval = absl::Seconds(10);
  // The longest wait for one Kafka call (--lag_read_timeout).
  absl::Duration read_timeout = absl::Seconds(5);
  // Partitions read per round at most (--lag_max_partitions).
  int64_t max_partitions = 10000;
};

class LagExporter {
 public:
  // `offsets` may be null (no Kafka cluster): every reading is then up
  // false, "no Kafka cluster". Other dependencies must outlive the
  // exporter; `metrics` may be null.
  LagExporter(MappingManager* manager, Store* store, std::shared_ptr<OffsetReader> offsets,
              Metrics* metrics, LagOptions options, const Clock* clock = Clock::Real());
  ~LagExporter();
  LagExporter(const LagExporter&) = delete;
  LagExporter& operator=(const LagExporter&) = delete;

  // Leader task: starts the rounds (the first at once) / stops them and
  // removes the exported series. Idempotent.
  void Start();
  void Stop();

  // RunRound()
  //
  // One round now, on the caller's thread: reads, exports, saves. Returns
  // the readings. For tests, and the thread's loop.
  std::vector<LagReading> RunRound();

  const LagOptions& options() const { return options_; }

 private:
  struct Target {
    int32_t bucket_id;
    std::string bucket;
    std::string role;
    std::string group;
    std::string topic;
  };
  void Loop();
  LagReading Read(const Target& target, int32_t partitions, absl::Time deadline,
                  int64_t* partitions_read);

  MappingManager* const manager_;
  Store* const store_;
  const std::shared_ptr<OffsetReader> offsets_;
  Metrics* const metrics_;
  const LagOptions options_;
  const Clock* const clock_;

  // Round state: only RunRound touches it (one thread at a time).
  size_t cursor_ = 0;
  std::map<std::tuple<int32_t, std::string>, LagReading> last_;

  absl::Mutex mu_;
  std::unique_ptr<absl::Notification> stop_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_SIGNALS_LAG_EXPORTER_H_
