// A fixed set of worker threads draining one FIFO task queue.
//
// Contract:
//   * submit() is thread-safe. Tasks run on the pool's threads in submission order
//     of dequeueing (FIFO), concurrently up to size().
//   * Tasks must not throw: an escaping exception would have nowhere to go, so the
//     pool terminates the process. Callers wrap their work and record errors.
//   * The destructor discards tasks not yet started, waits for running tasks and
//     joins every thread. Owners of work in flight must keep what that work touches
//     alive until they have seen it finish (see BatchPipeline).
//   * Not fork-safe: after fork() the child has none of these threads; the object
//     must be abandoned (never destroyed) in the child.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace pyloader {

class ThreadPool {
 public:
  explicit ThreadPool(std::size_t num_threads);
  ~ThreadPool();

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void submit(std::function<void()> task);
  std::size_t size() const noexcept { return threads_.size(); }

 private:
  void run_worker();

  std::mutex mutex_;
  std::condition_variable task_available_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace pyloader
