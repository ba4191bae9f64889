// The client's use of liburcu (the membarrier flavour, urcu-memb), kept in
// one place.
//
// Why urcu-memb: its read-side lock and unlock are a thread-local counter
// update and compiler barriers; the updater pays for ordering with the
// membarrier() system call (falling back to full fences in readers where
// the kernel lacks it). QSBR would be cheaper still for readers but needs
// every application thread to report quiescent states, which a library
// embedded in arbitrary producer threads cannot demand. Bulletproof RCU
// (urcu-bp) registers threads by itself but pays a fence per read.
//
// Registration: urcu-memb requires each reading thread to be registered.
// ScopedRcuThread does that lazily, once per thread, and a thread_local
// guard unregisters the thread when it exits. A read that comes after that
// (from another thread_local's destructor, say a producer flushing its
// queue) registers the thread just for its own duration.
//
// ThreadSanitizer: liburcu is not instrumented, so TSan cannot see that a
// grace period orders every reader's accesses before the reclamation of the
// object they read. Under TSan, readers "release" a shared token when they
// leave a read-side critical section, and writers release it before
// call_rcu(); the reclaiming callback "acquires" it. This models exactly
// the guarantee a grace period gives (TSan merges every release into the
// token's clock), and compiles to nothing otherwise. rcu.cc also carries
// the one TSan suppression liburcu needs (see there).
//
// Thread safety: every function here may be called from any thread.
#ifndef BUCKETMAP_CLIENT_SRC_RCU_H_
#define BUCKETMAP_CLIENT_SRC_RCU_H_

#include "client/src/tsan.h"

// Outside TSan builds, inline the read-side fast path (each function under
// ten lines, as LGPL 2.1 allows for inline functions from headers). Under
// TSan, call the library's out-of-line copies instead: liburcu's inline
// reader code does benign plain stores to shared words (its wake-up futex)
// that TSan would report, while the same code inside the uninstrumented
// library is invisible to it.
#if !defined(BUCKETMAP_TSAN) && !defined(_LGPL_SOURCE)
#define _LGPL_SOURCE
#endif
#include <urcu/urcu-memb.h>

#include "absl/base/optimization.h"

namespace bucketmap {
namespace client_internal {

// True while the calling thread is registered with urcu-memb.
inline thread_local bool t_rcu_registered = false;

// Registers the calling thread. Returns false when the registration is
// permanent (undone at thread exit), true when it is temporary: the thread
// is already past its exit-time unregistration (a read from another
// thread_local's destructor), and the caller must call
// UnregisterRcuThread() when done.
bool RegisterRcuThreadSlow();
void UnregisterRcuThread();

// Keeps the calling thread registered for the lifetime of the object.
class ScopedRcuThread {
 public:
  ScopedRcuThread() : temporary_(!t_rcu_registered && RegisterRcuThreadSlow()) {}
  ~ScopedRcuThread() {
    if (ABSL_PREDICT_FALSE(temporary_)) UnregisterRcuThread();
  }
  ScopedRcuThread(const ScopedRcuThread&) = delete;
  ScopedRcuThread& operator=(const ScopedRcuThread&) = delete;

 private:
  const bool temporary_;
};

// The token that stands for "a grace period has elapsed" in TSan's model.
extern char g_tsan_grace_token;
inline void TsanReleaseGrace() { TsanRelease(&g_tsan_grace_token); }
inline void TsanAcquireGrace() { TsanAcquire(&g_tsan_grace_token); }

// An RCU read-side critical section for the lifetime of the object.
// Nestable. Wait-free once the thread is registered.
class RcuReadSection {
 public:
  RcuReadSection() { urcu_memb_read_lock(); }
  ~RcuReadSection() {
    TsanReleaseGrace();
    urcu_memb_read_unlock();
  }
  RcuReadSection(const RcuReadSection&) = delete;
  RcuReadSection& operator=(const RcuReadSection&) = delete;

 private:
  // Declared first: registered before the lock, unregistered after unlock.
  ScopedRcuThread thread_;
};

// Calls `reclaim(head)` on liburcu's call_rcu thread after a grace period.
// Never blocks on readers. `reclaim` must call TsanAcquireGrace() before it
// frees anything.
void RetireAfterGracePeriod(rcu_head* head, void (*reclaim)(rcu_head*));

// Waits until every callback passed to RetireAfterGracePeriod() so far has
// run. Must not be called inside a read-side critical section.
void RcuBarrier();

}  // namespace client_internal
}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_SRC_RCU_H_
