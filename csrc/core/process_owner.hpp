// Which process an object was created in.
//
// After fork() the child holds copies of every object but none of the parent's
// threads; a mutex a parent thread held stays locked, a condition variable may still
// count the parent's waiters (destroying it can block forever), and joining a thread
// is undefined. Objects that own threads or synchronisation state consult this in
// their destructors and, in a child, deliberately leak that state instead of touching
// it. Cheap (one getpid per call); copyable; thread-safe.
#pragma once

#include <sys/types.h>
#include <unistd.h>

namespace pyloader {

class ProcessOwner {
 public:
  ProcessOwner() noexcept : pid_(::getpid()) {}
  bool is_current() const noexcept { return ::getpid() == pid_; }

 private:
  pid_t pid_;
};

}  // namespace pyloader
