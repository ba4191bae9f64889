// WatchClient: a test client of WatchMapping that reads on its own thread
// and hands responses over with a timeout.
#ifndef BUCKETMAP_TESTS_SERVER_WATCH_CLIENT_H_
#define BUCKETMAP_TESTS_SERVER_WATCH_CLIENT_H_

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bucketmap/v1/mapping.grpc.pb.h"

namespace bucketmap {

class WatchClient {
 public:
  explicit WatchClient(v1::MappingService::Stub* stub) {
    stream_ = stub->WatchMapping(&ctx_);
    reader_ = std::thread([this] {
      v1::WatchResponse response;
      while (stream_->Read(&response)) {
        absl::MutexLock lock(&mu_);
        queue_.push_back(response);
      }
      absl::MutexLock lock(&mu_);
      done_ = true;
    });
  }

  ~WatchClient() {
    ctx_.TryCancel();
    if (reader_.joinable()) reader_.join();
    if (!finished_) stream_->Finish();
  }

  // `ack_mode` ACK_EVERY_PUSH subscribes as clients written before it
  // existed do: leaving the field out.
  void Subscribe(const std::string& client_id, v1::ClientRole role, int64_t known_version = 0,
                 const std::string& cluster_id = "", std::vector<int32_t> filter = {},
                 v1::AckMode ack_mode = v1::ACK_EVERY_PUSH) {
    v1::WatchRequest req;
    auto* sub = req.mutable_subscribe();
    sub->set_client_id(client_id);
    sub->set_role(role);
    sub->set_known_version(known_version);
    sub->set_cluster_id(cluster_id);
    for (int32_t b : filter) sub->add_bucket_filter(b);
    if (ack_mode != v1::ACK_EVERY_PUSH) sub->set_ack_mode(ack_mode);
    stream_->Write(req);
  }

  void Ack(const v1::WatchResponse::Push& push, int64_t drained = 0) {
    v1::WatchRequest req;
    req.mutable_ack()->set_nonce(push.nonce());
    req.mutable_ack()->set_applied_version(push.to_version());
    req.mutable_ack()->set_drained_version(drained);
    stream_->Write(req);
  }

  // Sends any request, as a hostile client would.
  void Send(const v1::WatchRequest& request) { stream_->Write(request); }

  void Nack(const v1::WatchResponse::Push& push, const std::string& error) {
    v1::WatchRequest req;
    req.mutable_nack()->set_nonce(push.nonce());
    req.mutable_nack()->set_error(error);
    stream_->Write(req);
  }

  // The next response, or nullopt after `timeout` or at the end.
  std::optional<v1::WatchResponse> Next(absl::Duration timeout = absl::Seconds(5)) {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || done_; };
    mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
    if (queue_.empty()) return std::nullopt;
    v1::WatchResponse r = std::move(queue_.front());
    queue_.pop_front();
    return r;
  }

  // The next response that is not a heartbeat.
  std::optional<v1::WatchResponse> NextNonHeartbeat(absl::Duration timeout = absl::Seconds(5)) {
    const absl::Time end = absl::Now() + timeout;
    for (;;) {
      std::optional<v1::WatchResponse> r = Next(end - absl::Now());
      if (!r.has_value() || !r->has_heartbeat()) return r;
    }
  }

  // Waits for the stream to end and returns its status; a stream still
  // open after 10 s is cancelled (CANCELLED), so a test never hangs here.
  grpc::Status Finish() {
    if (!WaitDone(absl::Seconds(10))) ctx_.TryCancel();
    reader_.join();
    finished_ = true;
    return stream_->Finish();
  }

  // Whether the server ended the stream (all responses read) within
  // `timeout`.
  bool WaitDone(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  }

  bool done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::WatchRequest, v1::WatchResponse>> stream_;
  std::thread reader_;
  bool finished_ = false;
  absl::Mutex mu_;
  std::deque<v1::WatchResponse> queue_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_SERVER_WATCH_CLIENT_H_
