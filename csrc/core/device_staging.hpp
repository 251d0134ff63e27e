// Everything a loader needs to deliver batches on one CUDA device: a copier with a
// stream of its own, a pool of pinned host blocks that batches are gathered into, and
// a pool of device blocks they are copied to. Shared by every pipeline (epoch) of one
// loader, so blocks are allocated once and reused across epochs.
//
// Contract:
//   * Memory comes from the driver (cuMemHostAlloc, cuMemAlloc) in the device's
//     primary context, outside the framework's caching allocators; it is freed when
//     the last pipeline, batch and tensor using the pools is gone.
//   * If pinned memory cannot be allocated (container limits, `ulimit -l`), host blocks
//     fall back to pageable memory from then on; take_pinning_failure() reports that
//     once (the copies then still run, synchronously for the host).
//   * Device memory running out (CUDA_ERROR_OUT_OF_MEMORY) throws std::bad_alloc, which
//     a pipeline treats as a batch to gather again, not as the batch's failure.
//   * Thread-safe; blocks follow FencedPool's contract.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>

#include "device_copier.hpp"
#include "fenced_pool.hpp"

namespace pyloader {

class DeviceStaging {
 public:
  // Idle bytes each pool keeps for reuse at most (beyond a few blocks): enough for a
  // prefetch depth of large batches, since freeing and allocating pinned or device
  // memory takes milliseconds and stalls the device.
  static constexpr std::size_t kMaxIdleBytes = std::size_t{1} << 30;

  DeviceStaging(std::shared_ptr<const CudaDriver> driver, int ordinal);
  DeviceStaging(const DeviceStaging&) = delete;
  DeviceStaging& operator=(const DeviceStaging&) = delete;

  const std::shared_ptr<const DeviceCopier>& copier() const noexcept { return copier_; }
  std::shared_ptr<FencedPool::Lease> host_block(std::size_t bytes) { return host_->acquire(bytes); }
  std::shared_ptr<FencedPool::Lease> device_block(std::size_t bytes) { return device_->acquire(bytes); }
  // True once, after host blocks first fell back to pageable memory; `reason` is the
  // driver's error.
  bool take_pinning_failure(std::string& reason);
  std::size_t allocations() const { return host_->allocations() + device_->allocations(); }

 private:
  std::shared_ptr<const DeviceCopier> copier_;
  std::shared_ptr<FencedPool> host_, device_;
  std::atomic<bool> pinning_failed_{false}, pinning_failure_reported_{false};
  std::mutex reason_mutex_;
  std::string pinning_error_;  // written once, before pinning_failed_ is set
};

}  // namespace pyloader
