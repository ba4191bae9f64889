// Helpers shared by the libFuzzer targets: a valid base mapping to apply
// fuzzed deltas and requests to, and the cross-check of the client's
// routing index against the domain's reference RouteOf().
//
// A failed check calls abort(), which libFuzzer reports as a crash with
// the input that caused it.
//
// Thread safety: none needed; a fuzzer runs one input at a time.
#ifndef BUCKETMAP_FUZZ_FUZZ_UTIL_H_
#define BUCKETMAP_FUZZ_FUZZ_UTIL_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "bucketmap/client.h"
#include "domain/snapshot.h"

namespace bucketmap {
namespace fuzz {

inline constexpr int64_t kBaseVersion = 10;

// Five buckets in the pools "default" and "paid" (one PAUSED, one
// DRAINING, one RETIRED) and a few pins and pool assignments, at
// kBaseVersion.
MappingState BaseState();
// Snapshot::Build(BaseState()); aborts if that fails.
std::shared_ptr<const Snapshot> BaseSnapshot();

// Aborts with `what` when `ok` is false.
inline void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz check failed: %s\n", what);
    std::abort();
  }
}

// Checks that `client` routes every team the same way as `expected` does:
// the teams with assignments, their neighbours, a range of teams that only
// have a default placement, and invalid ids.
void CheckSameRoutes(const Client& client, const Snapshot& expected);

}  // namespace fuzz
}  // namespace bucketmap

#endif  // BUCKETMAP_FUZZ_FUZZ_UTIL_H_
