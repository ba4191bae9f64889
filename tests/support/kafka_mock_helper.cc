// kafka_mock_helper: librdkafka's mock Kafka cluster in a process of its
// own, for tests and benchmarks that kill or restart bucketmap-server (an
// in-process mock, like `--kafka_brokers=embedded`, dies with its host).
//
// Usage: kafka_mock_helper [--topic NAME:PARTITIONS]...
//
// Starts a one-broker cluster on 127.0.0.1, creates the named topics (the
// mock does not answer CreateTopics), prints `BOOTSTRAP host:port` on
// stdout and runs until SIGTERM, SIGINT or SIGKILL, or until stdin reaches
// EOF when stdin is a pipe or socket: a parent that dies (even by SIGKILL)
// closes the pipe, so the helper never outlives its test. While running it
// reads commands from stdin, one a line, and answers each with `OK` or
// `ERROR ...` on stdout:
//   down    the broker stops answering (rd_kafka_mock_broker_set_down)
//   up      it answers again
#include <librdkafka/rdkafka.h>
// rdkafka_mock.h needs rdkafka.h first.
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

namespace {

volatile sig_atomic_t g_stop = 0;

void OnSignal(int) { g_stop = 1; }

int Usage(const char* why) {
  std::fprintf(stderr,
               "kafka_mock_helper: %s\nusage: kafka_mock_helper [--topic NAME:PARTITIONS]...\n",
               why);
  return 2;
}

// Parses NAME:PARTITIONS; false when malformed.
bool ParseTopic(const std::string& arg, std::pair<std::string, int>* out) {
  const size_t colon = arg.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == arg.size()) return false;
  char* end = nullptr;
  const long partitions = std::strtol(arg.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || partitions < 1 || partitions > 1000) return false;
  *out = {arg.substr(0, colon), static_cast<int>(partitions)};
  return true;
}

void Answer(const char* text) {
  std::printf("%s\n", text);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::pair<std::string, int>> topics;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    if (arg == "--topic" && i + 1 < argc) {
      value = argv[++i];
    } else if (arg.rfind("--topic=", 0) == 0) {
      value = arg.substr(8);
    } else {
      return Usage(("unknown argument: " + arg).c_str());
    }
    std::pair<std::string, int> topic;
    if (!ParseTopic(value, &topic)) return Usage(("bad --topic: " + value).c_str());
    topics.push_back(std::move(topic));
  }

  char error[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  // The handle only hosts the cluster and never connects anywhere: silence
  // its notice about having no bootstrap.servers.
  rd_kafka_conf_set(conf, "log_level", "4", error, sizeof(error));
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof(error));
  if (rk == nullptr) {
    std::fprintf(stderr, "kafka_mock_helper: rd_kafka_new: %s\n", error);
    return 1;
  }
  rd_kafka_mock_cluster_t* cluster = rd_kafka_mock_cluster_new(rk, 1);
  if (cluster == nullptr) {
    std::fprintf(stderr, "kafka_mock_helper: rd_kafka_mock_cluster_new failed\n");
    rd_kafka_destroy(rk);
    return 1;
  }
  for (const auto& [name, partitions] : topics) {
    const rd_kafka_resp_err_t err =
        rd_kafka_mock_topic_create(cluster, name.c_str(), partitions, 1);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      std::fprintf(stderr, "kafka_mock_helper: creating topic %s: %s\n", name.c_str(),
                   rd_kafka_err2str(err));
      rd_kafka_mock_cluster_destroy(cluster);
      rd_kafka_destroy(rk);
      return 1;
    }
  }

  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  // Answers to a parent that has gone must not kill us with SIGPIPE before
  // we notice the EOF and clean up.
  signal(SIGPIPE, SIG_IGN);

  std::printf("BOOTSTRAP %s\n", rd_kafka_mock_cluster_bootstraps(cluster));
  std::fflush(stdout);

  // Interactive use from a terminal, or stdin from /dev/null, would end at
  // once on EOF: only a pipe or socket ties our life to the parent's.
  struct stat st {};
  const bool watch_stdin =
      fstat(STDIN_FILENO, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
  std::string line;
  while (!g_stop) {
    if (!watch_stdin) {
      usleep(200 * 1000);
      continue;
    }
    pollfd pfd{STDIN_FILENO, POLLIN, 0};
    const int n = poll(&pfd, 1, 200);
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;
    char buf[256];
    const ssize_t got = read(STDIN_FILENO, buf, sizeof(buf));
    if (got == 0) break;  // The parent closed the pipe or died.
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      break;
    }
    line.append(buf, got);
    for (size_t eol; (eol = line.find('\n')) != std::string::npos;) {
      std::string command = line.substr(0, eol);
      line.erase(0, eol + 1);
      if (!command.empty() && command.back() == '\r') command.pop_back();
      rd_kafka_resp_err_t err;
      if (command == "down") {
        err = rd_kafka_mock_broker_set_down(cluster, 1);
      } else if (command == "up") {
        err = rd_kafka_mock_broker_set_up(cluster, 1);
      } else if (command.empty()) {
        continue;
      } else {
        Answer(("ERROR unknown command: " + command).c_str());
        continue;
      }
      Answer(err == RD_KAFKA_RESP_ERR_NO_ERROR
                 ? "OK"
                 : (std::string("ERROR ") + rd_kafka_err2str(err)).c_str());
    }
  }
  rd_kafka_mock_cluster_destroy(cluster);
  rd_kafka_destroy(rk);
  return 0;
}
