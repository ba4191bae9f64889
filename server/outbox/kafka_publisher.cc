#include "server/outbox/kafka_publisher.h"

#include <librdkafka/rdkafka.h>

#include <atomic>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace bucketmap {
namespace {

// Rides along with each record as its opaque until the delivery report.
struct Pending {
  DeliveryCallback callback;
};

int ToMillis(absl::Duration d) {
  if (d <= absl::ZeroDuration()) return 0;
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(d), 1 << 30));
}

void DeliveryReport(rd_kafka_t*, const rd_kafka_message_t* message, void*) {
  auto* pending = static_cast<Pending*>(message->_private);
  if (pending == nullptr) return;
  absl::Status status = absl::OkStatus();
  if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    status =
        absl::UnavailableError(absl::StrCat("delivery failed: ", rd_kafka_err2str(message->err)));
  }
  // A callback must not let an exception unwind through librdkafka.
  try {
    pending->callback(status);
  } catch (...) {
    spdlog::error("outbox: a delivery callback threw; ignored");
  }
  delete pending;
}

void LogFromKafka(const rd_kafka_t*, int level, const char* facility, const char* message) {
  // syslog levels. Errors that matter also reach the error callback, which
  // logs them once; here they would repeat on every reconnect attempt.
  if (level <= 3) {
    spdlog::warn("librdkafka {}: {}", facility, message);
  } else if (level <= 5) {
    spdlog::info("librdkafka {}: {}", facility, message);
  } else {
    spdlog::debug("librdkafka {}: {}", facility, message);
  }
}

absl::Status SetConf(rd_kafka_conf_t* conf, const std::string& name, const std::string& value) {
  char error[512];
  if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), error, sizeof(error)) !=
      RD_KAFKA_CONF_OK) {
    return absl::InvalidArgumentError(absl::StrCat("Kafka property ", name, ": ", error));
  }
  return absl::OkStatus();
}

// Builds a configuration from `options`, with the settings ordering
// depends on applied last. Caller owns the result.
absl::StatusOr<rd_kafka_conf_t*> MakeConf(const KafkaPublisherOptions& options) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  std::map<std::string, std::string> settings = options.config;
  settings["bootstrap.servers"] = options.brokers;
  settings.emplace("client.id", "bucketmap-outbox");
  settings.emplace("linger.ms", "5");
  settings["enable.idempotence"] = "true";
  settings["enable.gapless.guarantee"] = "true";
  settings["acks"] = "all";
  // Never give up on a record: a later one could otherwise overtake it.
  settings["message.timeout.ms"] = "0";
  for (const auto& [name, value] : settings) {
    if (absl::Status s = SetConf(conf, name, value); !s.ok()) {
      rd_kafka_conf_destroy(conf);
      return s;
    }
  }
  rd_kafka_conf_set_dr_msg_cb(conf, DeliveryReport);
  rd_kafka_conf_set_log_cb(conf, LogFromKafka);
  return conf;
}

}  // namespace

// One producer instance (one idempotent session) and its poll thread.
class KafkaPublisher::Session {
 public:
  static absl::StatusOr<std::unique_ptr<Session>> Create(const KafkaPublisherOptions& options) {
    auto conf = MakeConf(options);
    if (!conf.ok()) return conf.status();
    std::unique_ptr<Session> session(new Session());
    rd_kafka_conf_set_opaque(*conf, session.get());
    rd_kafka_conf_set_error_cb(*conf, &Session::OnError);
    char error[512];
    session->rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, *conf, error, sizeof(error));
    if (session->rk_ == nullptr) {
      rd_kafka_conf_destroy(*conf);
      return absl::InvalidArgumentError(absl::StrCat("Kafka producer: ", error));
    }
    session->poller_ = std::thread([s = session.get()] { s->PollLoop(); });
    return session;
  }

  // Fails every undelivered record (their callbacks run before this
  // returns), then destroys the producer.
  ~Session() {
    stop_.store(true);
    if (poller_.joinable()) poller_.join();
    if (rk_ == nullptr) return;
    rd_kafka_purge(rk_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    // Purged records report on the next polls; in-flight requests may
    // take a moment to be abandoned.
    const absl::Time give_up = absl::Now() + absl::Seconds(5);
    while (rd_kafka_outq_len(rk_) > 0 && absl::Now() < give_up) rd_kafka_poll(rk_, 50);
    rd_kafka_poll(rk_, 0);
    rd_kafka_destroy(rk_);
  }

  absl::Status Produce(const std::string& topic, std::string key, std::string value,
                       std::vector<EventHeader> headers, DeliveryCallback on_delivery) {
    if (fatal_.load()) {
      return absl::FailedPreconditionError("Kafka producer hit a fatal error: reset it");
    }
    rd_kafka_headers_t* hdrs = rd_kafka_headers_new(headers.size());
    for (const EventHeader& h : headers) {
      rd_kafka_header_add(hdrs, h.name.data(), static_cast<ssize_t>(h.name.size()), h.value.data(),
                          static_cast<ssize_t>(h.value.size()));
    }
    auto* pending = new Pending{std::move(on_delivery)};
    const rd_kafka_resp_err_t err = rd_kafka_producev(
        rk_, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(0),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key.data(), key.size()),
        RD_KAFKA_V_VALUE(value.data(), value.size()), RD_KAFKA_V_HEADERS(hdrs),
        RD_KAFKA_V_OPAQUE(pending), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return absl::OkStatus();  // owns hdrs now
    rd_kafka_headers_destroy(hdrs);
    delete pending;
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      return absl::ResourceExhaustedError("Kafka producer queue is full");
    }
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
      fatal_.store(true);
      return absl::FailedPreconditionError("Kafka producer hit a fatal error: reset it");
    }
    return absl::InternalError(absl::StrCat("produce: ", rd_kafka_err2str(err)));
  }

  absl::Status RaiseFatalError() {
    const rd_kafka_resp_err_t err = rd_kafka_test_fatal_error(
        rk_, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER, "raised by a test");
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) return absl::InternalError(rd_kafka_err2str(err));
    return absl::OkStatus();
  }

  absl::Status Flush(absl::Duration timeout) {
    const rd_kafka_resp_err_t err = rd_kafka_flush(rk_, ToMillis(timeout));
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return absl::OkStatus();
    return absl::DeadlineExceededError(absl::StrCat(rd_kafka_outq_len(rk_),
                                                    " Kafka records still undelivered after ",
                                                    absl::FormatDuration(timeout)));
  }

 private:
  Session() = default;

  static void OnError(rd_kafka_t* rk, int err, const char* reason, void* opaque) {
    auto* self = static_cast<Session*>(opaque);
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
      char why[512];
      const rd_kafka_resp_err_t cause = rd_kafka_fatal_error(rk, why, sizeof(why));
      spdlog::error("outbox: Kafka producer fatal error {}: {}; undelivered events will be resent",
                    rd_kafka_err2name(cause), why);
      self->fatal_.store(true);
      return;
    }
    // Everything else (brokers down, timeouts) librdkafka retries itself.
    spdlog::warn("outbox: Kafka: {}: {}", rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(err)),
                 reason);
  }

  void PollLoop() {
    bool purged = false;
    while (!stop_.load()) {
      rd_kafka_poll(rk_, 100);
      // After a fatal error records may sit in the queue forever; fail
      // them so their owner learns and resets.
      if (fatal_.load() && !purged) {
        rd_kafka_purge(rk_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        purged = true;
      }
    }
  }

  rd_kafka_t* rk_ = nullptr;
  std::thread poller_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> fatal_{false};
};

KafkaPublisher::KafkaPublisher(KafkaPublisherOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<KafkaPublisher>> KafkaPublisher::Create(
    KafkaPublisherOptions options) {
  if (options.brokers.empty()) return absl::InvalidArgumentError("brokers: must not be empty");
  if (options.topic.empty()) return absl::InvalidArgumentError("topic: must not be empty");
  auto session = Session::Create(options);
  if (!session.ok()) return session.status();
  std::unique_ptr<KafkaPublisher> publisher(new KafkaPublisher(std::move(options)));
  absl::MutexLock lock(&publisher->mu_);
  publisher->session_ = *std::move(session);
  return publisher;
}

KafkaPublisher::~KafkaPublisher() { Close(absl::ZeroDuration()); }

absl::Status KafkaPublisher::Publish(int64_t version, std::string key, std::string value,
                                     std::vector<EventHeader> headers,
                                     DeliveryCallback on_delivery) {
  (void)version;  // carried in the headers; useful to fakes
  absl::ReaderMutexLock lock(&mu_);
  if (session_ == nullptr) {
    return absl::FailedPreconditionError(closed_ ? "publisher is closed"
                                                 : "publisher has no session: reset it");
  }
  return session_->Produce(options_.topic, std::move(key), std::move(value), std::move(headers),
                           std::move(on_delivery));
}

absl::Status KafkaPublisher::Flush(absl::Duration timeout) {
  absl::ReaderMutexLock lock(&mu_);
  if (session_ == nullptr) return absl::OkStatus();
  return session_->Flush(timeout);
}

absl::Status KafkaPublisher::Reset() {
  std::unique_ptr<Session> old;
  absl::MutexLock lock(&mu_);
  if (closed_) return absl::FailedPreconditionError("publisher is closed");
  // Destroyed under the lock so no Publish reaches a half-dead session;
  // its callbacks must not call back into this publisher (see the header).
  session_.reset();
  auto fresh = Session::Create(options_);
  if (!fresh.ok()) {
    return absl::UnavailableError(
        absl::StrCat("new Kafka producer session: ", fresh.status().message()));
  }
  session_ = *std::move(fresh);
  return absl::OkStatus();
}

void KafkaPublisher::Close(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  if (closed_) return;
  closed_ = true;
  if (session_ != nullptr) {
    (void)session_->Flush(timeout);
    session_.reset();
  }
}

absl::Status KafkaPublisher::TEST_RaiseFatalError() {
  absl::ReaderMutexLock lock(&mu_);
  if (session_ == nullptr) return absl::FailedPreconditionError("no session");
  return session_->RaiseFatalError();
}

absl::StatusOr<int> EnsureChangesTopic(const std::string& brokers, const std::string& topic,
                                       bool create, absl::Duration timeout) {
  char error[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  if (absl::Status s = SetConf(conf, "bootstrap.servers", brokers); !s.ok()) {
    rd_kafka_conf_destroy(conf);
    return s;
  }
  rd_kafka_conf_set_log_cb(conf, LogFromKafka);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof(error));
  if (rk == nullptr) {
    rd_kafka_conf_destroy(conf);
    return absl::InvalidArgumentError(absl::StrCat("Kafka admin client: ", error));
  }
  // Owns rk from here on.
  struct Handle {
    rd_kafka_t* rk;
    ~Handle() { rd_kafka_destroy(rk); }
  } handle{rk};

  const absl::Time deadline = absl::Now() + timeout;
  // All topics: asking for one by name could auto-create it with the
  // broker's default partition count.
  auto partitions = [&]() -> absl::StatusOr<int> {
    const rd_kafka_metadata_t* md = nullptr;
    const rd_kafka_resp_err_t err =
        rd_kafka_metadata(rk, 1, nullptr, &md, std::max(1, ToMillis(deadline - absl::Now())));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return absl::UnavailableError(
          absl::StrCat("Kafka metadata from ", brokers, ": ", rd_kafka_err2str(err)));
    }
    int count = -1;
    for (int i = 0; i < md->topic_cnt; ++i) {
      if (topic == md->topics[i].topic && md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        count = md->topics[i].partition_cnt;
      }
    }
    rd_kafka_metadata_destroy(md);
    if (count < 0) return absl::NotFoundError(absl::StrCat("topic ", topic, " does not exist"));
    return count;
  };

  absl::StatusOr<int> found = partitions();
  if (found.ok() || found.status().code() != absl::StatusCode::kNotFound || !create) return found;

  rd_kafka_NewTopic_t* new_topic =
      rd_kafka_NewTopic_new(topic.c_str(), 1, -1, error, sizeof(error));
  if (new_topic == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("topic ", topic, ": ", error));
  }
  rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
  rd_kafka_AdminOptions_t* admin = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  rd_kafka_AdminOptions_set_request_timeout(admin, std::max(1, ToMillis(deadline - absl::Now())),
                                            error, sizeof(error));
  rd_kafka_CreateTopics(rk, &new_topic, 1, admin, queue);
  rd_kafka_event_t* event =
      rd_kafka_queue_poll(queue, std::max(1, ToMillis(deadline - absl::Now())) + 1000);
  absl::Status created = absl::OkStatus();
  if (event == nullptr) {
    created = absl::UnavailableError(absl::StrCat("create topic ", topic, ": no answer"));
  } else if (rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    created = absl::UnavailableError(
        absl::StrCat("create topic ", topic, ": ", rd_kafka_event_error_string(event)));
  } else if (const rd_kafka_CreateTopics_result_t* result =
                 rd_kafka_event_CreateTopics_result(event);
             result != nullptr) {
    size_t n = 0;
    const rd_kafka_topic_result_t** topics = rd_kafka_CreateTopics_result_topics(result, &n);
    for (size_t i = 0; i < n; ++i) {
      const rd_kafka_resp_err_t err = rd_kafka_topic_result_error(topics[i]);
      // Another replica may have just created it.
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        const char* why = rd_kafka_topic_result_error_string(topics[i]);
        created = absl::InternalError(absl::StrCat("create topic ", topic, ": ",
                                                   why != nullptr ? why : rd_kafka_err2str(err)));
      }
    }
  }
  if (event != nullptr) rd_kafka_event_destroy(event);
  rd_kafka_AdminOptions_destroy(admin);
  rd_kafka_queue_destroy(queue);
  rd_kafka_NewTopic_destroy(new_topic);
  if (!created.ok()) return created;
  spdlog::info("outbox: created Kafka topic {} with 1 partition", topic);
  // The metadata may lag the creation for a moment; the count is what we
  // asked for.
  absl::StatusOr<int> after = partitions();
  return after.ok() ? after : absl::StatusOr<int>(1);
}

}  // namespace bucketmap
