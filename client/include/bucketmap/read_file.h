// Reading small files whole: the PEM files of TLS and the input files of
// tools. One reader, so every caller reports an unreadable file the same
// way, as "<what> <path>: cannot read" naming the option that gave the path.
//
// Users: ChannelCredentialsFor() (bucketmap/watch.h) for its TLS files, and
// bucketctl for TLS and its --file input. Target bucketmap_read_file, which
// links only abseil.
//
// Thread safety: free functions with no shared state; safe to call from any
// thread.
#ifndef BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_READ_FILE_H_
#define BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_READ_FILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bucketmap {

// ReadFile()
//
// Returns the bytes of the file at `path`, which may be empty. `what` names
// the option or flag that gave the path, e.g. "--file". Errors:
//   NotFound "<what> <path>: cannot read" when the file cannot be opened.
absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view what);

// ReadPem()
//
// Like ReadFile(), for a PEM file (certificates or a key): an empty file is
// NotFound too, with the same message, since it cannot hold what TLS needs
// and gRPC's own error for it names no file.
absl::StatusOr<std::string> ReadPem(const std::string& path, absl::string_view what);

}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_READ_FILE_H_
