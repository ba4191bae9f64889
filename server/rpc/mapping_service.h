// MappingService: the read-only gRPC adapter for producers, consumers and
// observers.
//
// GetMapping is a raw method: it answers with the snapshot's bytes,
// serialized once per version and shared zero-copy by every caller.
// Reads never touch PostgreSQL unless the caller asks for a version this
// replica has not reached (min_version), which is then loaded on a worker
// thread.
#ifndef BUCKETMAP_SERVER_RPC_MAPPING_SERVICE_H_
#define BUCKETMAP_SERVER_RPC_MAPPING_SERVICE_H_

#include "bucketmap/v1/mapping.grpc.pb.h"
#include "server/base/worker_pool.h"
#include "server/rpc/auth.h"
#include "server/rpc/unary_call.h"
#include "server/signals/load_signals.h"
#include "server/state/handoff_view.h"
#include "server/state/mapping_manager.h"
#include "server/watch/watch_hub.h"

namespace bucketmap {

class MappingServiceImpl final
    : public UnaryService<v1::MappingService::WithRawCallbackMethod_GetMapping<
          v1::MappingService::WithRawCallbackMethod_WatchMapping<v1::MappingService::Service>>> {
 public:
  // All dependencies must outlive the service. Every call needs a reader
  // or admin token, or none with anonymous reads (see auth.h); a null
  // `authorizer` allows every call (development mode).
  // `handoffs`, when set, adds the coordinator's live view to GetTeam's
  // handoff; null: the persisted state only.
  // `signals`, when set, serves GetLoad (else it is UNAVAILABLE).
  MappingServiceImpl(MappingManager* manager, WorkerPool* workers, WatchHub* watch_hub,
                     const Authorizer* authorizer = nullptr, const HandoffView* handoffs = nullptr,
                     SignalsReader* signals = nullptr);

  grpc::ServerUnaryReactor* GetMapping(grpc::CallbackServerContext* ctx,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  // Bound by the constructor (unary_call.h: parsed and checked first).
  void GetTeam(UnaryCall<v1::GetTeamRequest, v1::TeamRoute>* call);
  // Reads the store (through SignalsReader's cache) on a worker thread.
  void GetLoad(UnaryCall<v1::GetLoadRequest, v1::GetLoadResponse>* call);
  // Streams are raw too: pushes are assembled from shared, pre-encoded
  // frames (see WatchHub).
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* WatchMapping(
      grpc::CallbackServerContext* ctx) override;

 private:
  MappingManager* const manager_;
  WorkerPool* const workers_;
  WatchHub* const watch_hub_;
  const Authorizer dev_authorizer_{nullptr, false};
  const Authorizer* const authorizer_;
  const HandoffView* const handoffs_;
  SignalsReader* const signals_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_RPC_MAPPING_SERVICE_H_
