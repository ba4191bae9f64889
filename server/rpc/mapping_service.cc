#include "server/rpc/mapping_service.h"

#include <algorithm>
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
                                       const HandoffView* handoffs, SignalsReader* signals)
    : manager_(manager),
      workers_(workers),
      watch_hub_(watch_hub),
      authorizer_(authorizer != nullptr ? authorizer : &dev_authorizer_),
      handoffs_(handoffs),
      signals_(signals) {
  BindUnary<v1::GetTeamRequest, v1::TeamRoute>("bucketmap.v1.MappingService", "GetTeam",
                                               [this](auto* call) { GetTeam(call); });
  BindUnary<v1::GetLoadRequest, v1::GetLoadResponse>("bucketmap.v1.MappingService", "GetLoad",
                                                     [this](auto* call) { GetLoad(call); });
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

void MappingServiceImpl::GetLoad(UnaryCall<v1::GetLoadRequest, v1::GetLoadResponse>* call) {
  if (absl::StatusOr<Identity> caller = authorizer_->Check(*call->ctx(), Access::kRead);
      !caller.ok()) {
    return call->Reply(caller.status());
  }
  const v1::GetLoadRequest& request = call->request();
  if (request.top_teams() < 0 || request.top_teams() > kMaxLoadReportTeams) {
    return call->Reply(absl::InvalidArgumentError(
        absl::StrCat("top_teams: must be 0..", kMaxLoadReportTeams, " (0 means 10)")));
  }
  if (signals_ == nullptr) {
    return call->Reply(absl::UnavailableError("load signals are not served by this server"));
  }
  std::shared_ptr<const ServedSnapshot> current = manager_->Current();
  const Snapshot& snapshot = current->snapshot();
  if (!request.pool().empty() && std::find(snapshot.pools().begin(), snapshot.pools().end(),
                                           request.pool()) == snapshot.pools().end()) {
    return call->Reply(absl::NotFoundError(absl::StrCat(
        "pool: no pool ", QuoteUntrusted(request.pool()), " at version ", snapshot.version())));
  }
  workers_->Schedule([this, call, current = std::move(current)] {
    const v1::GetLoadRequest& request = call->request();
    const Snapshot& snapshot = current->snapshot();
    absl::StatusOr<std::shared_ptr<const LoadRates>> rates = signals_->Rates();
    if (!rates.ok()) return call->Reply(rates.status());
    absl::StatusOr<std::shared_ptr<const std::vector<LagReading>>> lag = signals_->Lag();
    if (!lag.ok()) return call->Reply(lag.status());
    const size_t top = request.top_teams() == 0 ? 10 : request.top_teams();
    LoadRate unattributed;
    const std::vector<BucketLoadView> loads = BucketLoads(snapshot, **rates, top, &unattributed);
    v1::GetLoadResponse* response = call->response();
    response->set_version(snapshot.version());
    response->set_window_seconds(absl::ToDoubleSeconds((*rates)->config.window));
    response->set_half_life_seconds(absl::ToDoubleSeconds((*rates)->config.half_life));
    response->set_windows((*rates)->windows);
    if ((*rates)->windows > 0) {
      response->mutable_as_of()->set_seconds(absl::ToUnixSeconds((*rates)->as_of));
    }
    response->set_lag_interval_seconds(absl::ToDoubleSeconds(signals_->options().lag_interval));
    ToProto(unattributed, response->mutable_unattributed());
    for (size_t i = 0; i < loads.size(); ++i) {
      const Bucket& b = snapshot.buckets()[i];
      if (!request.pool().empty() && b.pool != request.pool()) continue;
      if (b.state == BucketState::kRetired && !request.include_retired()) continue;
      const BucketLoadView& load = loads[i];
      v1::BucketLoad* out = response->add_buckets();
      out->set_bucket_id(b.id);
      out->set_bucket_name(b.name);
      out->set_pool(b.pool);
      out->set_state(static_cast<v1::BucketState>(b.state));
      out->set_weight(b.weight);
      out->set_weight_share(load.weight_share);
      ToProto(load.rate, out->mutable_rate());
      out->set_event_share(load.event_share);
      out->set_teams_with_load(load.teams_with_load);
      for (const auto& [team, rate] : load.top_teams) {
        v1::TeamLoad* t = out->add_top_teams();
        t->set_team_id(team);
        ToProto(rate, t->mutable_rate());
      }
      // Every role with a consumer group, read or not: a role without a
      // reading is unknown, not lag-free.
      for (const auto& [role, group] : b.consumer_groups) {
        v1::RoleLag* l = out->add_lag();
        l->set_role(role);
        l->set_consumer_group(group);
        l->set_error("no reading yet");
        for (const LagReading& r : **lag) {
          if (r.bucket_id != b.id || r.role != role || r.consumer_group != group) continue;
          l->set_up(r.up);
          if (r.up) {
            l->set_messages(r.messages);
            l->set_seconds(r.seconds);
          }
          l->set_error(r.error);
          const int64_t micros = absl::ToUnixMicros(r.read_at);
          l->mutable_read_time()->set_seconds(micros / 1000000);
          l->mutable_read_time()->set_nanos(static_cast<int32_t>(micros % 1000000) * 1000);
        }
      }
    }
    call->Reply(grpc::Status::OK);
  });
}

}  // namespace bucketmap
