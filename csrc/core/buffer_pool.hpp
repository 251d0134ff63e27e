// Recycling allocator for batch buffers.
//
// Contract:
//   * Blocks are page aligned and a whole number of pages long, so a block can later be
//     registered with a device driver for pinned transfers.
//   * acquire(bytes) reuses an idle block of at least `bytes` or allocates one; it hands
//     out a block as a shared_ptr. The block returns to the pool when
//     the last copy of that shared_ptr dies, on whichever thread drops it; the pool
//     itself stays alive until then (each block holds a reference to it).
//   * At most `max_idle` blocks are kept for reuse; surplus returned blocks are freed,
//     so memory stays bounded by what the consumer still holds plus `max_idle`.
//   * Thread-safe. In a forked child, blocks from the parent's pool are freed directly
//     and the idle list is left alone (a parent thread may have held its lock).
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "process_owner.hpp"

namespace pyloader {

class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  static std::shared_ptr<BufferPool> create(std::size_t max_idle);
  ~BufferPool();

  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  std::shared_ptr<std::byte> acquire(std::size_t bytes);

 private:
  struct Block {
    std::byte* data;
    std::size_t bytes;
  };

  explicit BufferPool(std::size_t max_idle);
  void release(Block block) noexcept;

  std::size_t max_idle_;
  std::mutex mutex_;
  std::vector<Block> idle_;
  ProcessOwner owner_;
};

}  // namespace pyloader
