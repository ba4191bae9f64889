// ReadFile() and ReadPem(): the one file reader of the client library and
// bucketctl (bucketmap/read_file.h).
#include "bucketmap/read_file.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "client_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bucketmap {
namespace {

using ::bucketmap::client_testing::StatusIs;

class ReadFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bucketmap_read_file_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const char* name : {"/full", "/empty"}) std::remove((dir_ + name).c_str());
    ::rmdir(dir_.c_str());
  }
  std::string Write(const char* name, const std::string& bytes) {
    const std::string path = dir_ + name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  std::string dir_;
};

TEST_F(ReadFileTest, ReadsEveryByte) {
  const std::string bytes("-----BEGIN CERTIFICATE-----\n\0\xff\n", 32);
  const std::string path = Write("/full", bytes);
  EXPECT_EQ(ReadFile(path, "--file").value(), bytes);
  EXPECT_EQ(ReadPem(path, "tls.root_ca_file").value(), bytes);
}

TEST_F(ReadFileTest, AnEmptyFileIsContentButNotAPem) {
  const std::string path = Write("/empty", "");
  EXPECT_EQ(ReadFile(path, "--file").value(), "");
  EXPECT_THAT(ReadPem(path, "tls.cert_file"),
              StatusIs(absl::StatusCode::kNotFound, "tls.cert_file " + path + ": cannot read"));
}

TEST_F(ReadFileTest, AMissingFileIsNotFoundNamingTheOption) {
  const std::string path = dir_ + "/missing";
  EXPECT_THAT(ReadFile(path, "--file"),
              StatusIs(absl::StatusCode::kNotFound, "--file " + path + ": cannot read"));
  EXPECT_THAT(ReadPem(path, "tls.key_file"),
              StatusIs(absl::StatusCode::kNotFound, "tls.key_file " + path + ": cannot read"));
}

}  // namespace
}  // namespace bucketmap
