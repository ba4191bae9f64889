// Allocation counting for benchmarks that promise "no allocation": replaces
// the global operator new/delete, counting every operator new on the
// calling thread in t_allocations. Include it from exactly one source file
// of a benchmark executable (it defines the replacements).
#ifndef BUCKETMAP_BENCH_ALLOC_COUNTER_H_
#define BUCKETMAP_BENCH_ALLOC_COUNTER_H_

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace {
thread_local int64_t t_allocations = 0;
void* CountedAlloc(std::size_t n) {
  ++t_allocations;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
}  // namespace
void* operator new(std::size_t n) { return CountedAlloc(n); }
void* operator new[](std::size_t n) { return CountedAlloc(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

#endif  // BUCKETMAP_BENCH_ALLOC_COUNTER_H_
