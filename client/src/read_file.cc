#include "bucketmap/read_file.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bucketmap {
namespace {

absl::Status CannotRead(const std::string& path, absl::string_view what) {
  return absl::NotFoundError(absl::StrCat(what, " ", path, ": cannot read"));
}

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return CannotRead(path, what);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

absl::StatusOr<std::string> ReadPem(const std::string& path, absl::string_view what) {
  absl::StatusOr<std::string> pem = ReadFile(path, what);
  if (pem.ok() && pem->empty()) return CannotRead(path, what);
  return pem;
}

}  // namespace bucketmap
