#include "server/rpc/unary_call.h"

#include <vector>

#include "google/protobuf/descriptor.h"

namespace bucketmap {

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
