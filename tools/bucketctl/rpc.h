// bucketctl's RPC plumbing: one channel to bucketmap-server with the stubs
// of AdminService and MappingService, what every call carries (the
// deadline of --timeout, the bearer token, the actor header), and the text
// of a failed call.
//
// Thread-compatible: bucketctl makes one call at a time, from main().
#ifndef BUCKETMAP_TOOLS_BUCKETCTL_RPC_H_
#define BUCKETMAP_TOOLS_BUCKETCTL_RPC_H_

#include <cstdint>
#include <memory>
#include <string>
#include <tuple>

#include "absl/status/statusor.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace bucketmap::bucketctl {

// How to reach the server: the global flags, with the environment's
// defaults already applied.
struct ConnectionOptions {
  std::string server;
  double timeout_seconds = 30;  // 0: no deadline
  int64_t max_message_size = 64 << 20;
  std::string actor;  // x-bucketmap-actor; not sent when empty
  std::string token;  // bearer token; never printed
  // TLS is on when `tls` is set or any of the files is given.
  bool tls = false;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
};

// A method of a stub, e.g. &v1::AdminService::StubInterface::ListBuckets.
template <typename Stub, typename Request, typename Response>
using Method = grpc::Status (Stub::*)(grpc::ClientContext*, const Request&, Response*);

class Connection {
 public:
  // Open()
  //
  // Sets up the channel; nothing is sent until the first Call(). Plaintext,
  // or TLS as the client library sets it up (ChannelCredentialsFor, which
  // reads the PEM files now). Errors are those of ChannelCredentialsFor:
  // NotFound for a PEM file that cannot be read, InvalidArgument for a
  // certificate without its key.
  static absl::StatusOr<std::unique_ptr<Connection>> Open(ConnectionOptions options);

  const ConnectionOptions& options() const { return options_; }

  // Call()
  //
  // Calls `method` on the stub it belongs to, with the deadline, the token
  // and the actor header. Returns the call's status.
  template <typename Stub, typename Request, typename Response>
  grpc::Status Call(Method<Stub, Request, Response> method, const Request& request,
                    Response* response) {
    grpc::ClientContext context;
    Prepare(&context);
    Stub& stub = *std::get<std::unique_ptr<Stub>>(stubs_);
    return (stub.*method)(&context, request, response);
  }

 private:
  Connection(ConnectionOptions options, std::shared_ptr<grpc::ChannelCredentials> credentials);
  void Prepare(grpc::ClientContext* context) const;

  const ConnectionOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::tuple<std::unique_ptr<v1::AdminService::StubInterface>,
             std::unique_ptr<v1::MappingService::StubInterface>>
      stubs_;
};

// RpcErrorText()
//
// What bucketctl prints to stderr for a failed call: "error: <CODE>:
// <message>", then a hint naming the flag to change for UNAVAILABLE,
// DEADLINE_EXCEEDED and a response over --max_message_size. Ends with a
// newline.
std::string RpcErrorText(const grpc::Status& status, const ConnectionOptions& options);

}  // namespace bucketmap::bucketctl

#endif  // BUCKETMAP_TOOLS_BUCKETCTL_RPC_H_
