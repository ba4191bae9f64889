// Helpers of the PgStore integration tests: a fixture with a throwaway
// PostgreSQL and plan functions built from the real domain planner.
#ifndef BUCKETMAP_TESTS_STORE_STORE_TEST_UTIL_H_
#define BUCKETMAP_TESTS_STORE_STORE_TEST_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "domain/planner.h"
#include "domain/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/store/pg_store.h"
#include "tests/domain/domain_test_util.h"
#include "tests/support/pg_harness.h"

namespace bucketmap {
namespace store_test {

using testing_util::IsOk;
using testing_util::StatusIs;

inline WriteContext Ctx(std::string kind, std::string request_id = "",
                        std::string fingerprint = "") {
  WriteContext ctx;
  ctx.kind = std::move(kind);
  ctx.actor = "test-actor";
  ctx.reason = "integration test";
  ctx.request_id = std::move(request_id);
  ctx.fingerprint = std::move(fingerprint);
  ctx.deadline = absl::Now() + absl::Seconds(30);
  return ctx;
}

inline Bucket NewBucket(const std::string& name, const std::string& pool = kDefaultPool) {
  Bucket b;
  b.name = name;
  b.pool = pool;
  b.topics = {{"ingestion", "events_plugin_ingestion_" + name},
              {"clickhouse", "clickhouse_events_json_" + name}};
  b.consumer_groups = {{"ingestion", "ingestion-" + name}};
  b.drain_order = {"ingestion", "clickhouse"};
  b.labels = {{"tier", "test"}};
  return b;
}

// CreateBucket through the real planner; the response is "bucket <id>".
inline PlanFn CreateBucketPlan(const std::string& name, const std::string& pool = kDefaultPool) {
  return [name, pool](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
    ASSIGN_OR_RETURN(Plan plan, PlanCreateBucket(before, NewBucket(name, pool)));
    const int32_t id = plan.change.buckets.empty() ? 0 : plan.change.buckets[0].id;
    return PlannedWrite{std::move(plan), absl::StrCat("bucket ", id)};
  };
}

// Assignments through the real planner; the response is "assign <n>".
inline PlanFn AssignPlan(std::vector<AssignmentOp> ops) {
  return [ops = std::move(ops)](const Snapshot& before) -> absl::StatusOr<PlannedWrite> {
    const size_t n = ops.size();
    ASSIGN_OR_RETURN(Plan plan, PlanAssignments(before, ops));
    return PlannedWrite{std::move(plan), absl::StrCat("assign ", n)};
  };
}

inline PlanFn PinPlan(int64_t team_id, int32_t bucket_id) {
  return AssignPlan({AssignmentOp{team_id, Target::Pin(bucket_id)}});
}

class PgStoreFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = TestPostgres::Start();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
    auto store = PgStore::Open(Options());
    ASSERT_TRUE(store.ok()) << store.status() << "\n" << pg_->LogTail();
    store_ = *std::move(store);
  }

  PgStoreOptions Options() const {
    PgStoreOptions options;
    options.url = pg_->url();
    return options;
  }

  // Runs a query whose result is one integer.
  int64_t QueryInt(const std::string& sql) {
    auto out = pg_->Psql(sql);
    EXPECT_TRUE(out.ok()) << out.status();
    int64_t value = -1;
    EXPECT_TRUE(out.ok() && absl::SimpleAtoi(*out, &value)) << sql << " -> " << out.value_or("");
    return value;
  }

  // Writes and expects success.
  WriteResult MustWrite(const WriteContext& ctx, const PlanFn& plan,
                        std::shared_ptr<const Snapshot> cached = nullptr) {
    auto result = store_->Write(ctx, std::move(cached), plan);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *std::move(result) : WriteResult{};
  }

  std::unique_ptr<TestPostgres> pg_;
  std::unique_ptr<PgStore> store_;
};

}  // namespace store_test
}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_STORE_STORE_TEST_UTIL_H_
