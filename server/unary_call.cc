#include "server/unary_call.h"

#include <vector>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace bucketmap {

bool ParseRequestBody(const grpc::ByteBuffer& body, google::protobuf::Message* message) {
  std::vector<grpc::Slice> slices;
  if (!body.Dump(&slices).ok()) return false;
  if (slices.size() == 1) {
    return message->ParseFromArray(slices[0].begin(), static_cast<int>(slices[0].size()));
  }
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return message->ParseFromString(bytes);
}

grpc::Status UnparseableRequest() {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      "request: cannot parse the body as this method's request message");
}

int MethodIndex(const char* service_full_name, const char* method) {
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(service_full_name);
  const google::protobuf::MethodDescriptor* m =
      service == nullptr ? nullptr : service->FindMethodByName(method);
  // A typo here is a programming error that every server test would hit.
  GPR_ASSERT(m != nullptr);
  return m->index();
}

}  // namespace bucketmap
