#include "device_copier.hpp"

#include <string>

namespace pyloader {

EventPool::~EventPool() {
  if (!context_->in_owner_process() || idle_.empty()) return;
  try {
    const auto bound = context_->bind();
    for (CuEvent event : idle_) (void)context_->driver().event_destroy(event);
  } catch (...) {
    // A context that cannot be bound any more (the process is shutting CUDA down) has
    // taken its events with it.
  }
}

CuEvent EventPool::take() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!idle_.empty()) {
      CuEvent event = idle_.back();
      idle_.pop_back();
      return event;
    }
  }
  CuEvent event = nullptr;
  context_->driver().check(context_->driver().event_create(&event, kCudaEventBlockingSync | kCudaEventDisableTiming),
                           "cuEventCreate");
  return event;
}

void EventPool::give_back(CuEvent event) noexcept {
  try {
    std::lock_guard<std::mutex> lock(mutex_);
    idle_.push_back(event);
  } catch (...) {
    // Out of memory for the list: the event stays allocated, unused.
  }
}

CopyFence::~CopyFence() {
  if (context().in_owner_process()) events_->give_back(event_);
}

bool CopyFence::done() const {
  if (!context().in_owner_process()) return true;  // the parent's copy; the child has none in flight
  const auto bound = context().bind();
  const CuResult result = context().driver().event_query(event_);
  if (result == kCudaErrorNotReady) return false;
  context().driver().check(result, "cuEventQuery");
  return true;
}

void CopyFence::wait() const {
  if (!context().in_owner_process()) return;
  const auto bound = context().bind();
  context().driver().check(context().driver().event_synchronize(event_), "cuEventSynchronize");
}

void CopyFence::wait_on(CuStream stream) const {
  const auto bound = context().bind();
  context().driver().check(context().driver().stream_wait_event(stream, event_, 0), "cuStreamWaitEvent");
}

DeviceCopier::DeviceCopier(std::shared_ptr<const CudaDriver> driver, int ordinal, CuStream stream)
    : context_(std::make_shared<const PrimaryContext>(std::move(driver), ordinal)),
      events_(std::make_shared<EventPool>(context_)),
      stream_(stream),
      owns_stream_(stream == nullptr) {
  if (owns_stream_) {
    const auto bound = context_->bind();
    context_->driver().check(context_->driver().stream_create(&stream_, kCudaStreamNonBlocking), "cuStreamCreate");
  }
}

DeviceCopier::~DeviceCopier() {
  if (!owns_stream_ || !context_->in_owner_process()) return;
  try {
    const auto bound = context_->bind();
    (void)context_->driver().stream_destroy(stream_);
  } catch (...) {
  }
}

std::shared_ptr<CopyFence> DeviceCopier::copy(CuDevicePtr destination, const void* source, std::size_t bytes) const {
  const auto bound = context_->bind();
  const CudaDriver& driver = context_->driver();
  if (bytes > 0) driver.check(driver.memcpy_htod_async(destination, source, bytes, stream_), "cuMemcpyHtoDAsync");
  try {
    return record(stream_);
  } catch (const CudaError& error) {
    // The copy is queued but cannot be fenced: once the stream has drained, its
    // source and destination are free again; if even that fails, they never are.
    if (driver.stream_synchronize(stream_) != kCudaSuccess) {
      throw CopyPendingError(std::string(error.what()) + " (after a copy was queued, which may still be running)");
    }
    throw;
  }
}

std::shared_ptr<CopyFence> DeviceCopier::record(CuStream stream) const {
  const auto bound = context_->bind();
  const CudaDriver& driver = context_->driver();
  const CuEvent event = events_->take();
  auto fence = std::make_shared<CopyFence>(events_, event);  // gives the event back from here on
  driver.check(driver.event_record(event, stream), "cuEventRecord");
  return fence;
}

}  // namespace pyloader
