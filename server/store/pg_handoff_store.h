// The PostgreSQL side of handoffs (migrations/0005_handoffs.sql): the
// statements PgStore runs inside its own transactions to load the open
// handoffs with a snapshot, persist the handoffs of a write with its
// version, list handoffs and read move times.
//
// Internal to bucketmap_store. Functions take the caller's transaction and
// may throw libpqxx exceptions (PgStore converts them); they hold no state
// and are safe from any thread with distinct transactions.
#ifndef BUCKETMAP_SERVER_STORE_PG_HANDOFF_STORE_H_
#define BUCKETMAP_SERVER_STORE_PG_HANDOFF_STORE_H_

#include <cstdint>
#include <pqxx/pqxx>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bucketmap/v1/types.pb.h"
#include "domain/change.h"
#include "domain/snapshot.h"
#include "server/store/store.h"

namespace bucketmap {

// Adds the open handoffs and the next handoff id to `state`.
// Internal when a stored handoff cannot be parsed.
absl::Status ReadHandoffState(pqxx::transaction_base& tx, MappingState* state);

// Persists change.handoffs at `version`: inserts new ones, updates the
// others (only while they are open: an ended handoff never changes again,
// FailedPrecondition otherwise), and records the move times of the
// handoffs opened at `version`.
absl::Status PersistHandoffs(pqxx::transaction_base& tx, const Change& change, int64_t version,
                             int64_t leader_epoch);

// See Store::ListHandoffs.
absl::StatusOr<std::vector<v1::Handoff>> QueryHandoffs(pqxx::transaction_base& tx,
                                                       const HandoffQuery& query);

// See Store::LoadMoveTimes.
absl::StatusOr<MoveTimes> QueryMoveTimes(pqxx::transaction_base& tx,
                                         const std::vector<int64_t>& team_ids);

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_STORE_PG_HANDOFF_STORE_H_
