// The owner of a batch gathered into a supplied host block, as numpy sees it: every
// array of such a batch has one of these as its base, so the Python side finds the
// framework tensor (a pinned host block) its arrays stand for.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

namespace pyloader::bindings {

struct StagedBuffer {
  std::uintptr_t address = 0;        // of byte 0 of the batch on the host
  pybind11::object host;        // the supplied host tensor, or None (own pool)
  pybind11::object keep_alive;  // what holds the host bytes alive
};

}  // namespace pyloader::bindings
