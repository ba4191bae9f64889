// WatchConnection: keeps a bucketmap::Client current over the
// MappingService.WatchMapping stream (docs/protocol.md).
//
// It connects to the client's addresses in turn, subscribes with the
// client's version and cluster_id (so a reconnect resumes with deltas) and
// ack_mode ACK_REQUESTED, applies every push, and writes the last-known-good
// cache file when the client has one. Only then does it ACK: at once the
// pushes the server marks ack_requested, the others lazily (the newest
// applied version, at the next heartbeat); against a server that predates
// ack modes (its first push is unmarked), every push. A push that cannot be
// applied is NACKed, the pushes already on their way are dropped, and the
// server answers with the snapshot. A broken stream is retried with
// exponential backoff and full jitter; the backoff resets once a stream has
// synced. With a cache file and no mapping yet, Start() first seeds the
// client from the file, so it can route while no server is reachable.
//
// A stream refused for authentication (UNAUTHENTICATED, PERMISSION_DENIED)
// or a limit (RESOURCE_EXHAUSTED) is logged with its message and retried
// with the same backoff: tokens and limits can change on the server.
//
// Thread safety: Start() and Stop() may be called from any thread; the
// connection runs on one thread of its own. The Client must outlive the
// WatchConnection.
//
// This is the only part of the client library that links gRPC (target
// bucketmap_client_watch), so the routing core stays buildable under
// ThreadSanitizer.
#ifndef BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_WATCH_H_
#define BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_WATCH_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "bucketmap/client.h"
#include "bucketmap/delivery_tracker.h"
#include "bucketmap/load_counter.h"

namespace grpc {
class ChannelCredentials;
class ClientContext;
}  // namespace grpc

namespace bucketmap {

// TLS towards the servers. The files are read at every connection attempt,
// so renewed certificates are picked up without a restart.
struct WatchTlsOptions {
  // Connect with TLS (verifying the server against root_ca_file, or the
  // system roots when it is empty).
  bool enabled = false;
  std::string root_ca_file;
  // For mTLS: this client's certificate chain and private key (PEM).
  std::string cert_file;
  std::string key_file;
};

struct WatchConnectionOptions {
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(10);
  // The largest message accepted: a snapshot of a million teams is ~10 MB.
  int max_message_size = 64 << 20;
  // The role's bucket filter (consumers and observers only).
  std::vector<int32_t> bucket_filter;
  // Write the cache file before ACKing each push (when the client has a
  // cache path). Producers need it for handoffs (SPEC §5).
  bool write_cache = true;
  // A producer's delivery tracker (not owned; must outlive the
  // connection). Each ACK then carries drained_version, and the last ACKed
  // push is ACKed again whenever drained_version advances, so the server's
  // switch barrier (SPEC §5) passes as soon as this producer's old events
  // are delivered (the server marks a producer's pushes while a handoff is
  // open, so the push that opens it is ACKed at once). Without a tracker, ACKs carry
  // drained_version 0: the producer never passes a barrier and handoffs
  // wait for their grace deadline.
  DeliveryTracker* delivery_tracker = nullptr;
  // The load this process counts (not owned; must outlive the
  // connection). A producer's or consumer's stream then sends one load
  // report per window (LoadCounter::NextReport), once the stream has
  // synced; a window that ends while no stream is synced is reported with
  // the next. Observers report nothing.
  LoadCounter* load_counter = nullptr;
  // The bearer token comes from ClientOptions::bearer_token.
  WatchTlsOptions tls;
};

// The gRPC channel credentials for `tls`: insecure when !tls.enabled.
// Reads the files now, with ReadPem() (bucketmap/read_file.h). NotFound
// naming the option for a file that cannot be read or is empty;
// InvalidArgument for a certificate without its key or the reverse.
// bucketctl uses it too, so both speak TLS the same way.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(
    const WatchTlsOptions& tls);

class WatchConnection {
 public:
  WatchConnection(Client* client, WatchConnectionOptions options = {});
  // Stops the connection.
  ~WatchConnection();
  WatchConnection(const WatchConnection&) = delete;
  WatchConnection& operator=(const WatchConnection&) = delete;

  // Seeds the client from its cache file if it has no mapping, then
  // starts connecting. Call once.
  void Start();
  // Ends the stream and joins the connection thread. Idempotent.
  void Stop();

  // True while a stream has synced and has not ended since.
  bool synced() const { return synced_.load(std::memory_order_acquire); }
  // Streams opened so far, including the current one.
  int64_t streams_opened() const { return streams_opened_.load(std::memory_order_relaxed); }
  // The address of the current or last stream.
  std::string address() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Run();
  // Runs one stream to its end; returns true if it synced.
  bool RunStream(const std::string& address);

  Client* const client_;
  const WatchConnectionOptions options_;
  std::thread thread_;
  absl::Notification stopping_;
  std::atomic<bool> synced_{false};
  std::atomic<int64_t> streams_opened_{0};
  mutable absl::Mutex mu_;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::string address_ ABSL_GUARDED_BY(mu_);
};

}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_WATCH_H_
