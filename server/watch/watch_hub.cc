#include "server/watch/watch_hub.h"

#include <algorithm>
#include <atomic>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bucketmap/v1/mapping.pb.h"
#include "codec/codec.h"
#include "domain/validation.h"
#include "server/base/grpc_status.h"
#include "server/base/request_checks.h"
#include "server/watch/shared_slice.h"
#include "spdlog/spdlog.h"

namespace bucketmap {
namespace {

// Wire tags of the messages a push is assembled from (mapping.proto):
// WatchResponse.push = 1; Push.from_version = 1, to_version = 2, nonce = 3,
// snapshot = 4, deltas = 5, reset = 6.
constexpr uint8_t kResponsePushTag = (1 << 3) | 2;
constexpr uint8_t kPushFromTag = (1 << 3) | 0;
constexpr uint8_t kPushToTag = (2 << 3) | 0;
constexpr uint8_t kPushNonceTag = (3 << 3) | 0;
constexpr uint8_t kPushSnapshotTag = (4 << 3) | 2;
constexpr uint8_t kPushDeltasTag = (5 << 3) | 2;
constexpr uint8_t kPushResetTag = (6 << 3) | 0;

// What a stream's write path holds (see WatchStream::MaybePushLocked).
enum class WriteKind { kPush, kSync, kHeartbeat };

// NACK errors are kept up to this many bytes.
constexpr size_t kMaxNackErrorBytes = 1024;

// A push nonce's random start: below 2^53, so that clients that read
// uint64 as a double (JavaScript) echo it exactly.
uint64_t RandomNonce() {
  absl::BitGen gen;
  return absl::Uniform<uint64_t>(gen, 1, uint64_t{1} << 52);
}

void AppendVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

// Tag and length of a length-delimited field of `size` bytes.
std::string FieldPrefix(uint8_t tag, size_t size) {
  std::string out(1, static_cast<char>(tag));
  AppendVarint(&out, size);
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------
// VersionFrame

namespace {

std::string DeltaField(const v1::MappingDelta& delta) {
  const std::string body = delta.SerializeAsString();
  return FieldPrefix(kPushDeltasTag, body.size()) + body;
}

// A packed target is kept by a filtered stream: pool rows always (their
// placement may land in a filtered bucket), pins only to filtered buckets.
bool KeepPacked(int32_t target, const std::vector<int32_t>& filter) {
  return target < 0 || (target > 0 && std::binary_search(filter.begin(), filter.end(), target));
}

}  // namespace

VersionFrame::VersionFrame(int64_t version, absl::Time time, const v1::MappingDelta& delta,
                           std::optional<PriorTargets> prior)
    : version_(version),
      time_(time),
      field_(DeltaField(delta)),
      prefix_size_(FieldPrefix(kPushDeltasTag, delta.ByteSizeLong()).size()),
      prior_(std::move(prior)) {}

size_t VersionFrame::bytes() const {
  size_t n = sizeof(*this) + field_.capacity();
  if (prior_.has_value()) n += 4 * (prior_->set.capacity() + prior_->unset.capacity());
  return n;
}

std::string VersionFrame::Filtered(const std::vector<int32_t>& filter) const {
  v1::MappingDelta delta;
  delta.ParseFromArray(field_.data() + prefix_size_, field_.size() - prefix_size_);
  v1::MappingDelta out;
  out.set_from_version(delta.from_version());
  out.set_to_version(delta.to_version());
  *out.mutable_buckets() = delta.buckets();
  *out.mutable_pools() = delta.pools();
  std::vector<int64_t> unset;
  const v1::Assignments& set = delta.set();
  for (int i = 0; i < set.team_ids_size(); ++i) {
    if (KeepPacked(set.targets(i), filter)) {
      out.mutable_set()->add_team_ids(set.team_ids(i));
      out.mutable_set()->add_targets(set.targets(i));
    } else if (KeepPacked(prior_->set[i], filter)) {
      unset.push_back(set.team_ids(i));  // the team leaves this stream's view
    }
  }
  for (int i = 0; i < delta.unset_team_ids_size(); ++i) {
    if (KeepPacked(prior_->unset[i], filter)) unset.push_back(delta.unset_team_ids(i));
  }
  std::sort(unset.begin(), unset.end());
  out.mutable_unset_team_ids()->Add(unset.begin(), unset.end());
  return DeltaField(out);
}

const std::string* VersionFrame::Field(const std::vector<int32_t>& filter) const {
  if (filter.empty()) return &field_;
  if (!prior_.has_value()) return nullptr;
  absl::MutexLock lock(&mu_);
  auto it = filtered_.find(filter);
  if (it == filtered_.end()) it = filtered_.emplace(filter, Filtered(filter)).first;
  return &it->second;
}

// ---------------------------------------------------------------------------
// WatchStream: one WatchMapping call.

class WatchStream final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  friend class WatchHub;  // for TakeState
  WatchStream(WatchHub* hub, grpc::CallbackServerContext* ctx) : hub_(hub), peer_(ctx->peer()) {
    StartRead(&read_buffer_);
  }

  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // A new version is available: push it if no push is un-ACKed.
  void Poke() {
    std::optional<grpc::ByteBuffer> push;
    {
      absl::MutexLock lock(&mu_);
      push = MaybePushLocked();
    }
    if (push.has_value()) Send(*std::move(push), WriteKind::kPush);
  }

  // Heartbeats and the ACK timeout.
  void Tick(absl::Time now) {
    bool timed_out = false;
    bool heartbeat = false;
    {
      absl::MutexLock lock(&mu_);
      if (!subscribed_ || finished_) return;
      if (push_unacked_ && now - push_sent_ > hub_->options().ack_timeout) {
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

  // Ends the stream with `status` (once).
  void Close(const grpc::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      finished_ = true;
    }
    hub_->metrics().RecordRpc("bucketmap.v1.MappingService/WatchMapping", status.error_code(),
                              absl::ToDoubleSeconds(hub_->clock().Now() - opened_));
    Finish(status);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The client half-closed or the call broke.
      Close(grpc::Status::OK);
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

  void OnWriteDone(bool ok) override {
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

  void OnCancel() override { Close(grpc::Status::CANCELLED); }

  void OnDone() override {
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

 private:
  grpc::Status Handle(const v1::WatchRequest& request) {
    switch (request.kind_case()) {
      case v1::WatchRequest::kSubscribe:
        return Subscribe(request.subscribe());
      case v1::WatchRequest::kAck:
        return Ack(request.ack());
      case v1::WatchRequest::kNack:
        return Nack(request.nack());
      default:
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "kind: set subscribe, ack or nack");
    }
  }

  grpc::Status Subscribe(const v1::WatchRequest::Subscribe& sub) {
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
        return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                            std::string(caught_up.status().message()));
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

  grpc::Status Ack(const v1::WatchRequest::Ack& ack) {
    if (!subscribed_) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "ack: subscribe first");
    }
    {
      absl::MutexLock lock(&mu_);
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
                                         " is not a version this stream was sent (it was at ",
                                         acked_, ", and the push took it to ", pushed_to_, ")"));
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

  grpc::Status Nack(const v1::WatchRequest::Nack& nack) {
    if (!subscribed_) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "nack: subscribe first");
    }
    std::string client_id;  // logged after the lock is released
    {
      absl::MutexLock lock(&mu_);
      if (!push_unacked_ || nack.nonce() != nonce_) return grpc::Status::OK;  // stale
      push_unacked_ = false;
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

  // Returns the next push, if one is due. A NACK or a first subscription
  // forces the snapshot even when the stream is at the current version.
  //
  // A push is built only once the previous one has left the write path
  // (written, not merely ACKed): a client that ACKs pushes it has not read
  // would otherwise queue one snapshot per ACK. So a stream holds at most
  // one push and the SYNC marker in its write path, whatever it sends.
  std::optional<grpc::ByteBuffer> MaybePushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!subscribed_ || finished_ || push_unacked_ || push_in_path_) return std::nullopt;
    const int64_t current = hub_->version();
    if (!need_snapshot_ && acked_ >= current) return std::nullopt;
    int64_t to_version = 0;
    // Nonces start at a random value per stream, so a client must read a
    // push to ACK it.
    const uint64_t nonce = nonce_ == 0 ? first_nonce_ : nonce_ + 1;
    grpc::ByteBuffer push =
        hub_->BuildPush(acked_, filter_, nonce, need_snapshot_, reset_, &to_version);
    nonce_ = nonce;
    pushed_to_ = to_version;
    push_unacked_ = true;
    push_in_path_ = true;
    need_snapshot_ = false;
    reset_ = false;
    push_sent_ = hub_->clock().Now();
    return push;
  }

  // Writes `buffer`, or queues it behind the write in flight. A heartbeat
  // is dropped rather than queued behind a write the client has not taken.
  void Send(grpc::ByteBuffer buffer, WriteKind kind) {
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

  static grpc::ByteBuffer Buffer(const std::string& bytes) {
    grpc::Slice slice(bytes);
    return grpc::ByteBuffer(&slice, 1);
  }

  // The client's state for the flusher: when it changed since the last
  // call, or always with `all` (lease renewal).
  std::optional<ClientState> TakeState(bool all) {
    absl::MutexLock lock(&mu_);
    if (!subscribed_ || finished_ || (!state_dirty_ && !all)) return std::nullopt;
    state_dirty_ = false;
    return client_;
  }

  WatchHub* const hub_;
  const std::string peer_;
  const absl::Time opened_ = hub_->clock().Now();
  std::atomic<int> refs_{1};  // gRPC's, released in OnDone
  grpc::ByteBuffer read_buffer_;
  grpc::ByteBuffer write_buffer_;  // owned by gRPC while writing_

  // Written once by Subscribe on the (single) read path before Register;
  // read on that path, in OnDone, and under mu_.
  bool subscribed_ = false;
  int client_role_ = 0;

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
  const uint64_t first_nonce_ = RandomNonce();
  bool push_unacked_ ABSL_GUARDED_BY(mu_) = false;
  bool need_snapshot_ ABSL_GUARDED_BY(mu_) = false;
  bool reset_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time push_sent_ ABSL_GUARDED_BY(mu_);
  absl::Time last_heartbeat_ ABSL_GUARDED_BY(mu_);
};

// ---------------------------------------------------------------------------
// WatchHub

WatchHub::WatchHub(MappingManager* manager, Store* store, Metrics* metrics, WatchOptions options,
                   const Clock* clock)
    : manager_(manager),
      store_(store),
      metrics_(metrics),
      clock_(clock),
      options_(std::move(options)) {}

WatchHub::~WatchHub() { Stop(); }

void WatchHub::Start() {
  Preload();
  manager_->AddListener([this](const std::shared_ptr<const ServedSnapshot>& snapshot,
                               const Change* change) { OnPublish(snapshot, change); });
  ticker_ = std::thread([this] { TickLoop(); });
  flusher_ = std::thread([this] { FlushLoop(); });
}

size_t WatchHub::RingCapacity() const {
  return static_cast<size_t>(
      std::max(0, std::min(options_.resume_max_versions, options_.max_deltas_per_push)));
}

void WatchHub::Preload() {
  std::shared_ptr<const ServedSnapshot> current = manager_->Current();
  const int64_t to = current->version();
  const int64_t from = std::max<int64_t>(0, to - static_cast<int64_t>(RingCapacity()));
  absl::StatusOr<std::vector<v1::MappingDelta>> deltas = store_->LoadDeltas(from, to);
  std::vector<std::shared_ptr<const VersionFrame>> added;
  if (deltas.ok()) {
    // Without the previous targets these frames cannot be filtered:
    // filtered streams resuming into them take a snapshot.
    for (const v1::MappingDelta& delta : *deltas) {
      added.push_back(std::make_shared<const VersionFrame>(delta.to_version(), clock_->Now(), delta,
                                                           std::nullopt));
    }
  } else {
    spdlog::warn("watch: cannot preload deltas {}..{}: {}", from + 1, to,
                 deltas.status().ToString());
  }
  absl::MutexLock lock(&mu_);
  last_ = current;
  version_.store(current->version(), std::memory_order_release);
  AddFrames(std::move(added), deltas.ok());
}

void WatchHub::AddFrames(std::vector<std::shared_ptr<const VersionFrame>> added, bool contiguous) {
  if (added.empty() || !contiguous) {
    frames_.clear();  // a gap: streams behind it take the snapshot
    frame_bytes_ = 0;
  }
  for (auto& frame : added) {
    frame_bytes_ += frame->bytes();
    frames_.push_back(std::move(frame));
  }
  const absl::Time oldest = clock_->Now() - options_.resume_max_age;
  while (!frames_.empty() && (frames_.size() > RingCapacity() || frames_.front()->time() < oldest ||
                              frame_bytes_ > options_.resume_max_bytes)) {
    frame_bytes_ -= frames_.front()->bytes();
    frames_.pop_front();
  }
}

void WatchHub::OnPublish(const std::shared_ptr<const ServedSnapshot>& snapshot,
                         const Change* change) {
  std::shared_ptr<const ServedSnapshot> previous;
  {
    absl::MutexLock lock(&mu_);
    previous = last_;
  }
  std::vector<std::shared_ptr<const VersionFrame>> added;
  const int64_t version = snapshot->version();
  const bool same_cluster =
      previous != nullptr && previous->snapshot().cluster_id() == snapshot->snapshot().cluster_id();
  if (change != nullptr && same_cluster && previous->version() + 1 == version) {
    // Record each row's previous target, so that filtered encodings can
    // turn a team leaving the filtered buckets into an unset row.
    const Snapshot& before = previous->snapshot();
    PriorTargets prior;
    auto packed = [&before](int64_t team) -> int32_t {
      const auto& teams = before.team_ids();
      auto it = std::lower_bound(teams.begin(), teams.end(), team);
      if (it == teams.end() || *it != team) return 0;
      return before.targets()[it - teams.begin()];
    };
    prior.set.reserve(change->set.size());
    for (const auto& [team, target] : change->set) prior.set.push_back(packed(team));
    prior.unset.reserve(change->unset.size());
    for (int64_t team : change->unset) prior.unset.push_back(packed(team));
    v1::MappingDelta delta;
    ToProto(*change, version, &delta);
    added.push_back(
        std::make_shared<const VersionFrame>(version, clock_->Now(), delta, std::move(prior)));
  } else if (same_cluster && previous->version() < version &&
             version - previous->version() <= static_cast<int64_t>(RingCapacity())) {
    // Versions committed elsewhere: take their deltas from the change log.
    absl::StatusOr<std::vector<v1::MappingDelta>> deltas =
        store_->LoadDeltas(previous->version(), version);
    if (deltas.ok()) {
      for (const v1::MappingDelta& delta : *deltas) {
        added.push_back(std::make_shared<const VersionFrame>(delta.to_version(), clock_->Now(),
                                                             delta, std::nullopt));
      }
    }
  }
  {
    absl::MutexLock lock(&mu_);
    AddFrames(std::move(added), same_cluster);
    last_ = snapshot;
    version_.store(version, std::memory_order_release);
  }
  absl::MutexLock lock(&wake_mu_);
  wake_ = true;
}

std::shared_ptr<const WatchHub::PushBody> WatchHub::MakeBody(int64_t acked,
                                                             const std::vector<int32_t>& filter,
                                                             bool snapshot) {
  auto body = std::make_shared<PushBody>();
  const int64_t current = last_->version();
  body->to_version = current;
  if (!snapshot) {
    snapshot = !(acked > 0 && acked < current && current - acked <= options_.max_deltas_per_push &&
                 !frames_.empty() && frames_.front()->version() <= acked + 1 &&
                 frames_.back()->version() == current);
  }
  if (!snapshot) {
    body->from_version = acked;
    const size_t first = static_cast<size_t>(acked + 1 - frames_.front()->version());
    for (size_t i = first; i < frames_.size(); ++i) {
      const std::string* field = frames_[i]->Field(filter);
      if (field == nullptr) {  // unfilterable: fall back to the snapshot
        body->slices.clear();
        body->size = 0;
        snapshot = true;
        break;
      }
      body->slices.push_back(SharedSlice(*field, frames_[i]));
      body->size += field->size();
    }
  }
  if (snapshot) {
    body->from_version = 0;
    std::shared_ptr<const std::string> bytes;
    if (filter.empty()) {
      std::shared_ptr<const ServedSnapshot> served = last_;
      const std::string& serialized = served->Serialized();
      body->slices.emplace_back(FieldPrefix(kPushSnapshotTag, serialized.size()));
      body->slices.push_back(SharedSlice(serialized, served));
    } else {
      v1::MappingSnapshot proto;
      ToProto(last_->snapshot(), &proto);
      v1::Assignments kept;
      const v1::Assignments& columns = proto.assignments();
      for (int i = 0; i < columns.team_ids_size(); ++i) {
        const int32_t t = columns.targets(i);
        if (t < 0 || std::binary_search(filter.begin(), filter.end(), t)) {
          kept.add_team_ids(columns.team_ids(i));
          kept.add_targets(t);
        }
      }
      proto.mutable_assignments()->Swap(&kept);
      bytes = std::make_shared<const std::string>(proto.SerializeAsString());
      body->slices.emplace_back(FieldPrefix(kPushSnapshotTag, bytes->size()));
      body->slices.push_back(SharedSlice(*bytes, bytes));
    }
    body->size = body->slices[0].size() + body->slices[1].size();
  }
  return body;
}

grpc::ByteBuffer WatchHub::BuildPush(int64_t acked, const std::vector<int32_t>& filter,
                                     uint64_t nonce, bool force_snapshot, bool reset,
                                     int64_t* to_version) {
  std::shared_ptr<const PushBody> body;
  {
    // Streams at the same version with the same filter share one body:
    // after a write, that is nearly every stream.
    absl::MutexLock lock(&mu_);
    if (bodies_version_ != last_->version()) {
      bodies_.clear();
      bodies_version_ = last_->version();
    }
    auto key = std::make_tuple(force_snapshot ? int64_t{-1} : acked, filter);
    auto it = bodies_.find(key);
    if (it == bodies_.end()) {
      it = bodies_.emplace(std::move(key), MakeBody(acked, filter, force_snapshot)).first;
    }
    body = it->second;
  }
  *to_version = body->to_version;
  // The per-stream part: WatchResponse.push's tag and length, then the
  // Push fields that differ per stream.
  std::string header;
  header.push_back(static_cast<char>(kPushFromTag));
  AppendVarint(&header, body->from_version);
  header.push_back(static_cast<char>(kPushToTag));
  AppendVarint(&header, body->to_version);
  header.push_back(static_cast<char>(kPushNonceTag));
  AppendVarint(&header, nonce);
  if (reset) {
    header.push_back(static_cast<char>(kPushResetTag));
    header.push_back(1);
  }
  std::string framed = FieldPrefix(kResponsePushTag, header.size() + body->size) + header;
  std::vector<grpc::Slice> slices;
  slices.reserve(1 + body->slices.size());
  slices.emplace_back(framed);
  slices.insert(slices.end(), body->slices.begin(), body->slices.end());
  return grpc::ByteBuffer(slices.data(), slices.size());
}

grpc::Status WatchHub::Register(WatchStream* stream, int role, const std::string& client_id) {
  absl::MutexLock lock(&mu_);
  if (stopped_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down");
  if (options_.max_streams > 0 && streams_.size() >= static_cast<size_t>(options_.max_streams)) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("--max_watch_streams: this replica already serves ",
                                     streams_.size(), " watch streams; try another replica"));
  }
  int& of_client = streams_of_client_[client_id];
  if (options_.max_streams_per_client > 0 && of_client >= options_.max_streams_per_client) {
    return grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("--max_watch_streams_per_client: client_id ", QuoteUntrusted(client_id),
                     " already has ", of_client, " watch streams on this replica"));
  }
  ++of_client;
  client_of_[stream] = client_id;
  streams_.insert(stream);
  metrics_->SetWatchers(role, ++watchers_by_role_[role]);
  return grpc::Status::OK;
}

void WatchHub::Unregister(WatchStream* stream, int role) {
  absl::MutexLock lock(&mu_);
  if (streams_.erase(stream) > 0) metrics_->SetWatchers(role, --watchers_by_role_[role]);
  if (auto it = client_of_.find(stream); it != client_of_.end()) {
    auto count = streams_of_client_.find(it->second);
    if (--count->second == 0) streams_of_client_.erase(count);
    client_of_.erase(it);
  }
}

size_t WatchHub::stream_count() const {
  absl::MutexLock lock(&mu_);
  return streams_.size();
}

void WatchHub::CountPendingWrites(int64_t delta) {
  metrics_->SetWatchPendingWrites(pending_writes_.fetch_add(delta, std::memory_order_relaxed) +
                                  delta);
}

void WatchHub::ClientDisconnected(ClientState state) {
  absl::MutexLock lock(&departed_mu_);
  departed_.push_back(std::move(state));
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* WatchHub::NewStream(
    grpc::CallbackServerContext* ctx) {
  return new WatchStream(this, ctx);
}

std::vector<WatchStream*> WatchHub::RefStreams() {
  absl::MutexLock lock(&mu_);
  std::vector<WatchStream*> streams(streams_.begin(), streams_.end());
  for (WatchStream* s : streams) s->Ref();
  return streams;
}

void WatchHub::TickLoop() {
  constexpr absl::Duration kTick = absl::Milliseconds(100);
  // The loop waits in real time; what it decides (heartbeats, ACK
  // timeouts) is judged by the hub's clock.
  absl::Time next_tick = absl::Now() + kTick;
  while (!stopping_.HasBeenNotified()) {
    bool woke = false;
    {
      absl::MutexLock lock(&wake_mu_);
      wake_mu_.AwaitWithDeadline(absl::Condition(&wake_), next_tick);
      woke = wake_;
      wake_ = false;
    }
    if (stopping_.HasBeenNotified()) break;
    const absl::Time real_now = absl::Now();
    const bool tick = real_now >= next_tick;
    if (!woke && !tick) continue;
    const absl::Time now = clock_->Now();
    std::vector<WatchStream*> streams = RefStreams();
    for (WatchStream* s : streams) {
      if (woke) s->Poke();
      if (tick) s->Tick(now);
      s->Unref();
    }
    if (tick) next_tick = real_now + kTick;
  }
}

void WatchHub::FlushLoop() {
  absl::Time next_renewal = clock_->Now();
  while (!stopping_.WaitForNotificationWithTimeout(options_.client_flush)) {
    // Connected clients are renewed well before their lease runs out.
    const bool renew = clock_->Now() >= next_renewal;
    if (renew) next_renewal = clock_->Now() + options_.client_lease / 3;
    Flush(renew);
  }
  Flush(/*all=*/false);
}

void WatchHub::Flush(bool all) {
  std::vector<ClientState> batch;
  for (WatchStream* s : RefStreams()) {
    if (std::optional<ClientState> state = s->TakeState(all)) batch.push_back(*std::move(state));
    s->Unref();
  }
  {
    absl::MutexLock lock(&departed_mu_);
    for (ClientState& state : departed_) batch.push_back(std::move(state));
    departed_.clear();
  }
  if (batch.empty()) return;
  const absl::Time lease_until = clock_->Now() + options_.client_lease;
  absl::Status s = store_->SaveClients(batch, lease_until);
  if (s.ok()) return;
  std::vector<ClientState> retry;
  if (s.code() == absl::StatusCode::kUnavailable) {
    spdlog::warn("watch: cannot record {} client states: {}", batch.size(), s.ToString());
    retry = std::move(batch);
  } else {
    // Not the database being away: some state in the batch is refused.
    // One client's state must never keep every other client unrecorded
    // (the handoff barrier reads producers from the same table), so save
    // them one by one and drop the ones refused.
    for (ClientState& state : batch) {
      absl::Status one = store_->SaveClients({state}, lease_until);
      if (one.ok()) continue;
      if (one.code() == absl::StatusCode::kUnavailable) {
        retry.push_back(std::move(state));
        continue;
      }
      metrics_->RecordWatchEvent("client_state_refused");
      int64_t suppressed = 0;
      if (client_log_limiter_.Allow(state.client_id, clock_->Now(), &suppressed)) {
        spdlog::warn(
            "watch: the state of client {} is refused by the store and dropped: {}{}",
            QuoteUntrusted(state.client_id), QuoteUntrusted(std::string(one.message())),
            suppressed > 0 ? fmt::format(" ({} similar lines suppressed)", suppressed) : "");
      }
    }
  }
  // Departed clients are kept for the next attempt (connected ones are
  // taken again at the next renewal), once each: the newest state of a
  // client_id replaces older ones, so the retry list cannot grow without
  // bound while the database is away.
  std::vector<ClientState> merged;
  for (ClientState& state : retry) {
    if (!state.connected) merged.push_back(std::move(state));
  }
  absl::MutexLock lock(&departed_mu_);
  // States that departed during the save are newer: they go last.
  for (ClientState& state : departed_) merged.push_back(std::move(state));
  std::stable_sort(merged.begin(), merged.end(), [](const ClientState& a, const ClientState& b) {
    return a.client_id < b.client_id;
  });
  departed_.clear();
  for (size_t i = 0; i < merged.size(); ++i) {
    if (i + 1 < merged.size() && merged[i + 1].client_id == merged[i].client_id) continue;
    departed_.push_back(std::move(merged[i]));
  }
}

void WatchHub::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  std::vector<WatchStream*> streams = RefStreams();
  for (WatchStream* s : streams) {
    s->Close(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "server is shutting down; reconnect to another replica"));
    s->Unref();
  }
  stopping_.Notify();
  {
    absl::MutexLock lock(&wake_mu_);
    wake_ = true;
  }
  if (ticker_.joinable()) ticker_.join();
  if (flusher_.joinable()) flusher_.join();
}

}  // namespace bucketmap
