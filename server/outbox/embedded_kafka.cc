#include "server/outbox/embedded_kafka.h"

#include <librdkafka/rdkafka.h>
// rdkafka_mock.h needs rdkafka.h first.
#include <librdkafka/rdkafka_mock.h>

#include "absl/strings/str_cat.h"

namespace bucketmap {
namespace {

absl::Status FromKafka(rd_kafka_resp_err_t err, const std::string& what) {
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return absl::OkStatus();
  if (err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
    return absl::AlreadyExistsError(absl::StrCat(what, ": ", rd_kafka_err2str(err)));
  }
  return absl::InternalError(absl::StrCat(what, ": ", rd_kafka_err2str(err)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<EmbeddedKafka>> EmbeddedKafka::Start(int brokers) {
  if (brokers < 1) return absl::InvalidArgumentError("brokers: must be at least 1");
  char error[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  // The host handle never connects anywhere: silence its notice about
  // having no bootstrap.servers.
  rd_kafka_conf_set(conf, "log_level", "4", error, sizeof(error));
  rd_kafka_t* host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof(error));
  if (host == nullptr) {
    rd_kafka_conf_destroy(conf);
    return absl::InternalError(absl::StrCat("embedded Kafka: ", error));
  }
  rd_kafka_mock_cluster_t* cluster = rd_kafka_mock_cluster_new(host, brokers);
  if (cluster == nullptr) {
    rd_kafka_destroy(host);
    return absl::InternalError("embedded Kafka: rd_kafka_mock_cluster_new failed");
  }
  return std::unique_ptr<EmbeddedKafka>(new EmbeddedKafka(host, cluster));
}

EmbeddedKafka::~EmbeddedKafka() {
  rd_kafka_mock_cluster_destroy(cluster_);
  rd_kafka_destroy(host_);
}

std::string EmbeddedKafka::bootstraps() const { return rd_kafka_mock_cluster_bootstraps(cluster_); }

absl::Status EmbeddedKafka::CreateTopic(const std::string& topic, int partitions) {
  return FromKafka(rd_kafka_mock_topic_create(cluster_, topic.c_str(), partitions, 1),
                   absl::StrCat("create topic ", topic));
}

absl::Status EmbeddedKafka::SetBrokerDown(int32_t broker_id) {
  return FromKafka(rd_kafka_mock_broker_set_down(cluster_, broker_id),
                   absl::StrCat("set broker ", broker_id, " down"));
}

absl::Status EmbeddedKafka::SetBrokerUp(int32_t broker_id) {
  return FromKafka(rd_kafka_mock_broker_set_up(cluster_, broker_id),
                   absl::StrCat("set broker ", broker_id, " up"));
}

}  // namespace bucketmap
