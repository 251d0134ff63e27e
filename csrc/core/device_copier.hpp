// Asynchronous host-to-device copies on one stream, each with a completion fence.
//
// Contract:
//   * A DeviceCopier issues cuMemcpyHtoDAsync on `stream` (borrowed: the caller keeps it
//     alive for the copier's lifetime; null means the copier creates and owns a
//     non-blocking stream of its own) in the device's primary context, and records an
//     event after each copy. copy() returns at once; the copy runs in stream order.
//   * The source must stay unchanged, and the destination untouched, until the copy's
//     fence is done(): the copier owns neither.
//   * CopyFence: done() polls, wait() blocks the calling thread, wait_on(stream) makes
//     `stream` wait for the copy on the device (no host synchronisation). Fences are
//     thread-safe and may outlive the copier; in a forked child (where the parent's
//     copies are not in flight) they count as done and release nothing.
//   * Thread-safe: copy() may be called from several threads at once (the driver
//     serialises work on one stream).
//   * Errors (a failed copy, an invalid pointer) throw CudaError naming the call.
#pragma once

#include <cstddef>
#include <memory>

#include "cuda_driver.hpp"

namespace pyloader {

class CopyFence {
 public:
  CopyFence(std::shared_ptr<const PrimaryContext> context, CuEvent event) noexcept
      : context_(std::move(context)), event_(event) {}
  ~CopyFence();
  CopyFence(const CopyFence&) = delete;
  CopyFence& operator=(const CopyFence&) = delete;

  bool done() const;
  void wait() const;
  void wait_on(CuStream stream) const;

 private:
  std::shared_ptr<const PrimaryContext> context_;
  CuEvent event_;
};

class DeviceCopier {
 public:
  DeviceCopier(std::shared_ptr<const CudaDriver> driver, int ordinal, CuStream stream);
  ~DeviceCopier();
  DeviceCopier(const DeviceCopier&) = delete;
  DeviceCopier& operator=(const DeviceCopier&) = delete;

  std::shared_ptr<CopyFence> copy(CuDevicePtr destination, const void* source, std::size_t bytes) const;
  // An event recorded on the copy stream now, for a consumer that needs a fence
  // without a copy (a batch of zero bytes).
  std::shared_ptr<CopyFence> mark() const;

  int ordinal() const noexcept { return context_->ordinal(); }
  CuStream stream() const noexcept { return stream_; }

 private:
  std::shared_ptr<const PrimaryContext> context_;
  CuStream stream_;
  bool owns_stream_;
};

}  // namespace pyloader
