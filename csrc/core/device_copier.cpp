#include "device_copier.hpp"

namespace pyloader {

CopyFence::~CopyFence() {
  if (!context_->in_owner_process()) return;
  try {
    const auto bound = context_->bind();
    (void)context_->driver().event_destroy(event_);
  } catch (...) {
    // A context that cannot be bound any more (the process is shutting CUDA down) has
    // taken its events with it.
  }
}

bool CopyFence::done() const {
  if (!context_->in_owner_process()) return true;  // the parent's copy; the child has none in flight
  const auto bound = context_->bind();
  const CuResult result = context_->driver().event_query(event_);
  if (result == kCudaErrorNotReady) return false;
  context_->driver().check(result, "cuEventQuery");
  return true;
}

void CopyFence::wait() const {
  if (!context_->in_owner_process()) return;
  const auto bound = context_->bind();
  context_->driver().check(context_->driver().event_synchronize(event_), "cuEventSynchronize");
}

void CopyFence::wait_on(CuStream stream) const {
  const auto bound = context_->bind();
  context_->driver().check(context_->driver().stream_wait_event(stream, event_, 0), "cuStreamWaitEvent");
}

DeviceCopier::DeviceCopier(std::shared_ptr<const CudaDriver> driver, int ordinal, CuStream stream)
    : context_(std::make_shared<const PrimaryContext>(std::move(driver), ordinal)),
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

std::shared_ptr<CopyFence> DeviceCopier::copy(CuDevicePtr destination, const void* source,
                                              std::size_t bytes) const {
  const auto bound = context_->bind();
  const CudaDriver& driver = context_->driver();
  if (bytes > 0) driver.check(driver.memcpy_htod_async(destination, source, bytes, stream_), "cuMemcpyHtoDAsync");
  return mark();
}

std::shared_ptr<CopyFence> DeviceCopier::mark() const {
  const auto bound = context_->bind();
  const CudaDriver& driver = context_->driver();
  CuEvent event = nullptr;
  driver.check(driver.event_create(&event, kCudaEventDisableTiming), "cuEventCreate");
  auto fence = std::make_shared<CopyFence>(context_, event);  // destroys the event from here on
  driver.check(driver.event_record(event, stream_), "cuEventRecord");
  return fence;
}

}  // namespace pyloader
