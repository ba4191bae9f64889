// Small helpers shared by the domain unit tests: status matchers and
// builders of buckets and snapshots.
#ifndef BUCKETMAP_TESTS_DOMAIN_DOMAIN_TEST_UTIL_H_
#define BUCKETMAP_TESTS_DOMAIN_DOMAIN_TEST_UTIL_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "domain/model.h"
#include "domain/snapshot.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bucketmap {
namespace testing_util {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

// Matches an absl::Status or StatusOr whose code is `code` and whose
// message matches `message_matcher`.
MATCHER_P2(StatusIs, code, message_matcher,
           std::string("has code ") + absl::StatusCodeToString(code)) {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code && ::testing::Matches(::testing::Matcher<std::string>(message_matcher))(
                                 std::string(s.message()));
}

MATCHER(IsOk, "is OK") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status is " << s;
  return s.ok();
}

inline Bucket MakeBucket(int32_t id, std::string pool = kDefaultPool,
                         BucketState state = BucketState::kActive, int32_t weight = 100) {
  Bucket b;
  b.id = id;
  b.name = "b" + std::to_string(id);
  b.pool = std::move(pool);
  b.state = state;
  b.weight = weight;
  b.topics = {{"ingestion", "events_plugin_ingestion_" + std::to_string(id)}};
  b.created_version = 1;
  b.updated_version = 1;
  return b;
}

inline std::shared_ptr<const Snapshot> MustBuild(MappingState state) {
  auto s = Snapshot::Build(std::move(state));
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : nullptr;
}

}  // namespace testing_util
}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_DOMAIN_DOMAIN_TEST_UTIL_H_
