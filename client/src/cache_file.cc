#include "client/src/cache_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace bucketmap {
namespace client_internal {
namespace {

constexpr size_t kChecksumOffset = 40;

void PutU32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
void PutU64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}
uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

uint64_t Checksum(const char* header, const char* payload, size_t payload_size) {
  const XXH64_hash_t seed = XXH3_64bits(header, kChecksumOffset);
  return XXH3_64bits_withSeed(payload, payload_size, seed);
}

absl::Status ErrnoStatus(int error, const std::string& what) {
  return absl::ErrnoToStatus(error, what);
}

// Closes a descriptor on scope exit unless released.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now and reports close()'s error, which can carry a deferred
  // write error.
  int Close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

absl::Status WriteAll(int fd, const std::string& bytes, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, absl::StrCat("write ", path));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

std::string DirName(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

std::string EncodeCacheFile(const v1::MappingSnapshot& snapshot, absl::Time confirmed_at) {
  std::string bytes(kCacheHeaderSize, '\0');
  // Deterministic so the same mapping always gives the same file.
  std::string payload;
  {
    google::protobuf::io::StringOutputStream out(&payload);
    google::protobuf::io::CodedOutputStream coded(&out);
    coded.SetSerializationDeterministic(true);
    snapshot.SerializeToCodedStream(&coded);
  }
  char* h = bytes.data();
  std::memcpy(h, kCacheMagic, sizeof(kCacheMagic));
  PutU32(h + 8, kCacheFormatVersion);
  PutU32(h + 12, static_cast<uint32_t>(kCacheHeaderSize));
  PutU64(h + 16, static_cast<uint64_t>(absl::ToUnixNanos(confirmed_at)));
  PutU64(h + 24, static_cast<uint64_t>(snapshot.version()));
  PutU64(h + 32, payload.size());
  PutU64(h + kChecksumOffset, Checksum(h, payload.data(), payload.size()));
  bytes += payload;
  return bytes;
}

absl::StatusOr<CacheContents> DecodeCacheFile(const std::string& bytes) {
  if (bytes.size() < 12) {
    return absl::DataLossError(
        absl::StrCat("cache file: truncated header (", bytes.size(), " bytes)"));
  }
  const char* h = bytes.data();
  if (std::memcmp(h, kCacheMagic, sizeof(kCacheMagic)) != 0) {
    return absl::DataLossError("cache file: bad magic (not a bucketmap cache file)");
  }
  const uint32_t format = GetU32(h + 8);
  if (format != kCacheFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat("cache file: format version ", format,
                                                      " is not supported (this release reads ",
                                                      kCacheFormatVersion, ")"));
  }
  if (bytes.size() < kCacheHeaderSize) {
    return absl::DataLossError(
        absl::StrCat("cache file: truncated header (", bytes.size(), " bytes)"));
  }
  if (GetU32(h + 12) != kCacheHeaderSize) {
    return absl::DataLossError(
        absl::StrCat("cache file: header size ", GetU32(h + 12), " for format 1"));
  }
  const uint64_t payload_size = GetU64(h + 32);
  const size_t actual = bytes.size() - kCacheHeaderSize;
  if (payload_size != actual) {
    return absl::DataLossError(absl::StrCat("cache file: payload is ", actual,
                                            " bytes; the header says ", payload_size,
                                            actual < payload_size ? " (truncated)" : ""));
  }
  const char* payload = h + kCacheHeaderSize;
  if (Checksum(h, payload, actual) != GetU64(h + kChecksumOffset)) {
    return absl::DataLossError("cache file: checksum mismatch");
  }
  if (actual > static_cast<size_t>(INT_MAX)) {
    return absl::DataLossError("cache file: payload larger than a protobuf message can be");
  }
  CacheContents contents;
  if (!contents.snapshot.ParseFromArray(payload, static_cast<int>(actual))) {
    return absl::DataLossError("cache file: payload is not a MappingSnapshot");
  }
  const int64_t version = static_cast<int64_t>(GetU64(h + 24));
  if (contents.snapshot.version() != version) {
    return absl::DataLossError(absl::StrCat("cache file: header version ", version,
                                            " but payload version ", contents.snapshot.version()));
  }
  contents.confirmed_at = absl::FromUnixNanos(static_cast<int64_t>(GetU64(h + 16)));
  return contents;
}

absl::Status WriteCacheFile(const std::string& path, const v1::MappingSnapshot& snapshot,
                            absl::Time confirmed_at) {
  const std::string bytes = EncodeCacheFile(snapshot, confirmed_at);
  // Same directory as the target, so that rename() is atomic.
  std::string tmp = path + ".tmpXXXXXX";
  Fd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(errno, absl::StrCat("create a temporary file for ", path));
  auto fail = [&tmp](absl::Status status) {
    ::unlink(tmp.c_str());
    return status;
  };
  if (absl::Status s = WriteAll(fd.get(), bytes, tmp); !s.ok()) return fail(std::move(s));
  if (::fsync(fd.get()) != 0) return fail(ErrnoStatus(errno, absl::StrCat("fsync ", tmp)));
  if (fd.Close() != 0) return fail(ErrnoStatus(errno, absl::StrCat("close ", tmp)));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return fail(ErrnoStatus(errno, absl::StrCat("rename ", tmp, " to ", path)));
  }
  // The rename is durable only once the directory entry is.
  const std::string dir = DirName(path);
  Fd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() < 0) return ErrnoStatus(errno, absl::StrCat("open directory ", dir));
  if (::fsync(dir_fd.get()) != 0) return ErrnoStatus(errno, absl::StrCat("fsync directory ", dir));
  return absl::OkStatus();
}

absl::StatusOr<CacheContents> ReadCacheFile(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(errno, absl::StrCat("open ", path));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, absl::StrCat("stat ", path));
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a regular file"));
  }
  std::string bytes;
  bytes.resize(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, absl::StrCat("read ", path));
    }
    if (n == 0) break;  // shrank under us: the decoder reports truncation
    done += static_cast<size_t>(n);
  }
  bytes.resize(done);
  return DecodeCacheFile(bytes);
}

}  // namespace client_internal
}  // namespace bucketmap
