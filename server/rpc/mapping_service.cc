#include "server/rpc/mapping_service.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "codec/codec.h"
#include "domain/validation.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/base/grpc_status.h"
#include "server/watch/shared_slice.h"

namespace bucketmap {
namespace {

// The served snapshot's bytes, shared with every other caller of this
// version: no copy per call.
grpc::ByteBuffer SnapshotBuffer(std::shared_ptr<const ServedSnapshot> served) {
  const std::string& bytes = served->Serialized();
  grpc::Slice slice = SharedSlice(bytes, std::move(served));
  return grpc::ByteBuffer(&slice, 1);
}

// A WatchMapping call refused before it starts (auth).
class RefusedStream final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit RefusedStream(const absl::Status& status) { Finish(ToGrpcStatus(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

MappingServiceImpl::MappingServiceImpl(MappingManager* manager, WorkerPool* workers,
                                       WatchHub* watch_hub, const Authorizer* authorizer,
                                       const HandoffView* handoffs)
    : manager_(manager),
      workers_(workers),
      watch_hub_(watch_hub),
      authorizer_(authorizer != nullptr ? authorizer : &dev_authorizer_),
      handoffs_(handoffs) {
  BindUnary<v1::GetTeamRequest, v1::TeamRoute>("bucketmap.v1.MappingService", "GetTeam",
                                               [this](auto* call) { GetTeam(call); });
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* MappingServiceImpl::WatchMapping(
    grpc::CallbackServerContext* ctx) {
  if (absl::StatusOr<Identity> caller = authorizer_->Check(*ctx, Access::kRead); !caller.ok()) {
    return new RefusedStream(caller.status());
  }
  return watch_hub_->NewStream(ctx);
}

grpc::ServerUnaryReactor* MappingServiceImpl::GetMapping(grpc::CallbackServerContext* ctx,
                                                         const grpc::ByteBuffer* request,
                                                         grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (absl::StatusOr<Identity> caller = authorizer_->Check(*ctx, Access::kRead); !caller.ok()) {
    reactor->Finish(ToGrpcStatus(caller.status()));
    return reactor;
  }
  v1::GetMappingRequest parsed;
  if (!ParseRequestBody(*request, &parsed)) {
    reactor->Finish(UnparseableRequest());
    return reactor;
  }
  if (parsed.min_version() < 0) {
    reactor->Finish(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "min_version: must not be negative"));
    return reactor;
  }
  std::shared_ptr<const ServedSnapshot> current = manager_->Current();
  if (current->version() >= parsed.min_version()) {
    *response = SnapshotBuffer(std::move(current));
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  // Behind the caller: catch up from PostgreSQL off the reactor thread.
  const int64_t min_version = parsed.min_version();
  workers_->Schedule([this, reactor, response, min_version] {
    absl::StatusOr<std::shared_ptr<const ServedSnapshot>> served = manager_->CatchUp(min_version);
    if (!served.ok()) {
      reactor->Finish(ToGrpcStatus(served.status()));
      return;
    }
    *response = SnapshotBuffer(*std::move(served));
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

void MappingServiceImpl::GetTeam(UnaryCall<v1::GetTeamRequest, v1::TeamRoute>* call) {
  const v1::GetTeamRequest* request = &call->request();
  v1::TeamRoute* response = call->response();
  if (absl::StatusOr<Identity> caller = authorizer_->Check(*call->ctx(), Access::kRead);
      !caller.ok()) {
    return call->Reply(caller.status());
  }
  if (absl::Status s = ValidateTeamId(request->team_id(), "team_id"); !s.ok()) {
    return call->Reply(s);
  }
  std::shared_ptr<const ServedSnapshot> current = manager_->Current();
  const Snapshot& snapshot = current->snapshot();
  const Route route = snapshot.RouteOf(request->team_id());
  if (!route.routable()) {
    return call->Reply(absl::FailedPreconditionError(
        absl::StrCat("team ", request->team_id(), " is unroutable at version ", snapshot.version(),
                     ": pool \"", std::string(route.pool), "\" has no ACTIVE or PAUSED bucket")));
  }
  response->set_team_id(request->team_id());
  response->set_bucket_id(route.bucket_id);
  response->set_source(RouteSourceString(route));
  response->set_version(snapshot.version());
  if (const Bucket* bucket = snapshot.FindBucket(route.bucket_id)) {
    response->mutable_topics()->insert(bucket->topics.begin(), bucket->topics.end());
    response->set_bucket_state(static_cast<v1::BucketState>(bucket->state));
    response->set_bucket_name(bucket->name);
  }
  // The newest open handoff involving the team (SPEC §3: GetTeam shows the
  // handoff state).
  std::vector<const Handoff*> handoffs = snapshot.HandoffsOf(request->team_id());
  if (!handoffs.empty()) {
    ToProto(*handoffs.back(), response->mutable_handoff());
    if (handoffs_ != nullptr) handoffs_->Decorate(response->mutable_handoff());
  }
  call->Reply(grpc::Status::OK);
}

}  // namespace bucketmap
