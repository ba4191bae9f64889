// MappingManager: the replica's view of the mapping and its write path.
//
// It holds the current ServedSnapshot (an immutable Snapshot plus its wire
// form, serialized at most once) and advances it after each commit. All
// writes of this replica go through Write(), which runs them in arrival
// order, so the in-memory snapshot advances in version order; PostgreSQL
// orders writes across replicas.
//
// Group commit: writers queue; the first in the queue leads, takes the
// writers queued behind it (up to max_write_group in all) and runs them
// through Store::WriteGroup, which commits them in one transaction, each
// with its own version and outcome. The writes that arrive meanwhile form
// the next group. So under concurrent writers the round trips of one
// transaction (lock, COMMIT, notification) are shared, and a lone writer
// pays nothing more than before.
//
// Thread safety: all methods are thread-safe. Current() never blocks on
// I/O; Write(), CatchUp() and Reload() block on the Store and must run on
// worker threads.
#ifndef BUCKETMAP_SERVER_STATE_MAPPING_MANAGER_H_
#define BUCKETMAP_SERVER_STATE_MAPPING_MANAGER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "domain/snapshot.h"
#include "server/store/store.h"

namespace bucketmap {

// A snapshot as served: the domain snapshot and its serialized
// bucketmap.v1.MappingSnapshot, built on first use and then shared by
// every GetMapping of that version.
class ServedSnapshot {
 public:
  explicit ServedSnapshot(std::shared_ptr<const Snapshot> snapshot)
      : snapshot_(std::move(snapshot)) {}

  const Snapshot& snapshot() const { return *snapshot_; }
  const std::shared_ptr<const Snapshot>& shared() const { return snapshot_; }
  int64_t version() const { return snapshot_->version(); }

  // The serialized MappingSnapshot; computed once, thread-safe.
  const std::string& Serialized() const;

 private:
  std::shared_ptr<const Snapshot> snapshot_;
  mutable absl::once_flag once_;
  mutable std::string serialized_;
};

class MappingManager {
 public:
  // Most writes committed in one transaction by default.
  static constexpr int kDefaultMaxWriteGroup = 64;

  // `store` must outlive the manager. `max_write_group` (at least 1; 1
  // commits every write alone) bounds a group commit.
  explicit MappingManager(Store* store, int max_write_group = kDefaultMaxWriteGroup);

  // Loads the snapshot from the store. Unavailable if it cannot be reached.
  absl::Status Init();

  // Returns the current snapshot. Never null after a successful Init().
  std::shared_ptr<const ServedSnapshot> Current() const;

  // Runs a write through the store and publishes the resulting snapshot.
  // See Store::Write for the contract, and Store::WriteGroup for how it
  // may share a transaction with concurrent writes (`plan` may then be
  // called more than once).
  absl::StatusOr<WriteResult> Write(const WriteContext& ctx, const ReadingPlanFn& plan);
  absl::StatusOr<WriteResult> Write(const WriteContext& ctx, const PlanFn& plan);

  // Returns a snapshot at version >= min_version, catching up from the
  // store if this replica is behind (see Advance). Unavailable if the store
  // is unreachable or is itself behind min_version; never an older snapshot.
  absl::StatusOr<std::shared_ptr<const ServedSnapshot>> CatchUp(int64_t min_version);

  // Catches up if the store's version is ahead of the current snapshot (the
  // periodic catch-up poll). Returns the current version.
  absl::StatusOr<int64_t> Refresh();

  // Advance()
  //
  // Brings the snapshot to at least `version`, a version known to be
  // committed (announced by another replica's NOTIFY) in the database of
  // `cluster_id` ("": unknown, taken to be ours). A database of another
  // cluster (restored or replaced) is loaded whole, whatever the versions. Versions are
  // applied one by one from the change log's deltas, so watchers are sent
  // deltas and a large mapping is not reloaded per write; the whole
  // snapshot is reloaded only when the deltas are gone (pruned) or more
  // than kMaxDeltaCatchUp versions behind. Unavailable if the store is
  // unreachable.
  absl::Status Advance(int64_t version, const std::string& cluster_id = "");

  // Beyond this many versions behind, Advance reloads the snapshot.
  static constexpr int64_t kMaxDeltaCatchUp = 1000;

  // A newly published snapshot, as listeners see it.
  struct Published {
    std::shared_ptr<const ServedSnapshot> snapshot;
    // The change that made it from the previous version, or null when the
    // snapshot was reloaded (it may then be several versions ahead).
    const Change* change = nullptr;
    // That change's MappingDelta, serialized once: by the store, for a
    // write of this replica, or here, for a version another replica wrote.
    // Null when `change` is.
    std::shared_ptr<const std::string> encoded_delta;
  };
  // Called after each newly published snapshot, in version order, on the
  // publishing thread.
  using Listener = std::function<void(const Published& published)>;
  // Register listeners before serving.
  void AddListener(Listener listener);

  // Called with the size of every write group, before it runs (metrics).
  // Set it before serving.
  void set_group_observer(std::function<void(size_t writes)> observer) {
    group_observer_ = std::move(observer);
  }

 private:
  // A queued write, and its outcome once done. The leader of its group
  // sets `result` before `done`; both are read by the writer only after
  // it sees `done` under queue_mu_.
  struct Writer;
  // Runs `group` (the leader first) and sets each writer's result.
  void RunGroup(const std::vector<Writer*>& group) ABSL_LOCKS_EXCLUDED(queue_mu_, write_mu_);

  // Publishes `snapshot` if it is newer than the current one.
  void Publish(std::shared_ptr<const Snapshot> snapshot, const Change* change,
               std::shared_ptr<const std::string> encoded_delta) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status ReloadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Advances to `target` of `cluster_id` from deltas, else by a reload
  // (see Advance).
  absl::Status AdvanceLocked(int64_t target, const std::string& cluster_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // True when `cluster_id` is known and not the current snapshot's.
  bool OtherCluster(const std::string& cluster_id) const;

  Store* const store_;
  const int max_write_group_;
  // The writers waiting, in arrival order; the first leads the next group.
  absl::Mutex queue_mu_;
  std::deque<Writer*> queue_ ABSL_GUARDED_BY(queue_mu_);
  // Held across a whole write group or reload, so publications are ordered.
  absl::Mutex write_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  std::shared_ptr<const ServedSnapshot> current_ ABSL_GUARDED_BY(mu_);
  std::vector<Listener> listeners_;
  std::function<void(size_t)> group_observer_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_STATE_MAPPING_MANAGER_H_
