#include "client/src/epoch.h"

#include <linux/membarrier.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/src/tsan.h"
#include "spdlog/spdlog.h"

namespace bucketmap {
namespace client_internal {

// Its own cache line: readers load it on every entry, and only a
// retirement writes it.
alignas(64) std::atomic<uint64_t> g_epoch{1};

namespace {

struct Retired {
  uint64_t tag;
  const void* owner;
  void* object;
  void (*reclaim)(void*);
};

// Guards the record list and the retired list. Never taken by a reader
// once its thread is registered.
absl::Mutex& RegistryMutex() {
  static absl::Mutex* const mu = new absl::Mutex();
  return *mu;
}
EpochReader* g_readers = nullptr;                  // guarded by RegistryMutex()
std::vector<Retired>* g_retired = nullptr;         // guarded by RegistryMutex()

// Set once the thread's exit-time unregistration has run.
thread_local bool t_exiting = false;

// Gives the thread's record back when its thread_local storage is
// destroyed.
struct ReaderGuard {
  ~ReaderGuard() {
    EpochReader* reader = t_epoch_reader;
    t_epoch_reader = nullptr;
    t_exiting = true;
    if (reader != nullptr) ReleaseReader(reader);
  }
};

// ---- The heavy half of the asymmetric fence ----

enum class BarrierKind { kPrivateExpedited, kGlobal, kMprotect };

long Membarrier(int cmd) { return syscall(__NR_membarrier, cmd, 0); }

BarrierKind ChooseBarrier() {
  const long supported = Membarrier(MEMBARRIER_CMD_QUERY);
  if (supported > 0 && (supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0 &&
      Membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0) {
    return BarrierKind::kPrivateExpedited;
  }
  if (supported > 0 && (supported & MEMBARRIER_CMD_GLOBAL) != 0) {
    spdlog::warn("bucketmap client: membarrier has no private expedited command; reclaiming "
                 "replaced mappings will be slower");
    return BarrierKind::kGlobal;
  }
  spdlog::warn("bucketmap client: no membarrier; fencing readers with mprotect");
  return BarrierKind::kMprotect;
}

// Makes every thread of the process that is running execute a full memory
// fence before this returns (threads not running pass one on their next
// context switch).
void HeavyBarrier() {
  static const BarrierKind kind = ChooseBarrier();
  switch (kind) {
    case BarrierKind::kPrivateExpedited:
      if (Membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) return;
      break;
    case BarrierKind::kGlobal:
      if (Membarrier(MEMBARRIER_CMD_GLOBAL) == 0) return;
      break;
    case BarrierKind::kMprotect:
      break;
  }
  // Reducing a mapped page's protection makes the kernel shoot down its TLB
  // entries on every CPU running this process, with an interrupt, which
  // fences those CPUs (the method folly uses without membarrier).
  static void* const page = [] {
    void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) mlock(p, 4096);
    return p;
  }();
  if (page == MAP_FAILED) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return;
  }
  mprotect(page, 4096, PROT_READ | PROT_WRITE);
  *static_cast<volatile char*>(page) = 0;
  mprotect(page, 4096, PROT_READ);
}

}  // namespace

EpochReader* AcquireReaderSlow(bool* temporary) {
  EpochReader* reader = nullptr;
  {
    MutexLock lock(&RegistryMutex());
    for (EpochReader* r = g_readers; r != nullptr; r = r->next) {
      if (!r->in_use) {
        reader = r;
        break;
      }
    }
    if (reader == nullptr) {
      reader = new EpochReader();
      reader->next = g_readers;
      g_readers = reader;
    }
    reader->in_use = true;
  }
  *temporary = t_exiting;
  if (!t_exiting) {
    t_epoch_reader = reader;
    // The first use constructs the guard and arms its destructor.
    thread_local ReaderGuard guard;
    (void)guard;
  }
  return reader;
}

void ReleaseReader(EpochReader* reader) {
  MutexLock lock(&RegistryMutex());
  reader->in_use = false;
}

void Retire(const void* owner, void* object, void (*reclaim)(void*)) {
  MutexLock lock(&RegistryMutex());
  if (g_retired == nullptr) g_retired = new std::vector<Retired>();
  // After the caller's exchange (sequenced before this), so a reader that
  // reads this epoch or a later one loads the new pointer.
  const uint64_t tag = g_epoch.fetch_add(1, std::memory_order_acq_rel) + 1;
  g_retired->push_back(Retired{tag, owner, object, reclaim});
}

void Reclaim() {
  std::vector<Retired> ready;
  {
    MutexLock lock(&RegistryMutex());
    if (g_retired == nullptr || g_retired->empty()) return;
    HeavyBarrier();
    uint64_t oldest = std::numeric_limits<uint64_t>::max();
    for (EpochReader* r = g_readers; r != nullptr; r = r->next) {
      const uint64_t s = r->state.load(std::memory_order_acquire);
      if (s != 0) oldest = std::min(oldest, s);
    }
    // Tags ascend along the list.
    auto end = std::find_if(g_retired->begin(), g_retired->end(),
                            [oldest](const Retired& x) { return x.tag > oldest; });
    ready.assign(g_retired->begin(), end);
    g_retired->erase(g_retired->begin(), end);
  }
  for (const Retired& x : ready) x.reclaim(x.object);
}

void WaitForReclaim(const void* owner) {
  for (;;) {
    Reclaim();
    {
      MutexLock lock(&RegistryMutex());
      if (g_retired == nullptr ||
          std::none_of(g_retired->begin(), g_retired->end(),
                       [owner](const Retired& x) { return x.owner == owner; })) {
        return;
      }
    }
    absl::SleepFor(absl::Microseconds(50));
  }
}

}  // namespace client_internal
}  // namespace bucketmap
