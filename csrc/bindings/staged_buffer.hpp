// The owner of a staged batch's memory, as numpy sees it: every array of a staged
// batch has one of these as its base, so the Python side finds the framework tensors
// (pinned host block, device block) its arrays stand for and the fence of the copy.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>

#include "../core/device_copier.hpp"

namespace pyloader::bindings {

struct StagedBuffer {
  std::uintptr_t address = 0;        // of byte 0 of the batch on the host
  pybind11::object host;             // the supplied host tensor, or None (own pool)
  pybind11::object device;           // the supplied device tensor, or None
  std::shared_ptr<CopyFence> fence;  // of the copy to `device`, or null
  pybind11::object keep_alive;       // what holds the host bytes alive
};

}  // namespace pyloader::bindings
