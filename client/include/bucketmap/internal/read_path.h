// The client's read path, inline: what Client::Route() runs, kept in a
// header so that a producer's call to Route() compiles to straight-line
// code in its own loop. Not part of the API; include bucketmap/client.h.
//
// Two parts:
//   - RouteTable: the few words of a routing index that a lookup reads, and
//     the lookup itself (the index is built by client/src/route_index.cc).
//   - EpochReader: the read side of the client's epoch-based reclamation
//     (client/src/epoch.cc has the reclaiming side and the full argument).
//
// Why our own epochs rather than liburcu's read lock: a reader announces
// itself with two plain stores to a cache line of its own and one load of a
// read-mostly global, with no nesting count, no per-call check for the
// kernel's membarrier, and no futex wake-up check on the way out. Ordering
// between the reader's announcement and its load of the published pointer
// is paid on the reclaiming side with membarrier() (an asymmetric fence),
// so the reader needs only a compiler barrier.
//
// Thread safety: RouteTable is immutable once published. An EpochReader is
// used only by the thread it is registered to, and read by reclaimers.
#ifndef BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_INTERNAL_READ_PATH_H_
#define BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_INTERNAL_READ_PATH_H_

#include <atomic>
#include <cstdint>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
#include "bucketmap/route_result.h"

namespace bucketmap {
namespace client_internal {

// Mix64() of domain/placement.h, inlined: Route() is dominated by its
// instruction count and branches, and the domain's copy is out of line in
// another library. RouteIndexTest.HashIsTheDomainHash holds the two equal.
inline uint64_t HashTeam(int64_t team_id) {
  uint64_t x = static_cast<uint64_t>(team_id) + 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// x86-64 outside ThreadSanitizer: Lookup() selects with inline cmov,
// because GCC turns the equivalent ternaries back into branches. (TSan
// builds keep the plain C++, so that their reads stay instrumented.)
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
#define BUCKETMAP_READ_PATH_CMOV 1
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#undef BUCKETMAP_READ_PATH_CMOV
#endif
#endif
#endif

// One override: a team and its packed route (RouteResult's bits).
struct RouteEntry {
  int64_t team_id = 0;  // 0: a free entry (team ids are >= 1)
  uint64_t route = 0;
};

// One cache line. Entries fill from the front and are never removed in
// place (a partition is rebuilt instead), so a bucket whose last entry is
// free ends every probe that reaches it.
struct alignas(64) RouteBucket {
  RouteEntry entries[4];
};

// One partition of the override table: a power of two of buckets.
struct RoutePartitionRef {
  const RouteBucket* buckets;
  uint64_t mask;
};

// route = (entry.team_id == team_id) ? entry.route : route, without a
// branch.
ABSL_ATTRIBUTE_ALWAYS_INLINE inline void SelectIfTeam(const RouteEntry& entry, int64_t team_id,
                                                      uint64_t& route) {
#ifdef BUCKETMAP_READ_PATH_CMOV
  asm("cmpq %[team], %[key]\n\t"
      "cmoveq %[entry_route], %[route]"
      : [route] "+r"(route)
      : [key] "m"(entry.team_id), [team] "r"(team_id), [entry_route] "m"(entry.route)
      : "cc");
#else
  const uint64_t take = uint64_t{0} - static_cast<uint64_t>(entry.team_id == team_id);
  route = (entry.route & take) | (route & ~take);
#endif
}

// route != 0 ? route : fallback, without a branch.
ABSL_ATTRIBUTE_ALWAYS_INLINE inline uint64_t OrIfZero(uint64_t route, uint64_t fallback) {
#ifdef BUCKETMAP_READ_PATH_CMOV
  asm("testq %[route], %[route]\n\t"
      "cmovzq %[fallback], %[route]"
      : [route] "+r"(route)
      : [fallback] "r"(fallback)
      : "cc");
  return route;
#else
  const uint64_t keep = uint64_t{0} - static_cast<uint64_t>(route != 0);
  return (route & keep) | (fallback & ~keep);
#endif
}

// route != 0 ? 0 : value, without a branch.
ABSL_ATTRIBUTE_ALWAYS_INLINE inline uint64_t ZeroIfSet(uint64_t route, uint64_t value) {
#ifdef BUCKETMAP_READ_PATH_CMOV
  asm("testq %[route], %[route]\n\t"
      "cmovnzq %[zero], %[value]"
      : [value] "+r"(value)
      : [route] "r"(route), [zero] "r"(uint64_t{0})
      : "cc");
  return value;
#else
  return value & (uint64_t{0} - static_cast<uint64_t>(route == 0));
#endif
}

// What a lookup reads, in one place, so that the published pointer leads
// straight to it (see route_index.h for the layout and its reasons).
struct RouteTable {
  int64_t version = 0;
  uint64_t partition_mask = 0;
  const RoutePartitionRef* partitions = nullptr;
  // Default placement: TeamSlot() -> index into default_routes.
  const uint16_t* default_slots = nullptr;
  const uint64_t* default_routes = nullptr;

  // Returns the route of `team_id`. Wait-free; never allocates.
  ABSL_ATTRIBUTE_ALWAYS_INLINE RouteResult Lookup(int64_t team_id) const {
    if (ABSL_PREDICT_FALSE(team_id < 1)) {
      return RouteResult(version, RouteResult::Forced(RouteStatus::kInvalidTeam));
    }
    const uint64_t h = HashTeam(team_id);
    // Issued before the probe and independent of it, so the two loads
    // overlap.
    const uint64_t default_route = default_routes[default_slots[h >> 48]];
    const RoutePartitionRef& part = partitions[(h >> 32) & partition_mask];
    const RouteEntry* e = part.buckets[h & part.mask].entries;
    // A compare and a conditional move per entry, no branch: a mispredicted
    // branch on a cache-missing key would discard the lookups behind it.
    // An override's route is never 0 (it names a bucket, a pool or both),
    // so 0 means "not in this bucket".
    uint64_t route = 0;
    SelectIfTeam(e[0], team_id, route);
    SelectIfTeam(e[1], team_id, route);
    SelectIfTeam(e[2], team_id, route);
    SelectIfTeam(e[3], team_id, route);
    // Not here, and the bucket is full: the team may be further on (rare).
    // One branch on both conditions: `route == 0` alone is a coin toss, and
    // "full" alone is common enough to cost mispredictions.
    if (ABSL_PREDICT_FALSE(ZeroIfSet(route, static_cast<uint64_t>(e[3].team_id)) != 0)) {
      route = ProbeOn(part, h & part.mask, team_id);
    }
    return RouteResult(version, OrIfZero(route, default_route));
  }

 private:
  // Probes the buckets after `b`; returns the team's route, or 0. Entries
  // fill from the front, so a bucket whose last entry is free ends it.
  ABSL_ATTRIBUTE_NOINLINE static uint64_t ProbeOn(const RoutePartitionRef& part, uint64_t b,
                                                  int64_t team_id) {
    for (;;) {
      b = (b + 1) & part.mask;
      const RouteEntry* e = part.buckets[b].entries;
      for (int i = 0; i < 4; ++i) {
        if (e[i].team_id == team_id) return e[i].route;
        if (e[i].team_id == 0) return 0;
      }
    }
  }
};

// The global epoch: advanced by each retirement (client/src/epoch.cc),
// read by every reader on entry. Starts at 1; 0 means "not reading".
extern std::atomic<uint64_t> g_epoch;

// One reading thread's announcement. Records are registered on a thread's
// first read, reused after the thread exits, and never freed.
struct alignas(64) EpochReader {
  // 0 outside a read-side section; inside, the epoch read on entry.
  std::atomic<uint64_t> state{0};
  // Written only under the registry lock.
  EpochReader* next = nullptr;
  bool in_use = false;

  // Enters a read-side section. Not nestable: sections in this library
  // never call out, so none encloses another.
  void Enter() {
    state.store(g_epoch.load(std::memory_order_acquire), std::memory_order_release);
    // The store must not be reordered after the caller's load of the
    // published pointer. The compiler is stopped here; the CPU's store
    // buffer is drained by the reclaimer's membarrier() instead.
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  // Leaves it: every read made inside happens-before a reclaimer that
  // observes this store.
  void Exit() { state.store(0, std::memory_order_release); }
};

// The calling thread's record; nullptr until its first read, and again
// once the thread has begun to exit.
inline thread_local EpochReader* t_epoch_reader = nullptr;

}  // namespace client_internal
}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_INTERNAL_READ_PATH_H_
