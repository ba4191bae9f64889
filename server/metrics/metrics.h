// Metrics: the server's Prometheus metrics and their /metrics exposer.
// Every metric of the server is defined here, and only here: components
// report through the methods below (they take a Metrics*, null in tests
// that do not look), so docs/operations.md's list has one place to match.
//
// Every RPC is counted by a gRPC server interceptor (method and code) and
// timed (method). Mapping gauges are updated on every published snapshot.
// Thread-safe: prometheus-cpp families and metrics are internally locked.
#ifndef BUCKETMAP_SERVER_METRICS_METRICS_H_
#define BUCKETMAP_SERVER_METRICS_METRICS_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "domain/snapshot.h"
#include "grpcpp/support/server_interceptor.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace bucketmap {

class Metrics {
 public:
  Metrics();

  // Serves /metrics on `listen` (host:port). Unavailable if it cannot bind.
  absl::Status Serve(const std::string& listen);

  // Records one finished RPC. `method` is the full gRPC method name.
  void RecordRpc(const std::string& method, int code, double seconds);

  // Updates the version, assignment and per-bucket gauges, the team rules
  // by kind and the paused pools.
  void OnSnapshot(const Snapshot& snapshot) ABSL_LOCKS_EXCLUDED(mu_);

  // Sets the number of open watch streams of a role (bucketmap.v1.ClientRole).
  void SetWatchers(int role, int64_t count);
  // Messages queued or in flight on all watch streams.
  void SetWatchPendingWrites(int64_t count);
  // Counts a watch event: "nack", "ack_timeout".
  void RecordWatchEvent(const std::string& event);

  // The outbox, as last read from the store.
  void SetOutboxStats(int64_t backlog, absl::Duration oldest_age, int64_t last_published_version);
  // The last version the relay marked published.
  void SetOutboxLastPublished(int64_t version);
  // Counts a publishing failure that made the relay reset its producer.
  void RecordOutboxPublishError();
  // Exports bucketmap_embedded_kafka_info{bootstrap=...} 1.
  void SetEmbeddedKafka(const std::string& bootstrap);
  // The changes topic's partition count as found at start (anything but 1
  // breaks the total order).
  void SetChangesTopicPartitions(int partitions);

  // Open handoffs by phase ("SWITCHING", "DRAINING"), and the age of the
  // oldest open one (zero when none is open).
  void SetHandoffs(int64_t switching, int64_t draining, absl::Duration oldest_age)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Leader election (server/replica/leader.h): the epoch this replica
  // leads at, 0 when it does not lead; a leadership acquired or lost.
  void SetLeader(int64_t epoch);
  void RecordLeaderChange(bool acquired);

  // The version listener (server/replica/pg_listener.h): whether it is
  // connected; a batch of version notifications received.
  void SetVersionListenerConnected(bool connected);
  void RecordVersionNotification();

  // One bucket role's consumer-group lag, as the leader's lag exporter
  // read it (server/signals/lag_exporter.h).
  struct BucketLag {
    int32_t bucket_id = 0;
    std::string bucket;
    std::string role;
    std::string group;
    bool up = false;
    int64_t messages = 0;
    double seconds = 0;
  };
  // Replaces every bucketmap_bucket_lag_* series with `lags`: lag_up is 1
  // or 0; lag_messages and lag_seconds exist only for the readings that are
  // up (unknown is absent, never 0). Series of (bucket, role, group) not in
  // `lags` are removed. An empty list removes them all (leadership lost).
  void SetBucketLags(const std::vector<BucketLag>& lags) ABSL_LOCKS_EXCLUDED(mu_);
  // The lag exporter's last round: how long it took, and partitions read.
  void SetLagRound(absl::Duration took, int64_t partitions);
  // Counts a load report by outcome: "accepted", "too_frequent" (dropped),
  // "invalid" (the stream was ended).
  void RecordLoadReport(const std::string& result);
  // Counts a failed flush of this replica's load windows to the store
  // (retried with the next flush).
  void RecordLoadFlushError();
  // Rule expiry (server/rules/rule_expiry.h): team rules removed because
  // their expire_time passed.
  void RecordRulesExpired(int64_t count);

  // Group commit (server/state/mapping_manager.h): one group of `writes`
  // writes taken into one store transaction.
  void RecordWriteGroup(size_t writes);

  // Automatic rebalancing (server/rebalance/auto_rebalancer.h): one round
  // of one pool, by outcome ("applied", "within_target", "budget_spent",
  // "no_move", "failed"; budget_spent: the day's churn budget is used up,
  // or what is left of it is too little for any useful move), and the share of its load an applied
  // round moved.
  void RecordAutoRebalance(const std::string& pool, const std::string& outcome, double share_moved);

  // An interceptor factory that calls RecordRpc for every call.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory();

  prometheus::Registry& registry() { return *registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  prometheus::Family<prometheus::Counter>& rpcs_;
  prometheus::Family<prometheus::Histogram>& rpc_seconds_;
  prometheus::Gauge& version_;
  prometheus::Gauge& assignments_;
  prometheus::Family<prometheus::Gauge>& pinned_teams_;
  prometheus::Family<prometheus::Gauge>& watchers_;
  prometheus::Family<prometheus::Counter>& watch_events_;
  prometheus::Gauge& watch_pending_writes_;
  prometheus::Gauge& outbox_backlog_;
  prometheus::Gauge& outbox_oldest_age_;
  prometheus::Counter& outbox_errors_;
  prometheus::Gauge& outbox_last_published_;
  prometheus::Family<prometheus::Gauge>& embedded_kafka_;
  prometheus::Gauge& changes_topic_partitions_;
  prometheus::Gauge& leader_;
  prometheus::Gauge& leader_epoch_;
  prometheus::Family<prometheus::Counter>& leader_changes_;
  prometheus::Counter& leader_acquired_;
  prometheus::Counter& leader_lost_;
  prometheus::Gauge& listener_connected_;
  prometheus::Counter& version_notifications_;
  prometheus::Family<prometheus::Gauge>& lag_messages_;
  prometheus::Family<prometheus::Gauge>& lag_seconds_;
  prometheus::Family<prometheus::Gauge>& lag_up_;
  prometheus::Gauge& lag_round_seconds_;
  prometheus::Gauge& lag_round_partitions_;
  prometheus::Family<prometheus::Counter>& load_reports_;
  prometheus::Counter& load_flush_errors_;
  prometheus::Family<prometheus::Gauge>& team_rules_;
  prometheus::Family<prometheus::Gauge>& pool_paused_;
  prometheus::Counter& rules_expired_;
  prometheus::Family<prometheus::Counter>& auto_rebalance_rounds_;
  prometheus::Family<prometheus::Counter>& auto_rebalance_share_moved_;
  prometheus::Histogram& write_group_size_;
  absl::Mutex mu_;
  // The bucketmap_bucket_lag_* series now exported, by their labels.
  std::map<std::vector<std::string>, BucketLag> lag_series_ ABSL_GUARDED_BY(mu_);
  // Registered on first use by SetHandoffs.
  prometheus::Gauge* handoffs_switching_ ABSL_GUARDED_BY(mu_) = nullptr;
  prometheus::Gauge* handoffs_draining_ ABSL_GUARDED_BY(mu_) = nullptr;
  prometheus::Gauge* handoff_oldest_age_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_METRICS_METRICS_H_
