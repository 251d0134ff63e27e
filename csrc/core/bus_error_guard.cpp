#include "bus_error_guard.hpp"

#include <atomic>
#include <csetjmp>
#include <csignal>
#include <mutex>

#include <pthread.h>
#include <unistd.h>

namespace pyloader {
namespace {

thread_local sigjmp_buf* active_guard = nullptr;
// Set while this thread runs the previous handler: re-entry means the chain came back.
thread_local bool chaining = false;

// Each (re)installation records the handler it replaced in a fresh entry, published
// by index, so the signal handler reads an entry that is never written again.
constexpr int kMaxInstallations = 16;
struct sigaction replaced_actions[kMaxInstallations];
std::atomic<int> current_installation{-1};
std::mutex install_mutex;

void on_bus_error(int signal_number, siginfo_t* info, void* context);

bool is_ours(const struct sigaction& action) noexcept {
  return (action.sa_flags & SA_SIGINFO) != 0 && action.sa_sigaction == on_bus_error;
}

[[noreturn]] void die_by_default_action(int signal_number) noexcept {
  struct sigaction default_action{};
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);
  sigaction(signal_number, &default_action, nullptr);
  sigset_t unblocked;
  sigemptyset(&unblocked);
  sigaddset(&unblocked, signal_number);
  pthread_sigmask(SIG_UNBLOCK, &unblocked, nullptr);
  raise(signal_number);
  _exit(128 + signal_number);  // not reached: the default action of SIGBUS ends the process
}

void on_bus_error(int signal_number, siginfo_t* info, void* context) {
  if (sigjmp_buf* guard = active_guard) siglongjmp(*guard, 1);
  const int installation = current_installation.load(std::memory_order_acquire);
  if (chaining || installation < 0) die_by_default_action(signal_number);
  const struct sigaction& previous = replaced_actions[installation];
  const bool sent = info != nullptr && info->si_code <= 0;  // kill()/raise(), not a fault
  if ((previous.sa_flags & SA_SIGINFO) != 0) {
    if (previous.sa_sigaction == nullptr || is_ours(previous)) die_by_default_action(signal_number);
    chaining = true;
    previous.sa_sigaction(signal_number, info, context);
    chaining = false;
  } else if (previous.sa_handler == SIG_IGN) {
    // A sent signal is ignored as asked; a fault cannot be ignored (it would repeat
    // forever), and the kernel would have killed the process for it.
    if (!sent) die_by_default_action(signal_number);
  } else if (previous.sa_handler == SIG_DFL) {
    die_by_default_action(signal_number);
  } else {
    chaining = true;
    previous.sa_handler(signal_number);
    chaining = false;
  }
}

}  // namespace

void install_bus_error_handler() noexcept {
  std::lock_guard<std::mutex> lock(install_mutex);
  struct sigaction current{};
  sigaction(SIGBUS, nullptr, &current);
  if (is_ours(current)) return;
  const int installation = current_installation.load(std::memory_order_relaxed) + 1;
  if (installation >= kMaxInstallations) return;  // something keeps replacing us: let it win
  replaced_actions[installation] = current;
  current_installation.store(installation, std::memory_order_release);
  struct sigaction action{};
  action.sa_sigaction = on_bus_error;
  sigemptyset(&action.sa_mask);
  // SA_NODEFER: leaving the handler by siglongjmp skips the kernel's mask restore,
  // so SIGBUS must not be blocked while the handler runs.
  action.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
  sigaction(SIGBUS, &action, nullptr);
}

bool run_with_bus_error_guard(void (*function)(void*), void* context) noexcept {
  sigjmp_buf guard;
  sigjmp_buf* const outer = active_guard;
  if (sigsetjmp(guard, 0) != 0) {
    active_guard = outer;
    return false;
  }
  active_guard = &guard;
  function(context);
  active_guard = outer;
  return true;
}

}  // namespace pyloader
