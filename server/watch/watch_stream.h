// WatchStream: one WatchMapping call, as the hub serves it (see
// watch_hub.h for the protocol's server side). The stream keeps only its
// ACKed and pushed versions, the last nonce, the client's state and its
// write path (one write in flight, at most a push and the SYNC marker
// queued); pushes are built by the hub from shared frames. It serves
// either ACK mode (Subscribe.ack_mode): ACK_EVERY_PUSH holds the next push
// until the last one is ACKed; ACK_REQUESTED ("streaming") sends it once
// the last one is written, and waits only for the ACKs it asked for.
//
// Ownership: gRPC holds one reference until OnDone; the hub takes more
// (Ref/Unref) while it pokes, ticks or flushes the stream, and the last
// Unref deletes it. Thread safety: the read path (OnReadDone and what it
// calls) runs on one thread at a time; everything else takes mu_. No lock
// is held while calling into gRPC (StartWrite, Finish).
#ifndef BUCKETMAP_SERVER_WATCH_WATCH_STREAM_H_
#define BUCKETMAP_SERVER_WATCH_WATCH_STREAM_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "bucketmap/v1/mapping.pb.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "server/store/store.h"

namespace bucketmap {

class WatchHub;

// What a stream's write path holds (see WatchStream::MaybePushLocked).
enum class WriteKind { kPush, kSync, kHeartbeat };

class WatchStream final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  friend class WatchHub;  // for TakeState
  WatchStream(WatchHub* hub, grpc::CallbackServerContext* ctx);

  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref();

  // Equal for the streams of one connection (a hash of the peer address),
  // so that the hub can push a connection's streams from one thread.
  size_t connection_key() const { return connection_key_; }

  // A new version is available: push it if no push is un-ACKed.
  void Poke();

  // Heartbeats and the ACK timeout.
  void Tick(absl::Time now);

  // Ends the stream with `status` (once).
  void Close(const grpc::Status& status);

  void OnReadDone(bool ok) override;

  void OnWriteDone(bool ok) override;

  void OnCancel() override { Close(grpc::Status::CANCELLED); }

  void OnDone() override;

 private:
  grpc::Status Handle(const v1::WatchRequest& request);

  grpc::Status Subscribe(const v1::WatchRequest::Subscribe& sub);

  grpc::Status Ack(const v1::WatchRequest::Ack& ack);

  grpc::Status Nack(const v1::WatchRequest::Nack& nack);

  // A load report (SPEC §9): validated (INVALID_ARGUMENT naming the field
  // ends the stream), then accepted at most once per half of its window
  // (by the server's clock; an earlier one is dropped and counted as
  // too_frequent, and the stream goes on), and handed to the hub's
  // LoadAggregator.
  grpc::Status Load(const v1::WatchRequest::LoadReport& load);

  // Ack() of an ACK_REQUESTED stream.
  grpc::Status StreamingAck(const v1::WatchRequest::Ack& ack) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Returns the next push, if one is due. A NACK or a first subscription
  // forces the snapshot even when the stream is at the current version.
  //
  // A push is built only once the previous one has left the write path
  // (written, not merely ACKed): a client that ACKs pushes it has not read
  // would otherwise queue one snapshot per ACK. So a stream holds at most
  // one push and the SYNC marker in its write path, whatever it sends.
  // That is also all the flow control a streaming stream has: it is sent
  // the versions since the last push as soon as that push is written.
  std::optional<grpc::ByteBuffer> MaybePushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Writes `buffer`, or queues it behind the write in flight. A heartbeat
  // is dropped rather than queued behind a write the client has not taken.
  void Send(grpc::ByteBuffer buffer, WriteKind kind);

  static grpc::ByteBuffer Buffer(const std::string& bytes);

  // The client's state for the flusher: when it changed since the last
  // call, or always with `all` (lease renewal).
  std::optional<ClientState> TakeState(bool all);

  WatchHub* const hub_;
  const std::string peer_;
  const size_t connection_key_;
  const absl::Time opened_;
  std::atomic<int> refs_{1};  // gRPC's, released in OnDone
  grpc::ByteBuffer read_buffer_;
  grpc::ByteBuffer write_buffer_;  // owned by gRPC while writing_

  // Written once by Subscribe on the (single) read path before Register;
  // read on that path, in OnDone, and under mu_.
  bool subscribed_ = false;
  int client_role_ = 0;
  // The read path only: when the last load report was accepted.
  absl::Time last_load_ = absl::InfinitePast();

  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  WriteKind writing_kind_ ABSL_GUARDED_BY(mu_) = WriteKind::kSync;
  // A push is being written or waits in queue_ (see MaybePushLocked).
  bool push_in_path_ ABSL_GUARDED_BY(mu_) = false;
  // At most: the SYNC marker and one push (heartbeats are never queued).
  // A vector, not a deque: an idle stream should allocate nothing here.
  std::vector<std::pair<grpc::ByteBuffer, WriteKind>> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<int32_t> filter_ ABSL_GUARDED_BY(mu_);
  ClientState client_ ABSL_GUARDED_BY(mu_);
  bool state_dirty_ ABSL_GUARDED_BY(mu_) = false;
  int64_t acked_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t pushed_to_ ABSL_GUARDED_BY(mu_) = 0;
  // The last push's nonce; 0 before the first push (an ACK of "push 0"
  // reports drained_version after a resume that needed no push).
  uint64_t nonce_ ABSL_GUARDED_BY(mu_) = 0;
  // Nonces start here (random per stream), so a client must read a push
  // to ACK it.
  const uint64_t first_nonce_;
  // ACK_EVERY_PUSH: the last push is not ACKed yet.
  bool push_unacked_ ABSL_GUARDED_BY(mu_) = false;
  // ACK_REQUESTED (Subscribe.ack_mode): pushes stream; pushed_to_ is where
  // the next one starts.
  bool streaming_ ABSL_GUARDED_BY(mu_) = false;
  // Streaming: an ACK asked for (Push.ack_requested) and not yet had. It is
  // had once acked_ reaches ack_due_version_; ack_due_since_ is when the
  // wait began, or when the client's ACKs or NACKs last made progress.
  bool ack_due_ ABSL_GUARDED_BY(mu_) = false;
  int64_t ack_due_version_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time ack_due_since_ ABSL_GUARDED_BY(mu_);
  // Streaming, while acked_ < pushed_to_: since when what the server
  // knows of the client has been behind what it sent (the first push
  // after the client was fully ACKed, or its last ACK that made progress).
  absl::Time behind_since_ ABSL_GUARDED_BY(mu_);
  // Streaming: NACKs of pushes older than this nonce are stale (the
  // snapshot answering an earlier NACK replaces them), so a burst of
  // failed pushes costs one snapshot.
  uint64_t nack_floor_ ABSL_GUARDED_BY(mu_) = 0;
  bool need_snapshot_ ABSL_GUARDED_BY(mu_) = false;
  bool reset_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time push_sent_ ABSL_GUARDED_BY(mu_);
  absl::Time last_heartbeat_ ABSL_GUARDED_BY(mu_);
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_WATCH_WATCH_STREAM_H_
