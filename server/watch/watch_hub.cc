#include "server/watch/watch_hub.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "bucketmap/v1/mapping.pb.h"
#include "codec/codec.h"
#include "domain/validation.h"
#include "server/watch/shared_slice.h"
#include "server/watch/watch_stream.h"
#include "spdlog/spdlog.h"

namespace bucketmap {

WatchHub::WatchHub(MappingManager* manager, Store* store, Metrics* metrics, WatchOptions options,
                   const Clock* clock, LoadAggregator* load)
    : manager_(manager),
      store_(store),
      metrics_(metrics),
      clock_(clock),
      load_(load),
      options_(std::move(options)),
      fanout_threads_(std::min(
          kMaxFanoutThreads, options_.fanout_threads > 0
                                 ? static_cast<size_t>(options_.fanout_threads)
                                 : 2 * std::max<size_t>(1, std::thread::hardware_concurrency()))) {}

WatchHub::~WatchHub() { Stop(); }

void WatchHub::Start() {
  Preload();
  manager_->AddListener([this](const MappingManager::Published& p) { OnPublish(p); });
  for (size_t i = 0; i + 1 < fanout_threads_; ++i) {
    fanout_workers_.emplace_back([this, i] { FanoutLoop(i); });
  }
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
      added.push_back(std::make_shared<const VersionFrame>(
          delta.to_version(), clock_->Now(),
          std::make_shared<const std::string>(delta.SerializeAsString()), std::nullopt));
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

void WatchHub::OnPublish(const MappingManager::Published& published) {
  const std::shared_ptr<const ServedSnapshot>& snapshot = published.snapshot;
  const Change* change = published.change;
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
      const int32_t* target = before.assignments().Find(team);
      return target == nullptr ? 0 : *target;
    };
    prior.set.reserve(change->set.size());
    for (const auto& [team, target] : change->set) prior.set.push_back(packed(team));
    prior.unset.reserve(change->unset.size());
    for (int64_t team : change->unset) prior.unset.push_back(packed(team));
    // The delta as the write encoded it: no encoding here.
    added.push_back(std::make_shared<const VersionFrame>(
        version, clock_->Now(), published.encoded_delta, std::move(prior)));
  } else if (same_cluster && previous->version() < version &&
             version - previous->version() <= static_cast<int64_t>(RingCapacity())) {
    // Versions committed elsewhere: take their deltas from the change log.
    absl::StatusOr<std::vector<v1::MappingDelta>> deltas =
        store_->LoadDeltas(previous->version(), version);
    if (deltas.ok()) {
      for (const v1::MappingDelta& delta : *deltas) {
        added.push_back(std::make_shared<const VersionFrame>(
            delta.to_version(), clock_->Now(),
            std::make_shared<const std::string>(delta.SerializeAsString()), std::nullopt));
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
  body->handoffs_open = !last_->snapshot().handoffs().empty();
  if (!snapshot) {
    snapshot = !(acked > 0 && acked < current && current - acked <= options_.max_deltas_per_push &&
                 !frames_.empty() && frames_.front()->version() <= acked + 1 &&
                 frames_.back()->version() == current);
  }
  if (!snapshot) {
    body->from_version = acked;
    const size_t first = static_cast<size_t>(acked + 1 - frames_.front()->version());
    for (size_t i = first; i < frames_.size(); ++i) {
      if (!frames_[i]->AppendField(filter, frames_[i], &body->slices, &body->size)) {
        body->slices.clear();  // unfilterable: fall back to the snapshot
        body->size = 0;
        snapshot = true;
        break;
      }
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
  BuiltPush push = BuildPush(acked, filter, nonce, force_snapshot, reset, AckMark::kNever);
  *to_version = push.to_version;
  return std::move(push.buffer);
}

WatchHub::BuiltPush WatchHub::BuildPush(int64_t from, const std::vector<int32_t>& filter,
                                        uint64_t nonce, bool force_snapshot, bool reset,
                                        AckMark mark) {
  std::shared_ptr<const PushBody> body;
  {
    // Streams at the same version with the same filter share one body:
    // after a write, that is nearly every stream.
    absl::MutexLock lock(&mu_);
    if (bodies_version_ != last_->version()) {
      bodies_.clear();
      bodies_version_ = last_->version();
    }
    auto key = std::make_tuple(force_snapshot ? int64_t{-1} : from, filter);
    auto it = bodies_.find(key);
    if (it == bodies_.end()) {
      it = bodies_.emplace(std::move(key), MakeBody(from, filter, force_snapshot)).first;
    }
    body = it->second;
  }
  BuiltPush built;
  built.to_version = body->to_version;
  built.snapshot = body->from_version == 0;
  built.ack_requested =
      mark == AckMark::kAlways || (mark == AckMark::kIfHandoffsOpen && body->handoffs_open);
  // The per-stream part: WatchResponse.push's tag and length, then the
  // Push fields that differ per stream, written on the stack (it is one
  // per stream and push: no allocation; gRPC inlines a slice this small).
  char fields[3 * (1 + kMaxVarint) + 4];
  char* end = fields;
  auto varint_field = [&end](uint8_t tag, uint64_t v) {
    *end++ = static_cast<char>(tag);
    end = WriteVarint(end, v);
  };
  varint_field(kPushFromTag, static_cast<uint64_t>(body->from_version));
  varint_field(kPushToTag, static_cast<uint64_t>(body->to_version));
  varint_field(kPushNonceTag, nonce);
  if (reset) varint_field(kPushResetTag, 1);
  if (built.ack_requested) varint_field(kPushAckRequestedTag, 1);
  const size_t fields_size = static_cast<size_t>(end - fields);
  char header[1 + kMaxVarint + sizeof(fields)];
  header[0] = static_cast<char>(kResponsePushTag);
  char* at = WriteVarint(header + 1, fields_size + body->size);
  std::memcpy(at, fields, fields_size);
  at += fields_size;
  absl::InlinedVector<grpc::Slice, 8> slices;
  slices.reserve(1 + body->slices.size());
  slices.emplace_back(header, static_cast<size_t>(at - header));
  slices.insert(slices.end(), body->slices.begin(), body->slices.end());
  built.buffer = grpc::ByteBuffer(slices.data(), slices.size());
  return built;
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
  // The gauge is set from the ticker: a store per push would be one more
  // cache line that every fan-out thread writes.
  pending_writes_.fetch_add(delta, std::memory_order_relaxed);
}

void WatchHub::ClientDisconnected(ClientState state) {
  absl::MutexLock lock(&departed_mu_);
  departed_.push_back(std::move(state));
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* WatchHub::NewStream(
    grpc::CallbackServerContext* ctx) {
  return new WatchStream(this, ctx);
}

void WatchHub::RefStreams(std::vector<WatchStream*>* streams) {
  absl::MutexLock lock(&mu_);
  streams->reserve(streams->size() + streams_.size());
  for (WatchStream* s : streams_) {
    s->Ref();
    streams->push_back(s);
  }
}

std::vector<WatchStream*> WatchHub::RefStreams() {
  std::vector<WatchStream*> streams;
  RefStreams(&streams);
  return streams;
}

void WatchHub::PokeShard(const std::vector<WatchStream*>& streams, size_t shard, size_t shards) {
  const size_t begin = streams.size() * shard / shards;
  const size_t end = streams.size() * (shard + 1) / shards;
  for (size_t i = begin; i < end; ++i) streams[i]->Poke();
}

void WatchHub::PokeAll(const std::vector<WatchStream*>& streams) {
  const size_t shards = std::max<size_t>(
      1, std::min(fanout_threads_,
                  streams.size() / std::max<size_t>(1, options_.min_streams_per_fanout_thread)));
  if (shards == 1) {
    PokeShard(streams, 0, 1);
    return;
  }
  {
    absl::MutexLock lock(&fanout_mu_);
    fanout_streams_ = &streams;
    fanout_shards_ = shards;
    fanout_pending_ = shards - 1;
    ++fanout_round_;
  }
  PokeShard(streams, 0, shards);
  // The streams are Ref()ed until the caller is done with them: wait for
  // the workers before returning.
  absl::MutexLock lock(&fanout_mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(fanout_mu_) { return fanout_pending_ == 0; };
  fanout_mu_.Await(absl::Condition(&done));
  fanout_streams_ = nullptr;
}

void WatchHub::FanoutLoop(size_t worker) {
  uint64_t seen = 0;
  while (true) {
    const std::vector<WatchStream*>* streams = nullptr;
    size_t shards = 0;
    {
      absl::MutexLock lock(&fanout_mu_);
      // A worker not needed in a round (fewer shards than workers) is not
      // woken for it.
      auto ready = [this, seen, worker]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(fanout_mu_) {
        return fanout_stop_ || (fanout_round_ != seen && worker + 1 < fanout_shards_);
      };
      fanout_mu_.Await(absl::Condition(&ready));
      if (fanout_stop_) return;
      seen = fanout_round_;
      streams = fanout_streams_;
      shards = fanout_shards_;
    }
    PokeShard(*streams, worker + 1, shards);
    absl::MutexLock lock(&fanout_mu_);
    --fanout_pending_;
  }
}

void WatchHub::TickLoop() {
  constexpr absl::Duration kTick = absl::Milliseconds(100);
  // The loop waits in real time; what it decides (heartbeats, ACK
  // timeouts) is judged by the hub's clock.
  absl::Time next_tick = absl::Now() + kTick;
  std::vector<WatchStream*> streams;
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
    streams.clear();  // reused: no allocation per publish
    RefStreams(&streams);
    if (woke) {
      // A connection's streams together, so that each thread of the
      // fan-out writes to few connections, and the threads do not contend
      // for every connection's transport (p99 15-20% lower at every size:
      // docs/benchmarks.md).
      std::sort(streams.begin(), streams.end(), [](WatchStream* a, WatchStream* b) {
        return a->connection_key() < b->connection_key();
      });
      PokeAll(streams);
    }
    for (WatchStream* s : streams) {
      if (tick) s->Tick(now);
      s->Unref();
    }
    if (tick) {
      metrics_->SetWatchPendingWrites(pending_writes());
      next_tick = real_now + kTick;
    }
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
  {
    absl::MutexLock lock(&fanout_mu_);
    fanout_stop_ = true;
  }
  for (std::thread& worker : fanout_workers_) worker.join();
  if (flusher_.joinable()) flusher_.join();
}

}  // namespace bucketmap
