#include "supplied_blocks.hpp"

namespace pyloader {

void SuppliedBlocks::supply(SuppliedBlock block) {
  std::lock_guard<std::mutex> lock(mutex_);
  blocks_.push_back(block);
}

std::optional<SuppliedBlock> SuppliedBlocks::take(std::size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = blocks_.begin(); it != blocks_.end(); ++it) {
    if (it->bytes >= bytes) {
      SuppliedBlock block = *it;
      blocks_.erase(it);
      return block;
    }
  }
  return std::nullopt;
}

void SuppliedBlocks::give_back(SuppliedBlock block) {
  std::lock_guard<std::mutex> lock(mutex_);
  blocks_.push_front(block);
}

std::vector<std::uint64_t> SuppliedBlocks::discard_smaller_than(std::size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::uint64_t> tokens;
  std::deque<SuppliedBlock> kept;
  for (const SuppliedBlock& block : blocks_) {
    if (block.bytes < bytes) {
      tokens.push_back(block.token);
    } else {
      kept.push_back(block);
    }
  }
  blocks_.swap(kept);
  return tokens;
}

std::vector<std::uint64_t> SuppliedBlocks::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::uint64_t> tokens;
  for (const SuppliedBlock& block : blocks_) tokens.push_back(block.token);
  blocks_.clear();
  return tokens;
}

std::size_t SuppliedBlocks::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return blocks_.size();
}

}  // namespace pyloader
