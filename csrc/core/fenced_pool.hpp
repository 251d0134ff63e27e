// Recycled memory blocks whose reuse waits for device work.
//
// Pinned host blocks are reused once the copy reading them has finished, device blocks
// once the consumer's work on them has: each block comes back with a fence and is
// handed out again only when that fence is done. Blocks are allocated only when no
// idle one fits, so a steady loader allocates nothing per batch.
//
// Contract:
//   * A FencedPool owns its idle blocks and frees them (through `Memory::free`) when
//     it is destroyed; a block handed out is owned by its PooledBlock, which keeps the
//     pool alive and returns the block when destroyed, on whichever thread drops it.
//   * acquire(bytes) reuses the idle block of at least `bytes` that was returned first,
//     if its fence is done (else that block moves to the back of the line), or
//     allocates (throwing what Memory::allocate throws): the pool grows to what the
//     streams keep busy rather than wait.
//   * Idle blocks are kept while there are at most kMinIdle of them or they hold at
//     most max_idle_bytes; beyond that, returned blocks whose fence is done are freed.
//   * Thread-safe. In a forked child nothing is freed or reused: the parent's device
//     memory is not the child's.
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "device_copier.hpp"
#include "process_owner.hpp"

namespace pyloader {

class FencedPool : public std::enable_shared_from_this<FencedPool> {
 public:
  struct Block {
    std::byte* data = nullptr;
    std::size_t bytes = 0;
    bool fallback = false;  // allocated by Memory's fallback (e.g. pageable instead of pinned)
  };
  struct Memory {
    std::function<Block(std::size_t bytes)> allocate;
    std::function<void(const Block& block)> free;
  };
  static constexpr std::size_t kMinIdle = 8;

  static std::shared_ptr<FencedPool> create(Memory memory, std::size_t max_idle_bytes);
  ~FencedPool();
  FencedPool(const FencedPool&) = delete;
  FencedPool& operator=(const FencedPool&) = delete;

  class Lease;
  std::shared_ptr<Lease> acquire(std::size_t bytes);

  // Blocks allocated so far (for tests: a steady loader stops allocating).
  std::size_t allocations() const;

 private:
  struct Idle {
    Block block;
    std::shared_ptr<const CopyFence> after;
  };
  FencedPool(Memory memory, std::size_t max_idle_bytes) : memory_(std::move(memory)), max_idle_bytes_(max_idle_bytes) {}
  void release(const Block& block, std::shared_ptr<const CopyFence> after) noexcept;
  static bool done(const std::shared_ptr<const CopyFence>& fence) noexcept;

  Memory memory_;
  std::size_t max_idle_bytes_;
  mutable std::mutex mutex_;
  std::deque<Idle> idle_;  // oldest first
  std::size_t idle_bytes_ = 0;
  std::size_t allocations_ = 0;
  ProcessOwner owner_;
};

// One block of a FencedPool, returned to it when destroyed: reusable once the fence
// named by release_after() is done, or, after release_after_work_on(), once the work
// queued on that stream until the moment of return is done (the lease records that
// fence as it dies). abandon() leaks the block (a copy may still use it).
class FencedPool::Lease {
 public:
  Lease(std::shared_ptr<FencedPool> pool, Block block) noexcept : pool_(std::move(pool)), block_(block) {}
  ~Lease();
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  std::byte* data() const noexcept { return block_.data; }
  std::size_t bytes() const noexcept { return block_.bytes; }
  bool fallback() const noexcept { return block_.fallback; }

  void release_after(std::shared_ptr<const CopyFence> fence) noexcept { after_ = std::move(fence); }
  void release_after_work_on(std::shared_ptr<const DeviceCopier> recorder, CuStream stream) noexcept {
    recorder_ = std::move(recorder);
    stream_ = stream;
  }
  void abandon() noexcept { abandoned_ = true; }

 private:
  std::shared_ptr<FencedPool> pool_;
  Block block_;
  std::shared_ptr<const CopyFence> after_;
  std::shared_ptr<const DeviceCopier> recorder_;
  CuStream stream_ = nullptr;
  bool abandoned_ = false;
};

}  // namespace pyloader
