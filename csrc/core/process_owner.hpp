// Which process an object was created in.
//
// After fork() the child holds copies of every object but none of the parent's
// threads; a mutex a parent thread held stays locked, a condition variable may still
// count the parent's waiters (destroying it can block forever), and joining a thread
// is undefined. Objects that own threads or synchronisation state consult this in
// their destructors and, in a child, deliberately leak that state instead of touching
// it. Cheap: the process id is cached and refreshed in the child by a fork handler, so
// a check is a load, not a system call (the hot path asks several times per batch);
// copyable; thread-safe.
#pragma once

#include <sys/types.h>
#include <unistd.h>

namespace pyloader {

// This process's id, as of the last fork.
pid_t current_process_id() noexcept;

class ProcessOwner {
 public:
  ProcessOwner() noexcept : pid_(current_process_id()) {}
  bool is_current() const noexcept { return current_process_id() == pid_; }

 private:
  pid_t pid_;
};

}  // namespace pyloader
