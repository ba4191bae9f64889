// DeliveryTracker: a producer's events in flight, counted per route
// version, from which the client derives the exact drained_version it ACKs
// (SPEC §5, switch barrier).
//
//   drained_version = the highest v such that every event this producer
//   routed under a version below v has its final delivery report
//                   = the lowest route version still in flight, or the
//   applied version when nothing is in flight.
//
// Use (examples/producer.cc is a complete producer):
//   DeliveryTracker tracker(&client);
//   WatchConnectionOptions watch_options;
//   watch_options.delivery_tracker = &tracker;   // ACKs carry drained_version
//   ...
//   // Per event: route through the tracker, so the event is counted before
//   // the route is read (see "Why Begin() comes first" below).
//   DeliveryTracker::Routed r = tracker.Route(team_id);
//   if (!r.route.routable()) { tracker.Done(r.ticket); ... }
//   rd_kafka_producev(..., RD_KAFKA_V_OPAQUE(r.ticket.ToOpaque()), ...);
//   // and in the dr_msg_cb, for every message, delivered or failed:
//   tracker.Done(DeliveryTracker::Ticket::FromOpaque(message->_private));
// An event that is never handed to Kafka (produce failed synchronously)
// must be Done() too. A failed delivery is final: if the producer sends the
// event again, that is a new event with a new ticket, routed anew.
//
// Why Begin() comes first: the count must exist before the route is read,
// or the watch thread could ACK drained_version = v (nothing in flight)
// between a producer thread reading a route at v-1 and counting it. Begin()
// reads the client's version under the same lock that DrainedVersion()
// takes, and Client::version() is published after the view it names, so a
// ticket's version is never above the version of the route read after it.
//
// Thread safety: every method may be called from any thread. Begin() and
// Done() take one mostly uncontended mutex out of 16 (threads are spread
// over them); DrainedVersion() takes all 16 in turn. The Client must
// outlive the tracker.
#ifndef BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_DELIVERY_TRACKER_H_
#define BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_DELIVERY_TRACKER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "bucketmap/client.h"

namespace bucketmap {

class DeliveryTracker {
 public:
  // One event in flight: its route version and the tracker's shard. Fits
  // in a pointer, to travel as librdkafka's per-message opaque.
  class Ticket {
   public:
    Ticket() = default;
    int64_t version() const { return static_cast<int64_t>(raw_ >> kShardBits); }
    void* ToOpaque() const { return reinterpret_cast<void*>(static_cast<uintptr_t>(raw_)); }
    static Ticket FromOpaque(const void* opaque) {
      return Ticket(static_cast<uint64_t>(reinterpret_cast<uintptr_t>(opaque)));
    }
    bool valid() const { return raw_ != 0; }

   private:
    friend class DeliveryTracker;
    static constexpr int kShardBits = 8;
    explicit Ticket(uint64_t raw) : raw_(raw) {}
    Ticket(int64_t version, uint32_t shard)
        // +1 so that a valid ticket is never 0 (a null opaque).
        : raw_((static_cast<uint64_t>(version) << kShardBits) | (shard + 1)) {}
    uint32_t shard() const { return static_cast<uint32_t>(raw_ & ((1u << kShardBits) - 1)) - 1; }
    uint64_t raw_ = 0;
  };

  struct Routed {
    RouteResult route;
    Ticket ticket;
  };
  struct Viewed {
    // nullptr before any mapping was loaded (the ticket is still counted).
    std::shared_ptr<const MappingView> view;
    Ticket ticket;
  };

  explicit DeliveryTracker(const Client* client);
  DeliveryTracker(const DeliveryTracker&) = delete;
  DeliveryTracker& operator=(const DeliveryTracker&) = delete;

  // Route()
  //
  // Counts one event in flight and routes `team_id`; the ticket carries the
  // route's version. Give the ticket back with Done() exactly once.
  Routed Route(int64_t team_id);

  // Current()
  //
  // Counts one event in flight and takes the current view (for producers
  // that need the topic name with the route); the ticket carries the
  // view's version.
  Viewed Current();

  // Begin() / Rebind()
  //
  // The two halves of Route() for other routing code: Begin() counts the
  // event under the client's version now; after routing, Rebind() moves it
  // to the version actually used (never lower than the ticket's; a lower
  // one is ignored, which stays conservative).
  Ticket Begin();
  void Rebind(Ticket* ticket, int64_t route_version);

  // Done()
  //
  // The event's final delivery report arrived (delivered or failed), or it
  // was never handed to Kafka. Ignores an invalid ticket.
  void Done(Ticket ticket);

  // DrainedVersion()
  //
  // Returns min(`applied_version`, the lowest version still in flight).
  // `applied_version` must have been published by the client before the
  // call (the watch transport passes what it is about to ACK).
  int64_t DrainedVersion(int64_t applied_version) const;

  // Events counted and not yet Done().
  int64_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

  // ---- For the watch transport. ----

  // Records what was last ACKed, so that Done() wakes WaitForProgress()
  // only when the drained version may now pass what was reported.
  void SetReported(int64_t drained_version, int64_t applied_version);
  // Blocks until progress was signalled after `seen` (a value returned
  // earlier; 0 at first), Kick() was called, or `timeout` passed. Returns
  // the progress count to pass next time.
  uint64_t WaitForProgress(uint64_t seen, absl::Duration timeout) const;
  // Wakes WaitForProgress() (e.g. to stop its caller).
  void Kick();

 private:
  static constexpr uint32_t kShards = 16;
  struct alignas(64) Shard {
    mutable absl::Mutex mu;
    // (version, events in flight), ascending by version; a few entries.
    std::vector<std::pair<int64_t, int64_t>> counts ABSL_GUARDED_BY(mu);
  };
  static void Add(Shard& shard, int64_t version, int64_t n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  uint32_t MyShard() const;
  void Signal();

  const Client* const client_;
  Shard shards_[kShards];
  std::atomic<int64_t> in_flight_{0};
  // Done() signals when it empties a version below this (see
  // SetReported()); INT64_MIN: nothing to report.
  std::atomic<int64_t> signal_below_;
  mutable absl::Mutex progress_mu_;
  mutable absl::CondVar progress_cv_;
  uint64_t progress_ ABSL_GUARDED_BY(progress_mu_) = 1;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_DELIVERY_TRACKER_H_
