// Calls by method name, without generated stubs: for the services the
// server enables but whose protos the tests do not compile
// (grpc.health.v1, server reflection), and for walking every method of a
// service by its descriptor.
//
// Header-only; each helper blocks its calling thread until the call ends.
#ifndef BUCKETMAP_TESTS_SUPPORT_GENERIC_CALLS_H_
#define BUCKETMAP_TESTS_SUPPORT_GENERIC_CALLS_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"

namespace bucketmap {

inline void AppendBuffer(const grpc::ByteBuffer& buffer, std::string* out) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return;
  for (const grpc::Slice& s : slices)
    out->append(reinterpret_cast<const char*>(s.begin()), s.size());
}

// One unary call of `method` ("/package.Service/Method") with the
// serialized `request`; the serialized response is appended to *response.
// `token`, when set, is sent as a bearer token.
inline grpc::Status GenericUnary(const std::shared_ptr<grpc::Channel>& channel,
                                 const std::string& method, const std::string& request,
                                 std::string* response, const std::string& token = "") {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  grpc::Slice slice(request);
  grpc::ByteBuffer req(&slice, 1);
  grpc::ByteBuffer resp;
  grpc::Status status;
  absl::Notification done;
  stub.UnaryCall(&ctx, method, grpc::StubOptions(), &req, &resp, [&](grpc::Status s) {
    status = std::move(s);
    done.Notify();
  });
  done.WaitForNotification();
  if (status.ok()) AppendBuffer(resp, response);
  return status;
}

// A ServerReflectionInfo stream that sends one request and reads one
// response; Wait() returns the response's bytes.
class ReflectionCall : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  ReflectionCall(grpc::GenericStub* stub, const std::string& request) : slice_(request) {
    ctx_.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    request_ = grpc::ByteBuffer(&slice_, 1);
    stub->PrepareBidiStreamingCall(&ctx_,
                                   "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                   grpc::StubOptions(), this);
    StartWrite(&request_);
    StartRead(&response_);
    StartCall();
  }
  void OnWriteDone(bool) override { StartWritesDone(); }
  void OnReadDone(bool ok) override {
    if (ok) AppendBuffer(response_, &text_);
  }
  void OnDone(const grpc::Status& s) override {
    status_ = s;
    done_.Notify();
  }
  std::string Wait() {
    done_.WaitForNotification();
    return text_;
  }

 private:
  grpc::ClientContext ctx_;
  grpc::Slice slice_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  std::string text_;
  grpc::Status status_;
  absl::Notification done_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_SUPPORT_GENERIC_CALLS_H_
