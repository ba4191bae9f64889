#include "tools/bucketctl/pipeline_io.h"

#include <librdkafka/rdkafka.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "bucketmap/read_file.h"

namespace bucketmap::bucketctl {
namespace {

struct Url {
  std::string host;
  std::string port = "8123";
  std::string user;
  std::string password;
};

absl::StatusOr<Url> ParseUrl(absl::string_view text) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("--clickhouse_url: ", why, ", e.g. http://localhost:8123 (got '", text, "')"));
  };
  absl::string_view rest = text;
  if (!absl::ConsumePrefix(&rest, "http://")) return bad("expected an http:// URL");
  absl::ConsumeSuffix(&rest, "/");
  if (rest.find('/') != absl::string_view::npos) return bad("expected no path");
  Url url;
  if (size_t at = rest.rfind('@'); at != absl::string_view::npos) {
    absl::string_view user = rest.substr(0, at);
    rest = rest.substr(at + 1);
    size_t colon = user.find(':');
    url.user = std::string(user.substr(0, colon));
    if (colon != absl::string_view::npos) url.password = std::string(user.substr(colon + 1));
  }
  size_t colon = rest.rfind(':');
  if (colon != absl::string_view::npos && rest.find(']', colon) == absl::string_view::npos) {
    url.port = std::string(rest.substr(colon + 1));
    rest = rest.substr(0, colon);
  }
  absl::ConsumePrefix(&rest, "[");
  absl::ConsumeSuffix(&rest, "]");
  url.host = std::string(rest);
  int port = 0;
  if (url.host.empty() || !absl::SimpleAtoi(url.port, &port) || port < 1 || port > 65535) {
    return bad("expected host[:port]");
  }
  return url;
}

// At most 300 printable characters of what a server said.
std::string Excerpt(absl::string_view text) {
  std::string out;
  for (char c : absl::StripAsciiWhitespace(text).substr(0, 300)) {
    out += absl::ascii_isprint(static_cast<unsigned char>(c)) ? c : ' ';
  }
  return out;
}

}  // namespace

NetworkSources::NetworkSources(std::string kafka_brokers, std::string clickhouse_url,
                               absl::Duration timeout)
    : kafka_brokers_(std::move(kafka_brokers)),
      clickhouse_url_(std::move(clickhouse_url)),
      timeout_(timeout) {}

absl::StatusOr<std::map<std::string, int32_t>> NetworkSources::PartitionCounts() {
  if (partitions_) return *partitions_;
  if (kafka_brokers_.empty()) {
    return absl::FailedPreconditionError(
        "no Kafka cluster: give --kafka_brokers to read the topics' partition counts");
  }
  char error[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  if (rd_kafka_conf_set(conf, "bootstrap.servers", kafka_brokers_.c_str(), error, sizeof(error)) !=
      RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(conf);
    return absl::InvalidArgumentError(absl::StrCat("--kafka_brokers: ", error));
  }
  // Metadata only: a producer handle that produces nothing.
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof(error));
  if (rk == nullptr) {
    rd_kafka_conf_destroy(conf);  // rd_kafka_new() takes it only on success
    return absl::InvalidArgumentError(absl::StrCat("--kafka_brokers: ", error));
  }
  const rd_kafka_metadata_t* metadata = nullptr;
  const rd_kafka_resp_err_t err = rd_kafka_metadata(
      rk, /*all_topics=*/1, nullptr, &metadata,
      static_cast<int>(std::max<int64_t>(1, absl::ToInt64Milliseconds(timeout_))));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_destroy(rk);
    return absl::UnavailableError(absl::StrCat(
        "Kafka at ", kafka_brokers_, ": cannot read the topics: ", rd_kafka_err2str(err)));
  }
  std::map<std::string, int32_t> counts;
  for (int i = 0; i < metadata->topic_cnt; ++i) {
    const rd_kafka_metadata_topic_t& topic = metadata->topics[i];
    if (topic.err == RD_KAFKA_RESP_ERR_NO_ERROR) counts[topic.topic] = topic.partition_cnt;
  }
  rd_kafka_metadata_destroy(metadata);
  rd_kafka_destroy(rk);
  partitions_ = counts;
  return counts;
}

absl::StatusOr<std::string> NetworkSources::QueryClickHouse(const std::string& sql) {
  if (clickhouse_url_.empty()) {
    return absl::FailedPreconditionError("no ClickHouse: give --clickhouse_url");
  }
  absl::StatusOr<Url> url = ParseUrl(clickhouse_url_);
  if (!url.ok()) return url.status();
  const std::string where = absl::StrCat("ClickHouse at ", url->host, ":", url->port);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addresses = nullptr;
  if (int rc = getaddrinfo(url->host.c_str(), url->port.c_str(), &hints, &addresses); rc != 0) {
    return absl::UnavailableError(absl::StrCat(where, ": ", gai_strerror(rc)));
  }
  timeval tv{};
  tv.tv_sec = absl::ToInt64Seconds(timeout_);
  tv.tv_usec = absl::ToInt64Microseconds(timeout_ - absl::Seconds(tv.tv_sec));
  int fd = -1;
  for (addrinfo* a = addresses; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    // SO_SNDTIMEO bounds connect() too.
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(addresses);
  if (fd < 0) return absl::UnavailableError(absl::StrCat(where, ": cannot connect"));

  std::string request =
      absl::StrCat("POST / HTTP/1.0\r\nHost: ", url->host,
                   "\r\nContent-Type: text/plain\r\nContent-Length: ", sql.size(), "\r\n");
  if (!url->user.empty()) absl::StrAppend(&request, "X-ClickHouse-User: ", url->user, "\r\n");
  if (!url->password.empty()) {
    absl::StrAppend(&request, "X-ClickHouse-Key: ", url->password, "\r\n");
  }
  absl::StrAppend(&request, "\r\n", sql);
  for (size_t sent = 0; sent < request.size();) {
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      close(fd);
      return absl::UnavailableError(absl::StrCat(where, ": the request was cut off"));
    }
    sent += static_cast<size_t>(n);
  }
  std::string response;
  char buf[16384];
  ssize_t n = 0;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) response.append(buf, static_cast<size_t>(n));
  close(fd);
  if (n < 0) return absl::UnavailableError(absl::StrCat(where, ": no complete answer in time"));

  const size_t header_end = response.find("\r\n\r\n");
  if (!absl::StartsWith(response, "HTTP/") || header_end == std::string::npos) {
    return absl::UnavailableError(absl::StrCat(where, ": not an HTTP answer"));
  }
  const std::string body = response.substr(header_end + 4);
  const size_t space = response.find(' ');
  if (response.compare(space + 1, 3, "200") != 0) {
    return absl::InternalError(absl::StrCat(where, " refused the query: ", Excerpt(body)));
  }
  return body;
}

absl::StatusOr<std::string> NetworkSources::ReadFile(const std::string& path,
                                                     absl::string_view what) {
  return bucketmap::ReadFile(path, what);
}

}  // namespace bucketmap::bucketctl
