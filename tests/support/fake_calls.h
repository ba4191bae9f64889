// FakeCalls: the failure switches and call counters that every fake of
// tests/support shares (FakeStore, FakePublisher, FakeOffsetReader), so
// they all answer FailNext() and calls() the same way.
//
// `Method` is the fake's enum of its methods. Each call of a fake method
// goes through Enter(method) first: it counts the call, then returns the
// failure to inject (OK: none), taking it off its queue. Failures queued
// for one method come first; then those queued for any method.
//
// Thread safety: all methods are thread-safe (an internal leaf lock, never
// held while the fake calls out). Header-only.
#ifndef BUCKETMAP_TESTS_SUPPORT_FAKE_CALLS_H_
#define BUCKETMAP_TESTS_SUPPORT_FAKE_CALLS_H_

#include <cstdint>
#include <deque>
#include <map>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace bucketmap {

template <typename Method>
class FakeCalls {
 public:
  // Counts a call of `method` and returns the failure it must return
  // unchanged (with no other effect), or OK.
  absl::Status Enter(Method method) {
    absl::MutexLock lock(&mu_);
    ++calls_[method];
    ++total_;
    auto it = failures_.find(method);
    std::deque<absl::Status>* queue =
        it != failures_.end() && !it->second.empty() ? &it->second : &any_;
    if (queue->empty()) return absl::OkStatus();
    absl::Status s = std::move(queue->front());
    queue->pop_front();
    return s;
  }

  // FailNext()
  //
  // The next `times` calls of any method fail with `status` (which must
  // not be OK).
  void FailNext(absl::Status status, int times = 1) {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < times; ++i) any_.push_back(status);
  }
  // The next `times` calls of `method` fail with `status`.
  void FailNext(Method method, absl::Status status, int times = 1) {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < times; ++i) failures_[method].push_back(status);
  }

  // Drops every failure not injected yet.
  void ClearFailures() {
    absl::MutexLock lock(&mu_);
    failures_.clear();
    any_.clear();
  }

  // Calls of `method` so far, failed ones included.
  int64_t calls(Method method) const {
    absl::MutexLock lock(&mu_);
    auto it = calls_.find(method);
    return it == calls_.end() ? 0 : it->second;
  }
  // Calls of every method so far.
  int64_t total_calls() const {
    absl::MutexLock lock(&mu_);
    return total_;
  }
  void ResetCounters() {
    absl::MutexLock lock(&mu_);
    calls_.clear();
    total_ = 0;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<Method, int64_t> calls_ ABSL_GUARDED_BY(mu_);
  int64_t total_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<Method, std::deque<absl::Status>> failures_ ABSL_GUARDED_BY(mu_);
  std::deque<absl::Status> any_ ABSL_GUARDED_BY(mu_);
};

}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_SUPPORT_FAKE_CALLS_H_
