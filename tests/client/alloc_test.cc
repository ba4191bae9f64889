// Route() must not allocate. This binary replaces the global operator new
// with a per-thread counter, so it is built apart from the other tests and
// never under a sanitizer (which replaces operator new itself).
#include <atomic>
#include <cstdlib>
#include <new>
#include <random>
#include <thread>
#include <vector>

#include "bucketmap/client.h"
#include "client_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace {
thread_local int64_t t_allocations = 0;

void* Allocate(std::size_t n) {
  ++t_allocations;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* AllocateAligned(std::size_t n, std::align_val_t align) {
  ++t_allocations;
  const std::size_t a = static_cast<std::size_t>(align);
  if (void* p = std::aligned_alloc(a, (n + a - 1) / a * a)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t n) { return Allocate(n); }
void* operator new[](std::size_t n) { return Allocate(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  ++t_allocations;
  return std::malloc(n == 0 ? 1 : n);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  ++t_allocations;
  return std::malloc(n == 0 ? 1 : n);
}
void* operator new(std::size_t n, std::align_val_t a) { return AllocateAligned(n, a); }
void* operator new[](std::size_t n, std::align_val_t a) { return AllocateAligned(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace bucketmap {
namespace {

using ::bucketmap::client_testing::DeltaProto;
using ::bucketmap::client_testing::IsOk;
using ::bucketmap::client_testing::MustBuild;
using ::bucketmap::client_testing::RandomState;
using ::bucketmap::client_testing::ToProto;

TEST(ClientAllocationTest, CounterWorks) {
  const int64_t before = t_allocations;
  auto* p = new std::vector<int>(10);
  delete p;
  EXPECT_GE(t_allocations - before, 2);
}

TEST(ClientAllocationTest, RouteDoesNotAllocate) {
  std::mt19937_64 rng(11);
  Client client({});
  ASSERT_THAT(client.ApplySnapshot(ToProto(*MustBuild(RandomState(rng, 9, 20000, 100000)))),
              IsOk());
  std::vector<int64_t> teams(100000);
  std::uniform_int_distribution<int64_t> any(-5, 200000);  // includes invalid ids
  for (int64_t& t : teams) t = any(rng);
  client.Route(1);  // the thread's first read registers its epoch record

  const int64_t before = t_allocations;
  int64_t sum = 0;
  for (int round = 0; round < 10; ++round) {
    for (int64_t t : teams) sum += client.Route(t).bucket_id();
  }
  // Handles cost a reference count, not an allocation.
  for (int i = 0; i < 1000; ++i) {
    std::shared_ptr<const MappingView> view = client.Current();
    sum += view->Route(teams[i]).bucket_id();
    sum += client.Owns(1, teams[i]);
    sum += client.GetBucketState(2).has_value();
    sum += view->Topic(1, "ingestion") != nullptr;
  }
  EXPECT_EQ(t_allocations - before, 0);
  EXPECT_NE(sum, 0);
}

// RouteEvent() for teams without rules is Route() and a topic: nothing
// allocated; nor for a rate-limited team (atomics in place, a fixed sticky
// set).
TEST(ClientAllocationTest, RouteEventDoesNotAllocate) {
  std::mt19937_64 rng(12);
  MappingState state = RandomState(rng, 9, 20000, 100000);
  for (Bucket& b : state.buckets) b.topics["overflow"] = "overflow_" + b.name;
  TeamRule limit;
  limit.team_id = 424242;
  limit.kind = RuleKind::kRateLimit;
  limit.events_per_second = 10;
  limit.burst = 10;
  TeamRule drop;
  drop.team_id = 424243;
  drop.kind = RuleKind::kDrop;
  state.rules = {limit, drop};
  Client client({});
  ASSERT_THAT(client.ApplySnapshot(ToProto(*MustBuild(std::move(state)))), IsOk());
  std::vector<int64_t> teams(100000);
  std::uniform_int_distribution<int64_t> any(-5, 200000);
  for (int64_t& t : teams) t = any(rng);
  std::shared_ptr<const MappingView> view = client.Current();
  const absl::Time now = absl::FromUnixSeconds(1800000000);

  const std::string key = "a-distinct-id-longer-than-the-small-string-buffer";

  const int64_t before = t_allocations;
  int64_t sum = 0;
  for (int round = 0; round < 10; ++round) {
    for (int64_t t : teams) sum += view->RouteEvent(t, "person", now).topic() != nullptr;
  }
  for (int i = 0; i < 10000; ++i) {
    sum += view->RouteEvent(424242, key, now + absl::Milliseconds(i)).overflowed();
    sum += view->RouteEvent(424243, key, now).dropped();
  }
  EXPECT_EQ(t_allocations - before, 0);
  EXPECT_NE(sum, 0);
}

TEST(ClientAllocationTest, ReaderThreadDoesNotAllocateWhileWriterPublishes) {
  std::mt19937_64 rng(12);
  auto expected = MustBuild(RandomState(rng, 1, 5000, 20000));
  Client client({});
  ASSERT_THAT(client.ApplySnapshot(ToProto(*expected)), IsOk());
  std::atomic<bool> stop{false};
  std::atomic<bool> ready{false};
  std::atomic<int64_t> reader_allocations{-1};
  std::atomic<int64_t> reads{0};
  std::thread reader([&] {
    client.Route(1);
    const int64_t before = t_allocations;
    ready = true;
    int64_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      for (int64_t t = 1; t < 1000; ++t) n += client.Route(t).routable();
    }
    reader_allocations = t_allocations - before;
    reads = n;
  });
  while (!ready.load()) std::this_thread::yield();
  for (int64_t v = 1; v < 300; ++v) {
    Change c;
    c.set = {{v, Target::Pin(1)}};
    ASSERT_THAT(client.ApplyDeltas({DeltaProto(c, v)}), IsOk());
  }
  stop = true;
  reader.join();
  EXPECT_EQ(reader_allocations.load(), 0);
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(client.version(), 300);
}

}  // namespace
}  // namespace bucketmap
