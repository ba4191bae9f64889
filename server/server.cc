#include "server/server.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bucketmap/read_file.h"
#include "domain/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "server/base/log_limit.h"
#include "server/outbox/kafka_publisher.h"
#include "server/store/pg_store.h"
#include "spdlog/spdlog.h"

namespace bucketmap {
namespace {

// Plaintext without a certificate; TLS, and mTLS with a client CA.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFor(
    const TlsOptions& tls) {
  if (tls.cert_file.empty()) {
    if (!tls.key_file.empty() || !tls.client_ca_file.empty()) {
      return absl::InvalidArgumentError("--tls_cert: required with --tls_key or --tls_client_ca");
    }
    return grpc::InsecureServerCredentials();
  }
  if (tls.key_file.empty()) {
    return absl::InvalidArgumentError("--tls_key: required with --tls_cert");
  }
  grpc::SslServerCredentialsOptions ssl;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, ReadPem(tls.cert_file, "--tls_cert"));
  ASSIGN_OR_RETURN(pair.private_key, ReadPem(tls.key_file, "--tls_key"));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!tls.client_ca_file.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(tls.client_ca_file, "--tls_client_ca"));
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  spdlog::info("TLS on the gRPC port{}",
               tls.client_ca_file.empty() ? "" : "; client certificates required (mTLS)");
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

absl::StatusOr<std::unique_ptr<BucketmapServer>> BucketmapServer::Start(
    std::unique_ptr<Store> store, ServerOptions options) {
  // Before the first call can arrive: libprotobuf logs an ERROR for each
  // request body with invalid UTF-8, which a client could use to flood.
  InstallProtobufLogHandler();
  std::unique_ptr<BucketmapServer> server(new BucketmapServer());
  server->options_ = options;
  server->store_ = std::move(store);
  server->metrics_ = std::make_unique<Metrics>();
  if (!options.metrics_listen.empty()) {
    RETURN_IF_ERROR(server->metrics_->Serve(options.metrics_listen));
  }
  server->manager_ =
      std::make_unique<MappingManager>(server->store_.get(), options.max_write_group);
  Metrics* metrics = server->metrics_.get();
  server->manager_->set_group_observer(
      [metrics](size_t writes) { metrics->RecordWriteGroup(writes); });
  server->manager_->AddListener([metrics](const MappingManager::Published& p) {
    metrics->OnSnapshot(p.snapshot->snapshot());
  });
  // The relay runs only while this replica leads (StartRelay/StopRelay).
  server->manager_->AddListener([s = server.get()](const MappingManager::Published&) {
    absl::MutexLock lock(&s->relay_mu_);
    if (s->relay_ != nullptr) s->relay_->Notify();
  });
  RETURN_IF_ERROR(server->manager_->Init());
  if (!options.replicas.postgres_url.empty()) {
    // Versions committed by other replicas, as soon as they commit; the
    // catch-up poll (UpkeepLoop) remains the fallback.
    MappingManager* manager = server->manager_.get();
    server->listener_ = std::make_unique<PgListener>(
        PgListenerOptions{options.replicas.postgres_url, kVersionChannel},
        [manager](int64_t version, const std::string& cluster_id) {
          if (absl::Status s = manager->Advance(version, cluster_id); !s.ok()) {
            spdlog::warn("catch-up to version {} failed: {}", version, s.ToString());
          }
        },
        [manager] {
          if (absl::StatusOr<int64_t> v = manager->Refresh(); !v.ok()) {
            spdlog::warn("catch-up after (re)connecting the listener: {}", v.status().ToString());
          }
        },
        metrics);
    server->listener_->Start();
  }
  LeaderElectionOptions election;
  election.url = options.replicas.postgres_url;
  election.holder = options.replicas.name.empty() ? options.grpc_listen : options.replicas.name;
  election.interval = options.replicas.leader_interval;
  election.session_timeout = options.replicas.leader_session_timeout;
  server->leader_ = std::make_unique<LeaderElection>(election, metrics);
  RETURN_IF_ERROR(server->StartOutbox());
  RETURN_IF_ERROR(server->StartHandoffs());
  RETURN_IF_ERROR(server->StartSignals());
  server->rule_expiry_ =
      std::make_unique<RuleExpiry>(server->manager_.get(), metrics, options.rules);
  RuleExpiry* expiry = server->rule_expiry_.get();
  server->leader_->AddLeaderTask(
      "rule expiry", [expiry](int64_t epoch) { expiry->Start(epoch); },
      [expiry] { expiry->Stop(); });
  server->rebalancer_ =
      std::make_unique<Rebalancer>(server->manager_.get(), server->store_.get(),
                                   server->signals_.get(), server->handoffs_.get());
  server->rebalance_writes_ = std::make_unique<WritePath>(
      server->manager_.get(), server->store_.get(), server->handoffs_.get());
  server->auto_rebalancer_ = std::make_unique<AutoRebalancer>(
      server->rebalancer_.get(), server->rebalance_writes_.get(), server->store_.get(),
      server->manager_.get(), metrics, options.auto_rebalance);
  AutoRebalancer* rebalancer = server->auto_rebalancer_.get();
  server->leader_->AddLeaderTask(
      "auto-rebalance", [rebalancer](int64_t epoch) { rebalancer->Start(epoch); },
      [rebalancer] { rebalancer->Stop(); });
  server->leader_->Start();

  server->workers_ = std::make_unique<WorkerPool>(options.worker_threads);
  server->watch_hub_ =
      std::make_unique<WatchHub>(server->manager_.get(), server->store_.get(), metrics,
                                 options.watch, Clock::Real(), server->load_aggregator_.get());
  server->watch_hub_->Start();
  RETURN_IF_ERROR(server->StartAuth());
  server->mapping_service_ = std::make_unique<MappingServiceImpl>(
      server->manager_.get(), server->workers_.get(), server->watch_hub_.get(),
      server->authorizer_.get(), server->handoffs_.get(), server->signals_.get());
  server->admin_service_ = std::make_unique<AdminServiceImpl>(
      server->manager_.get(), server->store_.get(), server->workers_.get(), options.admin,
      server->authorizer_.get(), server->handoffs_.get(), server->signals_.get());
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   ServerCredentialsFor(options.tls));

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.grpc_listen, credentials, &server->port_);
  builder.SetMaxReceiveMessageSize(options.max_message_size);
  builder.SetMaxSendMessageSize(options.max_message_size);
  // Clients send keepalive pings (every 20 s in the C++ library) to notice
  // a dead server; accept them rather than answering with GOAWAY.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.RegisterService(server->mapping_service_.get());
  builder.RegisterService(server->admin_service_.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(metrics->InterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("--grpc_listen ", options.grpc_listen, ": cannot listen"));
  }
  server->server_->GetHealthCheckService()->SetServingStatus(true);
  server->upkeep_ = std::thread([s = server.get()] { s->UpkeepLoop(); });
  return server;
}

absl::Status BucketmapServer::StartAuth() {
  const AuthOptions& o = options_.auth;
  tokens_ = o.tokens;
  if (tokens_ == nullptr && !o.tokens_file.empty()) {
    ASSIGN_OR_RETURN(tokens_, TokenStore::Load(o.tokens_file));
  }
  if (tokens_ == nullptr) {
    spdlog::warn(
        "no --auth_tokens_file: AUTHENTICATION IS OFF (development mode): anyone who "
        "reaches the gRPC port may read and change the mapping");
  } else {
    spdlog::info("authentication on: {} tokens{}", tokens_->size(),
                 o.allow_anonymous_reads ? "; MappingService is open to anonymous readers" : "");
  }
  authorizer_ = std::make_unique<Authorizer>(tokens_, o.allow_anonymous_reads);
  return absl::OkStatus();
}

absl::Status BucketmapServer::ReloadAuthTokens() {
  if (tokens_ == nullptr) {
    return absl::FailedPreconditionError("the server runs without --auth_tokens_file");
  }
  RETURN_IF_ERROR(tokens_->Reload());
  spdlog::info("reloaded {}: {} tokens", tokens_->path(), tokens_->size());
  return absl::OkStatus();
}

BucketmapServer::~BucketmapServer() { Shutdown(absl::ZeroDuration()); }

void BucketmapServer::Shutdown(absl::Duration grace) {
  if (stopping_.HasBeenNotified()) return;
  stopping_.Notify();
  if (server_ != nullptr) server_->GetHealthCheckService()->SetServingStatus(false);
  // Watch streams end with UNAVAILABLE, so clients move to another replica.
  if (watch_hub_ != nullptr) watch_hub_->Stop();
  if (server_ != nullptr) {
    // Shutdown sends GOAWAY, refuses new calls and waits for in-flight ones
    // until the deadline, then cancels them.
    server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  }
  if (upkeep_.joinable()) upkeep_.join();
  if (listener_ != nullptr) listener_->Stop();
  // The streams are gone: flush the load they reported.
  if (load_aggregator_ != nullptr) load_aggregator_->Stop();
  // Drain queued work before the services it references go away.
  workers_.reset();
  // No write can commit any more: publish what is left, within bounds,
  // then end the lock session so another replica takes over at once.
  {
    absl::MutexLock lock(&relay_mu_);
    relay_flush_timeout_ = options_.outbox.shutdown_flush_timeout;
  }
  if (leader_ != nullptr) leader_->Stop();
  if (publisher_ != nullptr) publisher_->Close(absl::ZeroDuration());
}

void BucketmapServer::StartRelay(int64_t epoch) {
  OutboxRelayOptions relay;
  relay.format = options_.outbox.format;
  relay.cluster_id = manager_->Current()->snapshot().cluster_id();
  relay.batch_size = options_.outbox.batch_size;
  relay.poll_interval = options_.outbox.poll_interval;
  relay.leader_epoch = epoch;
  absl::MutexLock lock(&relay_mu_);
  if (relay_ != nullptr) return;
  relay_ = std::make_unique<OutboxRelay>(store_.get(), publisher_.get(), metrics_.get(), relay);
  relay_->Start();
}

void BucketmapServer::StopRelay() {
  std::unique_ptr<OutboxRelay> relay;
  absl::Duration flush_timeout;
  {
    absl::MutexLock lock(&relay_mu_);
    relay = std::move(relay_);
    flush_timeout = relay_flush_timeout_;
  }
  if (relay == nullptr) return;
  relay->Stop(flush_timeout);
  if (!stopping_.HasBeenNotified()) {
    // Leadership lost: drop what is still queued, so none of it reaches
    // the topic after the new leader's records. (A stopped relay is kept,
    // for its delivery callbacks may still run, until the publisher closes.)
    if (absl::Status s = publisher_->Reset(); !s.ok()) {
      spdlog::warn("outbox: publisher reset after losing leadership: {}", s.ToString());
    }
  }
  absl::MutexLock lock(&relay_mu_);
  retired_relays_.push_back(std::move(relay));
}

absl::Status BucketmapServer::StartHandoffs() {
  HandoffOptions o = options_.handoff;
  o.client_lease = options_.watch.client_lease;
  std::shared_ptr<OffsetReader> offsets = options_.handoff_offsets;
  if (offsets == nullptr && o.enabled) {
    if (kafka_bootstrap_.empty()) {
      spdlog::warn(
          "handoffs: no Kafka cluster (--kafka_brokers is empty): drains cannot be "
          "verified; handoffs whose source has consumer groups end FORCED \"no kafka\"");
    } else {
      ASSIGN_OR_RETURN(offsets, RdKafkaOffsetReader::Create(kafka_bootstrap_));
    }
  }
  if (!o.enabled) spdlog::info("handoffs are off (--handoffs=false): moves open no handoff");
  handoffs_ = std::make_unique<HandoffCoordinator>(manager_.get(), store_.get(), std::move(offsets),
                                                   o, metrics_.get());
  handoffs_->StartMonitor();
  HandoffCoordinator* coordinator = handoffs_.get();
  leader_->AddLeaderTask(
      "handoff coordinator", [coordinator](int64_t epoch) { coordinator->Start(epoch); },
      [coordinator] { coordinator->Stop(); });
  return absl::OkStatus();
}

absl::Status BucketmapServer::StartSignals() {
  load_aggregator_ = std::make_unique<LoadAggregator>(store_.get(), metrics_.get(), options_.load);
  load_aggregator_->Start();
  SignalsOptions signals;
  signals.lag_interval = options_.lag.interval;
  signals_ = std::make_unique<SignalsReader>(store_.get(), signals);
  std::shared_ptr<OffsetReader> offsets = options_.lag_offsets;
  if (offsets == nullptr && !kafka_bootstrap_.empty() &&
      options_.lag.interval > absl::ZeroDuration()) {
    // A reader of its own: a slow lag round must not hold up the handoff
    // coordinator's reads, which share a reader's lock.
    ASSIGN_OR_RETURN(offsets, RdKafkaOffsetReader::Create(kafka_bootstrap_));
  }
  lag_exporter_ = std::make_unique<LagExporter>(manager_.get(), store_.get(), std::move(offsets),
                                                metrics_.get(), options_.lag);
  if (options_.lag.interval <= absl::ZeroDuration()) {
    spdlog::info("the lag exporter is off (--lag_interval=0)");
    return absl::OkStatus();
  }
  LagExporter* exporter = lag_exporter_.get();
  leader_->AddLeaderTask(
      "lag exporter", [exporter](int64_t) { exporter->Start(); }, [exporter] { exporter->Stop(); });
  return absl::OkStatus();
}

absl::Status BucketmapServer::StartOutbox() {
  const OutboxOptions& o = options_.outbox;
  if (o.publisher != nullptr) {
    publisher_ = o.publisher;
  } else if (o.kafka_brokers.empty()) {
    spdlog::warn(
        "--kafka_brokers is empty: change events are not published to Kafka "
        "(they wait in the outbox until a server runs with brokers, and the change "
        "log is not pruned meanwhile)");
    return absl::OkStatus();
  } else {
    if (o.kafka_brokers == "embedded") {
      ASSIGN_OR_RETURN(embedded_kafka_, EmbeddedKafka::Start(1));
      kafka_bootstrap_ = embedded_kafka_->bootstraps();
      RETURN_IF_ERROR(embedded_kafka_->CreateTopic(o.topic, 1));
      metrics_->SetEmbeddedKafka(kafka_bootstrap_);
      metrics_->SetChangesTopicPartitions(1);
      spdlog::info(
          "embedded Kafka (in-process mock cluster, development only) at {}; changes "
          "topic {}",
          kafka_bootstrap_, o.topic);
    } else {
      kafka_bootstrap_ = o.kafka_brokers;
      absl::StatusOr<int> partitions =
          EnsureChangesTopic(kafka_bootstrap_, o.topic, o.create_topics, o.topic_check_timeout);
      if (partitions.ok()) {
        metrics_->SetChangesTopicPartitions(*partitions);
        if (*partitions != 1) {
          spdlog::error(
              "CHANGES TOPIC MISCONFIGURED: topic {} has {} partitions; it must have exactly 1 "
              "for change events to keep their total order. Events all go to partition 0, but "
              "fix the topic (see bucketmap_changes_topic_partitions)",
              o.topic, *partitions);
        }
      } else {
        spdlog::warn("changes topic {} on {}: {}; publishing starts anyway and retries", o.topic,
                     kafka_bootstrap_, partitions.status().ToString());
      }
    }
    KafkaPublisherOptions kafka;
    kafka.brokers = kafka_bootstrap_;
    kafka.topic = o.topic;
    ASSIGN_OR_RETURN(std::unique_ptr<KafkaPublisher> publisher,
                     KafkaPublisher::Create(std::move(kafka)));
    publisher_ = std::move(publisher);
  }
  // One relay at a time across the replicas: the leader's.
  leader_->AddLeaderTask(
      "outbox relay", [this](int64_t epoch) { StartRelay(epoch); }, [this] { StopRelay(); });
  return absl::OkStatus();
}

void BucketmapServer::UpkeepLoop() {
  absl::Time next_prune = absl::Now();
  while (!stopping_.WaitForNotificationWithTimeout(options_.refresh_interval)) {
    // The catch-up poll: picks up versions committed elsewhere, and a
    // snapshot that could not be advanced after a commit.
    if (absl::StatusOr<int64_t> v = manager_->Refresh(); !v.ok()) {
      spdlog::debug("catch-up poll: {}", v.status().ToString());
    }
    if (absl::Now() >= next_prune) {
      absl::StatusOr<int64_t> pruned =
          store_->Prune(absl::Now(), options_.history_retention, options_.request_id_retention);
      if (pruned.ok()) {
        if (*pruned > 0) spdlog::info("pruned {} expired history and request-id rows", *pruned);
        next_prune = absl::Now() + options_.prune_interval;
      } else {
        spdlog::warn("prune failed: {}", pruned.status().ToString());
        next_prune = absl::Now() + absl::Minutes(1);
      }
    }
  }
}

}  // namespace bucketmap
