#include "domain/validation.h"

#include <string>
#include <vector>

#include "domain_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bucketmap {
namespace {

using ::bucketmap::testing_util::IsOk;
using ::bucketmap::testing_util::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

using Code = absl::StatusCode;

auto Invalid(const std::string& prefix) {
  return StatusIs(Code::kInvalidArgument, StartsWith(prefix + ": "));
}

TEST(ValidateNameTest, BucketNames) {
  for (std::string ok : {std::string("a"), std::string("0"), std::string("b-3"),
                         std::string("events-1"), std::string(63, 'a')}) {
    EXPECT_THAT(ValidateBucketName(ok, "bucket.name"), IsOk()) << ok;
  }
  for (std::string bad :
       {std::string(""), std::string("-a"), std::string("A"), std::string("a_b"),
        std::string("a b"), std::string("a.b"), std::string(64, 'a'), std::string("caf\xc3\xa9")}) {
    EXPECT_THAT(ValidateBucketName(bad, "bucket.name"), Invalid("bucket.name")) << bad;
  }
  EXPECT_THAT(ValidateBucketName("Bad", "x.name"),
              StatusIs(Code::kInvalidArgument,
                       "x.name: bucket name \"Bad\" must match [a-z0-9][a-z0-9-]{0,62}"));
}

TEST(ValidateNameTest, PoolNames) {
  EXPECT_THAT(ValidatePoolName("free", "pool"), IsOk());
  EXPECT_THAT(ValidatePoolName("default", "pool"), IsOk());
  EXPECT_THAT(ValidatePoolName("", "pool"), Invalid("pool"));
  EXPECT_THAT(ValidatePoolName("Free", "bucket.pool"),
              StatusIs(Code::kInvalidArgument, AllOf(StartsWith("bucket.pool: pool name \"Free\""),
                                                     HasSubstr("[a-z0-9][a-z0-9-]{0,62}"))));
  EXPECT_THAT(ValidatePoolName(std::string(64, 'p'), "pool"), Invalid("pool"));
}

TEST(ValidateNameTest, TopicNames) {
  for (std::string ok : {std::string("events_plugin_ingestion_3"), std::string("A.b-C_9"),
                         std::string("..."), std::string(".a"), std::string(249, 'x')}) {
    EXPECT_THAT(ValidateTopicName(ok, "t"), IsOk()) << ok;
  }
  EXPECT_THAT(ValidateTopicName("x y", "bucket.topics[ingestion]"),
              StatusIs(Code::kInvalidArgument,
                       "bucket.topics[ingestion]: topic \"x y\" must match [a-zA-Z0-9._-]{1,249}"));
  for (std::string bad : {std::string(""), std::string(250, 'x'), std::string("a/b"),
                          std::string("a\nb"), std::string("t\xc3\xa9")}) {
    EXPECT_THAT(ValidateTopicName(bad, "t"), Invalid("t")) << bad;
  }
  EXPECT_THAT(ValidateTopicName(".", "t"),
              StatusIs(Code::kInvalidArgument, AllOf(StartsWith("t: "), HasSubstr("not allowed"))));
  EXPECT_THAT(ValidateTopicName("..", "t"), Invalid("t"));
}

TEST(ValidateNameTest, Roles) {
  EXPECT_THAT(ValidateRole("ingestion", "r"), IsOk());
  EXPECT_THAT(ValidateRole("click_house-2", "r"), IsOk());
  for (std::string bad : {std::string(""), std::string("_a"), std::string("Ingest"),
                          std::string("a.b"), std::string(64, 'r')}) {
    EXPECT_THAT(ValidateRole(bad, "r"), Invalid("r")) << bad;
  }
}

TEST(ValidateScalarTest, Ids) {
  EXPECT_THAT(ValidateTeamId(1, "team_id"), IsOk());
  EXPECT_THAT(ValidateTeamId(INT64_MAX, "team_id"), IsOk());
  EXPECT_THAT(ValidateTeamId(0, "team_id"), Invalid("team_id"));
  EXPECT_THAT(ValidateTeamId(-5, "assignments[3].team_id"), Invalid("assignments[3].team_id"));
  EXPECT_THAT(ValidateBucketId(1, "bucket_id"), IsOk());
  EXPECT_THAT(ValidateBucketId(0, "bucket_id"), Invalid("bucket_id"));
  EXPECT_THAT(ValidateBucketId(int64_t{1} << 31, "bucket_id"), Invalid("bucket_id"));
}

TEST(ValidateScalarTest, Reason) {
  EXPECT_THAT(ValidateReason("rebalance noisy team"), IsOk());
  EXPECT_THAT(ValidateReason("d\xc3\xa9placement \xe2\x9c\x93 \xf0\x9f\x98\x80"), IsOk());
  EXPECT_THAT(ValidateReason(std::string(kMaxReasonBytes, 'r')), IsOk());
  EXPECT_THAT(ValidateReason(""), Invalid("reason"));
  EXPECT_THAT(ValidateReason("  \t"), Invalid("reason"));
  EXPECT_THAT(ValidateReason(std::string(kMaxReasonBytes + 1, 'r')), Invalid("reason"));
  for (std::string bad : {std::string("a\xff"), std::string("\xc3"), std::string("\xc0\x80"),
                          std::string("\xed\xa0\x80"), std::string("\xf4\x90\x80\x80"),
                          std::string("\xe2\x28\xa1")}) {
    EXPECT_THAT(ValidateReason(bad),
                StatusIs(Code::kInvalidArgument, "reason: must be valid UTF-8"));
  }
}

TEST(ValidateScalarTest, RequestId) {
  EXPECT_THAT(ValidateRequestId(""), IsOk());
  EXPECT_THAT(ValidateRequestId("3f2a-9c, retry 2"), IsOk());
  EXPECT_THAT(ValidateRequestId(std::string(kMaxRequestIdBytes, 'k')), IsOk());
  EXPECT_THAT(ValidateRequestId(std::string(kMaxRequestIdBytes + 1, 'k')), Invalid("request_id"));
  EXPECT_THAT(ValidateRequestId("tab\there"), Invalid("request_id"));
  EXPECT_THAT(ValidateRequestId("caf\xc3\xa9"), Invalid("request_id"));
}

TEST(ValidateScalarTest, VersionsPagesWeights) {
  EXPECT_THAT(ValidateExpectedVersion(0), IsOk());
  EXPECT_THAT(ValidateExpectedVersion(7), IsOk());
  EXPECT_THAT(ValidateExpectedVersion(-1), Invalid("expected_version"));
  EXPECT_THAT(ValidatePageSize(0, 1000, "page_size"), IsOk());
  EXPECT_THAT(ValidatePageSize(1000, 1000, "page_size"), IsOk());
  EXPECT_THAT(ValidatePageSize(1001, 1000, "page_size"), Invalid("page_size"));
  EXPECT_THAT(ValidatePageSize(-1, 1000, "page_size"), Invalid("page_size"));
  EXPECT_THAT(ValidateWeight(1, "w"), IsOk());
  EXPECT_THAT(ValidateWeight(1000, "w"), IsOk());
  EXPECT_THAT(ValidateWeight(0, "bucket.weight"), Invalid("bucket.weight"));
  EXPECT_THAT(ValidateWeight(1001, "bucket.weight"), Invalid("bucket.weight"));
}

Bucket GoodBucket() {
  Bucket b;
  b.name = "events-3";
  b.weight = 0;
  b.pool = "";
  b.topics = {{"ingestion", "events_plugin_ingestion_3"}, {"clickhouse", "clickhouse_events_3"}};
  b.consumer_groups = {{"ingestion", "plugin-server-3"}};
  b.drain_order = {"ingestion", "clickhouse"};
  b.labels = {{"team", "ingest"}, {"k8s.io/zone", "eu-1"}};
  return b;
}

TEST(ValidateNewBucketTest, AcceptsGoodBucket) {
  EXPECT_THAT(ValidateNewBucket(GoodBucket(), 0), IsOk());
  EXPECT_THAT(ValidateNewBucket(GoodBucket(), 1), IsOk());
  EXPECT_THAT(ValidateNewBucket(GoodBucket(), 2), IsOk());
  Bucket b = GoodBucket();
  b.weight = 250;
  b.pool = "paid";
  EXPECT_THAT(ValidateNewBucket(b, 0), IsOk());
}

TEST(ValidateNewBucketTest, RejectsEachField) {
  auto with = [](auto mutate) {
    Bucket b = GoodBucket();
    mutate(b);
    return ValidateNewBucket(b, 0);
  };
  EXPECT_THAT(with([](Bucket& b) { b.id = 3; }), Invalid("bucket.id"));
  EXPECT_THAT(with([](Bucket& b) { b.created_version = 3; }), Invalid("bucket.created_version"));
  EXPECT_THAT(with([](Bucket& b) { b.updated_version = 3; }), Invalid("bucket.updated_version"));
  EXPECT_THAT(with([](Bucket& b) { b.name = ""; }), Invalid("bucket.name"));
  EXPECT_THAT(with([](Bucket& b) { b.name = "No"; }), Invalid("bucket.name"));
  EXPECT_THAT(with([](Bucket& b) { b.weight = 1001; }), Invalid("bucket.weight"));
  EXPECT_THAT(with([](Bucket& b) { b.weight = -1; }), Invalid("bucket.weight"));
  EXPECT_THAT(with([](Bucket& b) { b.pool = "Paid"; }), Invalid("bucket.pool"));
  EXPECT_THAT(with([](Bucket& b) { b.topics["ingestion"] = "x y"; }),
              StatusIs(Code::kInvalidArgument,
                       "bucket.topics[ingestion]: topic \"x y\" must match [a-zA-Z0-9._-]{1,249}"));
  EXPECT_THAT(with([](Bucket& b) { b.topics["ingestion"] = ".."; }),
              Invalid("bucket.topics[ingestion]"));
  EXPECT_THAT(with([](Bucket& b) { b.topics["Bad Role"] = "t"; }),
              Invalid("bucket.topics[Bad Role]"));
  EXPECT_THAT(with([](Bucket& b) {
                for (int i = 0; i < 33; ++i) b.topics["r" + std::to_string(i)] = "t";
              }),
              Invalid("bucket.topics"));
  EXPECT_THAT(with([](Bucket& b) { b.consumer_groups["ingestion"] = "has space"; }),
              Invalid("bucket.consumer_groups[ingestion]"));
  EXPECT_THAT(with([](Bucket& b) { b.consumer_groups["ingestion"] = ""; }),
              Invalid("bucket.consumer_groups[ingestion]"));
  EXPECT_THAT(with([](Bucket& b) { b.consumer_groups["ingestion"] = std::string(256, 'g'); }),
              Invalid("bucket.consumer_groups[ingestion]"));
  EXPECT_THAT(with([](Bucket& b) { b.consumer_groups["ingestion"] = std::string(255, 'g'); }),
              IsOk());
  EXPECT_THAT(with([](Bucket& b) { b.consumer_groups["other"] = "g"; }),
              StatusIs(Code::kInvalidArgument, AllOf(StartsWith("bucket.consumer_groups[other]: "),
                                                     HasSubstr("no topic in bucket.topics"))));
  EXPECT_THAT(with([](Bucket& b) {
                b.drain_order = {"ingestion", "ingestion"};
              }),
              StatusIs(Code::kInvalidArgument,
                       AllOf(StartsWith("bucket.drain_order[1]: "), HasSubstr("duplicate"))));
  EXPECT_THAT(with([](Bucket& b) {
                b.drain_order = {"ingestion", "nope"};
              }),
              Invalid("bucket.drain_order[1]"));
  EXPECT_THAT(with([](Bucket& b) { b.labels["Team"] = "x"; }), Invalid("bucket.labels[Team]"));
  EXPECT_THAT(with([](Bucket& b) { b.labels["_x"] = "x"; }), Invalid("bucket.labels[_x]"));
  EXPECT_THAT(with([](Bucket& b) { b.labels[std::string(64, 'k')] = "x"; }),
              Invalid("bucket.labels[" + std::string(64, 'k') + "]"));
  EXPECT_THAT(with([](Bucket& b) { b.labels[std::string(63, 'k')] = std::string(256, 'v'); }),
              IsOk());
  EXPECT_THAT(with([](Bucket& b) { b.labels["team"] = std::string(257, 'v'); }),
              Invalid("bucket.labels[team]"));
  EXPECT_THAT(with([](Bucket& b) { b.labels["team"] = "\xff"; }), Invalid("bucket.labels[team]"));
  EXPECT_THAT(with([](Bucket& b) {
                for (int i = 0; i < 65; ++i) b.labels["l" + std::to_string(i)] = "v";
              }),
              Invalid("bucket.labels"));
}

TEST(ValidateNewBucketTest, StateMustBeUnsetActiveOrPaused) {
  EXPECT_THAT(
      ValidateNewBucket(GoodBucket(), 3),
      StatusIs(Code::kInvalidArgument, AllOf(StartsWith("bucket.state: "), HasSubstr("DRAINING"))));
  EXPECT_THAT(ValidateNewBucket(GoodBucket(), 4),
              StatusIs(Code::kInvalidArgument, HasSubstr("RETIRED")));
  EXPECT_THAT(
      ValidateNewBucket(GoodBucket(), 9),
      StatusIs(Code::kInvalidArgument, AllOf(StartsWith("bucket.state: "), HasSubstr("9"))));
  EXPECT_THAT(ValidateNewBucket(GoodBucket(), -1), Invalid("bucket.state"));
}

TEST(ValidateBucketUpdateTest, Paths) {
  const Bucket v = GoodBucket();
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {}), Invalid("update_mask.paths"));
  for (const char* immutable : {"id", "name", "created_version", "updated_version"}) {
    EXPECT_THAT(ValidateBucketUpdate(v, 0, {"labels", immutable}),
                StatusIs(Code::kInvalidArgument,
                         AllOf(StartsWith("update_mask.paths[1]: "), HasSubstr("immutable"))))
        << immutable;
  }
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {"colour"}),
              StatusIs(Code::kInvalidArgument,
                       AllOf(StartsWith("update_mask.paths[0]: "), HasSubstr("unknown"))));
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {"weight", "labels", "weight"}),
              StatusIs(Code::kInvalidArgument,
                       AllOf(StartsWith("update_mask.paths[2]: "), HasSubstr("duplicate"))));
  EXPECT_THAT(
      ValidateBucketUpdate(
          v, 1, {"state", "weight", "pool", "topics", "consumer_groups", "drain_order", "labels"}),
      IsOk());
}

TEST(ValidateBucketUpdateTest, MaskedValues) {
  Bucket v = GoodBucket();
  for (int s = 1; s <= 4; ++s) EXPECT_THAT(ValidateBucketUpdate(v, s, {"state"}), IsOk());
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {"state"}), Invalid("bucket.state"));
  EXPECT_THAT(ValidateBucketUpdate(v, 5, {"state"}), Invalid("bucket.state"));
  // An unmasked state is not looked at.
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {"labels"}), IsOk());

  v.weight = 0;  // resets to the default
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {"weight"}), IsOk());
  v.weight = 1001;
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {"weight"}), Invalid("bucket.weight"));
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {"labels"}), IsOk());

  v = GoodBucket();
  v.pool = "";
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {"pool"}), IsOk());
  v.pool = "No Pool";
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {"pool"}), Invalid("bucket.pool"));

  v = GoodBucket();
  v.topics["ingestion"] = ".";
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {"topics"}), Invalid("bucket.topics[ingestion]"));

  // Roles are cross-checked against topics only when topics are masked too;
  // otherwise the planner checks them against the bucket's topics.
  v = GoodBucket();
  v.consumer_groups["other"] = "g";
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {"consumer_groups"}), IsOk());
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {"consumer_groups", "topics"}),
              Invalid("bucket.consumer_groups[other]"));
  v.consumer_groups["other"] = "g g";
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {"consumer_groups"}),
              Invalid("bucket.consumer_groups[other]"));

  v = GoodBucket();
  v.drain_order = {"other"};
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {"drain_order"}), IsOk());
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {"drain_order", "topics"}),
              Invalid("bucket.drain_order[0]"));
  v.drain_order = {"a", "a"};
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {"drain_order"}), Invalid("bucket.drain_order[1]"));

  v = GoodBucket();
  v.labels["BAD"] = "x";
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {"labels"}), Invalid("bucket.labels[BAD]"));
  EXPECT_THAT(ValidateBucketUpdate(v, 0, {"weight"}), IsOk());
}

TEST(ValidateMessageTest, LongValuesAreShortenedAndEscaped) {
  auto s = ValidateTopicName(std::string(300, 'x') + " ", "t");
  ASSERT_FALSE(s.ok());
  EXPECT_LT(s.message().size(), 200u);
  auto n = ValidateBucketName("a\nb", "bucket.name");
  EXPECT_THAT(n, StatusIs(Code::kInvalidArgument, HasSubstr("\"a\\nb\"")));
}

}  // namespace
}  // namespace bucketmap
