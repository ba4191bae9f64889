#include "server/metrics/metrics.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "grpcpp/support/status.h"

namespace bucketmap {
namespace {

const char* CodeName(int code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  return code >= 0 && code <= 16 ? kNames[code] : "UNKNOWN";
}

class MetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(Metrics* metrics, std::string method)
      : metrics_(metrics), method_(std::move(method)), start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start_;
      metrics_->RecordRpc(method_, methods->GetSendStatus().error_code(), elapsed.count());
    }
    methods->Proceed();
  }

 private:
  Metrics* metrics_;
  std::string method_;
  std::chrono::steady_clock::time_point start_;
};

class MetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(Metrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    // An interceptor runs on every message of a stream; watch streams are
    // counted by the WatchHub when they end instead.
    if (info->type() == grpc::experimental::ServerRpcInfo::Type::BIDI_STREAMING) return nullptr;
    std::string method = info->method();
    if (!method.empty() && method[0] == '/') method.erase(0, 1);
    return new MetricsInterceptor(metrics_, std::move(method));
  }

 private:
  Metrics* metrics_;
};

}  // namespace

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      rpcs_(prometheus::BuildCounter()
                .Name("bucketmap_rpc_requests_total")
                .Help("gRPC calls finished, by method and status code.")
                .Register(*registry_)),
      rpc_seconds_(prometheus::BuildHistogram()
                       .Name("bucketmap_rpc_duration_seconds")
                       .Help("gRPC call latency from start to status, by method.")
                       .Register(*registry_)),
      version_(prometheus::BuildGauge()
                   .Name("bucketmap_mapping_version")
                   .Help("Version of the snapshot this replica serves.")
                   .Register(*registry_)
                   .Add({})),
      assignments_(prometheus::BuildGauge()
                       .Name("bucketmap_assignments")
                       .Help("Teams with an override (pin or pool).")
                       .Register(*registry_)
                       .Add({})),
      pinned_teams_(prometheus::BuildGauge()
                        .Name("bucketmap_bucket_pinned_teams")
                        .Help("Teams pinned to each bucket.")
                        .Register(*registry_)),
      watchers_(prometheus::BuildGauge()
                    .Name("bucketmap_watchers")
                    .Help("Open WatchMapping streams on this replica, by client role.")
                    .Register(*registry_)),
      watch_events_(prometheus::BuildCounter()
                        .Name("bucketmap_watch_events_total")
                        .Help("Watch stream events: NACKs received, streams closed on ACK timeout.")
                        .Register(*registry_)),
      watch_pending_writes_(prometheus::BuildGauge()
                                .Name("bucketmap_watch_pending_writes")
                                .Help("Watch messages queued or being written, over all streams "
                                      "(at most 3 per stream).")
                                .Register(*registry_)
                                .Add({})),
      outbox_backlog_(prometheus::BuildGauge()
                          .Name("bucketmap_outbox_backlog")
                          .Help("Change-log rows not yet published to Kafka.")
                          .Register(*registry_)
                          .Add({})),
      outbox_oldest_age_(prometheus::BuildGauge()
                             .Name("bucketmap_outbox_oldest_unpublished_age_seconds")
                             .Help("Age of the oldest change-log row not yet published; 0 when "
                                   "none is waiting.")
                             .Register(*registry_)
                             .Add({})),
      outbox_errors_(prometheus::BuildCounter()
                         .Name("bucketmap_outbox_publish_errors_total")
                         .Help("Publishing failures that made the outbox relay reset its Kafka "
                               "producer and resend from the last delivered version.")
                         .Register(*registry_)
                         .Add({})),
      outbox_last_published_(prometheus::BuildGauge()
                                 .Name("bucketmap_outbox_last_published_version")
                                 .Help("Highest version published to the changes topic.")
                                 .Register(*registry_)
                                 .Add({})),
      embedded_kafka_(prometheus::BuildGauge()
                          .Name("bucketmap_embedded_kafka_info")
                          .Help("1, labelled with the bootstrap address of the in-process mock "
                                "Kafka cluster (--kafka_brokers=embedded).")
                          .Register(*registry_)),
      changes_topic_partitions_(prometheus::BuildGauge()
                                    .Name("bucketmap_changes_topic_partitions")
                                    .Help("Partitions of the changes topic found at start; "
                                          "anything but 1 breaks the total order.")
                                    .Register(*registry_)
                                    .Add({})),
      leader_(prometheus::BuildGauge()
                  .Name("bucketmap_leader")
                  .Help("1 while this replica is the leader (runs the outbox relay and the "
                        "handoff coordinator)")
                  .Register(*registry_)
                  .Add({})),
      leader_epoch_(prometheus::BuildGauge()
                        .Name("bucketmap_leader_epoch")
                        .Help("The leader epoch this replica holds; 0 when it is not the leader")
                        .Register(*registry_)
                        .Add({})),
      leader_changes_(prometheus::BuildCounter()
                          .Name("bucketmap_leader_changes_total")
                          .Help("Times this replica became (acquired) or stopped being (lost) "
                                "leader")
                          .Register(*registry_)),
      leader_acquired_(leader_changes_.Add({{"event", "acquired"}})),
      leader_lost_(leader_changes_.Add({{"event", "lost"}})),
      listener_connected_(prometheus::BuildGauge()
                              .Name("bucketmap_version_listener_connected")
                              .Help("1 while this replica LISTENs for versions committed by other "
                                    "replicas; 0 means it relies on the catch-up poll")
                              .Register(*registry_)
                              .Add({})),
      version_notifications_(prometheus::BuildCounter()
                                 .Name("bucketmap_version_notifications_total")
                                 .Help("Batches of version notifications received (NOTIFY)")
                                 .Register(*registry_)
                                 .Add({})),
      lag_messages_(prometheus::BuildGauge()
                        .Name("bucketmap_bucket_lag_messages")
                        .Help("Messages of the role's topic not yet consumed by its consumer "
                              "group, summed over partitions (leader only; absent when "
                              "bucketmap_bucket_lag_up is 0)")
                        .Register(*registry_)),
      lag_seconds_(prometheus::BuildGauge()
                       .Name("bucketmap_bucket_lag_seconds")
                       .Help("Age of the oldest message the consumer group has not consumed, max "
                             "over partitions; 0 only when nothing is unconsumed (leader only; "
                             "absent when bucketmap_bucket_lag_up is 0)")
                       .Register(*registry_)),
      lag_up_(prometheus::BuildGauge()
                  .Name("bucketmap_bucket_lag_up")
                  .Help("1 when the last lag read of the group succeeded, 0 when the group, "
                        "topic or broker could not be read (leader only)")
                  .Register(*registry_)),
      lag_round_seconds_(prometheus::BuildGauge()
                             .Name("bucketmap_lag_round_duration_seconds")
                             .Help("How long the lag exporter's last round took (leader only)")
                             .Register(*registry_)
                             .Add({})),
      lag_round_partitions_(prometheus::BuildGauge()
                                .Name("bucketmap_lag_round_partitions")
                                .Help("Partitions the lag exporter's last round read (leader "
                                      "only; at most --lag_max_partitions)")
                                .Register(*registry_)
                                .Add({})),
      load_reports_(prometheus::BuildCounter()
                        .Name("bucketmap_load_reports_total")
                        .Help("Load reports received on watch streams, by result: accepted, "
                              "too_frequent (dropped), invalid (stream ended)")
                        .Register(*registry_)),
      load_flush_errors_(prometheus::BuildCounter()
                             .Name("bucketmap_load_flush_errors_total")
                             .Help("Failed flushes of this replica's load windows to "
                                   "PostgreSQL (retried with the next flush)")
                             .Register(*registry_)
                             .Add({})),
      team_rules_(prometheus::BuildGauge()
                      .Name("bucketmap_team_rules")
                      .Help("Team rules in force, by kind (RATE_LIMIT, FORCE_OVERFLOW, DROP, "
                            "SKIP_PERSON_PROCESSING)")
                      .Register(*registry_)),
      pool_paused_(prometheus::BuildGauge()
                       .Name("bucketmap_pool_paused")
                       .Help("1 for each pool that is PAUSED (UpdatePool), 0 once resumed")
                       .Register(*registry_)),
      rules_expired_(prometheus::BuildCounter()
                         .Name("bucketmap_team_rules_expired_total")
                         .Help("Team rules the leader removed because their expire_time passed")
                         .Register(*registry_)
                         .Add({})),
      auto_rebalance_rounds_(
          prometheus::BuildCounter()
              .Name("bucketmap_auto_rebalance_rounds_total")
              .Help("Automatic rebalancing rounds of a pool by outcome: applied, within_target, "
                    "budget_spent (the pool's daily churn budget is used up), no_move, failed")
              .Register(*registry_)),
      auto_rebalance_share_moved_(
          prometheus::BuildCounter()
              .Name("bucketmap_auto_rebalance_load_share_moved_total")
              .Help("Share of a pool's load (0..1 per round) that automatic rebalancing moved")
              .Register(*registry_)),
      write_group_size_(
          prometheus::BuildHistogram()
              .Name("bucketmap_write_group_size")
              .Help("Writes taken into one store transaction (group commit)")
              .Register(*registry_)
              .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64})) {}

void Metrics::RecordWriteGroup(size_t writes) {
  write_group_size_.Observe(static_cast<double>(writes));
}

void Metrics::SetBucketLags(const std::vector<BucketLag>& lags) {
  std::map<std::vector<std::string>, BucketLag> next;
  for (const BucketLag& lag : lags) {
    next[{absl::StrCat(lag.bucket_id), lag.bucket, lag.role, lag.group}] = lag;
  }
  absl::MutexLock lock(&mu_);
  for (const auto& [key, old] : lag_series_) {
    const prometheus::Labels labels = {
        {"bucket_id", key[0]}, {"bucket", key[1]}, {"role", key[2]}, {"group", key[3]}};
    auto it = next.find(key);
    if (it == next.end()) lag_up_.Remove(&lag_up_.Add(labels));
    if (old.up && (it == next.end() || !it->second.up)) {
      lag_messages_.Remove(&lag_messages_.Add(labels));
      lag_seconds_.Remove(&lag_seconds_.Add(labels));
    }
  }
  for (const auto& [key, lag] : next) {
    const prometheus::Labels labels = {
        {"bucket_id", key[0]}, {"bucket", key[1]}, {"role", key[2]}, {"group", key[3]}};
    lag_up_.Add(labels).Set(lag.up ? 1 : 0);
    if (lag.up) {
      lag_messages_.Add(labels).Set(static_cast<double>(lag.messages));
      lag_seconds_.Add(labels).Set(lag.seconds);
    }
  }
  lag_series_ = std::move(next);
}

void Metrics::SetLagRound(absl::Duration took, int64_t partitions) {
  lag_round_seconds_.Set(absl::ToDoubleSeconds(took));
  lag_round_partitions_.Set(static_cast<double>(partitions));
}

void Metrics::RecordLoadReport(const std::string& result) {
  load_reports_.Add({{"result", result}}).Increment();
}

void Metrics::RecordLoadFlushError() { load_flush_errors_.Increment(); }

void Metrics::RecordRulesExpired(int64_t count) {
  rules_expired_.Increment(static_cast<double>(count));
}

void Metrics::RecordAutoRebalance(const std::string& pool, const std::string& outcome,
                                  double share_moved) {
  auto_rebalance_rounds_.Add({{"pool", pool}, {"outcome", outcome}}).Increment();
  if (share_moved > 0) auto_rebalance_share_moved_.Add({{"pool", pool}}).Increment(share_moved);
}

void Metrics::SetLeader(int64_t epoch) {
  leader_.Set(epoch == 0 ? 0 : 1);
  leader_epoch_.Set(static_cast<double>(epoch));
}

void Metrics::RecordLeaderChange(bool acquired) {
  (acquired ? leader_acquired_ : leader_lost_).Increment();
}

void Metrics::SetVersionListenerConnected(bool connected) {
  listener_connected_.Set(connected ? 1 : 0);
}

void Metrics::RecordVersionNotification() { version_notifications_.Increment(); }

void Metrics::SetOutboxStats(int64_t backlog, absl::Duration oldest_age,
                             int64_t last_published_version) {
  outbox_backlog_.Set(static_cast<double>(backlog));
  outbox_oldest_age_.Set(absl::ToDoubleSeconds(oldest_age));
  SetOutboxLastPublished(last_published_version);
}

void Metrics::SetOutboxLastPublished(int64_t version) {
  absl::MutexLock lock(&mu_);
  // Stats read from the store may lag the relay's own marks.
  if (static_cast<double>(version) > outbox_last_published_.Value()) {
    outbox_last_published_.Set(static_cast<double>(version));
  }
}

void Metrics::RecordOutboxPublishError() { outbox_errors_.Increment(); }

void Metrics::SetEmbeddedKafka(const std::string& bootstrap) {
  embedded_kafka_.Add({{"bootstrap", bootstrap}}).Set(1);
}

void Metrics::SetHandoffs(int64_t switching, int64_t draining, absl::Duration oldest_age) {
  absl::MutexLock lock(&mu_);
  if (handoffs_switching_ == nullptr) {
    auto& open = prometheus::BuildGauge()
                     .Name("bucketmap_handoffs_open")
                     .Help("Open handoffs (coordinated moves), by phase.")
                     .Register(*registry_);
    handoffs_switching_ = &open.Add({{"phase", "SWITCHING"}});
    handoffs_draining_ = &open.Add({{"phase", "DRAINING"}});
    handoff_oldest_age_ = &prometheus::BuildGauge()
                               .Name("bucketmap_handoff_oldest_age_seconds")
                               .Help("Age of the oldest open handoff; 0 when none is open.")
                               .Register(*registry_)
                               .Add({});
  }
  handoffs_switching_->Set(static_cast<double>(switching));
  handoffs_draining_->Set(static_cast<double>(draining));
  handoff_oldest_age_->Set(absl::ToDoubleSeconds(oldest_age));
}

void Metrics::SetChangesTopicPartitions(int partitions) {
  changes_topic_partitions_.Set(partitions);
}

void Metrics::SetWatchPendingWrites(int64_t count) {
  watch_pending_writes_.Set(static_cast<double>(count));
}

void Metrics::SetWatchers(int role, int64_t count) {
  static const char* const kRoles[] = {"unspecified", "producer", "consumer", "observer"};
  watchers_.Add({{"role", role >= 0 && role <= 3 ? kRoles[role] : "unknown"}})
      .Set(static_cast<double>(count));
}

void Metrics::RecordWatchEvent(const std::string& event) {
  watch_events_.Add({{"event", event}}).Increment();
}

absl::Status Metrics::Serve(const std::string& listen) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(listen);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("--metrics_listen ", listen, ": ", e.what()));
  }
  exposer_->RegisterCollectable(registry_);
  return absl::OkStatus();
}

void Metrics::RecordRpc(const std::string& method, int code, double seconds) {
  rpcs_.Add({{"method", method}, {"code", CodeName(code)}}).Increment();
  static const prometheus::Histogram::BucketBoundaries kBounds = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
  rpc_seconds_.Add({{"method", method}}, kBounds).Observe(seconds);
}

void Metrics::OnSnapshot(const Snapshot& snapshot) {
  version_.Set(static_cast<double>(snapshot.version()));
  assignments_.Set(static_cast<double>(snapshot.assignment_count()));
  const std::map<int32_t, int64_t> pinned = snapshot.PinnedCounts();
  absl::MutexLock lock(&mu_);
  for (const Bucket& bucket : snapshot.buckets()) {
    auto it = pinned.find(bucket.id);
    pinned_teams_.Add({{"bucket_id", absl::StrCat(bucket.id)}, {"bucket", bucket.name}})
        .Set(it == pinned.end() ? 0 : static_cast<double>(it->second));
  }
  int64_t by_kind[kMaxRuleKind + 1] = {};
  for (const TeamRule& rule : snapshot.team_rules()) ++by_kind[static_cast<int>(rule.kind)];
  for (int kind = kMinRuleKind; kind <= kMaxRuleKind; ++kind) {
    team_rules_.Add({{"kind", RuleKindName(static_cast<RuleKind>(kind))}})
        .Set(static_cast<double>(by_kind[kind]));
  }
  for (const Pool& pool : snapshot.pool_objects()) {
    pool_paused_.Add({{"pool", pool.name}}).Set(pool.paused() ? 1 : 0);
  }
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
Metrics::InterceptorFactory() {
  return std::make_unique<MetricsInterceptorFactory>(this);
}

}  // namespace bucketmap
