// example-producer: routes synthetic events with the bucketmap client
// library and produces them to Kafka with librdkafka (SPEC §5, §6).
//
// It is written as a model for a producer that embeds the library:
//   1. a Client holds the mapping, and a WatchConnection keeps it current;
//   2. nothing is produced before the first mapping has arrived;
//   3. for each event: route it through the DeliveryTracker (which counts
//      the event in flight under its route version) with RouteEvent(),
//      which applies the team's rules (docs/rules.md); skip the event when
//      the team is unroutable (never guess) or a DROP rule says so; produce
//      it to the topic RouteEvent() chose (our role's topic of the team's
//      bucket, or its overflow topic under FORCE_OVERFLOW or over a
//      RATE_LIMIT) keyed by team, with the tracker's ticket as the message
//      opaque, and stamp the route's version in the `bucketmap-version`
//      header;
//   4. count each routed event per team in a LoadCounter, which the watch
//      connection reports to the server once per window (SPEC §9: the
//      server's per-team and per-bucket rates, GetLoad, rebalancing);
//   5. in the delivery-report callback, give every message's ticket back
//      to the tracker: the watch connection then ACKs drained_version, and
//      handoffs pass their switch barrier (SPEC §5) without waiting for
//      their grace period;
//   6. at the end, flush and count delivery failures from the delivery
//      reports.
//
// Usage:
//   example-producer --servers=localhost:50051 --kafka_brokers=localhost:9092
//       --teams=50 --events=1000 --rate=200
// Without --kafka_brokers it routes and counts but produces nothing (dry
// mode). Events are {"team_id":T,"seq":S}, for teams 1..--teams in turn,
// with S counting each team's events from 0.
//
// Exit status: 0 on success; 1 when a delivery failed; 2 when no mapping
// arrived within --wait_for_mapping, or on a setup error.
#include <librdkafka/rdkafka.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bucketmap/client.h"
#include "bucketmap/delivery_tracker.h"
#include "bucketmap/kafka_hold.h"
#include "bucketmap/load_counter.h"
#include "bucketmap/watch.h"

ABSL_FLAG(std::string, servers, "localhost:50051",
          "Comma-separated bucketmap server addresses (host:port), tried in turn.");
ABSL_FLAG(std::string, client_id, "",
          "This producer's id in ListClients; default example-producer-<pid>.");
ABSL_FLAG(std::string, cache_path, "",
          "Last-known-good mapping file: lets the producer start while no server answers.");
ABSL_FLAG(std::string, kafka_brokers, "",
          "Kafka bootstrap servers; empty: dry mode (route and count, produce nothing).");
ABSL_FLAG(int64_t, teams, 50, "Events go to team ids 1..teams, round-robin.");
ABSL_FLAG(int64_t, events, 1000, "Number of events to generate.");
ABSL_FLAG(double, rate, 0, "Events per second; 0: as fast as possible.");
ABSL_FLAG(std::string, role_topic, "ingestion", "The role whose topic events are produced to.");
ABSL_FLAG(int32_t, wait_for_mapping, 10, "Seconds to wait for the first mapping.");
ABSL_FLAG(absl::Duration, load_window, bucketmap::kDefaultLoadWindow,
          "Report per-team event counts to the server once per window (keep it equal to the "
          "server's --load_window); 0: report nothing.");
ABSL_FLAG(int64_t, start_at_unix_ms, 0,
          "Wait until this wall-clock time (Unix milliseconds) before the first event, so that "
          "several producers of a load test start together; 0: at once.");
ABSL_FLAG(int32_t, delivery_timeout, 30,
          "Seconds librdkafka may spend delivering one event (message.timeout.ms).");
ABSL_FLAG(absl::Duration, overflow_sticky_window, bucketmap::ClientOptions().overflow_sticky_window,
          "How long a (team, key) that went over its RATE_LIMIT stays on the overflow topic.");
ABSL_FLAG(double, rate_limit_share, bucketmap::ClientOptions().rate_limit_share,
          "This producer's share of each RATE_LIMIT rule (1/N for N producers of even traffic).");

namespace {

constexpr int kExitDeliveryFailed = 1;
constexpr int kExitSetup = 2;

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

// What the delivery reports said. librdkafka runs the delivery-report
// callback inside rd_kafka_poll() and rd_kafka_flush(), which only main()
// calls, so this needs no lock.
struct Deliveries {
  bucketmap::DeliveryTracker* tracker = nullptr;
  std::map<std::string, int64_t> delivered;  // by topic
  int64_t failed = 0;
};

void OnDelivery(rd_kafka_t* /*rk*/, const rd_kafka_message_t* message, void* opaque) {
  auto* deliveries = static_cast<Deliveries*>(opaque);
  // This is the event's final report, delivered or not: the tracker may now
  // advance drained_version past its route version (SPEC §5).
  bucketmap::TrackDelivery(deliveries->tracker, message);
  if (message->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    ++deliveries->delivered[rd_kafka_topic_name(message->rkt)];
    return;
  }
  if (++deliveries->failed <= 5) {
    absl::FPrintF(stderr, "delivery to %s failed: %s\n", rd_kafka_topic_name(message->rkt),
                  rd_kafka_err2str(message->err));
  }
}

using KafkaProducer = std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)>;

absl::StatusOr<KafkaProducer> NewProducer(const std::string& brokers, int delivery_timeout_s,
                                          Deliveries* deliveries) {
  const std::pair<const char*, std::string> settings[] = {
      {"bootstrap.servers", brokers},
      // An idempotent producer writes a retried batch once and in order, so
      // a lost acknowledgement neither duplicates an event nor lets a retry
      // overtake a later event of the same team.
      {"enable.idempotence", "true"},
      {"message.timeout.ms", absl::StrCat(delivery_timeout_s * 1000)},
  };
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char error[512];
  for (const auto& [name, value] : settings) {
    if (rd_kafka_conf_set(conf, name, value.c_str(), error, sizeof(error)) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return absl::InvalidArgumentError(absl::StrCat(name, ": ", error));
    }
  }
  rd_kafka_conf_set_dr_msg_cb(conf, OnDelivery);
  rd_kafka_conf_set_opaque(conf, deliveries);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof(error));
  if (rk == nullptr) {
    rd_kafka_conf_destroy(conf);  // rd_kafka_new() takes it only on success
    return absl::InvalidArgumentError(error);
  }
  return KafkaProducer(rk, rd_kafka_destroy);
}

// Enqueues one event. librdkafka copies everything, so the strings may go
// away on return. A full local queue is not an error: serve delivery
// reports until there is room.
rd_kafka_resp_err_t Produce(rd_kafka_t* rk, const std::string& topic, const std::string& key,
                            const std::string& value, const std::string& version,
                            const std::string& bucket, bucketmap::DeliveryTracker::Ticket ticket) {
  for (;;) {
    const rd_kafka_resp_err_t err = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(key.data(), key.size()),
        // The macro wants a void*; with RD_KAFKA_MSG_F_COPY the value is only read.
        RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
        RD_KAFKA_V_HEADER(bucketmap::kVersionHeader, version.data(), version.size()),
        RD_KAFKA_V_HEADER("bucketmap-bucket", bucket.data(), bucket.size()),
        // Comes back in the delivery report as message->_private.
        RD_KAFKA_V_OPAQUE(ticket.ToOpaque()), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || g_stop) return err;
    rd_kafka_poll(rk, 100);
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int64_t teams = absl::GetFlag(FLAGS_teams);
  const int64_t events = absl::GetFlag(FLAGS_events);
  const double rate = absl::GetFlag(FLAGS_rate);
  const std::string role = absl::GetFlag(FLAGS_role_topic);
  const std::string brokers = absl::GetFlag(FLAGS_kafka_brokers);
  if (teams < 1 || events < 0 || rate < 0) {
    absl::FPrintF(stderr, "--teams must be >= 1, --events and --rate >= 0\n");
    return kExitSetup;
  }

  bucketmap::ClientOptions options;
  options.addresses = absl::StrSplit(absl::GetFlag(FLAGS_servers), ',', absl::SkipEmpty());
  options.client_id = absl::GetFlag(FLAGS_client_id);
  if (options.client_id.empty()) options.client_id = absl::StrCat("example-producer-", getpid());
  options.role = bucketmap::v1::PRODUCER;
  options.cache_path = absl::GetFlag(FLAGS_cache_path);
  options.event_role = role;
  options.overflow_sticky_window = absl::GetFlag(FLAGS_overflow_sticky_window);
  options.rate_limit_share = absl::GetFlag(FLAGS_rate_limit_share);
  bucketmap::Client client(std::move(options));
  // Counts events in flight per route version; the watch connection ACKs
  // the drained_version it derives.
  bucketmap::DeliveryTracker tracker(&client);
  bucketmap::WatchConnectionOptions watch_options;
  watch_options.delivery_tracker = &tracker;
  // Per-team event counts, reported once per window on the watch stream.
  bucketmap::LoadCounter::Options load_options;
  load_options.window = absl::GetFlag(FLAGS_load_window);
  bucketmap::LoadCounter load(load_options);
  if (load_options.window > absl::ZeroDuration()) watch_options.load_counter = &load;
  // Declared after the client and the tracker, so it is destroyed
  // (stopped) first.
  bucketmap::WatchConnection watch(&client, watch_options);
  watch.Start();

  // Before the first mapping every route is kNoMapping. With a cache file,
  // Start() has already loaded it and this returns at once.
  if (!client.WaitForVersion(1, absl::Seconds(absl::GetFlag(FLAGS_wait_for_mapping)))) {
    absl::FPrintF(stderr, "no mapping from %s within %ds\n", absl::GetFlag(FLAGS_servers),
                  absl::GetFlag(FLAGS_wait_for_mapping));
    return kExitSetup;
  }

  Deliveries deliveries;
  deliveries.tracker = &tracker;
  KafkaProducer producer(nullptr, rd_kafka_destroy);
  if (!brokers.empty()) {
    auto made = NewProducer(brokers, absl::GetFlag(FLAGS_delivery_timeout), &deliveries);
    if (!made.ok()) {
      absl::FPrintF(stderr, "kafka producer: %s\n", made.status().ToString());
      return kExitSetup;
    }
    producer = *std::move(made);
  }
  rd_kafka_t* const rk = producer.get();  // nullptr in dry mode

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);

  const absl::Time start_at = absl::FromUnixMillis(absl::GetFlag(FLAGS_start_at_unix_ms));
  while (!g_stop && absl::Now() < start_at) {
    absl::SleepFor(std::min(start_at - absl::Now(), absl::Milliseconds(100)));
  }

  std::vector<int64_t> next_seq(teams + 1, 0);
  std::map<std::string, int64_t> produced;  // by topic
  int64_t unroutable = 0;
  int64_t without_topic = 0;
  int64_t dropped = 0;
  int64_t overflowed = 0;
  int64_t min_version = std::numeric_limits<int64_t>::max();
  int64_t max_version = 0;
  const absl::Time start = absl::Now();
  int64_t i = 0;
  for (; i < events && !g_stop; ++i) {
    if (rate > 0) {
      const absl::Time due = start + absl::Seconds(i / rate);
      for (absl::Time now = absl::Now(); now < due && !g_stop; now = absl::Now()) {
        if (rk != nullptr) {
          rd_kafka_poll(rk, static_cast<int>(absl::ToInt64Milliseconds(due - now)) + 1);
        } else {
          absl::SleepFor(due - now);
        }
      }
    }
    const int64_t team = i % teams + 1;
    const int64_t seq = next_seq[team]++;

    // Route from one view and take the topic from the same view, so that
    // the bucket, the topic and the stamped version all belong to one
    // version even while updates are published. The view (and so the
    // topic string) stays valid while `view` is held. The tracker counts
    // the event in flight before the view is read (see delivery_tracker.h
    // for why the order matters); every path below gives the ticket back
    // exactly once: here when nothing is produced, else in OnDelivery().
    const bucketmap::DeliveryTracker::Viewed viewed = tracker.Current();
    const std::shared_ptr<const bucketmap::MappingView>& view = viewed.view;
    // Keyed by team: the partitioner sends one key to one partition, and a
    // partition keeps order, so a team's events stay in order. SPEC §5's
    // ordering guarantee across a handoff assumes exactly this. The same
    // key makes overflow sticky: once over its limit, a key stays on the
    // overflow topic for --overflow_sticky_window, never alternating.
    const std::string key = absl::StrCat(team);
    const bucketmap::EventRoute routed = view->RouteEvent(team, key, absl::Now());
    const bucketmap::RouteResult& route = routed.route();
    if (!route.routable() || rk == nullptr) tracker.Done(viewed.ticket);
    if (!route.routable()) {
      // The team's pool has no ACTIVE or PAUSED bucket. Any other bucket
      // would be a guess its consumers do not expect; a real producer would
      // park or dead-letter the event.
      ++unroutable;
      continue;
    }
    if (routed.dropped()) {
      if (rk != nullptr) tracker.Done(viewed.ticket);
      ++dropped;
      continue;
    }
    const std::string* topic = routed.topic();
    if (topic == nullptr) {
      if (rk != nullptr) tracker.Done(viewed.ticket);
      ++without_topic;
      continue;
    }
    if (routed.overflowed()) ++overflowed;
    // Lock-free and allocation-free: one relaxed add (load_counter.h).
    load.CountEvent(team);
    min_version = std::min(min_version, route.version());
    max_version = std::max(max_version, route.version());
    ++produced[*topic];
    if (rk == nullptr) continue;

    const std::string value = absl::StrFormat(R"({"team_id":%d,"seq":%d})", team, seq);
    // The route version: during a handoff, the consumers of the target
    // bucket compare it with the handoff's version to tell events routed
    // before the move (which the source bucket must drain first) from
    // events routed after it (SPEC §5).
    const std::string version = absl::StrCat(route.version());
    const std::string bucket = absl::StrCat(route.bucket_id());
    const rd_kafka_resp_err_t err = Produce(rk, *topic, key, value, version, bucket, viewed.ticket);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      // Never enqueued, so no delivery report will come for it.
      tracker.Done(viewed.ticket);
      --produced[*topic];
      if (++deliveries.failed <= 5) {
        absl::FPrintF(stderr, "produce to %s failed: %s\n", *topic, rd_kafka_err2str(err));
      }
      if (err == RD_KAFKA_RESP_ERR__FATAL) break;  // the idempotent producer cannot go on
    }
    rd_kafka_poll(rk, 0);  // serve delivery reports as they come
  }

  if (rk != nullptr) {
    // Every enqueued event gets a report within message.timeout.ms; give
    // flush a little more than that.
    const int flush_ms = (absl::GetFlag(FLAGS_delivery_timeout) + 5) * 1000;
    if (rd_kafka_flush(rk, flush_ms) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      const int unreported = rd_kafka_outq_len(rk);
      deliveries.failed += unreported;
      absl::FPrintF(stderr, "flush timed out; %d events unreported\n", unreported);
    }
  }
  watch.Stop();

  absl::PrintF("mode: %s\n", rk != nullptr ? "kafka" : "dry (nothing produced)");
  absl::PrintF("events generated: %d%s\n", i, g_stop ? " (interrupted)" : "");
  absl::PrintF("unroutable: %d\n", unroutable);
  absl::PrintF("without a topic for role %s: %d\n", role, without_topic);
  absl::PrintF("dropped by a rule: %d\n", dropped);
  absl::PrintF("to an overflow topic: %d\n", overflowed);
  if (max_version > 0) {
    absl::PrintF("route versions: %d..%d\n", min_version, max_version);
  } else {
    absl::PrintF("route versions: none\n");
  }
  for (const auto& [topic, count] : produced) {
    if (rk != nullptr) {
      absl::PrintF("topic %s: produced %d, delivered %d\n", topic, count,
                   deliveries.delivered[topic]);
    } else {
      absl::PrintF("topic %s: routed %d\n", topic, count);
    }
  }
  absl::PrintF("delivery failures: %d\n", deliveries.failed);
  return deliveries.failed > 0 ? kExitDeliveryFailed : 0;
}
