// BucketmapServer: wires the store, the mapping manager, the gRPC services
// (with reflection and grpc.health.v1), metrics, background upkeep, the
// version listener (LISTEN/NOTIFY from other replicas), the leader
// election, and the leader tasks that run on one replica at a time: the
// outbox relay that publishes change events to Kafka, the handoff
// coordinator and the expiry of team rules.
//
// main.cc runs one; tests run several in-process. Thread-safe: Shutdown()
// may be called from any thread, once.
#ifndef BUCKETMAP_SERVER_SERVER_H_
#define BUCKETMAP_SERVER_SERVER_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"
#include "server/base/worker_pool.h"
#include "server/handoff/handoff_coordinator.h"
#include "server/metrics/metrics.h"
#include "server/outbox/embedded_kafka.h"
#include "server/outbox/event_publisher.h"
#include "server/outbox/outbox_relay.h"
#include "server/rebalance/auto_rebalancer.h"
#include "server/rebalance/rebalancer.h"
#include "server/replica/leader.h"
#include "server/replica/pg_listener.h"
#include "server/rpc/admin_service.h"
#include "server/rpc/auth.h"
#include "server/rpc/mapping_service.h"
#include "server/rules/rule_expiry.h"
#include "server/signals/lag_exporter.h"
#include "server/signals/load_signals.h"
#include "server/state/mapping_manager.h"
#include "server/store/store.h"
#include "server/watch/watch_hub.h"

namespace bucketmap {

// Publishing change events (SPEC §4).
struct OutboxOptions {
  // "": publishing is off. "embedded": an in-process mock Kafka cluster
  // (development only: it dies with the server). Otherwise the bootstrap
  // servers of a real Kafka cluster.
  std::string kafka_brokers;
  // With a broker list: create the changes topic (1 partition) if missing.
  bool create_topics = true;
  std::string topic = "bucketmap_changes";
  ChangesFormat format = ChangesFormat::kProtobuf;
  absl::Duration poll_interval = absl::Seconds(1);
  int batch_size = 500;
  // How long the topic check at start may wait for the brokers; publishing
  // starts anyway if they do not answer (the relay retries forever).
  absl::Duration topic_check_timeout = absl::Seconds(10);
  // How long Shutdown waits for outstanding deliveries.
  absl::Duration shutdown_flush_timeout = absl::Seconds(5);
  // Tests: publish through this instead of a KafkaPublisher (kafka_brokers
  // is then ignored). The server Close()s it at Shutdown.
  std::shared_ptr<EventPublisher> publisher;
};

// Several replicas on one database (SPEC §7, "Scaling out").
struct ReplicaOptions {
  // libpq conninfo of the store's database, for two dedicated sessions:
  // LISTEN for versions committed by other replicas, and the leader lock.
  // Empty: no LISTEN (the catch-up poll only) and static leadership (this
  // server always runs the relay, unfenced): a single replica, or tests.
  std::string postgres_url;
  // This replica's name in bm_leader.holder and the logs.
  std::string name;
  // Leader lock attempts and checks (LeaderElectionOptions).
  absl::Duration leader_interval = absl::Seconds(1);
  absl::Duration leader_session_timeout = absl::Seconds(3);
};

// Who may call (server/auth.h, docs/security.md).
struct AuthOptions {
  // Empty: no authentication (development mode; a warning is logged).
  std::string tokens_file;
  // MappingService calls without a token are allowed.
  bool allow_anonymous_reads = false;
  // Tests: use this table instead of reading tokens_file.
  std::shared_ptr<TokenStore> tokens;
};

// TLS on the gRPC port. Without cert_file the port is plaintext.
struct TlsOptions {
  std::string cert_file;  // PEM certificate chain
  std::string key_file;   // PEM private key
  // With a CA, clients must present a certificate it signed (mTLS).
  std::string client_ca_file;
};

struct ServerOptions {
  // host:port; port 0 picks a free port (see BucketmapServer::port()).
  std::string grpc_listen = "0.0.0.0:50051";
  // host:port for /metrics; empty disables the exposer.
  std::string metrics_listen;
  int max_message_size = 64 << 20;
  // Threads that run PostgreSQL work. A write waiting for its group commit
  // holds one, so this bounds the writes one group can take.
  int worker_threads = 16;
  // Most concurrent writes committed in one transaction (group commit,
  // server/state/mapping_manager.h); 1 commits each write alone.
  int max_write_group = MappingManager::kDefaultMaxWriteGroup;
  AdminServiceOptions admin;
  WatchOptions watch;
  // Period of the catch-up poll against PostgreSQL.
  absl::Duration refresh_interval = absl::Seconds(1);
  absl::Duration prune_interval = absl::Hours(1);
  absl::Duration history_retention = absl::Hours(24 * 90);
  absl::Duration request_id_retention = absl::Hours(48);
  OutboxOptions outbox;
  AuthOptions auth;
  TlsOptions tls;
  ReplicaOptions replicas;
  // Coordinated moves (SPEC §5; server/handoff_coordinator.h). The
  // coordinator reads the bucket topics on the outbox's cluster
  // (outbox.kafka_brokers); client_lease is taken from watch.client_lease.
  HandoffOptions handoff;
  // Tests: read Kafka offsets through this instead.
  std::shared_ptr<OffsetReader> handoff_offsets;
  // Signals (SPEC §9): the leader's lag exporter, which reads the bucket
  // topics on the outbox's cluster, and the load reports' averages.
  LagOptions lag;
  LoadOptions load;
  // Tests: the lag exporter reads through this instead.
  std::shared_ptr<OffsetReader> lag_offsets;
  // Removing expired team rules (a leader task; server/rules/rule_expiry.h).
  RuleExpiryOptions rules;
  // Automatic rebalancing (a leader task; server/rebalance/auto_rebalancer.h).
  AutoRebalanceOptions auto_rebalance;
};

class BucketmapServer {
 public:
  // Loads the mapping from `store` and starts serving. Unavailable if the
  // store cannot be read or the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<BucketmapServer>> Start(std::unique_ptr<Store> store,
                                                                ServerOptions options);
  ~BucketmapServer();

  // The bound gRPC port.
  int port() const { return port_; }
  MappingManager& manager() { return *manager_; }
  WatchHub& watch_hub() { return *watch_hub_; }
  Metrics& metrics() { return *metrics_; }
  // Null when publishing is off, or this replica is not the leader.
  OutboxRelay* outbox_relay() {
    absl::MutexLock lock(&relay_mu_);
    return relay_.get();
  }
  // Who runs the leader-only workers; add them with AddLeaderTask (see
  // server/leader.h). Never null.
  LeaderElection& leader() { return *leader_; }
  // The Kafka bootstrap servers the relay publishes to ("" when off): the
  // embedded cluster's address with --kafka_brokers=embedded.
  const std::string& kafka_bootstrap() const { return kafka_bootstrap_; }
  // The handoff coordinator (SPEC §5). Never null.
  HandoffCoordinator& handoffs() { return *handoffs_; }
  // The lag exporter (runs while this replica leads), the load aggregator
  // and the reader GetLoad uses. Never null.
  LagExporter& lag_exporter() { return *lag_exporter_; }
  LoadAggregator& load_aggregator() { return *load_aggregator_; }
  SignalsReader& signals() { return *signals_; }
  // The leader task that removes expired team rules. Never null.
  RuleExpiry& rule_expiry() { return *rule_expiry_; }

  // Re-reads --auth_tokens_file (SIGHUP). On error the old tokens stay.
  // FailedPrecondition when the server runs without a tokens file.
  absl::Status ReloadAuthTokens();

  // Stops accepting calls, sends GOAWAY, and waits up to `grace` for
  // in-flight calls before cancelling them; then stops the outbox relay,
  // waiting up to outbox.shutdown_flush_timeout for deliveries. Idempotent.
  void Shutdown(absl::Duration grace);

 private:
  BucketmapServer() = default;
  void UpkeepLoop();
  absl::Status StartOutbox();
  absl::Status StartAuth();
  // Leader task: runs the relay at `epoch`, or stops it.
  void StartRelay(int64_t epoch);
  void StopRelay();
  // Creates the handoff coordinator and registers its leader task.
  absl::Status StartHandoffs();
  // Creates the load aggregator, the signals reader and the lag exporter
  // (a leader task).
  absl::Status StartSignals();

  ServerOptions options_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<MappingManager> manager_;
  std::unique_ptr<WorkerPool> workers_;
  // Before watch_hub_, whose streams add to it.
  std::unique_ptr<LoadAggregator> load_aggregator_;
  std::unique_ptr<SignalsReader> signals_;
  std::unique_ptr<WatchHub> watch_hub_;
  std::shared_ptr<TokenStore> tokens_;
  std::unique_ptr<Authorizer> authorizer_;
  std::unique_ptr<MappingServiceImpl> mapping_service_;
  std::unique_ptr<AdminServiceImpl> admin_service_;
  // Declared in this order so the relay goes first, then the publisher,
  // then the cluster it talks to.
  std::unique_ptr<EmbeddedKafka> embedded_kafka_;
  std::shared_ptr<EventPublisher> publisher_;
  absl::Mutex relay_mu_;
  std::unique_ptr<OutboxRelay> relay_ ABSL_GUARDED_BY(relay_mu_);
  // How long StopRelay waits for deliveries: 0 on a leadership loss.
  absl::Duration relay_flush_timeout_ ABSL_GUARDED_BY(relay_mu_) = absl::ZeroDuration();
  // Relays of earlier leaderships, stopped; kept until the publisher closes.
  std::vector<std::unique_ptr<OutboxRelay>> retired_relays_ ABSL_GUARDED_BY(relay_mu_);
  // Before leader_, which stops its leader task on destruction.
  std::unique_ptr<HandoffCoordinator> handoffs_;
  std::unique_ptr<LagExporter> lag_exporter_;
  std::unique_ptr<RuleExpiry> rule_expiry_;
  // The automatic rebalancer and what it plans and writes with.
  std::unique_ptr<Rebalancer> rebalancer_;
  std::unique_ptr<WritePath> rebalance_writes_;
  std::unique_ptr<AutoRebalancer> auto_rebalancer_;
  std::unique_ptr<LeaderElection> leader_;
  std::unique_ptr<PgListener> listener_;
  std::string kafka_bootstrap_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  absl::Notification stopping_;
  std::thread upkeep_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_SERVER_H_
