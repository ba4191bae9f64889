// bucketmap-server: serves the team -> bucket mapping over gRPC.
//
// Flags are listed in docs/operations.md. SIGTERM or SIGINT stops
// accepting calls, sends GOAWAY, drains in-flight calls and exits 0.
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/rpc/rate_limit.h"
#include "server/server.h"
#include "server/store/pg_store.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace bucketmap {
namespace {

// Every flag with an option behind it takes its default from a
// default-constructed option struct: each default is defined once, where
// the option is.
const ServerOptions& Defaults() {
  static const ServerOptions* const defaults = new ServerOptions();
  return *defaults;
}
const PgStoreOptions& StoreDefaults() {
  static const PgStoreOptions* const defaults = new PgStoreOptions();
  return *defaults;
}

}  // namespace
}  // namespace bucketmap

using bucketmap::Defaults;
using bucketmap::StoreDefaults;

ABSL_FLAG(std::string, grpc_listen, Defaults().grpc_listen, "gRPC listen address (host:port).");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9464",
          "Prometheus listen address; metrics are at /metrics. Empty disables it.");
ABSL_FLAG(std::string, postgres_url, "",
          "PostgreSQL connection URL, e.g. postgresql://user@host:5432/bucketmap. Required.");
ABSL_FLAG(std::string, migrations_dir, BUCKETMAP_MIGRATIONS_DIR,
          "Directory of the NNNN_name.sql migrations applied at start.");
ABSL_FLAG(int32_t, max_message_size, Defaults().max_message_size,
          "Largest gRPC message sent or received, in bytes (snapshots of 1M teams need ~10 MB).");
ABSL_FLAG(std::string, kafka_brokers, "",
          "Kafka for change events: a broker list (host:port,...), `embedded` for an in-process "
          "mock cluster (development only; its address is logged), or empty to not publish.");
ABSL_FLAG(bool, kafka_create_topics, Defaults().outbox.create_topics,
          "With a broker list, create the changes topic with 1 partition if it is missing.");
ABSL_FLAG(std::string, changes_topic, Defaults().outbox.topic, "Topic of change events.");
ABSL_FLAG(std::string, changes_format, "protobuf",
          "Encoding of change events: protobuf (bucketmap.v1.ChangeEvent) or json (its proto3 "
          "JSON form).");
ABSL_FLAG(absl::Duration, outbox_poll_interval, Defaults().outbox.poll_interval,
          "Period of the outbox relay's poll for unpublished versions (it is also woken by "
          "every write on this replica).");
ABSL_FLAG(int32_t, max_bulk_assign, Defaults().admin.max_bulk_assign,
          "Most entries in one BulkAssign call.");
ABSL_FLAG(absl::Duration, write_timeout, Defaults().admin.write_timeout,
          "Longest time a write may spend in PostgreSQL before it fails with UNAVAILABLE.");
ABSL_FLAG(absl::Duration, idle_in_transaction_timeout, StoreDefaults().idle_in_transaction_timeout,
          "PostgreSQL ends a transaction of this server that runs no statement for this long, so "
          "a replica frozen mid-write releases the version row (every replica's writes wait on "
          "it). Keep it well above a healthy write's pauses between statements (up to ~0.3 s "
          "measured for a 100k-team BulkAssign over 1M assignments). 0: PostgreSQL's setting.");
ABSL_FLAG(absl::Duration, history_retention, Defaults().history_retention,
          "How long change-log (audit) rows are kept.");
ABSL_FLAG(absl::Duration, request_id_retention, Defaults().request_id_retention,
          "How long request_ids are remembered for replay (at least 24h).");
ABSL_FLAG(absl::Duration, refresh_interval, Defaults().refresh_interval,
          "Period of the catch-up poll against PostgreSQL.");
ABSL_FLAG(absl::Duration, startup_timeout, absl::Seconds(60),
          "How long to retry reaching PostgreSQL at start before giving up.");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(10),
          "How long SIGTERM waits for in-flight calls.");
ABSL_FLAG(int32_t, worker_threads, Defaults().worker_threads, "Threads that run PostgreSQL work.");
ABSL_FLAG(int32_t, max_write_group, Defaults().max_write_group,
          "Most concurrent writes committed in one PostgreSQL transaction (group commit); each "
          "keeps its own version and outcome. 1: every write commits alone.");
ABSL_FLAG(absl::Duration, watch_heartbeat, Defaults().watch.heartbeat,
          "Period of heartbeats on watch streams (sent even while a push is un-ACKed).");
ABSL_FLAG(absl::Duration, watch_ack_timeout, Defaults().watch.ack_timeout,
          "A watch push not ACKed within this closes the stream; the client reconnects (for "
          "ACK_REQUESTED streams, a push marked ack_requested).");
ABSL_FLAG(absl::Duration, watch_ack_interval, Defaults().watch.ack_interval,
          "ACK_REQUESTED watch streams: a push asks for an ACK when the stream's ACKs have been "
          "behind the pushes it was sent for this long. Longer than --watch_heartbeat, so that "
          "clients ACKing lazily at heartbeats are never asked; ListClients' applied versions "
          "lag by up to a heartbeat for them, by up to this for the others.");
ABSL_FLAG(int32_t, watch_max_deltas_per_push, Defaults().watch.max_deltas_per_push,
          "A watcher further behind than this many versions is sent the snapshot instead.");
ABSL_FLAG(int32_t, watch_resume_versions, Defaults().watch.resume_max_versions,
          "Resumes are served as deltas from at most this many recent versions (capped by "
          "--watch_max_deltas_per_push)...");
ABSL_FLAG(absl::Duration, watch_resume_age, Defaults().watch.resume_max_age,
          "...no older than this; older resumes get the snapshot.");
ABSL_FLAG(int32_t, watch_fanout_threads, Defaults().watch.fanout_threads,
          "Threads that push a new version to the watch streams, each taking a share of "
          "them. 0: twice the hardware's concurrency; 1: one thread; at most 64.");
ABSL_FLAG(int32_t, watch_fanout_min_streams, Defaults().watch.min_streams_per_fanout_thread,
          "A new version is pushed by fewer threads when they would each have fewer streams "
          "than this (at least 1).");
ABSL_FLAG(absl::Duration, client_lease, Defaults().watch.client_lease,
          "How long a watch client stays in ListClients after its last renewal.");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "Bearer tokens, one `<name> <role> <sha256-hex-of-token>` per line (role: reader or "
          "admin); SIGHUP reloads it. Empty: no authentication (development only). See "
          "docs/security.md.");
ABSL_FLAG(bool, allow_anonymous_reads, false,
          "With --auth_tokens_file, let MappingService calls without a token through.");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain for TLS on the gRPC port.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: clients must present a certificate it signed (mTLS).");
ABSL_FLAG(int32_t, max_watch_streams, 50000,
          "Most watch streams on this replica; more are refused with RESOURCE_EXHAUSTED. 0: no "
          "limit.");
ABSL_FLAG(int32_t, max_watch_streams_per_client, 8,
          "Most watch streams of one client_id on this replica. 0: no limit.");
ABSL_FLAG(std::string, write_rate_limit, "0",
          "Writes per caller (auth token name, else the declared actor): N/s, N/m or N/h; 0 is "
          "no limit. Over it, writes fail with RESOURCE_EXHAUSTED.");
ABSL_FLAG(double, write_rate_burst, 0,
          "Writes a caller may make at once under --write_rate_limit (0: one second's worth, at "
          "least 1).");
ABSL_FLAG(std::string, replica_name, "",
          "This replica's name in ListClients (default: hostname:port).");

// Coordinated moves (SPEC §5, docs/handoff.md).
ABSL_FLAG(bool, handoffs, Defaults().handoff.enabled,
          "Open a handoff on every route change and coordinate it (switch barrier, drain).");
ABSL_FLAG(absl::Duration, handoff_grace, Defaults().handoff.grace,
          "A handoff's switch barrier passes after this even if producers are missing (they are "
          "named, and the handoff ends FORCED).");
ABSL_FLAG(absl::Duration, max_hold, Defaults().handoff.max_hold,
          "A handoff still open after this ends FORCED, releasing the targets' holds.");
ABSL_FLAG(absl::Duration, move_cooldown, Defaults().handoff.move_cooldown,
          "Minimum time between explicit moves of one team, and between placement changes of "
          "one pool; `force` overrides it. 0 disables it.");
ABSL_FLAG(int64_t, max_move_lag, Defaults().handoff.max_move_lag,
          "Refuse moving teams out of a bucket whose consumer lag (messages) exceeds this; "
          "`force` overrides it. 0 disables the check.");
ABSL_FLAG(absl::Duration, handoff_poll_interval, Defaults().handoff.poll_interval,
          "How often the handoff coordinator checks producers and consumer offsets.");

// Signals (SPEC §9, docs/autoscaling.md).
ABSL_FLAG(absl::Duration, lag_interval, Defaults().lag.interval,
          "How often the leader reads each bucket role's consumer lag from Kafka; 0 turns the "
          "lag exporter off.");
ABSL_FLAG(absl::Duration, lag_read_timeout, Defaults().lag.read_timeout,
          "The longest the lag exporter waits for one Kafka call.");
ABSL_FLAG(int64_t, lag_max_partitions, Defaults().lag.max_partitions,
          "Partitions the lag exporter reads per round at most; groups beyond it are read in "
          "later rounds, in turn.");
ABSL_FLAG(absl::Duration, load_window, Defaults().load.config.window,
          "The load window: clients' load reports are summed per window, then averaged. Every "
          "replica must run the same.");
ABSL_FLAG(absl::Duration, load_half_life, Defaults().load.config.half_life,
          "Half-life of the per-team and per-bucket load averages (EWMA). Every replica must run "
          "the same.");
ABSL_FLAG(absl::Duration, auto_rebalance_interval, Defaults().auto_rebalance.interval,
          "Automatic rebalancing (docs/rebalancing.md): every this often the leader plans each "
          "pool with the default budget and applies the plan when the pool's imbalance exceeds "
          "the target. 0: off.");
ABSL_FLAG(double, auto_rebalance_daily_load_share, Defaults().auto_rebalance.daily_load_share,
          "The most of a pool's load that automatic rebalancing moves per UTC day, 0..1.");

// Test only (tests/hostile/frozen_replica_test.cc).
ABSL_FLAG(std::string, TEST_pause_before_commit, "",
          "Test only: a write with this request_id pauses inside its transaction, holding the "
          "version row, just before COMMIT, until its deadline has passed. Empty: off.");

namespace bucketmap {
namespace {

int Run() {
  const std::string url = absl::GetFlag(FLAGS_postgres_url);
  if (url.empty()) {
    spdlog::error("--postgres_url is required");
    return 2;
  }
  if (absl::GetFlag(FLAGS_request_id_retention) < absl::Hours(24)) {
    spdlog::error("--request_id_retention must be at least 24h");
    return 2;
  }
  if (absl::GetFlag(FLAGS_idle_in_transaction_timeout) < absl::ZeroDuration() ||
      absl::GetFlag(FLAGS_idle_in_transaction_timeout) > absl::Hours(24 * 24)) {
    spdlog::error("--idle_in_transaction_timeout must be between 0 (off) and 24 days");
    return 2;
  }
  if (absl::GetFlag(FLAGS_max_bulk_assign) < 1) {
    spdlog::error("--max_bulk_assign must be at least 1");
    return 2;
  }
  absl::StatusOr<bucketmap::ChangesFormat> changes_format =
      ParseChangesFormat(absl::GetFlag(FLAGS_changes_format));
  if (!changes_format.ok()) {
    spdlog::error("--{}", std::string(changes_format.status().message()));
    return 2;
  }
  if (absl::GetFlag(FLAGS_changes_topic).empty()) {
    spdlog::error("--changes_topic must not be empty");
    return 2;
  }
  if (absl::GetFlag(FLAGS_outbox_poll_interval) <= absl::ZeroDuration()) {
    spdlog::error("--outbox_poll_interval must be positive");
    return 2;
  }

  absl::StatusOr<RateLimit> write_rate_limit =
      ParseRateLimit(absl::GetFlag(FLAGS_write_rate_limit), absl::GetFlag(FLAGS_write_rate_burst));
  if (!write_rate_limit.ok()) {
    spdlog::error("{}", std::string(write_rate_limit.status().message()));
    return 2;
  }
  if (absl::GetFlag(FLAGS_max_watch_streams) < 0 ||
      absl::GetFlag(FLAGS_max_watch_streams_per_client) < 0) {
    spdlog::error("--max_watch_streams and --max_watch_streams_per_client must not be negative");
    return 2;
  }
  if (absl::GetFlag(FLAGS_handoff_grace) < absl::ZeroDuration() ||
      absl::GetFlag(FLAGS_move_cooldown) < absl::ZeroDuration() ||
      absl::GetFlag(FLAGS_max_move_lag) < 0) {
    spdlog::error("--handoff_grace, --move_cooldown and --max_move_lag must not be negative");
    return 2;
  }
  if (absl::GetFlag(FLAGS_max_hold) <= absl::GetFlag(FLAGS_handoff_grace)) {
    // A hold that ends before the barrier may pass would force every
    // handoff that waits for a producer.
    spdlog::error("--max_hold must be longer than --handoff_grace");
    return 2;
  }
  if (absl::GetFlag(FLAGS_handoff_poll_interval) <= absl::ZeroDuration()) {
    spdlog::error("--handoff_poll_interval must be positive");
    return 2;
  }
  if (absl::GetFlag(FLAGS_lag_interval) < absl::ZeroDuration() ||
      absl::GetFlag(FLAGS_lag_read_timeout) <= absl::ZeroDuration() ||
      absl::GetFlag(FLAGS_lag_max_partitions) < 1) {
    spdlog::error(
        "--lag_interval must not be negative, --lag_read_timeout must be positive, and "
        "--lag_max_partitions at least 1");
    return 2;
  }
  if (absl::GetFlag(FLAGS_load_window) < absl::Seconds(1) ||
      absl::GetFlag(FLAGS_load_window) > absl::Minutes(10) ||
      absl::GetFlag(FLAGS_load_window) % absl::Milliseconds(1) != absl::ZeroDuration() ||
      absl::GetFlag(FLAGS_load_half_life) < absl::GetFlag(FLAGS_load_window)) {
    spdlog::error(
        "--load_window must be 1s..10m in whole milliseconds, and --load_half_life at least "
        "one window");
    return 2;
  }

  if (absl::GetFlag(FLAGS_auto_rebalance_interval) < absl::ZeroDuration() ||
      !(absl::GetFlag(FLAGS_auto_rebalance_daily_load_share) >= 0) ||
      absl::GetFlag(FLAGS_auto_rebalance_daily_load_share) > 1) {
    spdlog::error(
        "--auto_rebalance_interval must not be negative, and --auto_rebalance_daily_load_share "
        "must be in [0, 1]");
    return 2;
  }

  // Block the stop and reload signals in every thread; one thread waits
  // for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  PgStoreOptions store_options;
  store_options.url = url;
  store_options.migrations_dir = absl::GetFlag(FLAGS_migrations_dir);
  store_options.idle_in_transaction_timeout = absl::GetFlag(FLAGS_idle_in_transaction_timeout);
  if (const std::string pause = absl::GetFlag(FLAGS_TEST_pause_before_commit); !pause.empty()) {
    spdlog::warn(
        "--TEST_pause_before_commit is set (tests only): writes with request_id {} "
        "pause before COMMIT until their deadline",
        pause);
    store_options.TEST_before_commit = [pause](const WriteContext& ctx, absl::Time deadline) {
      if (ctx.request_id != pause) return;
      spdlog::warn("TEST: write {} pauses before COMMIT, holding the version row, until {}", pause,
                   absl::FormatTime(deadline));
      absl::SleepFor(deadline - absl::Now() + absl::Milliseconds(1));
    };
  }
  const absl::Time give_up = absl::Now() + absl::GetFlag(FLAGS_startup_timeout);
  std::unique_ptr<PgStore> store;
  for (;;) {
    absl::StatusOr<std::unique_ptr<PgStore>> opened = PgStore::Open(store_options);
    if (opened.ok()) {
      store = *std::move(opened);
      break;
    }
    if (opened.status().code() != absl::StatusCode::kUnavailable || absl::Now() > give_up) {
      spdlog::error("cannot open the store: {}", opened.status().ToString());
      return 1;
    }
    spdlog::warn("PostgreSQL not reachable yet ({}); retrying",
                 std::string(opened.status().message()));
    absl::SleepFor(absl::Seconds(1));
  }

  ServerOptions options;
  options.grpc_listen = absl::GetFlag(FLAGS_grpc_listen);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.max_message_size = absl::GetFlag(FLAGS_max_message_size);
  options.worker_threads = absl::GetFlag(FLAGS_worker_threads);
  options.max_write_group = std::max(1, absl::GetFlag(FLAGS_max_write_group));
  options.admin.max_bulk_assign = absl::GetFlag(FLAGS_max_bulk_assign);
  options.admin.write_timeout = absl::GetFlag(FLAGS_write_timeout);
  options.refresh_interval = absl::GetFlag(FLAGS_refresh_interval);
  options.history_retention = absl::GetFlag(FLAGS_history_retention);
  options.request_id_retention = absl::GetFlag(FLAGS_request_id_retention);
  options.watch.heartbeat = absl::GetFlag(FLAGS_watch_heartbeat);
  options.watch.ack_timeout = absl::GetFlag(FLAGS_watch_ack_timeout);
  options.watch.ack_interval = absl::GetFlag(FLAGS_watch_ack_interval);
  options.watch.max_deltas_per_push = std::max(1, absl::GetFlag(FLAGS_watch_max_deltas_per_push));
  options.watch.resume_max_versions = std::max(0, absl::GetFlag(FLAGS_watch_resume_versions));
  options.watch.resume_max_age = absl::GetFlag(FLAGS_watch_resume_age);
  options.watch.fanout_threads = std::max(0, absl::GetFlag(FLAGS_watch_fanout_threads));
  options.watch.min_streams_per_fanout_thread =
      static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_watch_fanout_min_streams)));
  options.watch.client_lease = absl::GetFlag(FLAGS_client_lease);
  options.handoff.enabled = absl::GetFlag(FLAGS_handoffs);
  options.handoff.grace = absl::GetFlag(FLAGS_handoff_grace);
  options.handoff.max_hold = absl::GetFlag(FLAGS_max_hold);
  options.handoff.move_cooldown = absl::GetFlag(FLAGS_move_cooldown);
  options.handoff.max_move_lag = absl::GetFlag(FLAGS_max_move_lag);
  options.handoff.poll_interval = absl::GetFlag(FLAGS_handoff_poll_interval);
  options.lag.interval = absl::GetFlag(FLAGS_lag_interval);
  options.lag.read_timeout = absl::GetFlag(FLAGS_lag_read_timeout);
  options.lag.max_partitions = absl::GetFlag(FLAGS_lag_max_partitions);
  options.load.config.window = absl::GetFlag(FLAGS_load_window);
  options.load.config.half_life = absl::GetFlag(FLAGS_load_half_life);
  options.auto_rebalance.interval = absl::GetFlag(FLAGS_auto_rebalance_interval);
  options.auto_rebalance.daily_load_share = absl::GetFlag(FLAGS_auto_rebalance_daily_load_share);
  options.watch.replica = absl::GetFlag(FLAGS_replica_name);
  options.outbox.kafka_brokers = absl::GetFlag(FLAGS_kafka_brokers);
  options.outbox.create_topics = absl::GetFlag(FLAGS_kafka_create_topics);
  options.outbox.topic = absl::GetFlag(FLAGS_changes_topic);
  options.outbox.format = *changes_format;
  options.outbox.poll_interval = absl::GetFlag(FLAGS_outbox_poll_interval);
  options.watch.max_streams = absl::GetFlag(FLAGS_max_watch_streams);
  options.watch.max_streams_per_client = absl::GetFlag(FLAGS_max_watch_streams_per_client);
  options.admin.write_rate_limit = *write_rate_limit;
  options.auth.tokens_file = absl::GetFlag(FLAGS_auth_tokens_file);
  options.auth.allow_anonymous_reads = absl::GetFlag(FLAGS_allow_anonymous_reads);
  options.tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls.key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  if (options.watch.replica.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    options.watch.replica = absl::StrCat(host, "/", options.grpc_listen);
  }
  // LISTEN/NOTIFY from the other replicas, and the leader lock (SPEC §7).
  options.replicas.postgres_url = url;
  options.replicas.name = options.watch.replica;
  absl::StatusOr<std::unique_ptr<BucketmapServer>> server =
      BucketmapServer::Start(std::move(store), options);
  if (!server.ok()) {
    spdlog::error("cannot start: {}", server.status().ToString());
    return 1;
  }
  spdlog::info("bucketmap-server serving gRPC on port {} at version {}; metrics on {}",
               (*server)->port(), (*server)->manager().Current()->version(),
               options.metrics_listen.empty() ? "(disabled)" : options.metrics_listen + "/metrics");
  if (!(*server)->kafka_bootstrap().empty()) {
    spdlog::info(
        "change events: topic {} on {} ({}); watch them with: kcat -C -b {} -t {} -f "
        "'%h %k %s\\n'",
        options.outbox.topic, (*server)->kafka_bootstrap(), absl::GetFlag(FLAGS_changes_format),
        (*server)->kafka_bootstrap(), options.outbox.topic);
  }

  int signal = 0;
  for (;;) {
    sigwait(&signals, &signal);
    if (signal != SIGHUP) break;
    // A bad file keeps the tokens in force; the error names the line,
    // never a token.
    if (absl::Status reloaded = (*server)->ReloadAuthTokens(); !reloaded.ok()) {
      spdlog::error("SIGHUP: tokens not reloaded, the previous ones stay in force: {}",
                    reloaded.ToString());
    }
  }
  spdlog::info("received signal {}: draining", signal);
  const absl::Time drain_start = absl::Now();
  (*server)->Shutdown(absl::GetFlag(FLAGS_shutdown_grace));
  server->reset();
  spdlog::info("stopped after {}", absl::FormatDuration(absl::Now() - drain_start));
  return 0;
}

}  // namespace
}  // namespace bucketmap

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Serves the team -> bucket mapping. See docs/operations.md.");
  absl::ParseCommandLine(argc, argv);
  // Debian builds abseil without NDEBUG, which turns on the Mutex
  // deadlock detector: a global graph updated on every lock. Tests keep it;
  // the server, with a mutex per watch stream, cannot afford it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Logs go to stderr, as operators and supervisors expect of a server.
  spdlog::set_default_logger(spdlog::stderr_color_mt("bucketmap"));
  return bucketmap::Run();
}
