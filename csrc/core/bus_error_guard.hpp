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
//   * install_bus_error_handler() is process-wide and cheap to repeat. It installs the
//     handler the first time, and again only if another handler has since replaced it
//     (e.g. Python's faulthandler.enable()), so guarded copies never reach a handler
//     that would report them as crashes. It never uninstalls itself.
//   * A SIGBUS outside any guard goes to the handler that was in place before ours,
//     as that handler asked for it (SA_SIGINFO or not); SIG_DFL, and SIG_IGN for a
//     fault, end the process by SIGBUS. If that handler hands the signal back to us
//     (faulthandler re-raises it to the handler it replaced, which may be ours), the
//     chain ends there with the default action, so one fault is reported once.
//   * Guards nest and are per thread; safe to use from any number of threads.
#pragma once

namespace pyloader {

void install_bus_error_handler() noexcept;

// Returns true when `function(context)` ran to completion, false when it was cut
// short by SIGBUS on this thread.
bool run_with_bus_error_guard(void (*function)(void*), void* context) noexcept;

}  // namespace pyloader
