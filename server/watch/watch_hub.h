// WatchHub: the server side of MappingService.WatchMapping.
//
// The hub keeps, for the last versions, one shared frame per version: the
// version's MappingDelta, encoded once as a `WatchResponse.Push.deltas`
// field. A push to a stream is a small per-stream header (versions and
// nonce) followed by the shared frames since the stream's ACKed version,
// handed to gRPC as reference-counted slices — or the snapshot's shared
// bytes once more than `max_deltas_per_push` versions are pending. The only
// per-stream state is the ACKed version, the nonce and the write queue.
// Streams with a bucket filter share one filtered encoding per (version,
// filter).
//
// A stream ACKs in one of two modes (Subscribe.ack_mode; docs/protocol.md,
// "ACK modes"). ACK_EVERY_PUSH (clients that do not say): at most one push
// per stream is un-ACKed, and a push not ACKed within `ack_timeout` ends
// the stream with UNAVAILABLE. ACK_REQUESTED: pushes stream, one write in
// flight, the versions committed meanwhile coalescing into the next push;
// the pushes whose ACK the server needs are marked, and only those are
// held to `ack_timeout`. Either way heartbeats go out at `heartbeat`, but
// never queue behind a write the client has not taken (so a client that
// never reads costs a bounded amount of memory).
//
// Each client's applied version, last ACK and NACK are kept by its stream;
// a flusher thread saves the changed ones to the Store in batches, leased
// and renewed, so ListClients sees them.
//
// Threads: a ticker (heartbeats, ACK timeouts, and a share of each new
// version's pushes), fanout_threads - 1 workers pushing the other shares,
// and the flusher. Thread safety: all public methods are thread-safe.
// fanout_mu_ is taken with no other lock held. Lock order: a
// stream's mutex, then WatchHub::mu_, then a VersionFrame's; no lock is
// held while calling into gRPC (StartWrite, Finish).
#ifndef BUCKETMAP_SERVER_WATCH_WATCH_HUB_H_
#define BUCKETMAP_SERVER_WATCH_WATCH_HUB_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "server/base/clock.h"
#include "server/base/log_limit.h"
#include "server/metrics/metrics.h"
#include "server/signals/load_signals.h"
#include "server/state/mapping_manager.h"
#include "server/store/store.h"
#include "server/watch/push_frames.h"

namespace bucketmap {

struct WatchOptions {
  absl::Duration heartbeat = absl::Seconds(10);
  absl::Duration ack_timeout = absl::Seconds(30);
  // ACK_REQUESTED streams: a push is marked ack_requested when what the
  // server knows of the stream (its last ACK) has been behind what it sent
  // for this long (besides the catch-up, snapshots, and a producer's
  // pushes while a handoff is open). Longer than `heartbeat`, so that
  // clients which ACK lazily at heartbeats (both libraries) never get a
  // push marked for it: ListClients lags by up to a heartbeat for them,
  // and by up to this for a client that only ACKs marked pushes.
  absl::Duration ack_interval = absl::Seconds(15);
  // A stream further behind than this many versions gets the snapshot.
  int max_deltas_per_push = 64;
  // Resumes are served from the deltas of at most this many recent
  // versions (never more than max_deltas_per_push: a stream further behind
  // gets the snapshot anyway), no older than resume_max_age, and holding at
  // most resume_max_bytes; older resumes get the snapshot.
  int resume_max_versions = 64;
  absl::Duration resume_max_age = absl::Hours(1);
  size_t resume_max_bytes = 64 << 20;
  // Client states are flushed to the store this often, leased this long.
  absl::Duration client_flush = absl::Seconds(1);
  absl::Duration client_lease = kDefaultClientLease;
  // This replica's name in ListClients.
  std::string replica = "bucketmap";
  // Subscribed streams allowed on this replica, in total and per
  // client_id; 0 is unlimited. Over the limit, the subscribe fails with
  // RESOURCE_EXHAUSTED naming the limit.
  int max_streams = 0;
  int max_streams_per_client = 0;
  // A WatchRequest larger than this ends the stream (INVALID_ARGUMENT)
  // before it is parsed: the largest valid one, a load report of 1,000
  // teams, is about 30 KB.
  size_t max_request_bytes = 256 << 10;
  // Threads that push a new version to the streams (the hub's ticker and
  // fanout_threads - 1 more): each takes a contiguous share of the
  // streams, at least min_streams_per_fanout_thread. 0: twice the
  // hardware's concurrency (part of each push waits in gRPC's write path
  // rather than computes: docs/benchmarks.md, the sweep of
  // --fanout_threads); 1: the ticker alone. Heartbeats and ACK timeouts
  // stay on the ticker.
  int fanout_threads = 0;
  // A publish to fewer streams than this per thread is pushed by fewer
  // threads (waking a thread costs more than pushing a few hundred
  // streams: docs/benchmarks.md, "Fan-out threads by the number of
  // streams"); the threads not needed are not woken.
  size_t min_streams_per_fanout_thread = 500;
};

// --watch_fanout_threads (or its default) is capped here.
inline constexpr size_t kMaxFanoutThreads = 64;

class WatchStream;

class WatchHub {
 public:
  // All dependencies must outlive the hub. Streams hand accepted load
  // reports to `load`; without one (null) they are validated and dropped.
  WatchHub(MappingManager* manager, Store* store, Metrics* metrics, WatchOptions options,
           const Clock* clock = Clock::Real(), LoadAggregator* load = nullptr);
  ~WatchHub();

  // Preloads recent deltas from the store, subscribes to the manager and
  // starts the ticker and flusher threads. Call once, before serving.
  void Start();

  // Ends every stream with UNAVAILABLE (so clients move to another
  // replica), refuses new ones, flushes client states, stops the threads.
  void Stop();

  // The reactor for a new WatchMapping call.
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewStream(
      grpc::CallbackServerContext* ctx);

  const WatchOptions& options() const { return options_; }
  MappingManager& manager() { return *manager_; }
  const Clock& clock() const { return *clock_; }
  Metrics& metrics() { return *metrics_; }
  // Null when load reports are dropped.
  LoadAggregator* load() { return load_; }

  // Which pushes are marked ack_requested (Push.ack_requested).
  enum class AckMark {
    kNever,           // ACK_EVERY_PUSH streams: the field is left out
    kAlways,          // this push's ACK is needed
    kIfHandoffsOpen,  // needed if the pushed version has an open handoff
  };
  struct BuiltPush {
    grpc::ByteBuffer buffer;
    int64_t to_version = 0;
    bool snapshot = false;
    bool ack_requested = false;
  };

  // Builds a push taking a stream from version `from` (the version it
  // ACKed, or, when streaming, the last it was sent) to the current
  // version. `force_snapshot` sends the snapshot whatever the gap.
  BuiltPush BuildPush(int64_t from, const std::vector<int32_t>& filter, uint64_t nonce,
                      bool force_snapshot, bool reset, AckMark mark);
  // The same, unmarked; sets *to_version.
  grpc::ByteBuffer BuildPush(int64_t acked, const std::vector<int32_t>& filter, uint64_t nonce,
                             bool force_snapshot, bool reset, int64_t* to_version);

  // Stream bookkeeping (called by WatchStream). Register fails with
  // UNAVAILABLE once stopped, RESOURCE_EXHAUSTED over a stream limit.
  grpc::Status Register(WatchStream* stream, int role, const std::string& client_id)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Unregister(WatchStream* stream, int role) ABSL_LOCKS_EXCLUDED(mu_);
  // Records the final state of a client whose stream ended.
  void ClientDisconnected(ClientState state) ABSL_LOCKS_EXCLUDED(departed_mu_);

  // The version streams are brought to: the last published one.
  int64_t version() const { return version_.load(std::memory_order_acquire); }

  // Messages queued or being written, over all streams: at most three per
  // stream (a push, the SYNC marker, and the one in flight), whatever a
  // client does. Exposed as bucketmap_watch_pending_writes.
  int64_t pending_writes() const { return pending_writes_.load(std::memory_order_relaxed); }
  void CountPendingWrites(int64_t delta);

  // Test only: saves the changed client states now, as the flusher thread
  // does every `client_flush`.
  void TEST_Flush() { Flush(/*all=*/false); }

  // Number of open streams (for tests and metrics).
  size_t stream_count() const ABSL_LOCKS_EXCLUDED(mu_);

  // Bounds the warnings that clients cause (NACKs, refused states): one
  // line per client_id and 20 in all per 10 s.
  LogLimiter& client_log_limiter() { return client_log_limiter_; }

 private:
  void OnPublish(const MappingManager::Published& published);
  void Preload();
  // Appends frames (consecutive versions) and drops what retention
  // no longer keeps. An empty `added` or a gap clears the ring.
  void AddFrames(std::vector<std::shared_ptr<const VersionFrame>> added, bool contiguous)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  size_t RingCapacity() const;
  // Appends the streams, each Ref()ed, to *streams.
  void RefStreams(std::vector<WatchStream*>* streams) ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<WatchStream*> RefStreams() ABSL_LOCKS_EXCLUDED(mu_);
  void TickLoop();
  // Pokes every stream of `streams`, sharing them out over the fan-out
  // workers and the calling thread (the ticker); returns once all are
  // poked. A stream is in one share only, and Poke serializes on the
  // stream's mutex, so each stream's pushes stay in order.
  void PokeAll(const std::vector<WatchStream*>& streams) ABSL_LOCKS_EXCLUDED(fanout_mu_);
  void FanoutLoop(size_t worker) ABSL_LOCKS_EXCLUDED(fanout_mu_);
  // Pokes share `shard` of `shards` of `streams`.
  static void PokeShard(const std::vector<WatchStream*>& streams, size_t shard, size_t shards);
  void FlushLoop();
  // Saves the states that changed (all of them with `all`).
  void Flush(bool all);

  MappingManager* const manager_;
  Store* const store_;
  Metrics* const metrics_;
  const Clock* const clock_;
  LoadAggregator* const load_;
  const WatchOptions options_;

  mutable absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<WatchStream*> streams_ ABSL_GUARDED_BY(mu_);
  // For max_streams_per_client: each stream's client_id, and the count.
  absl::flat_hash_map<WatchStream*, std::string> client_of_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int> streams_of_client_ ABSL_GUARDED_BY(mu_);
  std::map<int, int64_t> watchers_by_role_ ABSL_GUARDED_BY(mu_);
  // Frames of consecutive versions, oldest first, ending at last_.
  std::deque<std::shared_ptr<const VersionFrame>> frames_ ABSL_GUARDED_BY(mu_);
  size_t frame_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<const ServedSnapshot> last_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> version_{0};  // last_'s, readable without mu_
  std::atomic<int64_t> pending_writes_{0};
  // Push bodies (everything after the per-stream header) at last_'s
  // version, by (acked version or -1 for a forced snapshot, filter).
  struct PushBody {
    int64_t from_version = 0;  // 0: a snapshot
    int64_t to_version = 0;
    bool handoffs_open = false;  // the snapshot at to_version has some
    std::vector<grpc::Slice> slices;
    size_t size = 0;
  };
  std::shared_ptr<const PushBody> MakeBody(int64_t acked, const std::vector<int32_t>& filter,
                                           bool snapshot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t bodies_version_ ABSL_GUARDED_BY(mu_) = -1;
  std::map<std::tuple<int64_t, std::vector<int32_t>>, std::shared_ptr<const PushBody>> bodies_
      ABSL_GUARDED_BY(mu_);

  // Client states are pulled from the streams by the flusher; these are
  // the final states of streams that ended since the last flush.
  absl::Mutex departed_mu_;
  std::vector<ClientState> departed_ ABSL_GUARDED_BY(departed_mu_);

  LogLimiter client_log_limiter_{1, 20, absl::Seconds(10)};

  absl::Notification stopping_;
  absl::Mutex wake_mu_;
  bool wake_ ABSL_GUARDED_BY(wake_mu_) = false;
  std::thread ticker_;
  std::thread flusher_;

  // The fan-out workers (fanout_threads - 1 of them; worker i pokes share
  // i + 1). A round hands them `fanout_streams_`, split in
  // `fanout_shards_`; workers whose share is beyond it sit the round out.
  const size_t fanout_threads_;
  absl::Mutex fanout_mu_;
  uint64_t fanout_round_ ABSL_GUARDED_BY(fanout_mu_) = 0;
  const std::vector<WatchStream*>* fanout_streams_ ABSL_GUARDED_BY(fanout_mu_) = nullptr;
  size_t fanout_shards_ ABSL_GUARDED_BY(fanout_mu_) = 0;
  size_t fanout_pending_ ABSL_GUARDED_BY(fanout_mu_) = 0;  // workers still poking
  bool fanout_stop_ ABSL_GUARDED_BY(fanout_mu_) = false;
  std::vector<std::thread> fanout_workers_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_WATCH_WATCH_HUB_H_
