#include "server/state/write_path.h"

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bucketmap/v1/mapping.pb.h"
#include "domain/status_macros.h"

namespace bucketmap {
namespace {

// A dry run's reads, made outside any transaction: ListClients at the
// policy's time.
class ListedReads final : public WriteReads {
 public:
  ListedReads(Store* store, absl::Time now) : store_(store), now_(now) {}

  absl::StatusOr<bool> ProducerLeased() override {
    ASSIGN_OR_RETURN(std::vector<ClientState> clients, store_->ListClients(now_));
    return std::any_of(clients.begin(), clients.end(),
                       [](const ClientState& c) { return c.role == v1::PRODUCER; });
  }

 private:
  Store* const store_;
  const absl::Time now_;
};

// Whether the producer leases can change what `policy` does with a plan
// made against `before`: only an ordered handoff out of a bucket with
// nothing to drain opens COMPLETED when no producer is leased, so other
// writes spare the read.
bool ProducerLeasesMatter(const MovePolicy& policy, const Snapshot& before, const Plan& plan) {
  if (!policy.open_handoffs || !policy.ordered || !plan.effect.changed) return false;
  return std::any_of(before.buckets().begin(), before.buckets().end(), [](const Bucket& b) {
    return b.state != BucketState::kRetired && NothingToDrain(b);
  });
}

}  // namespace

absl::StatusOr<WriteOutcome> WritePath::Run(const MoveWrite& write) const {
  MovePolicy policy;
  policy.open_handoffs = false;
  if (handoffs_ != nullptr) policy = handoffs_->Policy(write.scope, write.ordered, write.force);
  if (write.exempt_cooldown) policy.cooldown = absl::ZeroDuration();
  if (policy.open_handoffs && policy.cooldown > absl::ZeroDuration()) {
    ASSIGN_OR_RETURN(MoveTimes times, store_->LoadMoveTimes(write.teams));
    policy.team_moved_at = std::move(times.teams);
    policy.pool_moved_at = std::move(times.pools);
  }
  // The producer leases are read inside the write's transaction, after the
  // version row is locked (a dry run reads them with ListClients). What
  // they cannot tell: a producer that subscribed less than one
  // --client_flush ago and is not recorded yet, and one routing from its
  // cache file without connecting (docs/handoff.md, "Nothing to wait for").
  auto plan_moves = [&write, &policy](const Snapshot& before,
                                      WriteReads& reads) -> absl::StatusOr<Plan> {
    ASSIGN_OR_RETURN(Plan plan, write.plan(before));
    policy.producer_leased = true;
    if (ProducerLeasesMatter(policy, before, plan)) {
      ASSIGN_OR_RETURN(policy.producer_leased, reads.ProducerLeased());
    }
    RETURN_IF_ERROR(ApplyMovePolicy(before, policy, &plan));
    return plan;
  };

  if (write.dry_run) {
    // Planned against this replica's snapshot; it commits nothing and is
    // not remembered under its request_id.
    std::shared_ptr<const ServedSnapshot> current = manager_->Current();
    const Snapshot& before = current->snapshot();
    const int64_t expected = write.context.expected_version;
    if (expected != 0 && expected != before.version()) {
      return absl::AbortedError(absl::StrCat("expected_version ", expected,
                                             " does not match current version ", before.version()));
    }
    ListedReads reads(store_, policy.now);
    ASSIGN_OR_RETURN(Plan plan, plan_moves(before, reads));
    return WriteOutcome{write.respond(before, plan, before.version(), /*dry_run=*/true), false};
  }

  WriteContext context = write.context;
  // A forced move is recorded as such in the change log (SPEC §5.7).
  if (write.force) context.kind = absl::StrCat(context.kind, "+force");
  ReadingPlanFn plan_fn = [&write, &plan_moves](const Snapshot& before,
                                                WriteReads& reads) -> absl::StatusOr<PlannedWrite> {
    ASSIGN_OR_RETURN(Plan plan, plan_moves(before, reads));
    const int64_t version = before.version() + (plan.effect.changed ? 1 : 0);
    std::string response = write.respond(before, plan, version, /*dry_run=*/false);
    return PlannedWrite{std::move(plan), std::move(response)};
  };
  ASSIGN_OR_RETURN(WriteResult result, manager_->Write(context, plan_fn));
  return WriteOutcome{std::move(result.response), result.replayed};
}

}  // namespace bucketmap
