#include "process_owner.hpp"

#include <pthread.h>

#include <atomic>

namespace pyloader {
namespace {

std::atomic<pid_t> cached_pid{0};

void refresh_after_fork() noexcept { cached_pid.store(::getpid(), std::memory_order_relaxed); }

struct ForkHandler {
  ForkHandler() noexcept {
    refresh_after_fork();
    // A handler that fails to register leaves the cache at the parent's id in a child:
    // then every check asks the kernel instead.
    registered = ::pthread_atfork(nullptr, nullptr, &refresh_after_fork) == 0;
  }
  bool registered = false;
};

}  // namespace

pid_t current_process_id() noexcept {
  static const ForkHandler handler;
  return handler.registered ? cached_pid.load(std::memory_order_relaxed) : ::getpid();
}

}  // namespace pyloader
