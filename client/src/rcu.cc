#include "client/src/rcu.h"

namespace bucketmap {
namespace client_internal {
namespace {

// Set once the thread's exit-time unregistration has run.
thread_local bool t_rcu_exiting = false;

// Unregisters the thread when its thread_local storage is destroyed.
struct RcuThreadGuard {
  ~RcuThreadGuard() {
    UnregisterRcuThread();
    t_rcu_exiting = true;
  }
};

}  // namespace

char g_tsan_grace_token;

bool RegisterRcuThreadSlow() {
  urcu_memb_register_thread();
  t_rcu_registered = true;
  if (t_rcu_exiting) return true;
  // The first use constructs the guard and arms its destructor.
  thread_local RcuThreadGuard guard;
  (void)guard;
  return false;
}

void UnregisterRcuThread() {
  urcu_memb_unregister_thread();
  t_rcu_registered = false;
}

void RetireAfterGracePeriod(rcu_head* head, void (*reclaim)(rcu_head*)) {
  // liburcu asks that call_rcu() come from a registered thread.
  ScopedRcuThread thread;
  TsanReleaseGrace();
  urcu_memb_call_rcu(head, reclaim);
}

void RcuBarrier() {
  ScopedRcuThread thread;
  urcu_memb_barrier();
}

}  // namespace client_internal
}  // namespace bucketmap

#ifdef BUCKETMAP_TSAN
// urcu_memb_barrier() callocs a completion record that liburcu's call_rcu
// thread frees after a hand-off through liburcu's own (uninstrumented)
// queue and futex; TSan sees the calloc and the free but not the hand-off.
// The suppression matches only reports with urcu_memb_barrier on a stack,
// so a race in the client's own reclamation (whose stacks are the reader's
// Route() and ReclaimPublishedView()) is still reported.
extern "C" const char* __tsan_default_suppressions() { return "race:urcu_memb_barrier\n"; }
#endif
