#include "server/server.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "domain/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "spdlog/spdlog.h"

namespace bucketmap {

absl::StatusOr<std::unique_ptr<BucketmapServer>> BucketmapServer::Start(
    std::unique_ptr<Store> store, ServerOptions options) {
  std::unique_ptr<BucketmapServer> server(new BucketmapServer());
  server->options_ = options;
  server->store_ = std::move(store);
  server->metrics_ = std::make_unique<Metrics>();
  if (!options.metrics_listen.empty()) {
    RETURN_IF_ERROR(server->metrics_->Serve(options.metrics_listen));
  }
  server->manager_ = std::make_unique<MappingManager>(server->store_.get());
  Metrics* metrics = server->metrics_.get();
  server->manager_->AddListener(
      [metrics](const std::shared_ptr<const ServedSnapshot>& s, const Change*) {
        metrics->OnSnapshot(s->snapshot());
      });
  RETURN_IF_ERROR(server->manager_->Init());

  server->workers_ = std::make_unique<WorkerPool>(options.worker_threads);
  server->watch_hub_ =
      std::make_unique<WatchHub>(server->manager_.get(), server->store_.get(),
                                 server->workers_.get(), metrics, options.watch);
  server->watch_hub_->Start();
  server->mapping_service_ = std::make_unique<MappingServiceImpl>(
      server->manager_.get(), server->workers_.get(), server->watch_hub_.get());
  server->admin_service_ = std::make_unique<AdminServiceImpl>(
      server->manager_.get(), server->store_.get(), server->workers_.get(), options.admin);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.grpc_listen, grpc::InsecureServerCredentials(), &server->port_);
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
  // Drain queued work before the services it references go away.
  workers_.reset();
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
