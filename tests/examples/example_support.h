// What the example-program tests share: librdkafka's mock cluster in this
// process, and an example program run as a child process whose output the
// test reads while it runs.
//
// Not thread-safe: one test thread uses each object.
#ifndef BUCKETMAP_TESTS_EXAMPLES_EXAMPLE_SUPPORT_H_
#define BUCKETMAP_TESTS_EXAMPLES_EXAMPLE_SUPPORT_H_

#include <fcntl.h>
#include <librdkafka/rdkafka.h>
// rdkafka_mock.h needs rdkafka.h first.
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace bucketmap {

// A one-broker Kafka-protocol cluster inside this process. The mock does
// not serve CreateTopics, so topics are made through its own API.
class MockKafka {
 public:
  MockKafka() {
    char error[256];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    // The handle only hosts the cluster; it never connects anywhere, so
    // silence its notice about having no bootstrap.servers.
    rd_kafka_conf_set(conf, "log_level", "4", error, sizeof(error));
    rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof(error));
    if (rk_ == nullptr) {
      rd_kafka_conf_destroy(conf);
      ADD_FAILURE() << error;
      return;
    }
    cluster_ = rd_kafka_mock_cluster_new(rk_, 1);
    if (cluster_ == nullptr) ADD_FAILURE() << "rd_kafka_mock_cluster_new failed";
  }
  ~MockKafka() {
    if (cluster_ != nullptr) rd_kafka_mock_cluster_destroy(cluster_);
    if (rk_ != nullptr) rd_kafka_destroy(rk_);
  }
  MockKafka(const MockKafka&) = delete;
  MockKafka& operator=(const MockKafka&) = delete;

  bool ok() const { return cluster_ != nullptr; }
  std::string bootstraps() const { return rd_kafka_mock_cluster_bootstraps(cluster_); }
  rd_kafka_resp_err_t CreateTopic(const std::string& topic, int partitions) {
    return rd_kafka_mock_topic_create(cluster_, topic.c_str(), partitions, 1);
  }

 private:
  rd_kafka_t* rk_ = nullptr;
  rd_kafka_mock_cluster_t* cluster_ = nullptr;
};

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// An example program running as a child process, its stdout and stderr
// going to files in `dir` (named after `name`). The destructor kills it if
// it still runs.
class ExampleProcess {
 public:
  ExampleProcess(const std::string& binary, const std::vector<std::string>& args,
                 const std::string& dir, const std::string& name)
      : out_path_(dir + "/" + name + ".out"), err_path_(dir + "/" + name + ".err") {
    std::vector<std::string> argv_strings = {binary};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& arg : argv_strings) argv.push_back(arg.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ < 0) {
      ADD_FAILURE() << "fork failed";
      return;
    }
    if (pid_ == 0) {
      const int out = open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int err = open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (out < 0 || err < 0) _exit(127);
      dup2(out, STDOUT_FILENO);
      dup2(err, STDERR_FILENO);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ~ExampleProcess() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  ExampleProcess(const ExampleProcess&) = delete;
  ExampleProcess& operator=(const ExampleProcess&) = delete;

  std::string Out() const { return ReadFile(out_path_); }
  std::string Err() const { return ReadFile(err_path_); }
  void Signal(int signal) {
    if (pid_ > 0 && !exited_) kill(pid_, signal);
  }

  // Waits for the exit; returns the exit code (128 + signal when killed
  // by one). Kills the program and fails the test after `timeout`.
  int Wait(absl::Duration timeout) {
    if (pid_ <= 0) return -1;
    const absl::Time give_up = absl::Now() + timeout;
    while (!exited_ && waitpid(pid_, &status_, WNOHANG) == 0) {
      if (absl::Now() > give_up) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status_, 0);
        ADD_FAILURE() << out_path_ << ": timed out";
        break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    exited_ = true;
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
  }

 private:
  const std::string out_path_;
  const std::string err_path_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_EXAMPLES_EXAMPLE_SUPPORT_H_
