#include "tools/bucketctl/rpc.h"

#include <chrono>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "bucketmap/watch.h"

namespace bucketmap::bucketctl {
namespace {

constexpr char kActorHeader[] = "x-bucketmap-actor";

// gRPC's codes have abseil's numbers and names (as ToGrpcStatus in
// server/grpc_status.h relies on too).
std::string CodeName(grpc::StatusCode code) {
  std::string name = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  return name.empty() ? "UNKNOWN" : name;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Connection>> Connection::Open(ConnectionOptions options) {
  WatchTlsOptions tls;
  tls.enabled = options.tls || !options.tls_ca.empty() || !options.tls_cert.empty() ||
                !options.tls_key.empty();
  tls.root_ca_file = options.tls_ca;
  tls.cert_file = options.tls_cert;
  tls.key_file = options.tls_key;
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      ChannelCredentialsFor(tls);
  if (!credentials.ok()) return credentials.status();
  return std::unique_ptr<Connection>(new Connection(std::move(options), *std::move(credentials)));
}

Connection::Connection(ConnectionOptions options,
                       std::shared_ptr<grpc::ChannelCredentials> credentials)
    : options_(std::move(options)) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(options_.max_message_size));
  args.SetMaxSendMessageSize(static_cast<int>(options_.max_message_size));
  channel_ = grpc::CreateCustomChannel(options_.server, std::move(credentials), args);
  stubs_ = {v1::AdminService::NewStub(channel_), v1::MappingService::NewStub(channel_)};
}

void Connection::Prepare(grpc::ClientContext* context) const {
  if (options_.timeout_seconds > 0) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::duration_cast<std::chrono::system_clock::duration>(
                              std::chrono::duration<double>(options_.timeout_seconds)));
  }
  if (!options_.actor.empty()) context->AddMetadata(kActorHeader, options_.actor);
  if (!options_.token.empty()) context->AddMetadata("authorization", "Bearer " + options_.token);
}

std::string RpcErrorText(const grpc::Status& status, const ConnectionOptions& options) {
  // A stream, not StrCat: the timeout prints as it always has (e.g. "0.5").
  std::ostringstream text;
  text << "error: " << CodeName(status.error_code()) << ": " << status.error_message() << "\n";
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      text << "hint: is bucketmap-server running at " << options.server
           << "? Set --server or $BUCKETMAP_SERVER.\n";
      break;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      text << "hint: no answer within " << options.timeout_seconds << " s; raise --timeout.\n";
      break;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      if (absl::StrContains(status.error_message(), "larger than max")) {
        text << "hint: the response exceeds --max_message_size (" << options.max_message_size
             << " bytes); raise it.\n";
      }
      break;
    default:
      break;
  }
  return text.str();
}

}  // namespace bucketmap::bucketctl
