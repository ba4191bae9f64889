#include <algorithm>
#include <random>
#include <utility>

#include "bucketmap/read_file.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "bucketmap/watch.h"
#include "client/src/tsan.h"
#include "codec/codec.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "spdlog/spdlog.h"

namespace bucketmap {

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(
    const WatchTlsOptions& tls) {
  if (!tls.enabled) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  if (!tls.root_ca_file.empty()) {
    absl::StatusOr<std::string> pem = ReadPem(tls.root_ca_file, "tls.root_ca_file");
    if (!pem.ok()) return pem.status();
    ssl.pem_root_certs = *std::move(pem);
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError("tls.cert_file and tls.key_file: set both or neither");
  }
  if (!tls.cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadPem(tls.cert_file, "tls.cert_file");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem(tls.key_file, "tls.key_file");
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  return grpc::SslCredentials(ssl);
}

WatchConnection::WatchConnection(Client* client, WatchConnectionOptions options)
    : client_(client), options_(std::move(options)) {}

WatchConnection::~WatchConnection() { Stop(); }

void WatchConnection::Start() {
  if (client_->version() == 0 && !client_->options().cache_path.empty()) {
    absl::Status s = client_->LoadCache();
    if (s.ok()) {
      spdlog::info("bucketmap: routing from the cache file at version {} until a server answers",
                   client_->version());
    } else if (!absl::IsNotFound(s)) {
      spdlog::warn("bucketmap: cache file not used: {}", s.ToString());
    }
  }
  thread_ = std::thread([this] { Run(); });
}

void WatchConnection::Stop() {
  if (stopping_.HasBeenNotified()) return;
  stopping_.Notify();
  {
    absl::MutexLock lock(&mu_);
    if (context_ != nullptr) context_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

std::string WatchConnection::address() const {
  absl::MutexLock lock(&mu_);
  return address_;
}

void WatchConnection::Run() {
  const std::vector<std::string>& addresses = client_->options().addresses;
  if (addresses.empty()) {
    spdlog::error("bucketmap: no server addresses; the client stays at version {}",
                  client_->version());
    return;
  }
  std::mt19937_64 rng(std::random_device{}());
  absl::Duration backoff = options_.initial_backoff;
  for (size_t attempt = 0; !stopping_.HasBeenNotified(); ++attempt) {
    const std::string& address = addresses[attempt % addresses.size()];
    if (RunStream(address)) backoff = options_.initial_backoff;
    if (stopping_.HasBeenNotified()) break;
    // Full jitter: a fleet reconnecting after a server restart spreads out.
    std::uniform_real_distribution<double> jitter(0.0, 1.0);
    const absl::Duration wait = backoff * jitter(rng);
    backoff = std::min(backoff * 2, options_.max_backoff);
    stopping_.WaitForNotificationWithTimeout(wait);
  }
}

bool WatchConnection::RunStream(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options_.max_message_size);
  args.SetMaxSendMessageSize(options_.max_message_size);
  // Notice a dead server within seconds even when no push is due.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      ChannelCredentialsFor(options_.tls);
  if (!credentials.ok()) {
    spdlog::warn("bucketmap: cannot connect to {}: {}", address, credentials.status().ToString());
    return false;
  }
  auto channel = grpc::CreateCustomChannel(address, *credentials, args);
  auto stub = v1::MappingService::NewStub(channel);

  grpc::ClientContext context;
  if (!client_->options().bearer_token.empty()) {
    context.AddMetadata("authorization", "Bearer " + client_->options().bearer_token);
  }
  {
    absl::MutexLock lock(&mu_);
    if (stopping_.HasBeenNotified()) return false;
    context_ = &context;
    address_ = address;
  }
  streams_opened_.fetch_add(1, std::memory_order_relaxed);
  std::unique_ptr<grpc::ClientReaderWriter<v1::WatchRequest, v1::WatchResponse>> stream =
      stub->WatchMapping(&context);

  v1::WatchRequest subscribe;
  v1::WatchRequest::Subscribe* sub = subscribe.mutable_subscribe();
  sub->set_client_id(client_->options().client_id);
  sub->set_role(client_->options().role);
  sub->set_known_version(client_->version());
  sub->set_cluster_id(client_->cluster_id());
  for (int32_t bucket : options_.bucket_filter) sub->add_bucket_filter(bucket);
  // Pushes stream; only those the server marks need an ACK at once.
  sub->set_ack_mode(v1::ACK_REQUESTED);
  bool synced = false;
  // Writes come from this thread (ACKs) and from the drain reporter
  // (re-ACKs); gRPC allows one writer at a time. ack_mu also guards what a
  // re-ACK repeats.
  absl::Mutex ack_mu;
  // What a re-ACK repeats: the last ACKed push's nonce and applied
  // version, or, when the stream synced without a push, nonce 0 and our
  // version.
  bool reporting = false;
  uint64_t acked_nonce = 0;
  int64_t acked_applied = 0;
  int64_t reported_drained = 0;
  // The last push applied, ACKed or not: a lazy ACK reports it.
  uint64_t applied_nonce = 0;
  int64_t applied_version = 0;
  bool stream_done = false;
  DeliveryTracker* const tracker = options_.delivery_tracker;
  auto drained = [tracker](int64_t applied) {
    return tracker == nullptr ? int64_t{0} : tracker->DrainedVersion(applied);
  };
  // ACKs the last applied push; call with ack_mu held.
  auto ack_applied = [&]() -> bool {
    const int64_t d = drained(applied_version);
    v1::WatchRequest answer;
    answer.mutable_ack()->set_nonce(applied_nonce);
    answer.mutable_ack()->set_applied_version(applied_version);
    answer.mutable_ack()->set_drained_version(d);
    reporting = true;
    acked_nonce = applied_nonce;
    acked_applied = applied_version;
    reported_drained = d;
    if (tracker != nullptr) tracker->SetReported(d, applied_version);
    return stream->Write(answer);
  };
  std::thread reporter;
  if (tracker != nullptr) {
    reporter = std::thread([&] {
      uint64_t seen = 0;
      for (;;) {
        seen = tracker->WaitForProgress(seen, absl::Seconds(1));
        client_internal::MutexLock lock(&ack_mu);
        if (stream_done) return;
        if (!reporting) continue;
        const int64_t d = drained(acked_applied);
        if (d <= reported_drained) continue;
        // The server records drained_version from a repeated ACK of the
        // last ACKed push (docs/protocol.md).
        v1::WatchRequest again;
        again.mutable_ack()->set_nonce(acked_nonce);
        again.mutable_ack()->set_applied_version(acked_applied);
        again.mutable_ack()->set_drained_version(d);
        if (!stream->Write(again)) return;
        reported_drained = d;
        tracker->SetReported(d, acked_applied);
      }
    });
  }
  // Load reports, one per window, from a thread of their own; they are
  // written under ack_mu like every other write, once the stream synced.
  bool load_synced = false;
  absl::Notification load_stop;
  std::thread load_reporter;
  LoadCounter* const counter = options_.load_counter;
  const v1::ClientRole role = client_->options().role;
  if (counter != nullptr && (role == v1::PRODUCER || role == v1::CONSUMER)) {
    load_reporter = std::thread([&] {
      for (;;) {
        const absl::Time due = counter->NextReport(absl::Now());
        if (load_stop.WaitForNotificationWithTimeout(due - absl::Now())) return;
        {
          client_internal::MutexLock lock(&ack_mu);
          if (stream_done) return;
          if (!load_synced) continue;  // kept for the next window
        }
        LoadReport report;
        std::shared_ptr<const MappingView> view = client_->Current();
        if (!counter->TakeReport(absl::Now(), view.get(), role == v1::CONSUMER, &report)) continue;
        v1::WatchRequest request;
        ToProto(report, request.mutable_load());
        client_internal::MutexLock lock(&ack_mu);
        if (stream_done || !stream->Write(request)) return;
      }
    });
  }
  if (stream->Write(subscribe)) {
    v1::WatchResponse response;
    // After a NACK, the pushes already on their way cannot apply either:
    // they are dropped, unanswered, until the snapshot that answers it.
    bool awaiting_snapshot = false;
    // A server that knows ack modes marks the first push of a stream; one
    // that predates them marks none and waits for an ACK of every push.
    bool first_push = true;
    bool ack_every = false;
    while (stream->Read(&response)) {
      if (response.has_push()) {
        const v1::WatchResponse::Push& push = response.push();
        if (first_push) ack_every = !push.ack_requested();
        first_push = false;
        if (awaiting_snapshot && !push.has_snapshot()) continue;
        absl::Status applied;
        if (push.has_snapshot()) {
          applied = client_->ApplySnapshot(push.snapshot());
        } else {
          applied = client_->ApplyDeltas(push.deltas());
        }
        if (applied.ok() && options_.write_cache && !client_->options().cache_path.empty()) {
          // The file must hold the version before the server hears of it.
          absl::Status cached = client_->WriteCache();
          if (!cached.ok()) spdlog::warn("bucketmap: cache write failed: {}", cached.ToString());
        }
        client_internal::MutexLock lock(&ack_mu);
        if (applied.ok()) {
          awaiting_snapshot = false;
          // After the cache write: a version is ACKed only once it is on
          // disk, and drained_version never exceeds it.
          applied_nonce = push.nonce();
          applied_version = client_->version();
          if ((ack_every || push.ack_requested()) && !ack_applied()) break;
        } else {
          spdlog::warn("bucketmap: push {}..{} not applied: {}", push.from_version(),
                       push.to_version(), applied.ToString());
          awaiting_snapshot = true;
          v1::WatchRequest answer;
          answer.mutable_nack()->set_nonce(push.nonce());
          answer.mutable_nack()->set_error(applied.ToString());
          if (!stream->Write(answer)) break;
        }
      } else if (response.has_sync()) {
        client_->ConfirmCurrent(response.sync().version());
        synced = true;
        synced_.store(true, std::memory_order_release);
        client_internal::MutexLock lock(&ack_mu);
        load_synced = true;
        if (tracker != nullptr && !reporting) {
          // Resumed at the server's version, so no push to ACK: report
          // drained_version anyway (the ACK of "push" 0), or a server that
          // restarted would not know it until the next push, and would
          // hold a handoff's barrier until its grace deadline.
          applied_nonce = 0;
          applied_version = client_->version();
          if (!ack_applied()) break;
        }
      } else if (response.has_heartbeat()) {
        client_->ConfirmCurrent(response.heartbeat().version());
        // The lazy ACK: pushes the server did not ask about are reported
        // here, coalesced, so ListClients catches up in quiet times.
        client_internal::MutexLock lock(&ack_mu);
        if (applied_nonce != 0 && applied_version > acked_applied && !ack_applied()) break;
      }
    }
  }
  synced_.store(false, std::memory_order_release);
  {
    client_internal::MutexLock lock(&ack_mu);
    stream_done = true;
  }
  load_stop.Notify();
  if (load_reporter.joinable()) load_reporter.join();
  if (reporter.joinable()) {
    {
      client_internal::MutexLock lock(&ack_mu);
      stream_done = true;
    }
    tracker->Kick();
    reporter.join();
  }
  // A failed write leaves messages unread, and Finish() waits for the
  // reads to end: cancel, and drain them.
  context.TryCancel();
  v1::WatchResponse unread;
  while (stream->Read(&unread)) {
  }
  grpc::Status status = stream->Finish();
  {
    absl::MutexLock lock(&mu_);
    context_ = nullptr;
  }
  if (!stopping_.HasBeenNotified()) {
    spdlog::info("bucketmap: watch stream to {} ended ({}: {}); reconnecting", address,
                 static_cast<int>(status.error_code()), status.error_message());
  }
  return synced;
}

}  // namespace bucketmap
