// The owner's side of supplying host blocks to a pipeline (see SuppliedBlocks): what
// holds each supplied block's memory, by token, and how many blocks of which size to
// keep supplied.
//
// A block's memory must outlive its use by the pipeline's threads, which may take it
// long after it was supplied, and the owner learns which block a delivered batch was
// gathered into only by its token. The ledger keeps what holds each block (a framework
// tensor) from supply until the block comes back with its batch (take()) or no longer
// fits (discarded by top_up()).
//
// Contract:
//   * Ownership: holds one `Held` per block supplied and not yet taken back; shares the
//     SuppliedBlocks queue with the pipeline.
//   * Thread safety: none of its own; for the owner's thread (which, for Python
//     objects, holds the GIL). The queue it supplies to is thread-safe.
//   * Tokens are never 0 and never reused within one ledger.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "supplied_blocks.hpp"

namespace pyloader {

template <typename Held>
class SupplyLedger {
 public:
  // One block an allocator made: its memory and what keeps the memory alive.
  struct Allocation {
    Held held;
    std::byte* data = nullptr;
    std::size_t bytes = 0;
  };

  explicit SupplyLedger(std::shared_ptr<SuppliedBlocks> blocks) : blocks_(std::move(blocks)) {}

  const std::shared_ptr<SuppliedBlocks>& blocks() const noexcept { return blocks_; }

  // Keeps `wanted` blocks of at least `bytes` held (those a pipeline took and has not
  // delivered yet count): drops the blocks too small for such batches, then supplies
  // `allocate(bytes)` (a std::optional<Allocation>; nothing when the allocator declines,
  // which ends the top-up) until `wanted` are held. `bytes` 0 (not known yet) supplies
  // nothing. Throws std::invalid_argument when an allocation is smaller than asked.
  template <typename Allocate>
  void top_up(std::size_t bytes, std::size_t wanted, Allocate&& allocate) {
    if (bytes == 0) return;
    for (std::uint64_t token : blocks_->discard_smaller_than(bytes)) held_.erase(token);
    while (held_.size() < wanted) {
      std::optional<Allocation> block = allocate(bytes);
      if (!block) return;
      if (block->bytes < bytes) {
        throw std::invalid_argument("the allocator returned " + std::to_string(block->bytes) + " bytes, " +
                                    std::to_string(bytes) + " were asked for");
      }
      const std::uint64_t token = next_token_++;
      held_.emplace(token, std::move(block->held));
      blocks_->supply(SuppliedBlock{block->data, block->bytes, token});
    }
  }

  // What held the block of `token` (delivered with a batch), no longer held here; a
  // default Held for token 0 (no block) or a token not held.
  Held take(std::uint64_t token) {
    auto found = held_.find(token);
    if (found == held_.end()) return Held{};
    Held held = std::move(found->second);
    held_.erase(found);
    return held;
  }

  // Lets go of every block: the pipeline that could take them is gone.
  void forget_all() { held_.clear(); }

  std::size_t size() const noexcept { return held_.size(); }

 private:
  std::shared_ptr<SuppliedBlocks> blocks_;
  std::map<std::uint64_t, Held> held_;
  std::uint64_t next_token_ = 1;
};

}  // namespace pyloader
