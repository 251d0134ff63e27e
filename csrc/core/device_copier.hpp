// Asynchronous host-to-device copies on one stream, each with a completion fence.
//
// Contract:
//   * A DeviceCopier issues cuMemcpyHtoDAsync on `stream` (borrowed: the caller keeps it
//     alive for the copier's lifetime; null means the copier creates and owns a
//     non-blocking stream of its own, which no other component shares) in the device's
//     primary context, and records an event after each copy. copy() returns at once;
//     the copy runs in stream order.
//   * The source must stay unchanged, and the destination untouched, until the copy's
//     fence is done(): the copier owns neither. When copy() throws, no copy it enqueued
//     is still running (it waited for the stream), except when it throws
//     CopyPendingError: then the copy may still read its source and write its
//     destination at any time, and both must never be reused.
//   * CopyFence: done() polls, wait() blocks the calling thread without spinning
//     (blocking-sync events), wait_on(stream) makes `stream` wait for the copy on the
//     device (no host synchronisation). Fences are thread-safe and may outlive the
//     copier; in a forked child (where the parent's copies are not in flight) they count
//     as done and release nothing. Events are pooled: a fence's event is reused once
//     the fence is gone.
//   * record(stream) fences the work queued on another stream so far (a consumer's).
//   * Thread-safe: copy() may be called from several threads at once (the driver
//     serialises work on one stream).
//   * Errors (a failed copy, an invalid pointer) throw CudaError naming the call.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "cuda_driver.hpp"

namespace pyloader {

class CopyPendingError : public CudaError {
 public:
  using CudaError::CudaError;
};

// Idle events of one context, reused by later fences.
class EventPool {
 public:
  explicit EventPool(std::shared_ptr<const PrimaryContext> context) noexcept : context_(std::move(context)) {}
  ~EventPool();
  EventPool(const EventPool&) = delete;
  EventPool& operator=(const EventPool&) = delete;

  // Precondition: the context is bound on the calling thread.
  CuEvent take();
  void give_back(CuEvent event) noexcept;
  const PrimaryContext& context() const noexcept { return *context_; }

 private:
  std::shared_ptr<const PrimaryContext> context_;
  std::mutex mutex_;
  std::vector<CuEvent> idle_;
};

class CopyFence {
 public:
  CopyFence(std::shared_ptr<EventPool> events, CuEvent event) noexcept : events_(std::move(events)), event_(event) {}
  ~CopyFence();
  CopyFence(const CopyFence&) = delete;
  CopyFence& operator=(const CopyFence&) = delete;

  bool done() const;
  void wait() const;
  void wait_on(CuStream stream) const;

 private:
  const PrimaryContext& context() const noexcept { return events_->context(); }

  std::shared_ptr<EventPool> events_;
  CuEvent event_;
};

class DeviceCopier {
 public:
  DeviceCopier(std::shared_ptr<const CudaDriver> driver, int ordinal, CuStream stream);
  ~DeviceCopier();
  DeviceCopier(const DeviceCopier&) = delete;
  DeviceCopier& operator=(const DeviceCopier&) = delete;

  std::shared_ptr<CopyFence> copy(CuDevicePtr destination, const void* source, std::size_t bytes) const;
  // An event recorded on `stream` now: done once the work queued there so far is.
  std::shared_ptr<CopyFence> record(CuStream stream) const;

  int ordinal() const noexcept { return context_->ordinal(); }
  CuStream stream() const noexcept { return stream_; }
  const std::shared_ptr<const PrimaryContext>& context() const noexcept { return context_; }

 private:
  std::shared_ptr<const PrimaryContext> context_;
  std::shared_ptr<EventPool> events_;
  CuStream stream_;
  bool owns_stream_;
};

}  // namespace pyloader
