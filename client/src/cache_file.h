// The last-known-good cache file: one MappingSnapshot with a header that
// lets a reader reject anything but a complete file of a known format.
//
// Layout (integers little-endian):
//   offset  size  field
//        0     8  magic "BKTMAPLK"
//        8     4  format version (kCacheFormatVersion)
//       12     4  header size (48 for format 1)
//       16     8  confirmed_at: Unix nanoseconds when the mapping was last
//                 known to be current
//       24     8  mapping version (must equal the payload's)
//       32     8  payload size in bytes
//       40     8  checksum: XXH3_64bits_withSeed(payload,
//                   seed = XXH3_64bits(bytes 0..39))
//       48     -  payload: a serialized bucketmap.v1.MappingSnapshot
// The checksum covers the header too, so a flipped bit anywhere is caught.
//
// Writes are atomic: a temporary file in the same directory, fsync, rename
// over the target, fsync of the directory. A crash leaves either the old
// file or the new one, never a torn one (at worst a stray temporary file).
//
// Thread safety: pure functions; concurrent writers of one path must be
// serialized by the caller (the last rename wins).
#ifndef BUCKETMAP_CLIENT_SRC_CACHE_FILE_H_
#define BUCKETMAP_CLIENT_SRC_CACHE_FILE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bucketmap/v1/types.pb.h"

namespace bucketmap {
namespace client_internal {

inline constexpr char kCacheMagic[8] = {'B', 'K', 'T', 'M', 'A', 'P', 'L', 'K'};
inline constexpr uint32_t kCacheFormatVersion = 1;
inline constexpr size_t kCacheHeaderSize = 48;

struct CacheContents {
  v1::MappingSnapshot snapshot;
  absl::Time confirmed_at;
};

// Returns the file's bytes.
std::string EncodeCacheFile(const v1::MappingSnapshot& snapshot, absl::Time confirmed_at);

// Parses a file's bytes. Errors:
//   DataLoss: wrong magic, truncated, trailing bytes, checksum mismatch, or
//     an unparsable payload;
//   FailedPrecondition: a format version this release does not know.
absl::StatusOr<CacheContents> DecodeCacheFile(const std::string& bytes);

// Writes the file at `path` atomically (see above). Errors come from the
// failing system call, named in the message.
absl::Status WriteCacheFile(const std::string& path, const v1::MappingSnapshot& snapshot,
                            absl::Time confirmed_at);

// Reads and decodes the file at `path`. NotFound when there is none; other
// errors as DecodeCacheFile() or the failing system call.
absl::StatusOr<CacheContents> ReadCacheFile(const std::string& path);

}  // namespace client_internal
}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_SRC_CACHE_FILE_H_
