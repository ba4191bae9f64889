// What the watch benchmarks (watch_bench, fanout_vs_etcd) share: raw
// WatchMapping streams used as the clients use them, and the table of
// when each watcher received each write.
//
//   Receipts: receipt times per (write, watcher), written by gRPC's reactor
//     threads and read by the benchmark's main thread.
//   MappingWatcher: one WatchMapping stream that subscribes as a consumer,
//     records the versions each push carries into Receipts, and ACKs pushes
//     per its AckPolicy. Change how the benchmarks' clients ACK here.
//
// Thread safety: Receipts may be used from any thread. A MappingWatcher is
// created, cancelled and destroyed by one thread, after done() (its
// callbacks run on gRPC's threads).
#ifndef BUCKETMAP_BENCH_MAPPING_WATCHER_H_
#define BUCKETMAP_BENCH_MAPPING_WATCHER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "bucketmap/v1/mapping.grpc.pb.h"

namespace bucketmap {

// Steady-clock nanoseconds, the unit of Receipts.
inline int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// When each watcher received each write. Writes are identified by the
// version (or etcd revision) they produce: the table holds `base` + 1 ..
// `base` + `slots` - 1. A receipt at or below `base` (a subscription's
// initial snapshot) is ignored; one above the table counts as unexpected.
class Receipts {
 public:
  Receipts(int64_t base, int64_t slots, int watchers)
      : base_(base),
        slots_(slots),
        watchers_(watchers),
        at_(static_cast<size_t>(slots * watchers)),
        count_(static_cast<size_t>(slots)) {}

  // Watcher `watcher` received `version` at `now_ns`; only its first
  // receipt of a version counts.
  void Record(int64_t version, int watcher, int64_t now_ns) {
    const int64_t slot = version - base_;
    if (slot <= 0) return;
    if (slot >= slots_) {
      Unexpected();
      return;
    }
    int64_t zero = 0;
    if (at_[Index(slot, watcher)].compare_exchange_strong(zero, now_ns,
                                                          std::memory_order_relaxed)) {
      count_[slot].fetch_add(1, std::memory_order_release);
    }
  }

  // True when the table has a row for `version`.
  bool Holds(int64_t version) const { return version > base_ && version - base_ < slots_; }
  // When `watcher` received `version` (Holds() it); 0 if not (yet).
  int64_t At(int64_t version, int watcher) const {
    return at_[Index(version - base_, watcher)].load(std::memory_order_relaxed);
  }
  // How many watchers have received `version` (Holds() it). Receipts
  // counted here are visible to At() on the thread that read the count.
  int64_t Count(int64_t version) const {
    return count_[version - base_].load(std::memory_order_acquire);
  }
  int64_t base() const { return base_; }
  int64_t slots() const { return slots_; }

  // A watcher is subscribed (counted once per watcher by the caller).
  void Synced() { synced_.fetch_add(1); }
  int64_t synced() const { return synced_.load(); }
  // Something a watcher was not meant to see.
  void Unexpected() { unexpected_.fetch_add(1); }
  int64_t unexpected() const { return unexpected_.load(); }

 private:
  size_t Index(int64_t slot, int watcher) const {
    return static_cast<size_t>(slot * watchers_ + watcher);
  }

  const int64_t base_;
  const int64_t slots_;
  const int watchers_;
  std::vector<std::atomic<int64_t>> at_;  // value-initialized: zeros
  std::vector<std::atomic<int64_t>> count_;
  std::atomic<int64_t> synced_{0};
  std::atomic<int64_t> unexpected_{0};
};

// Which pushes a watcher ACKs (docs/protocol.md, "ACK modes").
//   kEvery: subscribes leaving ack_mode out, as clients written before it
//     did (and the Node.js client does): every push is ACKed, and the
//     server waits for each ACK before the next push.
//   kNeeded: subscribes with ACK_REQUESTED and ACKs the pushes the server
//     marks ack_requested at once, the others lazily at the next heartbeat
//     (the newest version applied), as the C++ client library does.
enum class AckPolicy { kEvery, kNeeded };

// One WatchMapping stream: subscribes as consumer "watcher-<index>",
// records each push's versions for watcher `index`, and ACKs the pushes
// `ack` says to ACK, with one write in flight (a newer ACK replaces one
// still waiting: only the newest matters). Counts its first SYNC.
class MappingWatcher final : public grpc::ClientBidiReactor<v1::WatchRequest, v1::WatchResponse> {
 public:
  MappingWatcher(v1::MappingService::Stub* stub, int index, AckPolicy ack, Receipts* receipts)
      : index_(index), ack_(ack), receipts_(receipts) {
    stub->async()->WatchMapping(&ctx_, this);
    v1::WatchRequest::Subscribe* sub = request_.mutable_subscribe();
    sub->set_client_id(absl::StrCat("watcher-", index));
    sub->set_role(v1::CONSUMER);
    if (ack == AckPolicy::kNeeded) sub->set_ack_mode(v1::ACK_REQUESTED);
    writing_ = true;
    StartWrite(&request_);
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (response_.has_sync() && !synced_) {
      synced_ = true;
      receipts_->Synced();
    }
    if (response_.has_push()) {
      const int64_t now = NowNs();
      const v1::WatchResponse::Push& push = response_.push();
      for (int64_t v = push.from_version() + 1; v <= push.to_version(); ++v) {
        receipts_->Record(v, index_, now);
      }
      applied_nonce_ = push.nonce();
      applied_version_ = push.to_version();
      if (ShouldAck(push)) AckApplied();
    } else if (response_.has_heartbeat() && applied_version_ > acked_version_) {
      AckApplied();  // the lazy ACK
    }
    StartRead(&response_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (ok && pending_.has_value()) {
      request_ = *std::move(pending_);
      pending_.reset();
      writing_ = true;
      StartWrite(&request_);
    }
  }

  void OnDone(const grpc::Status&) override { done_.store(true); }

  void Cancel() { ctx_.TryCancel(); }
  // True once the stream has ended (cancelled, or ended by the server).
  bool done() const { return done_.load(); }

 private:
  bool ShouldAck(const v1::WatchResponse::Push& push) const {
    return ack_ == AckPolicy::kEvery || push.ack_requested();
  }

  // ACKs the newest push applied (on the read path).
  void AckApplied() {
    v1::WatchRequest ack;
    ack.mutable_ack()->set_nonce(applied_nonce_);
    ack.mutable_ack()->set_applied_version(applied_version_);
    // A consumer with nothing in flight has drained what it applied.
    ack.mutable_ack()->set_drained_version(applied_version_);
    acked_version_ = applied_version_;
    Write(std::move(ack));
  }

  void Write(v1::WatchRequest request) {
    absl::MutexLock lock(&mu_);
    if (writing_) {
      pending_ = std::move(request);
      return;
    }
    request_ = std::move(request);
    writing_ = true;
    StartWrite(&request_);
  }

  const int index_;
  const AckPolicy ack_;
  Receipts* const receipts_;
  grpc::ClientContext ctx_;
  v1::WatchResponse response_;
  // Only the read path touches these, one read at a time.
  bool synced_ = false;
  uint64_t applied_nonce_ = 0;   // of the newest push
  int64_t applied_version_ = 0;  // its to_version
  int64_t acked_version_ = 0;    // the newest version ACKed
  absl::Mutex mu_;
  v1::WatchRequest request_ ABSL_GUARDED_BY(mu_);
  std::optional<v1::WatchRequest> pending_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> done_{false};
};

}  // namespace bucketmap

#endif  // BUCKETMAP_BENCH_MAPPING_WATCHER_H_
