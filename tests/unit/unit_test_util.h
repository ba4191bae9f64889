// Helpers of the unit tests over the fakes of tests/support: write
// contexts, buckets with topics and consumer groups, plan functions built
// from the real domain planner, and a bounded wait for the tests that run
// a component's own thread. Header-only.
#ifndef BUCKETMAP_TESTS_UNIT_UNIT_TEST_UTIL_H_
#define BUCKETMAP_TESTS_UNIT_UNIT_TEST_UTIL_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "domain/planner.h"
#include "domain/snapshot.h"
#include "domain/status_macros.h"
#include "gmock/gmock.h"
#include "server/store/store.h"
#include "tests/domain/domain_test_util.h"

namespace bucketmap {
namespace unit_test {

using testing_util::IsOk;
using testing_util::StatusIs;

// A status of `code`, whatever its message.
inline auto StatusIs(absl::StatusCode code) { return StatusIs(code, ::testing::_); }

// bucketmap.v1.ClientRole values (mapping.proto), without its header.
inline constexpr int kProducer = 1;
inline constexpr int kConsumer = 2;

inline WriteContext Ctx(std::string kind, std::string request_id = "",
                        std::string fingerprint = "") {
  WriteContext ctx;
  ctx.kind = std::move(kind);
  ctx.actor = "unit-test";
  ctx.reason = "unit test";
  ctx.request_id = std::move(request_id);
  ctx.fingerprint = std::move(fingerprint);
  return ctx;
}

// A bucket of `pool` whose roles are `roles` (role -> topic), each with the
// consumer group "g_<topic>" unless listed in `no_group`, drained in the
// order listed.
inline Bucket RoleBucket(int32_t id, const std::string& name, const std::string& pool,
                         const std::vector<std::pair<std::string, std::string>>& roles,
                         const std::vector<std::string>& no_group = {}) {
  Bucket b;
  b.id = id;
  b.name = name;
  b.pool = pool;
  for (const auto& [role, topic] : roles) {
    b.topics[role] = topic;
    if (std::find(no_group.begin(), no_group.end(), role) == no_group.end()) {
      b.consumer_groups[role] = "g_" + topic;
    }
    b.drain_order.push_back(role);
  }
  b.created_version = 1;
  b.updated_version = 1;
  return b;
}

// A snapshot at `version` with `buckets` and the pins `pins` (team ->
// bucket).
inline std::shared_ptr<const Snapshot> SnapshotOf(int64_t version, std::vector<Bucket> buckets,
                                                  const std::map<int64_t, int32_t>& pins = {}) {
  MappingState state;
  state.version = version;
  state.cluster_id = "unit-cluster";
  int32_t next = 1;
  for (const Bucket& b : buckets) next = std::max(next, b.id + 1);
  state.next_bucket_id = next;
  state.buckets = std::move(buckets);
  for (const auto& [team, bucket] : pins) state.assignments.emplace_back(team, Target::Pin(bucket));
  return testing_util::MustBuild(std::move(state));
}

// Pins through the real planner; the response is "pin <team> -> <bucket>".
inline PlanFn PinPlan(int64_t team, int32_t bucket) {
  return [team, bucket](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
    ASSIGN_OR_RETURN(Plan plan, PlanAssignments(before, {AssignmentOp{team, Target::Pin(bucket)}}));
    return PlannedWrite{std::move(plan), absl::StrCat("pin ", team, " -> ", bucket)};
  };
}

// A new bucket of the default pool through the real planner.
inline PlanFn CreateBucketPlan(const std::string& name) {
  return [name](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
    Bucket b;
    b.name = name;
    b.topics = {{"ingestion", "in_" + name}};
    ASSIGN_OR_RETURN(Plan plan, PlanCreateBucket(before, std::move(b)));
    return PlannedWrite{std::move(plan), absl::StrCat("bucket ", name)};
  };
}

// Polls `done` every millisecond until it holds or `timeout` (real time)
// passes; returns whether it held. For the tests that run a component's
// own thread; the deterministic ones need no wait at all.
inline bool WaitUntil(const std::function<bool()>& done,
                      absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time give_up = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() >= give_up) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

}  // namespace unit_test
}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_UNIT_UNIT_TEST_UTIL_H_
