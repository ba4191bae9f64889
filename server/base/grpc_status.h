// The one conversion from absl::Status to grpc::Status.
#ifndef BUCKETMAP_SERVER_BASE_GRPC_STATUS_H_
#define BUCKETMAP_SERVER_BASE_GRPC_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace bucketmap {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl::StatusCode and grpc::StatusCode share their numeric values.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_BASE_GRPC_STATUS_H_
