// A fixed set of worker threads draining one FIFO task queue.
//
// Contract:
//   * submit() is thread-safe. Tasks start in FIFO order and run concurrently, up to
//     size() at a time.
//   * Tasks must not throw: an escaping exception would have nowhere to go, so the
//     pool terminates the process. Callers wrap their work and record errors.
//   * The destructor discards tasks not yet started, waits for running tasks and
//     joins every thread. Owners of work in flight must keep what that work touches
//     alive until they have seen it finish (see BatchPipeline).
//   * Fork: a pool destroyed in a forked child (which has none of its threads) leaks
//     its threads' bookkeeping instead of joining; a child needs a new pool to run work.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "process_owner.hpp"

namespace pyloader {

class ThreadPool {
 public:
  explicit ThreadPool(std::size_t num_threads);
  ~ThreadPool();

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void submit(std::function<void()> task);
  // Threads running: `num_threads`, or fewer when the system refused more (at least one,
  // else the constructor throws std::system_error).
  std::size_t size() const noexcept { return size_; }
  // Whether the calling thread is a worker of some ThreadPool: such a thread runs only
  // pyloader's tasks, so per-thread state it sets (a current CUDA context) need not be
  // restored for anyone else.
  static bool on_worker_thread() noexcept;

 private:
  // Everything the workers touch, on the heap so a forked child can leak it whole.
  struct State {
    std::mutex mutex;
    std::condition_variable task_available;
    std::deque<std::function<void()>> tasks;
    bool stopping = false;
    std::vector<std::thread> threads;
  };

  static void run_worker(State& state);

  std::size_t size_;
  std::unique_ptr<State> state_;
  ProcessOwner owner_;
};

}  // namespace pyloader
