// Checks every request of every RPC runs before its handler sees it.
//
// Protobuf accepts NUL bytes inside `string` fields, but PostgreSQL text
// cannot hold them: stored, they were cut short ("abc\0def" became "abc")
// or failed the write with PostgreSQL's raw error. So every string field of
// a request, at any depth (map keys and values, repeated elements), must be
// valid UTF-8 without NUL; otherwise the request is refused with
// INVALID_ARGUMENT naming the field. Pure functions; thread-safe.
#ifndef BUCKETMAP_SERVER_REQUEST_CHECKS_H_
#define BUCKETMAP_SERVER_REQUEST_CHECKS_H_

#include "absl/status/status.h"
#include "google/protobuf/message.h"

namespace bucketmap {

// CheckRequestStrings()
//
// OK when every string field of `request` is valid UTF-8 and holds no NUL
// byte. Otherwise InvalidArgument "<path>: ..." where <path> names the
// field as written in the request, e.g. `bucket.labels[team]` or
// `nack.error`.
absl::Status CheckRequestStrings(const google::protobuf::Message& request);

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_REQUEST_CHECKS_H_
