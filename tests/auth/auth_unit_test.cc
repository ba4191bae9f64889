// Unit tests of the token file, the token store and the write rate limit.
#include <filesystem>
#include <string>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/rpc/auth.h"
#include "server/rpc/rate_limit.h"
#include "tests/auth/auth_test_util.h"

namespace bucketmap {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(HexOf(Sha256("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(HexOf(Sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(ParseTokenFileTest, AcceptsCommentsBlankLinesTabsAndUppercaseHex) {
  std::string hex = HexOf(Sha256("t2"));
  for (char& c : hex) c = static_cast<char>(toupper(c));
  const std::string file = "# bucketmap tokens\n\n" + TokenLine("alice", "admin", "t1") +
                           "  rob\treader  " + hex + "   # the reader\r\n" +
                           "ci-bot@example.com reader " + HexOf(Sha256("t3"));
  auto entries = ParseTokenFile(file);
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 3u);
  EXPECT_EQ((*entries)[0].name, "alice");
  EXPECT_EQ((*entries)[0].role, Role::kAdmin);
  EXPECT_EQ((*entries)[0].hash, Sha256("t1"));
  EXPECT_EQ((*entries)[1].name, "rob");
  EXPECT_EQ((*entries)[1].role, Role::kReader);
  EXPECT_EQ((*entries)[1].hash, Sha256("t2"));
  EXPECT_EQ((*entries)[2].name, "ci-bot@example.com");
}

TEST(ParseTokenFileTest, EmptyFileIsAnEmptyTable) {
  auto entries = ParseTokenFile("# nobody yet\n");
  ASSERT_TRUE(entries.ok()) << entries.status();
  EXPECT_TRUE(entries->empty());
}

TEST(ParseTokenFileTest, RejectsBadLinesNamingTheLine) {
  const std::string good = TokenLine("alice", "admin", "t1");
  const std::string hash = HexOf(Sha256("x"));
  struct Case {
    std::string line;
    std::string error;
  };
  const Case cases[] = {
      {"bob reader\n", "line 2: expected `<name> <role> <sha256-hex>`, got 2 fields"},
      {"bob reader " + hash + " extra\n", "line 2: expected"},
      {"bob owner " + hash + "\n", "line 2: role: \"owner\" is not reader or admin"},
      {"bob reader " + hash.substr(1) + "\n", "line 2: hash: not 64 hex digits"},
      {"bob reader " + hash.substr(1) + "g\n", "line 2: hash: not 64 hex digits"},
      {"b/ob reader " + hash + "\n", "line 2: name:"},
      {std::string(65, 'n') + " reader " + hash + "\n", "line 2: name:"},
      {"alice reader " + hash + "\n", "line 2: name: \"alice\" appears twice"},
      {"bob reader " + HexOf(Sha256("t1")) + "\n", "line 2: hash: the same token is listed twice"},
  };
  for (const Case& c : cases) {
    auto entries = ParseTokenFile(good + c.line);
    ASSERT_FALSE(entries.ok()) << c.line;
    EXPECT_EQ(entries.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(entries.status().message()), HasSubstr(c.error)) << c.line;
  }
}

TEST(ParseTokenFileTest, APastedTokenIsNeverEchoed) {
  // An operator who pastes the token itself instead of its hash.
  auto entries = ParseTokenFile("alice admin s3cr3t-token-value\n");
  ASSERT_FALSE(entries.ok());
  EXPECT_THAT(entries.status().ToString(), Not(HasSubstr("s3cr3t")));
}

TEST(TokenStoreTest, FindsByTokenOnly) {
  auto entries =
      ParseTokenFile(TokenLine("alice", "admin", "t1") + TokenLine("rob", "reader", "t2"));
  ASSERT_TRUE(entries.ok());
  TokenStore store(*entries);
  ASSERT_TRUE(store.Find("t1").has_value());
  EXPECT_EQ(store.Find("t1")->name, "alice");
  EXPECT_EQ(store.Find("t2")->role, Role::kReader);
  EXPECT_FALSE(store.Find("t3").has_value());
  EXPECT_FALSE(store.Find("").has_value());
  // The hash itself is not a token.
  EXPECT_FALSE(store.Find(HexOf(Sha256("t1"))).has_value());
}

TEST(TokenStoreTest, ReloadSwapsTheTableAndABadFileKeepsTheOldOne) {
  const std::string dir = ::testing::TempDir() + "/token_store_reload";
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/tokens";
  WriteTextFile(path, TokenLine("alice", "admin", "old"));
  auto store = TokenStore::Load(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->Find("old").has_value());

  WriteTextFile(path, TokenLine("alice", "admin", "new"));
  ASSERT_TRUE((*store)->Reload().ok());
  EXPECT_FALSE((*store)->Find("old").has_value());
  EXPECT_TRUE((*store)->Find("new").has_value());

  WriteTextFile(path, TokenLine("alice", "admin", "newer") + "broken line\n");
  absl::Status bad = (*store)->Reload();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.message()), HasSubstr(path + ": line 2"));
  EXPECT_TRUE((*store)->Find("new").has_value());
  EXPECT_FALSE((*store)->Find("newer").has_value());

  std::filesystem::remove(path);
  EXPECT_EQ((*store)->Reload().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE((*store)->Find("new").has_value());
}

TEST(TokenStoreTest, LoadFailsOnAMissingOrBadFile) {
  EXPECT_EQ(TokenStore::Load("/nonexistent/tokens").status().code(), absl::StatusCode::kNotFound);
  const std::string path = ::testing::TempDir() + "/bad_tokens";
  WriteTextFile(path, "alice admin\n");
  EXPECT_EQ(TokenStore::Load(path).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParseRateLimitTest, Units) {
  auto off = ParseRateLimit("0", 0);
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->enabled());
  auto per_s = ParseRateLimit("20/s", 0);
  ASSERT_TRUE(per_s.ok());
  EXPECT_DOUBLE_EQ(per_s->per_second, 20);
  EXPECT_DOUBLE_EQ(per_s->burst, 20);
  auto per_m = ParseRateLimit("30/m", 5);
  ASSERT_TRUE(per_m.ok());
  EXPECT_DOUBLE_EQ(per_m->per_second, 0.5);
  EXPECT_DOUBLE_EQ(per_m->burst, 5);
  EXPECT_DOUBLE_EQ(ParseRateLimit("60/h", 0)->burst, 1);
  for (const char* bad : {"20", "x/s", "-1/s", "5/d", "/s"}) {
    EXPECT_EQ(ParseRateLimit(bad, 0).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(WriteRateLimiterTest, TokenBucketPerCaller) {
  absl::Time now = absl::FromUnixSeconds(1000);
  RateLimit limit;
  limit.per_second = 2;
  limit.burst = 3;
  WriteRateLimiter limiter(limit, [&now] { return now; });
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.Acquire("alice").ok()) << i;
  absl::Status refused = limiter.Acquire("alice");
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("--write_rate_limit"));
  EXPECT_THAT(std::string(refused.message()), HasSubstr("\"alice\""));
  // Another caller has a bucket of its own.
  EXPECT_TRUE(limiter.Acquire("bob").ok());
  // Half a second refills one write.
  now += absl::Milliseconds(500);
  EXPECT_TRUE(limiter.Acquire("alice").ok());
  EXPECT_FALSE(limiter.Acquire("alice").ok());
  // A long pause refills no more than the burst.
  now += absl::Hours(1);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.Acquire("alice").ok()) << i;
  EXPECT_FALSE(limiter.Acquire("alice").ok());
}

TEST(WriteRateLimiterTest, UnlimitedByDefault) {
  WriteRateLimiter limiter(RateLimit{});
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(limiter.Acquire("alice").ok());
}

}  // namespace
}  // namespace bucketmap
