#include "bus_error_guard.hpp"

#include <csetjmp>
#include <csignal>
#include <mutex>

namespace pyloader {
namespace {

thread_local sigjmp_buf* active_guard = nullptr;
struct sigaction previous_action;
std::mutex install_mutex;

void on_bus_error(int signal_number, siginfo_t* info, void* context) {
  if (sigjmp_buf* guard = active_guard) siglongjmp(*guard, 1);
  // Not a guarded copy: restore whoever handled SIGBUS before and let the faulting
  // access repeat, so that handler (or the default action) sees the same fault.
  (void)signal_number;
  (void)info;
  (void)context;
  sigaction(SIGBUS, &previous_action, nullptr);
}

}  // namespace

void install_bus_error_handler() noexcept {
  // Checked on every call, not once: faulthandler.enable() or another library may
  // have replaced the handler since, and an unguarded fault hands it back for good.
  std::lock_guard<std::mutex> lock(install_mutex);
  struct sigaction current {};
  sigaction(SIGBUS, nullptr, &current);
  if ((current.sa_flags & SA_SIGINFO) != 0 && current.sa_sigaction == on_bus_error) return;
  struct sigaction action {};
  action.sa_sigaction = on_bus_error;
  sigemptyset(&action.sa_mask);
  // SA_NODEFER: leaving the handler by siglongjmp skips the kernel's mask restore,
  // so SIGBUS must not be blocked while the handler runs.
  action.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
  sigaction(SIGBUS, &action, &previous_action);
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
