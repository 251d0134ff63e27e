#include "device_staging.hpp"

#include <cstdlib>
#include <new>

namespace pyloader {
namespace {

constexpr std::size_t kPageBytes = 4096;

std::size_t whole_pages(std::size_t bytes) {
  return (bytes == 0 ? 1 : (bytes + kPageBytes - 1) / kPageBytes) * kPageBytes;
}

}  // namespace

DeviceStaging::DeviceStaging(std::shared_ptr<const CudaDriver> driver, int ordinal)
    : copier_(std::make_shared<const DeviceCopier>(std::move(driver), ordinal, nullptr)) {
  std::shared_ptr<const PrimaryContext> context = copier_->context();
  FencedPool::Memory pinned;
  pinned.allocate = [this, context](std::size_t bytes) {
    bytes = whole_pages(bytes);
    if (!pinning_failed_.load(std::memory_order_acquire)) {
      const auto bound = context->bind();
      void* memory = nullptr;
      const CuResult result = context->driver().mem_host_alloc(&memory, bytes, 0);
      if (result == kCudaSuccess) return FencedPool::Block{static_cast<std::byte*>(memory), bytes, false};
      try {
        context->driver().check(result, "cuMemHostAlloc");
      } catch (const CudaError& error) {
        std::lock_guard<std::mutex> lock(reason_mutex_);
        if (!pinning_failed_.load(std::memory_order_relaxed)) {
          pinning_error_ = error.what();
          pinning_failed_.store(true, std::memory_order_release);
        }
      }
    }
    void* memory = std::aligned_alloc(kPageBytes, bytes);
    if (memory == nullptr) throw std::bad_alloc();
    return FencedPool::Block{static_cast<std::byte*>(memory), bytes, true};
  };
  pinned.free = [context](const FencedPool::Block& block) {
    if (block.fallback) {
      std::free(block.data);
      return;
    }
    const auto bound = context->bind();
    (void)context->driver().mem_free_host(block.data);
  };
  FencedPool::Memory device;
  device.allocate = [context](std::size_t bytes) {
    bytes = whole_pages(bytes);
    const auto bound = context->bind();
    CuDevicePtr memory = 0;
    const CuResult result = context->driver().mem_alloc(&memory, bytes);
    if (result == kCudaErrorOutOfMemory) throw std::bad_alloc();  // a state to retry from, not the batch's fault
    context->driver().check(result, "cuMemAlloc");
    return FencedPool::Block{reinterpret_cast<std::byte*>(memory), bytes, false};
  };
  device.free = [context](const FencedPool::Block& block) {
    const auto bound = context->bind();
    (void)context->driver().mem_free(reinterpret_cast<CuDevicePtr>(block.data));
  };
  host_ = FencedPool::create(std::move(pinned), kMaxIdleBytes);
  device_ = FencedPool::create(std::move(device), kMaxIdleBytes);
}

bool DeviceStaging::take_pinning_failure(std::string& reason) {
  if (!pinning_failed_.load(std::memory_order_acquire)) return false;
  if (pinning_failure_reported_.exchange(true)) return false;
  std::lock_guard<std::mutex> lock(reason_mutex_);
  reason = pinning_error_;
  return true;
}

}  // namespace pyloader
