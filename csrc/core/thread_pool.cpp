#include "thread_pool.hpp"

#include <system_error>

namespace pyloader {
namespace {

thread_local bool worker_thread = false;

}  // namespace

bool ThreadPool::on_worker_thread() noexcept { return worker_thread; }

ThreadPool::ThreadPool(std::size_t num_threads)
    : size_(num_threads == 0 ? 1 : num_threads), state_(std::make_unique<State>()) {
  state_->threads.reserve(size_);
  State* state = state_.get();
  for (std::size_t i = 0; i < size_; ++i) {
    try {
      state_->threads.emplace_back([state] { run_worker(*state); });
    } catch (const std::system_error&) {
      // The system refused another thread (a process or container limit): the pool
      // runs with those it has. With none, the constructor fails and nothing is left.
      if (state_->threads.empty()) throw;
      size_ = state_->threads.size();
      break;
    }
  }
}

ThreadPool::~ThreadPool() {
  if (!owner_.is_current()) {
    (void)state_.release();  // forked child: see the class comment
    return;
  }
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stopping = true;
    state_->tasks.clear();
  }
  state_->task_available.notify_all();
  for (auto& thread : state_->threads) thread.join();
}

void ThreadPool::submit(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->tasks.push_back(std::move(task));
  }
  state_->task_available.notify_one();
}

void ThreadPool::run_worker(State& state) {
  worker_thread = true;
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(state.mutex);
      state.task_available.wait(lock, [&state] { return state.stopping || !state.tasks.empty(); });
      if (state.stopping) return;
      task = std::move(state.tasks.front());
      state.tasks.pop_front();
    }
    task();
  }
}

}  // namespace pyloader
