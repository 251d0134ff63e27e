// Recovery from SIGBUS while copying out of memory-mapped files.
//
// Reading a page of a mapping whose file was truncated raises SIGBUS, which kills the
// process by default. run_with_bus_error_guard() runs a function such that a SIGBUS
// raised on the calling thread during it abandons the function and returns false.
//
// Contract:
//   * The guarded function must not own anything with a destructor, hold locks, or
//     allocate between the fault and its return: it is left with siglongjmp. Row copy
//     loops qualify; anything richer must not be guarded.
//   * install_bus_error_handler() is process-wide and cheap to repeat: it (re)installs
//     the handler unless it is already in place, keeping the handler it replaces (e.g.
//     Python's faulthandler) and handing every SIGBUS not under a guard back to it.
//   * Guards nest and are per thread; safe to use from any number of threads.
#pragma once

namespace pyloader {

void install_bus_error_handler() noexcept;

// Returns true when `function(context)` ran to completion, false when it was cut
// short by SIGBUS on this thread.
bool run_with_bus_error_guard(void (*function)(void*), void* context) noexcept;

}  // namespace pyloader
