#include "server/watch/watch_stream.h"

#include <algorithm>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "codec/codec.h"
#include "domain/load.h"
#include "domain/validation.h"
#include "server/base/grpc_status.h"
#include "server/base/request_checks.h"
#include "server/watch/watch_hub.h"
#include "spdlog/spdlog.h"

namespace bucketmap {
namespace {

// NACK errors are kept up to this many bytes.
constexpr size_t kMaxNackErrorBytes = 1024;

// A push nonce's random start: below 2^53, so that clients that read
// uint64 as a double (JavaScript) echo it exactly.
uint64_t RandomNonce() {
  absl::BitGen gen;
  return absl::Uniform<uint64_t>(gen, 1, uint64_t{1} << 52);
}

}  // namespace

WatchStream::WatchStream(WatchHub* hub, grpc::CallbackServerContext* ctx)
    : hub_(hub),
      peer_(ctx->peer()),
      connection_key_(std::hash<std::string>{}(peer_)),
      opened_(hub->clock().Now()),
      first_nonce_(RandomNonce()) {
  StartRead(&read_buffer_);
}

void WatchStream::Unref() {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

void WatchStream::Poke() {
  std::optional<grpc::ByteBuffer> push;
  {
    absl::MutexLock lock(&mu_);
    push = MaybePushLocked();
  }
  if (push.has_value()) Send(*std::move(push), WriteKind::kPush);
}

void WatchStream::Tick(absl::Time now) {
  bool timed_out = false;
  bool heartbeat = false;
  {
    absl::MutexLock lock(&mu_);
    if (!subscribed_ || finished_) return;
    const bool waiting = streaming_
                             ? ack_due_ && now - ack_due_since_ > hub_->options().ack_timeout
                             : push_unacked_ && now - push_sent_ > hub_->options().ack_timeout;
    if (waiting) {
      timed_out = true;
    } else if (now - last_heartbeat_ >= hub_->options().heartbeat) {
      last_heartbeat_ = now;
      heartbeat = true;
    }
  }
  if (timed_out) {
    hub_->metrics().RecordWatchEvent("ack_timeout");
    Close(grpc::Status(
        grpc::StatusCode::UNAVAILABLE,
        absl::StrCat("push not ACKed within ", absl::FormatDuration(hub_->options().ack_timeout),
                     "; reconnect and resume")));
  } else if (heartbeat) {
    v1::WatchResponse response;
    response.mutable_heartbeat()->set_version(hub_->version());
    Send(Buffer(response.SerializeAsString()), WriteKind::kHeartbeat);
  }
}

void WatchStream::Close(const grpc::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
  }
  hub_->metrics().RecordRpc("bucketmap.v1.MappingService/WatchMapping", status.error_code(),
                            absl::ToDoubleSeconds(hub_->clock().Now() - opened_));
  Finish(status);
}

void WatchStream::OnReadDone(bool ok) {
  if (!ok) {
    // The client half-closed or the call broke.
    Close(grpc::Status::OK);
    return;
  }
  if (read_buffer_.Length() > hub_->options().max_request_bytes) {
    Close(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                       absl::StrCat("request: ", read_buffer_.Length(), " bytes; at most ",
                                    hub_->options().max_request_bytes, " on a watch stream")));
    return;
  }
  v1::WatchRequest request;
  if (!ParseRequestBody(read_buffer_, &request)) {
    Close(UnparseableRequest());
    return;
  }
  grpc::Status status = ToGrpcStatus(CheckRequestStrings(request));
  if (status.ok()) status = Handle(request);
  if (!status.ok()) {
    Close(status);
    return;
  }
  {
    // No new read once the stream is finishing: gRPC would hold the
    // call open for it.
    absl::MutexLock lock(&mu_);
    if (finished_) return;
  }
  StartRead(&read_buffer_);
}

void WatchStream::OnWriteDone(bool ok) {
  bool next = false;
  bool push_done = false;
  {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    hub_->CountPendingWrites(-1);
    if (writing_kind_ == WriteKind::kPush) {
      push_in_path_ = false;
      push_done = true;
    }
    if (!ok || finished_) {
      hub_->CountPendingWrites(-static_cast<int64_t>(queue_.size()));
      queue_.clear();
      return;
    }
    if (!queue_.empty()) {
      write_buffer_ = std::move(queue_.front().first);
      writing_kind_ = queue_.front().second;
      queue_.erase(queue_.begin());
      writing_ = true;
      next = true;
    }
  }
  if (next) StartWrite(&write_buffer_);
  // A push held back while the last one was still being written (see
  // MaybePushLocked) may be due now.
  if (push_done) Poke();
}

void WatchStream::OnDone() {
  {
    absl::MutexLock lock(&mu_);
    finished_ = true;
  }
  if (subscribed_) {
    hub_->Unregister(this, client_role_);
    ClientState last;
    {
      absl::MutexLock lock(&mu_);
      client_.connected = false;
      last = client_;
    }
    hub_->ClientDisconnected(std::move(last));
  }
  Unref();
}

grpc::Status WatchStream::Handle(const v1::WatchRequest& request) {
  switch (request.kind_case()) {
    case v1::WatchRequest::kSubscribe:
      return Subscribe(request.subscribe());
    case v1::WatchRequest::kAck:
      return Ack(request.ack());
    case v1::WatchRequest::kNack:
      return Nack(request.nack());
    case v1::WatchRequest::kLoad:
      return Load(request.load());
    default:
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "kind: set subscribe, ack, nack or load");
  }
}

grpc::Status WatchStream::Subscribe(const v1::WatchRequest::Subscribe& sub) {
  if (subscribed_) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "subscribe: this stream is already subscribed");
  }
  if (sub.client_id().empty() || sub.client_id().size() > 128) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "subscribe.client_id: required, at most 128 bytes");
  }
  if (sub.role() == v1::CLIENT_ROLE_UNSPECIFIED || !v1::ClientRole_IsValid(sub.role())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "subscribe.role: PRODUCER, CONSUMER or OBSERVER");
  }
  if (sub.known_version() < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "subscribe.known_version: must not be negative");
  }
  if (!v1::AckMode_IsValid(sub.ack_mode())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "subscribe.ack_mode: ACK_EVERY_PUSH or ACK_REQUESTED");
  }
  if (sub.role() == v1::PRODUCER && sub.bucket_filter_size() > 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "subscribe.bucket_filter: producers route every team and cannot filter");
  }
  std::vector<int32_t> filter(sub.bucket_filter().begin(), sub.bucket_filter().end());
  for (int32_t id : filter) {
    if (id < 1) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "subscribe.bucket_filter: bucket ids are at least 1");
    }
  }
  std::sort(filter.begin(), filter.end());
  filter.erase(std::unique(filter.begin(), filter.end()), filter.end());

  std::shared_ptr<const ServedSnapshot> current = hub_->manager().Current();
  if (sub.known_version() > current->version() &&
      (sub.cluster_id().empty() || sub.cluster_id() == current->snapshot().cluster_id())) {
    // The client has seen a newer version than this replica serves; a
    // replica never serves older, so it must catch up first. (A client
    // without a cluster id is taken to be of this cluster, as below.)
    absl::StatusOr<std::shared_ptr<const ServedSnapshot>> caught_up =
        hub_->manager().CatchUp(sub.known_version());
    if (!caught_up.ok()) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, std::string(caught_up.status().message()));
    }
    current = *caught_up;
  }
  const bool other_cluster =
      !sub.cluster_id().empty() && sub.cluster_id() != current->snapshot().cluster_id();

  {
    absl::MutexLock lock(&mu_);
    filter_ = std::move(filter);
    client_.client_id = sub.client_id();
    client_.role = sub.role();
    client_.peer = peer_;
    client_.connected = true;
    client_.connected_at = hub_->clock().Now();
    client_.applied_version = other_cluster ? 0 : sub.known_version();
    acked_ = other_cluster ? 0 : sub.known_version();
    pushed_to_ = acked_;
    streaming_ = sub.ack_mode() == v1::ACK_REQUESTED;
    need_snapshot_ = acked_ == 0 || other_cluster;
    reset_ = other_cluster;
    client_.replica = hub_->options().replica;
    last_heartbeat_ = hub_->clock().Now();
    subscribed_ = true;
    state_dirty_ = true;
  }
  client_role_ = sub.role();
  if (grpc::Status registered = hub_->Register(this, client_role_, sub.client_id());
      !registered.ok()) {
    absl::MutexLock lock(&mu_);
    subscribed_ = false;  // never registered: OnDone has nothing to undo
    return registered;
  }
  // Catch-up: the snapshot or the deltas since known_version, then SYNC.
  Poke();
  v1::WatchResponse sync;
  sync.mutable_sync()->set_version(current->version());
  Send(Buffer(sync.SerializeAsString()), WriteKind::kSync);
  return grpc::Status::OK;
}

grpc::Status WatchStream::Ack(const v1::WatchRequest::Ack& ack) {
  if (!subscribed_) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "ack: subscribe first");
  }
  {
    absl::MutexLock lock(&mu_);
    if (streaming_) return StreamingAck(ack);
    if (ack.nonce() != nonce_) return grpc::Status::OK;  // stale
    // What a client claims is checked against what it was sent: it
    // cannot have applied, nor drained, a version past the last push.
    if (!push_unacked_) {
      // A producer ACKs its last push again when only its drained_version
      // advanced (its old events got their delivery reports), so the
      // switch barrier need not wait for the next push.
      if (ack.drained_version() > acked_) {
        return grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            absl::StrCat("ack.drained_version: ", ack.drained_version(), " is past version ",
                         acked_, ", the last this stream applied"));
      }
      if (ack.drained_version() > client_.drained_version) {
        client_.drained_version = ack.drained_version();
        client_.last_ack = hub_->clock().Now();
        state_dirty_ = true;
      }
      return grpc::Status::OK;
    }
    if (ack.applied_version() < acked_ || ack.applied_version() > pushed_to_) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("ack.applied_version: ", ack.applied_version(),
                                       " is not a version this stream was sent (it was at ", acked_,
                                       ", and the push took it to ", pushed_to_, ")"));
    }
    if (ack.drained_version() > ack.applied_version()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("ack.drained_version: ", ack.drained_version(),
                                       " is past applied_version ", ack.applied_version()));
    }
    push_unacked_ = false;
    acked_ = ack.applied_version();
    client_.applied_version = ack.applied_version();
    client_.drained_version = std::max(client_.drained_version, ack.drained_version());
    client_.last_ack = hub_->clock().Now();
    state_dirty_ = true;
  }
  Poke();
  return grpc::Status::OK;
}

grpc::Status WatchStream::StreamingAck(const v1::WatchRequest::Ack& ack) {
  // The nonce of a push this stream sent (0 before the first: a producer
  // reporting drained_version after a resume that needed no push); ACKs
  // of nonces never sent are ignored, as on ACK_EVERY_PUSH streams.
  const bool sent =
      ack.nonce() == 0 ? nonce_ == 0 : ack.nonce() >= first_nonce_ && ack.nonce() <= nonce_;
  if (!sent) return grpc::Status::OK;
  // What a client claims is checked against what it was sent: it cannot
  // have applied, nor drained, a version past the last push written to it.
  if (ack.applied_version() > pushed_to_) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("ack.applied_version: ", ack.applied_version(),
                                     " is not a version this stream was sent (it was sent up to ",
                                     pushed_to_, ")"));
  }
  if (ack.drained_version() > ack.applied_version()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("ack.drained_version: ", ack.drained_version(),
                                     " is past applied_version ", ack.applied_version()));
  }
  const absl::Time now = hub_->clock().Now();
  // An ACK covers every push up to its version; an older one (a late
  // repeat) may still carry a newer drained_version.
  const bool progressed = ack.applied_version() > acked_;
  if (progressed) {
    acked_ = ack.applied_version();
    client_.applied_version = acked_;
    behind_since_ = now;  // what is still unACKed counts from here
  }
  client_.drained_version = std::max(client_.drained_version, ack.drained_version());
  client_.last_ack = now;
  state_dirty_ = true;
  if (ack_due_) {
    if (acked_ >= ack_due_version_) {
      ack_due_ = false;
    } else if (progressed) {
      ack_due_since_ = now;
    }
  }
  return grpc::Status::OK;
}

grpc::Status WatchStream::Nack(const v1::WatchRequest::Nack& nack) {
  if (!subscribed_) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "nack: subscribe first");
  }
  std::string client_id;  // logged after the lock is released
  {
    absl::MutexLock lock(&mu_);
    if (streaming_) {
      // A push sent since the last snapshot; one snapshot answers them all.
      if (nack.nonce() < std::max(nack_floor_, first_nonce_) || nack.nonce() > nonce_) {
        return grpc::Status::OK;  // stale
      }
      nack_floor_ = nonce_ + 1;
      if (ack_due_) ack_due_since_ = hub_->clock().Now();
    } else {
      if (!push_unacked_ || nack.nonce() != nonce_) return grpc::Status::OK;  // stale
      push_unacked_ = false;
    }
    need_snapshot_ = true;
    client_.nacks++;
    client_.last_nack = hub_->clock().Now();
    // Cut at a character boundary: the error is valid UTF-8 (checked on
    // arrival) and must stay so, or PostgreSQL refuses the whole batch
    // of client states it is saved with.
    client_.last_nack_error = std::string(TruncateUtf8(nack.error(), kMaxNackErrorBytes));
    state_dirty_ = true;
    client_id = client_.client_id;
  }
  hub_->metrics().RecordWatchEvent("nack");
  int64_t suppressed = 0;
  if (hub_->client_log_limiter().Allow(client_id, hub_->clock().Now(), &suppressed)) {
    spdlog::warn("watch client {} NACKed push {}: {}{}", QuoteUntrusted(client_id), nack.nonce(),
                 QuoteUntrusted(nack.error()),
                 suppressed > 0 ? fmt::format(" ({} similar lines suppressed)", suppressed) : "");
  }
  Poke();
  return grpc::Status::OK;
}

grpc::Status WatchStream::Load(const v1::WatchRequest::LoadReport& load) {
  if (!subscribed_) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "load: subscribe first");
  }
  if (client_role_ != v1::PRODUCER && client_role_ != v1::CONSUMER) {
    hub_->metrics().RecordLoadReport("invalid");
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "load: only producers and consumers report load");
  }
  const LoadReport report = FromProto(load);
  if (absl::Status valid = ValidateLoadReport(
          report, client_role_ == v1::PRODUCER ? LoadReporter::kProducer : LoadReporter::kConsumer);
      !valid.ok()) {
    hub_->metrics().RecordLoadReport("invalid");
    return ToGrpcStatus(valid);
  }
  const absl::Time now = hub_->clock().Now();
  // One report per window: half a window of slack for the jitter of the
  // client's timer and the network. A client sending more often is not
  // ended (its counts are lost to itself only), but cannot add more than
  // two windows of counts per window.
  if (now - last_load_ < absl::Milliseconds(report.window_ms) / 2) {
    hub_->metrics().RecordLoadReport("too_frequent");
    return grpc::Status::OK;
  }
  last_load_ = now;
  if (hub_->load() != nullptr) hub_->load()->Add(report);
  hub_->metrics().RecordLoadReport("accepted");
  return grpc::Status::OK;
}

std::optional<grpc::ByteBuffer> WatchStream::MaybePushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
  if (!subscribed_ || finished_ || push_in_path_ || (push_unacked_ && !streaming_)) {
    return std::nullopt;
  }
  // A streaming stream goes on from the last version it was sent, the
  // other kind from the last it ACKed (the same, once its push is ACKed).
  const int64_t from = streaming_ ? pushed_to_ : acked_;
  if (!need_snapshot_ && from >= hub_->version()) return std::nullopt;
  // Nonces start at a random value per stream, so a client must read a
  // push to ACK it.
  const uint64_t nonce = nonce_ == 0 ? first_nonce_ : nonce_ + 1;
  const absl::Time now = hub_->clock().Now();
  WatchHub::AckMark mark = WatchHub::AckMark::kNever;
  if (streaming_) {
    // The ACKs the server needs: of the catch-up and of snapshots (the
    // client is current, or recovered from a NACK), one when what it
    // knows of the client (ListClients) has been behind what it sent for
    // ack_interval, and a producer's while a handoff is open (the switch
    // barrier reads its drained_version). A push after a quiet spell is
    // not marked: clients ACK it lazily, off the fan-out's path.
    const bool behind_too_long =
        acked_ < pushed_to_ && now - behind_since_ >= hub_->options().ack_interval;
    if (nonce_ == 0 || need_snapshot_ || (!ack_due_ && behind_too_long)) {
      mark = WatchHub::AckMark::kAlways;
    } else if (client_role_ == v1::PRODUCER) {
      mark = WatchHub::AckMark::kIfHandoffsOpen;
    }
  }
  WatchHub::BuiltPush push = hub_->BuildPush(from, filter_, nonce, need_snapshot_, reset_, mark);
  if (acked_ >= pushed_to_) behind_since_ = now;  // the first push the client has not ACKed
  nonce_ = nonce;
  pushed_to_ = push.to_version;
  push_unacked_ = true;
  push_in_path_ = true;
  need_snapshot_ = false;
  reset_ = false;
  push_sent_ = now;
  if (streaming_) {
    if (push.snapshot) nack_floor_ = nonce;
    if (push.ack_requested) {
      if (!ack_due_) ack_due_since_ = now;
      ack_due_ = true;
      ack_due_version_ = push.to_version;
    }
  }
  return std::move(push.buffer);
}

void WatchStream::Send(grpc::ByteBuffer buffer, WriteKind kind) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    if (writing_) {
      if (kind == WriteKind::kHeartbeat) return;
      queue_.emplace_back(std::move(buffer), kind);
      hub_->CountPendingWrites(1);
      return;
    }
    writing_ = true;
    writing_kind_ = kind;
    write_buffer_ = std::move(buffer);
    hub_->CountPendingWrites(1);
  }
  StartWrite(&write_buffer_);
}

grpc::ByteBuffer WatchStream::Buffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::optional<ClientState> WatchStream::TakeState(bool all) {
  absl::MutexLock lock(&mu_);
  if (!subscribed_ || finished_ || (!state_dirty_ && !all)) return std::nullopt;
  state_dirty_ = false;
  return client_;
}

}  // namespace bucketmap
