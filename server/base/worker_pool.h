// WorkerPool: a fixed set of threads that run blocking work (PostgreSQL
// calls) off gRPC's reactor threads.
//
// Thread-safe. The destructor drains queued work and joins the threads.
#ifndef BUCKETMAP_SERVER_BASE_WORKER_POOL_H_
#define BUCKETMAP_SERVER_BASE_WORKER_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace bucketmap {

class WorkerPool {
 public:
  explicit WorkerPool(int threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `work`. Runs it on a worker thread, in no particular order
  // relative to other work.
  void Schedule(std::function<void()> work);

 private:
  void Loop();

  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_BASE_WORKER_POOL_H_
