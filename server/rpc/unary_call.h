// UnaryCall: one unary RPC served behind a raw (ByteBuffer) method.
//
// gRPC's typed callback methods answer a request body that does not parse
// with UNIMPLEMENTED and an empty message, before any of our code runs.
// Every unary method of ours is therefore registered raw (BindUnary): the
// adapter parses the body itself, checks every string field of it
// (CheckRequestStrings), and only then hands a typed call to the handler.
// So a client that sends garbage, or NUL bytes, gets INVALID_ARGUMENT with
// the field named, the same way on every method.
//
// Ownership: gRPC owns the call (a ServerUnaryReactor) until OnDone, which
// deletes it. The handler owns nothing; it calls Reply exactly once, from
// any thread, and must not touch the call afterwards.
#ifndef BUCKETMAP_SERVER_RPC_UNARY_CALL_H_
#define BUCKETMAP_SERVER_RPC_UNARY_CALL_H_

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "grpcpp/impl/codegen/server_callback_handlers.h"
#include "grpcpp/impl/service_type.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "server/base/grpc_status.h"
#include "server/base/request_checks.h"

namespace bucketmap {

template <typename Request, typename Response>
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  UnaryCall(grpc::CallbackServerContext* ctx, grpc::ByteBuffer* out) : ctx_(ctx), out_(out) {}

  grpc::CallbackServerContext* ctx() const { return ctx_; }
  const Request& request() const { return request_; }
  Request* mutable_request() { return &request_; }
  Response* response() { return &response_; }

  // Finishes the call: with `status`, or OK and the response. Call once.
  void Reply(const grpc::Status& status) {
    if (status.ok()) {
      std::string bytes;
      if (!response_.SerializeToString(&bytes)) {
        Finish(grpc::Status(grpc::StatusCode::INTERNAL, "response: cannot serialize"));
        return;
      }
      grpc::Slice slice(std::move(bytes));
      *out_ = grpc::ByteBuffer(&slice, 1);
    }
    Finish(status);
  }
  void Reply(const absl::Status& status) { Reply(ToGrpcStatus(status)); }

 private:
  void OnDone() override { delete this; }

  grpc::CallbackServerContext* const ctx_;
  grpc::ByteBuffer* const out_;
  Request request_;
  Response response_;
};

// The index of `method` in the generated service `service_full_name`
// (e.g. "bucketmap.v1.AdminService"), as gRPC numbers its methods.
int MethodIndex(const char* service_full_name, const char* method);

// UnaryService<Base>: a generated service base (`v1::X::Service`, possibly
// wrapped in WithRawCallbackMethod_* templates) whose unary methods are
// bound to typed handlers by BindUnary, from the derived constructor.
template <typename Base>
class UnaryService : public Base {
 protected:
  // Serves unary `method` with `handler(UnaryCall<Request, Response>*)`,
  // after the body parsed and passed CheckRequestStrings.
  template <typename Request, typename Response, typename Handler>
  void BindUnary(const char* service_full_name, const char* method, Handler handler) {
    this->MarkMethodRawCallback(
        MethodIndex(service_full_name, method),
        new grpc::internal::CallbackUnaryHandler<grpc::ByteBuffer, grpc::ByteBuffer>(
            [handler](grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                      grpc::ByteBuffer* out) -> grpc::ServerUnaryReactor* {
              auto* call = new UnaryCall<Request, Response>(ctx, out);
              if (!ParseRequestBody(*in, call->mutable_request())) {
                call->Reply(UnparseableRequest());
              } else if (absl::Status s = CheckRequestStrings(call->request()); !s.ok()) {
                call->Reply(s);
              } else {
                handler(call);
              }
              return call;
            }));
  }
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_RPC_UNARY_CALL_H_
