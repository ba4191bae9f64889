// SharedSlice: hands bytes owned by a shared object to gRPC without
// copying them.
#ifndef BUCKETMAP_SERVER_WATCH_SHARED_SLICE_H_
#define BUCKETMAP_SERVER_WATCH_SHARED_SLICE_H_

#include <memory>
#include <string>

#include "grpcpp/support/slice.h"

namespace bucketmap {

// A slice over `bytes` that keeps `owner` (which must own `bytes`) alive
// until gRPC releases the slice.
template <typename T>
grpc::Slice SharedSlice(const std::string& bytes, std::shared_ptr<T> owner) {
  auto* held = new std::shared_ptr<T>(std::move(owner));
  return grpc::Slice(
      const_cast<char*>(bytes.data()), bytes.size(),
      [](void* p) { delete static_cast<std::shared_ptr<T>*>(p); }, held);
}

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_WATCH_SHARED_SLICE_H_
