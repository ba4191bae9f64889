// ThreadSanitizer support for the client's synchronization.
//
// Debian's abseil and liburcu are not built with TSan, so TSan cannot see
// the happens-before edges they create: an absl::Mutex unlock/lock pair, or
// an RCU grace period. Under TSan these helpers state those edges
// explicitly with __tsan_release/__tsan_acquire; otherwise they compile to
// nothing. They never hide a race: they only add the edges that the
// uninstrumented primitive really provides.
//
// Thread safety: every function may be called from any thread.
#ifndef BUCKETMAP_CLIENT_SRC_TSAN_H_
#define BUCKETMAP_CLIENT_SRC_TSAN_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

#if defined(__SANITIZE_THREAD__)
#define BUCKETMAP_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BUCKETMAP_TSAN 1
#endif
#endif

#ifdef BUCKETMAP_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace bucketmap {
namespace client_internal {

#ifdef BUCKETMAP_TSAN
inline void TsanRelease(const void* addr) { __tsan_release(const_cast<void*>(addr)); }
inline void TsanAcquire(const void* addr) { __tsan_acquire(const_cast<void*>(addr)); }
#else
inline void TsanRelease(const void*) {}
inline void TsanAcquire(const void*) {}
#endif

// absl::MutexLock, with the mutex's happens-before edges made visible to
// TSan. Use it for every client mutex.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(absl::Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->Lock();
    TsanAcquire(mu_);
  }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() {
    TsanRelease(mu_);
    mu_->Unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  absl::Mutex* const mu_;
};

// Waits on `cv` with `mu` held (by a MutexLock), as CondVar::WaitWithDeadline
// does, keeping TSan's view of `mu` right across the wait. Returns true on
// timeout.
inline bool WaitWithDeadline(absl::CondVar* cv, absl::Mutex* mu, absl::Time deadline)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
  TsanRelease(mu);
  const bool timed_out = cv->WaitWithDeadline(mu, deadline);
  TsanAcquire(mu);
  return timed_out;
}

}  // namespace client_internal
}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_SRC_TSAN_H_
