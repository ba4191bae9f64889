// AdminService: the gRPC adapter for writes and oversight.
//
// It validates request shapes, then runs the work on the WorkerPool: the
// reactor threads never block on PostgreSQL. Writes are planned by the
// domain planner and committed through the MappingManager. Dry runs are
// planned against the current snapshot and commit nothing.
#ifndef BUCKETMAP_SERVER_RPC_ADMIN_SERVICE_H_
#define BUCKETMAP_SERVER_RPC_ADMIN_SERVICE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>

#include "absl/time/time.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "domain/planner.h"
#include "server/base/worker_pool.h"
#include "server/rebalance/rebalancer.h"
#include "server/rpc/auth.h"
#include "server/rpc/rate_limit.h"
#include "server/rpc/unary_call.h"
#include "server/signals/load_signals.h"
#include "server/state/handoff_view.h"
#include "server/state/mapping_manager.h"
#include "server/state/write_path.h"
#include "server/store/store.h"

namespace bucketmap {

struct AdminServiceOptions {
  int64_t max_bulk_assign = 100000;
  // Upper bound on a write's time in PostgreSQL, below the call deadline.
  absl::Duration write_timeout = absl::Seconds(10);
  // Writes per caller (token name); dry runs are not counted.
  RateLimit write_rate_limit;
};

class AdminServiceImpl final : public UnaryService<v1::AdminService::Service> {
 public:
  // All dependencies must outlive the service. Every call needs an admin
  // token (see auth.h); a null `authorizer` allows every call (development
  // mode) and takes the actor from `x-bucketmap-actor`.
  // Writes open handoffs and are guarded through `handoffs` (SPEC §5);
  // without one no handoff is opened.
  AdminServiceImpl(MappingManager* manager, Store* store, WorkerPool* workers,
                   AdminServiceOptions options, const Authorizer* authorizer = nullptr,
                   const HandoffView* handoffs = nullptr, SignalsReader* signals = nullptr);

  // The RPCs, bound to the raw methods by the constructor (see
  // unary_call.h: requests are parsed and their strings checked first).
  void CreateBucket(UnaryCall<v1::CreateBucketRequest, v1::CreateBucketResponse>* call);
  void UpdateBucket(UnaryCall<v1::UpdateBucketRequest, v1::UpdateBucketResponse>* call);
  void ListBuckets(UnaryCall<v1::ListBucketsRequest, v1::ListBucketsResponse>* call);
  void AssignTeam(UnaryCall<v1::AssignTeamRequest, v1::AssignTeamResponse>* call);
  void UnassignTeam(UnaryCall<v1::UnassignTeamRequest, v1::UnassignTeamResponse>* call);
  void BulkAssign(UnaryCall<v1::BulkAssignRequest, v1::BulkAssignResponse>* call);
  void ListAssignments(UnaryCall<v1::ListAssignmentsRequest, v1::ListAssignmentsResponse>* call);
  void GetHistory(UnaryCall<v1::GetHistoryRequest, v1::GetHistoryResponse>* call);
  void ListClients(UnaryCall<v1::ListClientsRequest, v1::ListClientsResponse>* call);
  void ListHandoffs(UnaryCall<v1::ListHandoffsRequest, v1::ListHandoffsResponse>* call);
  void CancelHandoff(UnaryCall<v1::CancelHandoffRequest, v1::CancelHandoffResponse>* call);
  // Pools as objects and per-team rules (docs/rules.md). Like every
  // AdminService method, the two lists need an admin token (readers get
  // the pools and rules in the snapshot, docs/security.md).
  void UpdatePool(UnaryCall<v1::UpdatePoolRequest, v1::UpdatePoolResponse>* call);
  void ListPools(UnaryCall<v1::ListPoolsRequest, v1::ListPoolsResponse>* call);
  void SetTeamRule(UnaryCall<v1::SetTeamRuleRequest, v1::SetTeamRuleResponse>* call);
  void ClearTeamRule(UnaryCall<v1::ClearTeamRuleRequest, v1::ClearTeamRuleResponse>* call);
  void ListTeamRules(UnaryCall<v1::ListTeamRulesRequest, v1::ListTeamRulesResponse>* call);
  // Rebalancing (docs/rebalancing.md). PlanRebalance needs the load
  // signals (FailedPrecondition without them).
  void PlanRebalance(UnaryCall<v1::PlanRebalanceRequest, v1::PlanRebalanceResponse>* call);
  void ApplyRebalance(UnaryCall<v1::ApplyRebalanceRequest, v1::ApplyRebalanceResponse>* call);

 private:
  // Fills the typed response of a planned write at `version`.
  template <typename Response>
  using Fill = std::function<void(const Snapshot& before, const Plan& plan, int64_t version,
                                  bool dry_run, Response* response)>;

  // Validates the shared fields, authorizes and rate-limits the caller, then
  // runs `write` through the WritePath on a worker thread, answering with
  // `fill`, and finishes the call.
  template <typename Request, typename Response>
  void RunWrite(UnaryCall<Request, Response>* call, MoveWrite write,
                std::common_type_t<Fill<Response>> fill);

  // Finishes the call and returns true when its caller is not an admin.
  template <typename Request, typename Response>
  bool Refuse(UnaryCall<Request, Response>* call);

  // The name of the caller, an admin (the actor a write records), or the
  // error that refuses the call.
  absl::StatusOr<std::string> AdminName(const grpc::CallbackServerContext& ctx) const;

  MappingManager* const manager_;
  Store* const store_;
  WorkerPool* const workers_;
  const AdminServiceOptions options_;
  const Authorizer dev_authorizer_{nullptr, false};
  const Authorizer* const authorizer_;
  const HandoffView* const handoffs_;
  // ListPools' load and PlanRebalance's; null: pools are listed without
  // it, and PlanRebalance is refused.
  SignalsReader* const signals_;
  const WritePath write_path_;
  const Rebalancer rebalancer_;
  WriteRateLimiter rate_limiter_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_RPC_ADMIN_SERVICE_H_
