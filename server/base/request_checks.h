// What every request of every RPC goes through before its handler sees it:
// parsing the raw body, then checking its strings.
//
// Protobuf accepts NUL bytes inside `string` fields, but PostgreSQL text
// cannot hold them: stored, they were cut short ("abc\0def" became "abc")
// or failed the write with PostgreSQL's raw error. So every string field of
// a request, at any depth (map keys and values, repeated elements), must be
// valid UTF-8 without NUL; otherwise the request is refused with
// INVALID_ARGUMENT naming the field. Pure functions; thread-safe.
#ifndef BUCKETMAP_SERVER_BASE_REQUEST_CHECKS_H_
#define BUCKETMAP_SERVER_BASE_REQUEST_CHECKS_H_

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/status.h"

namespace bucketmap {

// CheckRequestStrings()
//
// OK when every string field of `request` is valid UTF-8 and holds no NUL
// byte. Otherwise InvalidArgument "<path>: ..." where <path> names the
// field as written in the request, e.g. `bucket.labels[team]` or
// `nack.error`.
absl::Status CheckRequestStrings(const google::protobuf::Message& request);

// ParseRequestBody()
//
// Parses a raw request body into `message`; false when it is not one.
bool ParseRequestBody(const grpc::ByteBuffer& body, google::protobuf::Message* message);

// UnparseableRequest()
//
// The status of a body that did not parse, the same for every method:
// INVALID_ARGUMENT "request: cannot parse ...".
grpc::Status UnparseableRequest();

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_BASE_REQUEST_CHECKS_H_
