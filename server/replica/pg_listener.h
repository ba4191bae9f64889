// PgListener: LISTENs on a PostgreSQL channel on a dedicated connection and
// reports what arrives; the way replicas learn of versions committed by
// other replicas (SPEC §7, "Scaling out").
//
// PgStore::Write announces each committed version with pg_notify on
// kVersionChannel (server/pg_store.h); PostgreSQL delivers it at commit,
// in commit order. The listener thread waits on the connection's socket
// (and on a wake-up fd for Stop), and after each batch of notifications
// calls on_version(v, cluster_id) with the highest version of the batch
// (and the cluster id it came with; "" if the payload had none), so a burst
// of writes costs one catch-up. When the connection breaks (PostgreSQL
// restarts, the network fails) it reconnects every `reconnect_delay` and
// calls on_connected() after each (re)connection: notifications sent
// meanwhile are lost, so the owner catches up by polling once.
//
// Metrics (when a registry is given): bucketmap_version_listener_connected
// (1 while LISTENing) and bucketmap_version_notifications_total.
//
// Callbacks run on the listener thread, one at a time; they may block
// (a catch-up from the store): notifications wait in the socket meanwhile.
//
// Thread safety: Start() and Stop() from one owner thread; connected()
// from any thread.
#ifndef BUCKETMAP_SERVER_REPLICA_PG_LISTENER_H_
#define BUCKETMAP_SERVER_REPLICA_PG_LISTENER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/time/time.h"
#include "server/metrics/metrics.h"

namespace bucketmap {

struct PgListenerOptions {
  // libpq conninfo (connect_timeout and keepalives are added when absent).
  std::string url;
  std::string channel;
  absl::Duration reconnect_delay = absl::Milliseconds(500);
};

class PgListener {
 public:
  using VersionFn = std::function<void(int64_t version, const std::string& cluster_id)>;
  using ConnectedFn = std::function<void()>;

  // `metrics` may be null; it must outlive the listener.
  PgListener(PgListenerOptions options, VersionFn on_version, ConnectedFn on_connected,
             Metrics* metrics = nullptr);
  // Stop()s.
  ~PgListener();
  PgListener(const PgListener&) = delete;
  PgListener& operator=(const PgListener&) = delete;

  // Starts the listener thread. Call once.
  void Start();
  // Wakes and joins the thread; closes the connection. Idempotent.
  void Stop();

  // True while LISTENing on a live connection.
  bool connected() const { return connected_.load(std::memory_order_acquire); }

 private:
  void Loop();
  // Listens on one connection until it breaks or Stop(); returns false on
  // Stop().
  bool ListenOnce();
  void SetConnected(bool connected);
  // Waits until `fd` is readable, the wake fd fires or `timeout` passes;
  // returns false when stopping.
  bool Wait(int fd, absl::Duration timeout);

  const PgListenerOptions options_;
  const VersionFn on_version_;
  const ConnectedFn on_connected_;
  int wake_fd_ = -1;  // an eventfd written by Stop()
  std::atomic<bool> stop_{false};
  std::atomic<bool> connected_{false};
  Metrics* const metrics_;
  std::thread thread_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_REPLICA_PG_LISTENER_H_
