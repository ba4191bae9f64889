// librdkafka glue for coordinated moves (SPEC §5), in its own target
// (bucketmap_client_kafka) so that the routing core does not link
// librdkafka.
//
// Producers: TrackDelivery() gives an event's ticket back to the
// DeliveryTracker from the delivery-report callback (dr_msg_cb), given that
// the event was produced with RD_KAFKA_V_OPAQUE(ticket.ToOpaque()).
//
// Consumers: PartitionHold applies HandoffGate to a high-level consumer's
// messages without buffering any of them. The consumer must set
// enable.auto.offset.store=false and store an offset (rd_kafka_offsets_store)
// only after processing its message. Per message:
//
//   switch (hold.Admit(message, team, bucket)) {
//     case PartitionHold::Admission::kProcess: process; store offset+1; break;
//     case PartitionHold::Admission::kHeld:    // the partition is paused at
//     case PartitionHold::Admission::kSkip:    // this offset: drop it
//       break;
//   }
//   ... and once per poll-loop iteration: hold.ResumeReady();
//
// A held message pauses its partition and seeks it back to the message's
// offset, so nothing after it is processed or stored, and the broker, not
// memory, keeps the backlog. Messages of that partition that were already
// fetched are skipped (kSkip). When a new version opens the gate
// (ResumeReady() re-checks after each OnChange), the partition resumes from
// the held offset. On a rebalance, call Forget() for revoked partitions.
//
// Thread safety: a PartitionHold is used from the consumer's poll thread
// only (its OnChange listener only sets an atomic flag). The Client and the
// rd_kafka_t must outlive it.
#ifndef BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_KAFKA_HOLD_H_
#define BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_KAFKA_HOLD_H_

#include <librdkafka/rdkafka.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "absl/time/time.h"
#include "bucketmap/client.h"
#include "bucketmap/delivery_tracker.h"
#include "bucketmap/handoff_gate.h"

namespace bucketmap {

// The header producers stamp each event with (decimal route version).
inline constexpr char kVersionHeader[] = "bucketmap-version";

// Gives the ticket of a produced message back to `tracker`: call it for
// every message in the dr_msg_cb, whatever its error.
inline void TrackDelivery(DeliveryTracker* tracker, const rd_kafka_message_t* message) {
  tracker->Done(DeliveryTracker::Ticket::FromOpaque(message->_private));
}

// Returns the message's bucketmap-version header, or 0 when it has none.
int64_t StampedVersion(const rd_kafka_message_t* message);

class PartitionHold {
 public:
  enum class Admission {
    // Process the message, then store its offset.
    kProcess,
    // The gate said hold: the partition is now paused at this message.
    kHeld,
    // The partition is held (or about to re-deliver from its held offset):
    // drop the message, it will be delivered again.
    kSkip,
  };

  struct Stats {
    int64_t holds = 0;     // partitions paused so far
    int64_t resumes = 0;   // and resumed
    int64_t skipped = 0;   // messages dropped for re-delivery
    absl::Duration held_time = absl::ZeroDuration();  // summed over ended holds
  };

  PartitionHold(rd_kafka_t* consumer, Client* client);
  ~PartitionHold();
  PartitionHold(const PartitionHold&) = delete;
  PartitionHold& operator=(const PartitionHold&) = delete;

  // Admit()
  //
  // Decides for `message` (not an error message) of team `team_id`, read
  // from bucket `bucket_id`; its stamp is the bucketmap-version header.
  Admission Admit(const rd_kafka_message_t* message, int64_t team_id, int32_t bucket_id);

  // ResumeReady()
  //
  // Resumes, from their held offsets, the partitions whose gate has opened.
  // Cheap unless a new version arrived since the last call. Returns the
  // number of partitions resumed.
  int ResumeReady();

  // Forget()
  //
  // Drops the state of `partitions` (revoked on a rebalance); a partition
  // assigned again starts unpaused from its committed offset.
  void Forget(const rd_kafka_topic_partition_list_t* partitions);

  // Partitions held now.
  size_t held() const { return held_.size(); }
  const Stats& stats() const { return stats_; }

 private:
  using Key = std::pair<std::string, int32_t>;
  struct Held {
    int64_t offset;
    int64_t team_id;
    int32_t bucket_id;
    int64_t stamped_version;
    absl::Time since;
  };
  // Pauses or resumes one partition; seeks it to `offset` first.
  void Seek(const Key& key, int64_t offset);
  void SetPaused(const Key& key, bool paused);

  rd_kafka_t* const consumer_;
  Client* const client_;
  const HandoffGate gate_;
  Client::ListenerId listener_ = 0;
  // Set by OnChange (any thread): a held partition may be ready.
  std::atomic<bool> changed_{false};
  std::map<Key, Held> held_;
  // Resumed partitions, until their held offset is delivered again.
  std::map<Key, int64_t> resuming_;
  Stats stats_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_KAFKA_HOLD_H_
