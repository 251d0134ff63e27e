// Destination memory handed to a pipeline by its owner, one block per batch.
//
// Pinned host memory and device memory come from the framework's own allocators
// (which track their use across streams); the pipeline's threads cannot call those, so
// the owner allocates blocks ahead of need and supplies them here, each with a token
// that names it when the batch written into it is delivered.
//
// Contract:
//   * The owner keeps every supplied block's memory alive until the pipeline that
//     takes from it is destroyed, or the block comes back by token (delivered or
//     discarded); SuppliedBlocks never frees memory.
//   * take(bytes) removes and returns the oldest block of at least `bytes`, or nothing.
//   * Thread-safe: the owner supplies on its thread while pipeline threads take.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <vector>

namespace pyloader {

struct SuppliedBlock {
  std::byte* data = nullptr;  // a host address, or a device address for device blocks
  std::size_t bytes = 0;
  std::uint64_t token = 0;    // the owner's name for it; never 0
};

class SuppliedBlocks {
 public:
  void supply(SuppliedBlock block);
  std::optional<SuppliedBlock> take(std::size_t bytes);
  // Puts back a block that was taken but not used (its batch failed).
  void give_back(SuppliedBlock block);
  // Removes the blocks smaller than `bytes` (they fit no batch any more) and returns
  // their tokens, for the owner to free.
  std::vector<std::uint64_t> discard_smaller_than(std::size_t bytes);
  // Removes every block and returns their tokens.
  std::vector<std::uint64_t> clear();
  std::size_t size() const;

 private:
  mutable std::mutex mutex_;
  std::deque<SuppliedBlock> blocks_;
};

}  // namespace pyloader
