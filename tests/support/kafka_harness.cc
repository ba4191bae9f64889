#include "tests/support/kafka_harness.h"

#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"

#ifndef BUCKETMAP_KAFKA_MOCK_HELPER
#define BUCKETMAP_KAFKA_MOCK_HELPER "kafka_mock_helper"
#endif

namespace bucketmap {
namespace {

// Reads one line from `fd` (without the '\n') before `deadline`.
absl::StatusOr<std::string> ReadLine(int fd, absl::Time deadline) {
  std::string line;
  for (;;) {
    const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms <= 0) return absl::DeadlineExceededError("no answer from kafka_mock_helper");
    pollfd pfd{fd, POLLIN, 0};
    const int n = poll(&pfd, 1, static_cast<int>(left_ms));
    if (n < 0 && errno != EINTR) return absl::InternalError(strerror(errno));
    if (n <= 0) continue;
    char c;
    const ssize_t got = read(fd, &c, 1);
    if (got == 0) return absl::InternalError("kafka_mock_helper exited");
    if (got < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(strerror(errno));
    }
    if (c == '\n') return line;
    line.push_back(c);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<KafkaMockProcess>> KafkaMockProcess::Start(
    const std::vector<std::pair<std::string, int>>& topics, std::string helper) {
  if (helper.empty()) helper = BUCKETMAP_KAFKA_MOCK_HELPER;
  std::vector<std::string> args = {helper};
  for (const auto& [name, partitions] : topics) {
    args.push_back("--topic");
    args.push_back(absl::StrCat(name, ":", partitions));
  }
  // Close-on-exec, so that the servers a test starts later do not hold the
  // helper's stdin open: its EOF is how the helper notices our death.
  int in_pipe[2];
  int out_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0) return absl::InternalError(strerror(errno));
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    close(in_pipe[0]);
    close(in_pipe[1]);
    return absl::InternalError(strerror(errno));
  }
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(strerror(errno));
  if (pid == 0) {
    dup2(in_pipe[0], STDIN_FILENO);
    dup2(out_pipe[1], STDOUT_FILENO);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  std::unique_ptr<KafkaMockProcess> process(new KafkaMockProcess());
  process->pid_ = pid;
  process->to_child_ = in_pipe[1];
  process->from_child_ = out_pipe[0];
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  for (;;) {
    absl::StatusOr<std::string> line = ReadLine(process->from_child_, deadline);
    if (!line.ok()) {
      return absl::InternalError(absl::StrCat("starting ", helper, ": ", line.status().message()));
    }
    constexpr absl::string_view kPrefix = "BOOTSTRAP ";
    if (absl::string_view(*line).substr(0, kPrefix.size()) == kPrefix) {
      process->bootstrap_ = line->substr(kPrefix.size());
      return process;
    }
  }
}

KafkaMockProcess::~KafkaMockProcess() {
  if (to_child_ >= 0) close(to_child_);
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    const absl::Time end = absl::Now() + absl::Seconds(5);
    bool exited = false;
    while (absl::Now() < end) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        exited = true;
        break;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    if (!exited) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  if (from_child_ >= 0) close(from_child_);
}

absl::Status KafkaMockProcess::SetBrokerDown(bool down) {
  const std::string command = down ? "down\n" : "up\n";
  if (write(to_child_, command.data(), command.size()) != static_cast<ssize_t>(command.size())) {
    return absl::InternalError(absl::StrCat("writing to kafka_mock_helper: ", strerror(errno)));
  }
  absl::StatusOr<std::string> answer = ReadLine(from_child_, absl::Now() + absl::Seconds(5));
  if (!answer.ok()) return absl::InternalError(answer.status().message());
  if (*answer != "OK") return absl::InternalError(absl::StrCat("kafka_mock_helper: ", *answer));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<KafkaRecord>> ReadAllChangeEvents(const std::string& bootstrap,
                                                             const std::string& topic,
                                                             absl::Duration timeout,
                                                             int64_t until_version) {
  const absl::Time deadline = absl::Now() + timeout;
  char error[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  const std::vector<std::pair<const char*, std::string>> settings = {
      {"bootstrap.servers", bootstrap},
      // Partitions are assigned by hand; the group is never joined and
      // nothing is committed, but some librdkafka paths want a group.id.
      {"group.id", "bucketmap-test-reader"},
      {"enable.auto.commit", "false"},
      {"enable.partition.eof", "true"},
      {"auto.offset.reset", "earliest"},
      // Short fetch waits so that `received` measures delivery, not the
      // consumer's long poll.
      {"fetch.wait.max.ms", "5"},
      {"allow.auto.create.topics", "false"},
      {"log_level", "4"},
  };
  for (const auto& [key, value] : settings) {
    if (rd_kafka_conf_set(conf, key, value.c_str(), error, sizeof(error)) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return absl::InternalError(absl::StrCat("consumer config ", key, ": ", error));
    }
  }
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, error, sizeof(error));
  if (rk == nullptr) {
    rd_kafka_conf_destroy(conf);
    return absl::InternalError(absl::StrCat("rd_kafka_new: ", error));
  }
  struct Cleanup {
    rd_kafka_t* rk;
    ~Cleanup() {
      rd_kafka_consumer_close(rk);
      rd_kafka_destroy(rk);
    }
  } cleanup{rk};

  // The partition count, from metadata; retried while the cluster is
  // unreachable or the leader is not yet known.
  int partitions = 0;
  absl::Status last = absl::UnavailableError("no metadata");
  rd_kafka_topic_t* handle = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
  while (partitions == 0 && absl::Now() < deadline) {
    const rd_kafka_metadata_t* md = nullptr;
    const int wait_ms = static_cast<int>(std::max<int64_t>(
        1, std::min<int64_t>(2000, absl::ToInt64Milliseconds(deadline - absl::Now()))));
    const rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, handle, &md, wait_ms);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      last = absl::UnavailableError(absl::StrCat("metadata: ", rd_kafka_err2str(err)));
    } else if (md->topic_cnt != 1 || md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
      rd_kafka_metadata_destroy(md);
      rd_kafka_topic_destroy(handle);
      return absl::NotFoundError(absl::StrCat("topic ", topic, " does not exist on ", bootstrap));
    } else if (md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR ||
               md->topics[0].partition_cnt == 0) {
      last = absl::UnavailableError(
          absl::StrCat("metadata of ", topic, ": ", rd_kafka_err2str(md->topics[0].err)));
    } else {
      partitions = md->topics[0].partition_cnt;
    }
    if (md != nullptr) rd_kafka_metadata_destroy(md);
    if (partitions == 0) absl::SleepFor(absl::Milliseconds(100));
  }
  rd_kafka_topic_destroy(handle);
  if (partitions == 0) return last;

  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(partitions);
  for (int p = 0; p < partitions; ++p) {
    rd_kafka_topic_partition_list_add(list, topic.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
  }
  const rd_kafka_resp_err_t assign_err = rd_kafka_assign(rk, list);
  rd_kafka_topic_partition_list_destroy(list);
  if (assign_err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return absl::InternalError(absl::StrCat("assign: ", rd_kafka_err2str(assign_err)));
  }

  std::vector<KafkaRecord> records;
  std::map<int32_t, bool> at_end;
  for (int p = 0; p < partitions; ++p) at_end[p] = false;
  int64_t max_version = -1;
  while (absl::Now() < deadline) {
    rd_kafka_message_t* msg = rd_kafka_consumer_poll(rk, 50);
    if (msg == nullptr) continue;
    if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      at_end[msg->partition] = true;
    } else if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      KafkaRecord record;
      record.received = absl::Now();
      record.partition = msg->partition;
      record.offset = msg->offset;
      if (msg->key != nullptr) record.key.assign(static_cast<const char*>(msg->key), msg->key_len);
      if (msg->payload != nullptr) {
        record.value.assign(static_cast<const char*>(msg->payload), msg->len);
      }
      rd_kafka_headers_t* headers = nullptr;
      const void* data = nullptr;
      size_t size = 0;
      int64_t version = -1;
      if (rd_kafka_message_headers(msg, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR &&
          rd_kafka_header_get_last(headers, "bucketmap-version", &data, &size) ==
              RD_KAFKA_RESP_ERR_NO_ERROR &&
          data != nullptr &&
          absl::SimpleAtoi(absl::string_view(static_cast<const char*>(data), size), &version)) {
        record.version = version;
      }
      max_version = std::max(max_version, record.version);
      at_end[msg->partition] = false;
      records.push_back(std::move(record));
    }
    // Other errors (a broker going away) are transient for a consumer:
    // librdkafka reconnects and the deadline bounds the wait.
    rd_kafka_message_destroy(msg);
    bool all_at_end = true;
    for (const auto& [p, end] : at_end) all_at_end = all_at_end && end;
    if (all_at_end && (until_version <= 0 || max_version >= until_version)) break;
  }
  return records;
}

}  // namespace bucketmap
