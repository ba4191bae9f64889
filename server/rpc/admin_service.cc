#include "server/rpc/admin_service.h"

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "codec/codec.h"
#include "domain/load.h"
#include "domain/move_policy.h"
#include "domain/status_macros.h"
#include "domain/validation.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "server/base/grpc_status.h"
#include "server/rpc/admin_requests.h"
#include "xxhash.h"

namespace bucketmap {
namespace {

constexpr int32_t kDefaultAssignmentsPage = 1000;
constexpr int32_t kMaxAssignmentsPage = 10000;
constexpr int32_t kDefaultHistoryPage = 100;
constexpr int32_t kMaxHistoryPage = 1000;
constexpr int32_t kDefaultHandoffsPage = 100;
constexpr int32_t kMaxHandoffsPage = 1000;

// Digest of the request without its request_id and dry_run, so that a
// replay with the same body matches and a reuse with another does not. A
// field set to what its absence means fingerprints as absent: `ordered`
// (optional, absent means true) is the one field with presence whose
// default is not the zero value.
std::string Fingerprint(const std::string& kind, const google::protobuf::Message& request) {
  std::unique_ptr<google::protobuf::Message> copy(request.New());
  copy->CopyFrom(request);
  const google::protobuf::Reflection* reflection = copy->GetReflection();
  for (const char* name : {"request_id", "dry_run"}) {
    if (const auto* field = copy->GetDescriptor()->FindFieldByName(name)) {
      reflection->ClearField(copy.get(), field);
    }
  }
  if (const auto* ordered = copy->GetDescriptor()->FindFieldByName("ordered");
      ordered != nullptr && reflection->HasField(*copy, ordered) &&
      reflection->GetBool(*copy, ordered)) {
    reflection->ClearField(copy.get(), ordered);
  }
  std::string bytes = kind;
  bytes.push_back('\0');
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    copy->SerializeToCodedStream(&coded);
  }
  const XXH128_hash_t hash = XXH3_128bits(bytes.data(), bytes.size());
  return absl::StrCat(absl::Hex(hash.high64, absl::kZeroPad16),
                      absl::Hex(hash.low64, absl::kZeroPad16));
}

absl::Time DeadlineOf(const grpc::CallbackServerContext& ctx, absl::Duration cap) {
  const absl::Time call = absl::FromChrono(ctx.deadline());
  return std::min(call, absl::Now() + cap);
}

// Fills the route fields shared by AssignTeam and UnassignTeam responses.
template <typename Response>
void FillTeamMove(const Snapshot& before, const Plan& plan, int64_t team_id, int64_t version,
                  bool dry_run, Response* response) {
  const Snapshot& after = plan.after != nullptr ? *plan.after : before;
  const Route from = before.RouteOf(team_id);
  const Route to = after.RouteOf(team_id);
  response->set_version(version);
  response->set_previous_bucket_id(from.bucket_id);
  response->set_previous_source(RouteSourceString(from));
  response->set_bucket_id(to.bucket_id);
  response->set_source(RouteSourceString(to));
  ToProto(plan.effect, dry_run, response->mutable_effect());
}

template <typename Response>
void FillBucket(const Snapshot& before, const Plan& plan, int32_t bucket_id, int64_t version,
                bool dry_run, Response* response) {
  const Snapshot& after = plan.after != nullptr ? *plan.after : before;
  response->set_version(version);
  if (const Bucket* bucket = after.FindBucket(bucket_id)) {
    ToProto(*bucket, response->mutable_bucket());
  }
  ToProto(plan.effect, dry_run, response->mutable_effect());
}

template <typename Response>
void MarkReplayed(bool replayed, Response* response) {
  response->mutable_effect()->set_replayed(replayed);
}
// CancelHandoffResponse carries no WriteEffect.
void MarkReplayed(bool, v1::CancelHandoffResponse*) {}

constexpr int32_t kDefaultRulesPage = 1000;
constexpr int32_t kMaxRulesPage = 10000;

// Keeps only `team_id`'s rows of a delta (buckets are kept whole).
void TrimDeltaToTeam(int64_t team_id, v1::MappingDelta* delta) {
  v1::Assignments kept;
  const v1::Assignments& set = delta->set();
  for (int i = 0; i < set.team_ids_size(); ++i) {
    if (set.team_ids(i) == team_id) {
      kept.add_team_ids(team_id);
      kept.add_targets(set.targets(i));
    }
  }
  delta->mutable_set()->Swap(&kept);
  const bool unset =
      std::binary_search(delta->unset_team_ids().begin(), delta->unset_team_ids().end(), team_id);
  delta->clear_unset_team_ids();
  if (unset) delta->add_unset_team_ids(team_id);
}

// The fields every write request shares (reason, request_id,
// expected_version, dry_run) and, where the request has them, force and
// ordered (absent means true), into a MoveWrite of `kind`.
template <typename Request, typename = void>
struct HasMoveOptions : std::false_type {};
template <typename Request>
struct HasMoveOptions<Request, std::void_t<decltype(std::declval<Request>().force()),
                                           decltype(std::declval<Request>().has_ordered())>>
    : std::true_type {};

template <typename Request>
MoveWrite WriteOf(const char* kind, const Request& request) {
  MoveWrite write;
  write.context.kind = kind;
  write.context.reason = request.reason();
  write.context.request_id = request.request_id();
  write.context.expected_version = request.expected_version();
  write.dry_run = request.dry_run();
  if constexpr (HasMoveOptions<Request>::value) {
    write.force = request.force();
    write.ordered = !request.has_ordered() || request.ordered();
  }
  return write;
}

}  // namespace

AdminServiceImpl::AdminServiceImpl(MappingManager* manager, Store* store, WorkerPool* workers,
                                   AdminServiceOptions options, const Authorizer* authorizer,
                                   const HandoffView* handoffs, SignalsReader* signals)
    : manager_(manager),
      store_(store),
      workers_(workers),
      options_(options),
      authorizer_(authorizer != nullptr ? authorizer : &dev_authorizer_),
      handoffs_(handoffs),
      signals_(signals),
      write_path_(manager, store, handoffs),
      rebalancer_(manager, store, signals, handoffs),
      rate_limiter_(options.write_rate_limit) {
  constexpr char kService[] = "bucketmap.v1.AdminService";
#define BUCKETMAP_BIND(Method, Request, Response) \
  BindUnary<v1::Request, v1::Response>(kService, #Method, [this](auto* call) { Method(call); })
  BUCKETMAP_BIND(CreateBucket, CreateBucketRequest, CreateBucketResponse);
  BUCKETMAP_BIND(UpdateBucket, UpdateBucketRequest, UpdateBucketResponse);
  BUCKETMAP_BIND(ListBuckets, ListBucketsRequest, ListBucketsResponse);
  BUCKETMAP_BIND(AssignTeam, AssignTeamRequest, AssignTeamResponse);
  BUCKETMAP_BIND(UnassignTeam, UnassignTeamRequest, UnassignTeamResponse);
  BUCKETMAP_BIND(BulkAssign, BulkAssignRequest, BulkAssignResponse);
  BUCKETMAP_BIND(ListAssignments, ListAssignmentsRequest, ListAssignmentsResponse);
  BUCKETMAP_BIND(GetHistory, GetHistoryRequest, GetHistoryResponse);
  BUCKETMAP_BIND(ListClients, ListClientsRequest, ListClientsResponse);
  BUCKETMAP_BIND(ListHandoffs, ListHandoffsRequest, ListHandoffsResponse);
  BUCKETMAP_BIND(CancelHandoff, CancelHandoffRequest, CancelHandoffResponse);
  BUCKETMAP_BIND(UpdatePool, UpdatePoolRequest, UpdatePoolResponse);
  BUCKETMAP_BIND(ListPools, ListPoolsRequest, ListPoolsResponse);
  BUCKETMAP_BIND(SetTeamRule, SetTeamRuleRequest, SetTeamRuleResponse);
  BUCKETMAP_BIND(ClearTeamRule, ClearTeamRuleRequest, ClearTeamRuleResponse);
  BUCKETMAP_BIND(ListTeamRules, ListTeamRulesRequest, ListTeamRulesResponse);
  BUCKETMAP_BIND(PlanRebalance, PlanRebalanceRequest, PlanRebalanceResponse);
  BUCKETMAP_BIND(ApplyRebalance, ApplyRebalanceRequest, ApplyRebalanceResponse);
#undef BUCKETMAP_BIND
}

template <typename Request, typename Response>
bool AdminServiceImpl::Refuse(UnaryCall<Request, Response>* call) {
  absl::StatusOr<Identity> caller = authorizer_->Check(*call->ctx(), Access::kAdmin);
  if (caller.ok()) return false;
  call->Reply(caller.status());
  return true;
}

absl::StatusOr<std::string> AdminServiceImpl::AdminName(
    const grpc::CallbackServerContext& ctx) const {
  absl::StatusOr<Identity> caller = authorizer_->Check(ctx, Access::kAdmin);
  if (!caller.ok()) return caller.status();
  return caller->name;
}

template <typename Request, typename Response>
void AdminServiceImpl::RunWrite(UnaryCall<Request, Response>* call, MoveWrite write,
                                std::common_type_t<Fill<Response>> fill) {
  const WriteContext& context = write.context;
  if (absl::Status s = ValidateReason(context.reason); !s.ok()) return call->Reply(s);
  if (absl::Status s = ValidateRequestId(context.request_id); !s.ok()) return call->Reply(s);
  if (absl::Status s = ValidateExpectedVersion(context.expected_version); !s.ok()) {
    return call->Reply(s);
  }
  // The actor is the token's name (or, without auth, the declared one).
  absl::StatusOr<Identity> caller = authorizer_->Check(*call->ctx(), Access::kAdmin);
  if (!caller.ok()) return call->Reply(caller.status());
  if (!write.dry_run) {
    if (absl::Status s = rate_limiter_.Acquire(caller->name); !s.ok()) return call->Reply(s);
  }
  write.context.actor = caller->name;
  if (!context.request_id.empty()) {
    write.context.fingerprint = Fingerprint(context.kind, call->request());
  }
  write.context.deadline = DeadlineOf(*call->ctx(), options_.write_timeout);
  write.respond = [fill = std::move(fill)](const Snapshot& before, const Plan& plan,
                                           int64_t version, bool dry_run) {
    Response response;
    fill(before, plan, version, dry_run, &response);
    return response.SerializeAsString();
  };
  workers_->Schedule([this, call, write = std::move(write)] {
    absl::StatusOr<WriteOutcome> outcome = write_path_.Run(write);
    if (!outcome.ok()) return call->Reply(outcome.status());
    if (!call->response()->ParseFromString(outcome->response)) {
      return call->Reply(grpc::Status(grpc::StatusCode::INTERNAL, "stored response is corrupt"));
    }
    MarkReplayed(outcome->replayed, call->response());
    call->Reply(grpc::Status::OK);
  });
}

void AdminServiceImpl::CreateBucket(
    UnaryCall<v1::CreateBucketRequest, v1::CreateBucketResponse>* call) {
  if (Refuse(call)) return;
  const v1::CreateBucketRequest& request = call->request();
  if (absl::Status s = ValidateCreateBucketRequest(request); !s.ok()) return call->Reply(s);
  MoveWrite write = WriteOf("CreateBucket", request);
  // Adding capacity moves slots to the new bucket (handoffs open), but it
  // is not subject to the pool cooldown.
  write.scope = MoveScope::kPoolWide;
  write.exempt_cooldown = true;
  write.plan = [&request](const Snapshot& before) {
    return PlanCreateBucketRequest(before, request);
  };
  RunWrite(call, std::move(write),
           [](const Snapshot& before, const Plan& plan, int64_t version, bool dry_run,
              v1::CreateBucketResponse* out) {
             const int32_t id = plan.change.buckets.empty() ? 0 : plan.change.buckets.front().id;
             FillBucket(before, plan, id, version, dry_run, out);
           });
}

void AdminServiceImpl::UpdateBucket(
    UnaryCall<v1::UpdateBucketRequest, v1::UpdateBucketResponse>* call) {
  if (Refuse(call)) return;
  const v1::UpdateBucketRequest& request = call->request();
  if (absl::Status s = ValidateUpdateBucketRequest(request); !s.ok()) return call->Reply(s);
  MoveWrite write = WriteOf("UpdateBucket", request);
  write.scope = MoveScope::kPoolWide;
  write.plan = [&request](const Snapshot& before) {
    return PlanUpdateBucketRequest(before, request);
  };
  RunWrite(call, std::move(write),
           [&request](const Snapshot& before, const Plan& plan, int64_t version, bool dry_run,
                      v1::UpdateBucketResponse* out) {
             int32_t id = request.bucket().id();
             if (id == 0) {
               const Bucket* found = before.FindBucketByName(request.bucket().name());
               id = found != nullptr ? found->id : 0;
             }
             FillBucket(before, plan, id, version, dry_run, out);
           });
}

void AdminServiceImpl::ListBuckets(
    UnaryCall<v1::ListBucketsRequest, v1::ListBucketsResponse>* call) {
  const auto* request = &call->request();
  auto* response = call->response();
  if (Refuse(call)) return;
  if (!request->pool().empty()) {
    if (absl::Status s = ValidatePoolName(request->pool(), "pool"); !s.ok()) {
      return call->Reply(s);
    }
  }
  std::shared_ptr<const ServedSnapshot> current = manager_->Current();
  const Snapshot& snapshot = current->snapshot();
  response->set_version(snapshot.version());
  for (const Bucket& bucket : snapshot.buckets()) {
    if (!request->pool().empty() && bucket.pool != request->pool()) continue;
    ToProto(bucket, response->add_buckets());
    response->add_pinned_teams(snapshot.PinnedCount(bucket.id));
  }
  return call->Reply(absl::OkStatus());
}

void AdminServiceImpl::AssignTeam(UnaryCall<v1::AssignTeamRequest, v1::AssignTeamResponse>* call) {
  if (Refuse(call)) return;
  const v1::AssignTeamRequest& request = call->request();
  if (absl::Status s = ValidateAssignTeamRequest(request); !s.ok()) return call->Reply(s);
  MoveWrite write = WriteOf("AssignTeam", request);
  write.teams = {request.team_id()};
  write.plan = [&request](const Snapshot& before) {
    return PlanAssignTeamRequest(before, request);
  };
  RunWrite(call, std::move(write),
           [&request](const Snapshot& before, const Plan& plan, int64_t version, bool dry_run,
                      v1::AssignTeamResponse* out) {
             FillTeamMove(before, plan, request.team_id(), version, dry_run, out);
           });
}

void AdminServiceImpl::UnassignTeam(
    UnaryCall<v1::UnassignTeamRequest, v1::UnassignTeamResponse>* call) {
  if (Refuse(call)) return;
  const v1::UnassignTeamRequest& request = call->request();
  if (absl::Status s = ValidateTeamId(request.team_id(), "team_id"); !s.ok()) {
    return call->Reply(s);
  }
  MoveWrite write = WriteOf("UnassignTeam", request);
  write.teams = {request.team_id()};
  write.plan = [&request](const Snapshot& before) {
    std::vector<AssignmentOp> ops;
    ops.push_back(AssignmentOp{request.team_id(), std::nullopt});
    return PlanAssignments(before, std::move(ops));
  };
  RunWrite(call, std::move(write),
           [&request](const Snapshot& before, const Plan& plan, int64_t version, bool dry_run,
                      v1::UnassignTeamResponse* out) {
             FillTeamMove(before, plan, request.team_id(), version, dry_run, out);
           });
}

void AdminServiceImpl::BulkAssign(UnaryCall<v1::BulkAssignRequest, v1::BulkAssignResponse>* call) {
  if (Refuse(call)) return;
  const v1::BulkAssignRequest& request = call->request();
  // A limit, not a malformed request (SPEC §3): RESOURCE_EXHAUSTED.
  if (request.assignments_size() > options_.max_bulk_assign) {
    return call->Reply(absl::ResourceExhaustedError(absl::StrCat(
        "assignments: ", request.assignments_size(), " entries exceed --max_bulk_assign (",
        options_.max_bulk_assign, " per call); split the load into batches")));
  }
  if (absl::Status s = ValidateBulkAssignRequest(request, options_.max_bulk_assign); !s.ok()) {
    return call->Reply(s);
  }
  MoveWrite write = WriteOf("BulkAssign", request);
  write.teams.reserve(request.assignments_size());
  for (const v1::BulkAssignment& a : request.assignments()) write.teams.push_back(a.team_id());
  write.plan = [&request](const Snapshot& before) {
    return PlanBulkAssignRequest(before, request);
  };
  RunWrite(call, std::move(write),
           [](const Snapshot&, const Plan& plan, int64_t version, bool dry_run,
              v1::BulkAssignResponse* out) {
             out->set_version(version);
             ToProto(plan.effect, dry_run, out->mutable_effect());
           });
}

void AdminServiceImpl::ListAssignments(
    UnaryCall<v1::ListAssignmentsRequest, v1::ListAssignmentsResponse>* call) {
  const auto* request = &call->request();
  auto* response = call->response();
  if (Refuse(call)) return;
  if (request->bucket_id() < 0) {
    return call->Reply(absl::InvalidArgumentError("bucket_id: must be positive"));
  }
  if (request->bucket_id() != 0 && !request->pool().empty()) {
    return call->Reply(absl::InvalidArgumentError("pool: set at most one of bucket_id and pool"));
  }
  if (!request->pool().empty()) {
    if (absl::Status s = ValidatePoolName(request->pool(), "pool"); !s.ok()) {
      return call->Reply(s);
    }
  }
  if (absl::Status s = ValidatePageSize(request->page_size(), kMaxAssignmentsPage, "page_size");
      !s.ok()) {
    return call->Reply(s);
  }
  int64_t after_team = 0;
  if (!request->page_token().empty() &&
      (!absl::SimpleAtoi(request->page_token(), &after_team) || after_team < 1)) {
    return call->Reply(absl::InvalidArgumentError("page_token: not a token from this API"));
  }
  std::shared_ptr<const ServedSnapshot> current = manager_->Current();
  const Snapshot& snapshot = current->snapshot();
  if (request->bucket_id() != 0 && snapshot.FindBucket(request->bucket_id()) == nullptr) {
    return call->Reply(absl::NotFoundError(
        absl::StrCat("bucket_id: bucket ", request->bucket_id(), " does not exist")));
  }
  // Match targets in their packed form: a pin is the bucket id, a pool is
  // -(index + 1) in the snapshot's pool table.
  int32_t wanted = request->bucket_id();
  if (!request->pool().empty()) {
    const auto& pools = snapshot.pools();
    auto it = std::lower_bound(pools.begin(), pools.end(), request->pool());
    if (it == pools.end() || *it != request->pool()) {
      response->set_version(snapshot.version());
      return call->Reply(absl::OkStatus());
    }
    wanted = -static_cast<int32_t>(it - pools.begin()) - 1;
  }
  const int32_t page_size =
      request->page_size() == 0 ? kDefaultAssignmentsPage : request->page_size();
  // Look ahead for a further match so the last page carries no token.
  snapshot.assignments().ScanAfter(after_team, [&](int64_t team, int32_t target) {
    if (wanted != 0 && target != wanted) return true;
    if (response->assignments_size() == page_size) {
      response->set_next_page_token(
          absl::StrCat(response->assignments(response->assignments_size() - 1).team_id()));
      return false;
    }
    v1::Assignment* a = response->add_assignments();
    a->set_team_id(team);
    if (target > 0) {
      a->set_bucket_id(target);
    } else {
      a->set_pool(snapshot.pools()[-target - 1]);
    }
    return true;
  });
  response->set_version(snapshot.version());
  return call->Reply(absl::OkStatus());
}

void AdminServiceImpl::GetHistory(UnaryCall<v1::GetHistoryRequest, v1::GetHistoryResponse>* call) {
  const auto* request = &call->request();
  auto* response = call->response();
  if (Refuse(call)) return;
  if (request->team_id() < 0) {
    return call->Reply(absl::InvalidArgumentError("team_id: must be positive, or 0 for all"));
  }
  if (request->from_version() < 0) {
    return call->Reply(absl::InvalidArgumentError("from_version: must not be negative"));
  }
  if (request->to_version() < 0) {
    return call->Reply(absl::InvalidArgumentError("to_version: must not be negative"));
  }
  if (request->to_version() != 0 && request->from_version() > request->to_version()) {
    return call->Reply(absl::InvalidArgumentError("from_version: greater than to_version"));
  }
  if (absl::Status s = ValidatePageSize(request->page_size(), kMaxHistoryPage, "page_size");
      !s.ok()) {
    return call->Reply(s);
  }
  HistoryQuery query;
  query.team_id = request->team_id();
  query.from_version = request->from_version();
  query.to_version = request->to_version();
  query.page_size = request->page_size() == 0 ? kDefaultHistoryPage : request->page_size();
  query.include_delta = request->include_delta();
  if (!request->page_token().empty()) {
    int64_t from = 0;
    if (!absl::SimpleAtoi(request->page_token(), &from) || from < 1) {
      return call->Reply(absl::InvalidArgumentError("page_token: not a token from this API"));
    }
    query.from_version = std::max(query.from_version, from);
  }
  workers_->Schedule([this, call, response, query] {
    absl::StatusOr<HistoryPage> page = store_->GetHistory(query);
    if (!page.ok()) {
      call->Reply(ToGrpcStatus(page.status()));
      return;
    }
    for (v1::ChangeRecord& record : page->records) {
      // Filtered by team, a bulk write's delta shrinks to that team's row:
      // a page of 100k-row deltas would not fit a message.
      if (query.team_id != 0 && record.has_delta())
        TrimDeltaToTeam(query.team_id, record.mutable_delta());
      *response->add_records() = std::move(record);
    }
    if (page->next_from_version != 0) {
      response->set_next_page_token(absl::StrCat(page->next_from_version));
    }
    call->Reply(grpc::Status::OK);
  });
}

void AdminServiceImpl::ListClients(
    UnaryCall<v1::ListClientsRequest, v1::ListClientsResponse>* call) {
  const auto* request = &call->request();
  auto* response = call->response();
  if (Refuse(call)) return;
  workers_->Schedule([this, call, response] {
    absl::StatusOr<std::vector<ClientState>> clients = store_->ListClients(absl::Now());
    if (!clients.ok()) {
      call->Reply(ToGrpcStatus(clients.status()));
      return;
    }
    auto set_time = [](absl::Time t, google::protobuf::Timestamp* out) {
      if (t == absl::InfinitePast()) return;
      const int64_t nanos = absl::ToUnixNanos(t);
      out->set_seconds(nanos / 1000000000);
      out->set_nanos(static_cast<int32_t>(nanos % 1000000000));
    };
    for (const ClientState& c : *clients) {
      v1::ClientInfo* info = response->add_clients();
      info->set_client_id(c.client_id);
      info->set_role(static_cast<v1::ClientRole>(c.role));
      info->set_replica(c.replica);
      info->set_peer(c.peer);
      info->set_applied_version(c.applied_version);
      info->set_drained_version(c.drained_version);
      info->set_nacks(c.nacks);
      info->set_last_nack_error(c.last_nack_error);
      info->set_connected(c.connected);
      set_time(c.connected_at, info->mutable_connect_time());
      set_time(c.last_ack, info->mutable_last_ack_time());
      set_time(c.last_nack, info->mutable_last_nack_time());
      set_time(c.lease_expires, info->mutable_lease_expire_time());
    }
    call->Reply(grpc::Status::OK);
  });
}

void AdminServiceImpl::ListHandoffs(
    UnaryCall<v1::ListHandoffsRequest, v1::ListHandoffsResponse>* call) {
  const auto* request = &call->request();
  auto* response = call->response();
  if (Refuse(call)) return;
  if (request->team_id() < 0) {
    return call->Reply(absl::InvalidArgumentError("team_id: must be positive, or 0 for all"));
  }
  if (absl::Status s = ValidatePageSize(request->page_size(), kMaxHandoffsPage, "page_size");
      !s.ok()) {
    return call->Reply(s);
  }
  const int32_t page_size = request->page_size() == 0 ? kDefaultHandoffsPage : request->page_size();
  if (!request->include_ended()) {
    // The open set is in the snapshot: answer at its version, no I/O.
    std::shared_ptr<const ServedSnapshot> current = manager_->Current();
    const Snapshot& snapshot = current->snapshot();
    response->set_version(snapshot.version());
    std::vector<const Handoff*> open;
    if (request->team_id() != 0) {
      open = snapshot.HandoffsOf(request->team_id());
    } else {
      for (const Handoff& h : snapshot.handoffs()) open.push_back(&h);
    }
    for (const Handoff* h : open) {
      if (response->handoffs_size() >= page_size) break;
      v1::Handoff* out = response->add_handoffs();
      ToProto(*h, out);
      if (handoffs_ != nullptr) handoffs_->Decorate(out);
    }
    return call->Reply(absl::OkStatus());
  }
  HandoffQuery query;
  query.include_ended = true;
  query.team_id = request->team_id();
  query.page_size = page_size;
  workers_->Schedule([this, call, response, query] {
    const int64_t version = manager_->Current()->version();
    absl::StatusOr<std::vector<v1::Handoff>> listed = store_->ListHandoffs(query);
    if (!listed.ok()) {
      call->Reply(ToGrpcStatus(listed.status()));
      return;
    }
    response->set_version(version);
    for (v1::Handoff& h : *listed) {
      if (handoffs_ != nullptr) handoffs_->Decorate(&h);
      *response->add_handoffs() = std::move(h);
    }
    call->Reply(grpc::Status::OK);
  });
}

void AdminServiceImpl::CancelHandoff(
    UnaryCall<v1::CancelHandoffRequest, v1::CancelHandoffResponse>* call) {
  if (Refuse(call)) return;
  const v1::CancelHandoffRequest& request = call->request();
  if (request.handoff_id() < 1) {
    return call->Reply(absl::InvalidArgumentError(
        absl::StrCat("handoff_id: must be >= 1, got ", request.handoff_id())));
  }
  MoveWrite write = WriteOf("CancelHandoff", request);
  write.plan = [&request](const Snapshot& before) {
    return PlanCancelHandoff(before, request.handoff_id(),
                             absl::StrCat("cancelled: ", request.reason()), absl::Now());
  };
  RunWrite(
      call, std::move(write),
      [](const Snapshot&, const Plan& plan, int64_t version, bool, v1::CancelHandoffResponse* out) {
        out->set_version(version);
        if (!plan.change.handoffs.empty()) {
          ToProto(plan.change.handoffs.front(), out->mutable_handoff());
        }
      });
}

void AdminServiceImpl::UpdatePool(UnaryCall<v1::UpdatePoolRequest, v1::UpdatePoolResponse>* call) {
  absl::StatusOr<std::string> actor = AdminName(*call->ctx());
  if (!actor.ok()) return call->Reply(actor.status());
  const v1::UpdatePoolRequest& request = call->request();
  if (absl::Status s = ValidateUpdatePoolRequest(request); !s.ok()) return call->Reply(s);
  MoveWrite write = WriteOf("UpdatePool", request);
  // Pausing or resuming changes no placement (PAUSED buckets stay in it):
  // no team moves, and it is no move to cool down from.
  write.scope = MoveScope::kPoolWide;
  write.exempt_cooldown = true;
  write.plan = [&request, actor = *actor](const Snapshot& before) {
    return PlanUpdatePoolRequest(before, request, actor);
  };
  RunWrite(call, std::move(write),
           [&request](const Snapshot& before, const Plan& plan, int64_t version, bool dry_run,
                      v1::UpdatePoolResponse* out) {
             const Snapshot& after = plan.after != nullptr ? *plan.after : before;
             out->set_version(version);
             ToProto(after.PoolOf(request.name()), out->mutable_pool());
             for (const Bucket& b : plan.change.buckets) ToProto(b, out->add_buckets());
             ToProto(plan.effect, dry_run, out->mutable_effect());
           });
}

void AdminServiceImpl::ListPools(UnaryCall<v1::ListPoolsRequest, v1::ListPoolsResponse>* call) {
  if (Refuse(call)) return;
  std::shared_ptr<const ServedSnapshot> current = manager_->Current();
  const Snapshot& snapshot = current->snapshot();
  std::vector<std::string> names = snapshot.pools();
  for (const Pool& p : snapshot.pool_objects()) names.push_back(p.name);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  v1::ListPoolsResponse* response = call->response();
  response->set_version(snapshot.version());
  for (const std::string& name : names) {
    v1::PoolInfo* info = response->add_pools();
    ToProto(snapshot.PoolOf(name), info->mutable_pool());
    info->set_has_object(snapshot.FindPoolObject(name) != nullptr);
    int64_t pinned = 0;
    for (const Bucket& b : snapshot.buckets()) {
      if (b.pool != name) continue;
      info->add_bucket_ids(b.id);
      pinned += snapshot.PinnedCount(b.id);
    }
    info->set_assigned_teams(snapshot.PoolAssignedCount(name));
    info->set_pinned_teams(pinned);
  }
  if (signals_ == nullptr) return call->Reply(absl::OkStatus());
  // The load, as GetLoad sums it per bucket, at the same version. Rates()
  // may read the store: on a worker thread.
  workers_->Schedule([this, call, current = std::move(current)] {
    absl::StatusOr<std::shared_ptr<const LoadRates>> rates = signals_->Rates();
    if (!rates.ok()) return call->Reply(rates.status());
    const Snapshot& snapshot = current->snapshot();
    LoadRate unattributed;
    const std::vector<BucketLoadView> loads =
        BucketLoads(snapshot, **rates, /*top_teams=*/0, &unattributed);
    std::map<std::string, LoadRate> by_pool;
    for (size_t i = 0; i < loads.size(); ++i) {
      by_pool[snapshot.buckets()[i].pool] += loads[i].rate;
    }
    for (v1::PoolInfo& info : *call->response()->mutable_pools()) {
      ToProto(by_pool[info.pool().name()], info.mutable_rate());
      info.set_load_windows((*rates)->windows);
    }
    call->Reply(absl::OkStatus());
  });
}

void AdminServiceImpl::SetTeamRule(
    UnaryCall<v1::SetTeamRuleRequest, v1::SetTeamRuleResponse>* call) {
  absl::StatusOr<std::string> actor = AdminName(*call->ctx());
  if (!actor.ok()) return call->Reply(actor.status());
  const v1::SetTeamRuleRequest& request = call->request();
  if (absl::Status s = ValidateSetTeamRuleRequest(request); !s.ok()) return call->Reply(s);
  MoveWrite write = WriteOf("SetTeamRule", request);
  write.plan = [&request, actor = *actor](const Snapshot& before) {
    return PlanSetTeamRuleRequest(before, request, actor, absl::Now());
  };
  RunWrite(call, std::move(write),
           [&request](const Snapshot& before, const Plan& plan, int64_t version, bool dry_run,
                      v1::SetTeamRuleResponse* out) {
             const Snapshot& after = plan.after != nullptr ? *plan.after : before;
             out->set_version(version);
             const TeamRule* rule =
                 plan.change.rules.empty()
                     ? after.FindRule(request.team_id(), static_cast<RuleKind>(request.kind()))
                     : &plan.change.rules.front();
             if (rule != nullptr) ToProto(*rule, out->mutable_rule());
             ToProto(plan.effect, dry_run, out->mutable_effect());
           });
}

void AdminServiceImpl::ClearTeamRule(
    UnaryCall<v1::ClearTeamRuleRequest, v1::ClearTeamRuleResponse>* call) {
  if (Refuse(call)) return;
  const v1::ClearTeamRuleRequest& request = call->request();
  if (absl::Status s = ValidateClearTeamRuleRequest(request); !s.ok()) return call->Reply(s);
  MoveWrite write = WriteOf("ClearTeamRule", request);
  write.plan = [&request](const Snapshot& before) {
    return PlanClearTeamRuleRequest(before, request);
  };
  RunWrite(call, std::move(write),
           [](const Snapshot& before, const Plan& plan, int64_t version, bool dry_run,
              v1::ClearTeamRuleResponse* out) {
             out->set_version(version);
             for (const TeamRuleKey& key : plan.change.cleared_rules) {
               if (const TeamRule* rule = before.FindRule(key.team_id, key.kind)) {
                 ToProto(*rule, out->add_cleared());
               }
             }
             ToProto(plan.effect, dry_run, out->mutable_effect());
           });
}

void AdminServiceImpl::ListTeamRules(
    UnaryCall<v1::ListTeamRulesRequest, v1::ListTeamRulesResponse>* call) {
  if (Refuse(call)) return;
  const v1::ListTeamRulesRequest& request = call->request();
  if (request.team_id() < 0) {
    return call->Reply(absl::InvalidArgumentError("team_id: must be positive, or 0 for all"));
  }
  if (request.kind() != v1::TEAM_RULE_KIND_UNSPECIFIED && !ValidRuleKind(request.kind())) {
    return call->Reply(absl::InvalidArgumentError(
        absl::StrCat("kind: unknown kind ", static_cast<int>(request.kind()))));
  }
  if (absl::Status s = ValidatePageSize(request.page_size(), kMaxRulesPage, "page_size"); !s.ok()) {
    return call->Reply(s);
  }
  int64_t after_team = 0;
  if (!request.page_token().empty() &&
      (!absl::SimpleAtoi(request.page_token(), &after_team) || after_team < 1)) {
    return call->Reply(absl::InvalidArgumentError("page_token: not a token from this API"));
  }
  const int32_t page_size = request.page_size() == 0 ? kDefaultRulesPage : request.page_size();
  std::shared_ptr<const ServedSnapshot> current = manager_->Current();
  const Snapshot& snapshot = current->snapshot();
  v1::ListTeamRulesResponse* response = call->response();
  response->set_version(snapshot.version());
  const std::vector<TeamRule>& rules = snapshot.team_rules();
  auto keep = [&request](const TeamRule& r) {
    return (request.team_id() == 0 || r.team_id == request.team_id()) &&
           (request.kind() == v1::TEAM_RULE_KIND_UNSPECIFIED ||
            static_cast<int>(r.kind) == request.kind());
  };
  auto it = std::upper_bound(rules.begin(), rules.end(), after_team,
                             [](int64_t t, const TeamRule& r) { return t < r.team_id; });
  int32_t teams = 0;
  int64_t last_team = 0;
  for (; it != rules.end(); ++it) {
    if (!keep(*it)) continue;
    if (it->team_id != last_team) {
      if (teams == page_size) {
        // A further team exists: the page ends before it.
        response->set_next_page_token(absl::StrCat(last_team));
        break;
      }
      ++teams;
      last_team = it->team_id;
    }
    ToProto(*it, response->add_rules());
  }
  call->Reply(absl::OkStatus());
}

void AdminServiceImpl::PlanRebalance(
    UnaryCall<v1::PlanRebalanceRequest, v1::PlanRebalanceResponse>* call) {
  if (Refuse(call)) return;
  const v1::PlanRebalanceRequest& request = call->request();
  if (absl::Status s = ValidatePoolName(request.pool(), "pool"); !s.ok()) return call->Reply(s);
  absl::StatusOr<LoadMetric> metric = LoadMetricFromProto(request.metric(), "metric");
  if (!metric.ok()) return call->Reply(metric.status());
  if (signals_ == nullptr) {
    return call->Reply(absl::FailedPreconditionError(
        "metric: this server serves no load signals (started without a store that keeps them)"));
  }
  // Rates() and the move times read the store: on a worker thread.
  workers_->Schedule([this, call, metric = *metric, budget = FromProto(request.budget())] {
    absl::StatusOr<RebalanceOutcome> outcome =
        rebalancer_.PlanPool(call->request().pool(), metric, budget);
    if (!outcome.ok()) return call->Reply(outcome.status());
    v1::PlanRebalanceResponse* response = call->response();
    ToProto(outcome->plan, metric, response);
    response->mutable_frozen_team_ids()->Add(outcome->frozen_team_ids.begin(),
                                             outcome->frozen_team_ids.end());
    response->set_load_windows(outcome->load_windows);
    call->Reply(absl::OkStatus());
  });
}

void AdminServiceImpl::ApplyRebalance(
    UnaryCall<v1::ApplyRebalanceRequest, v1::ApplyRebalanceResponse>* call) {
  if (Refuse(call)) return;
  const v1::ApplyRebalanceRequest& request = call->request();
  if (absl::Status s = ValidatePoolName(request.pool(), "pool"); !s.ok()) return call->Reply(s);
  if (request.moves_size() > options_.max_bulk_assign) {
    return call->Reply(absl::ResourceExhaustedError(
        absl::StrCat("moves: ", request.moves_size(), " moves exceed --max_bulk_assign (",
                     options_.max_bulk_assign, " per call); plan with a smaller max_teams")));
  }
  if (request.moves().empty()) {
    return call->Reply(absl::InvalidArgumentError("moves: the plan has no move to apply"));
  }
  // A plan holds only at the version it was computed at.
  if (request.expected_version() == 0) {
    return call->Reply(absl::InvalidArgumentError(
        "expected_version: required, the version PlanRebalance computed the plan at"));
  }
  MoveWrite write = Rebalancer::ApplyWrite(request.pool(), FromProto(request.moves()));
  const MoveWrite shared = WriteOf("ApplyRebalance", request);
  write.context = shared.context;
  write.dry_run = shared.dry_run;
  RunWrite(call, std::move(write),
           [](const Snapshot&, const Plan& plan, int64_t version, bool dry_run,
              v1::ApplyRebalanceResponse* out) {
             out->set_version(version);
             ToProto(plan.effect, dry_run, out->mutable_effect());
           });
}

}  // namespace bucketmap
