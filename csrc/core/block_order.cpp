#include "block_order.hpp"

#include <algorithm>

namespace pyloader {
namespace {

// Streams of the seed apart from the block order's own (the seed itself).
constexpr std::uint64_t kTailPlaceStream = 0x7461696cULL;   // where the tail's window goes
constexpr std::uint64_t kTailShuffleStream = 0x73687566ULL;  // the tail's rows among themselves

}  // namespace

BlockShuffle::BlockShuffle(std::uint64_t rows, std::uint64_t block_rows, std::uint64_t window_blocks,
                           std::uint64_t seed)
    : rows_(rows),
      block_rows_(block_rows),
      window_blocks_(window_blocks),
      seed_(seed),
      full_blocks_(block_rows == 0 ? 0 : rows / block_rows),
      tail_rows_(block_rows == 0 ? 0 : rows % block_rows),
      tail_start_(0),
      blocks_(IndexOrder::shuffled(full_blocks_, seed)) {
  if (block_rows == 0 || window_blocks == 0) {
    throw std::invalid_argument("block_rows and window_blocks must be at least 1");
  }
  if (tail_rows_ != 0) {
    // The windows of full blocks all hold window_blocks blocks but the last; the tail's
    // window goes before any of them, or after the last.
    const std::uint64_t windows = (full_blocks_ + window_blocks - 1) / window_blocks;
    const std::uint64_t place = mix_seed(seed, kTailPlaceStream) % (windows + 1);
    tail_start_ = place < windows ? place * window_blocks * block_rows : full_blocks_ * block_rows;
  }
}

std::uint64_t BlockShuffle::operator()(std::uint64_t position) const noexcept {
  if (tail_rows_ != 0 && position >= tail_start_) {
    if (position < tail_start_ + tail_rows_) {
      const FeistelPermutation tail(tail_rows_, mix_seed(seed_, kTailShuffleStream));
      return full_blocks_ * block_rows_ + tail(position - tail_start_);
    }
    position -= tail_rows_;
  }
  const std::uint64_t window_positions = window_blocks_ * block_rows_;
  const std::uint64_t window = position / window_positions;
  const std::uint64_t first_block = window * window_blocks_;
  const std::uint64_t blocks = std::min(window_blocks_, full_blocks_ - first_block);
  // Window 0 uses stream 1, and so on: stream 0 would share the block order's keys.
  const FeistelPermutation within(blocks * block_rows_, mix_seed(seed_, window + 1));
  const std::uint64_t offset = within(position % window_positions);
  return blocks_(first_block + offset / block_rows_) * block_rows_ + offset % block_rows_;
}

BlockWindow BlockShuffle::window(std::uint64_t position) const noexcept {
  BlockWindow window;
  if (tail_rows_ != 0 && position >= tail_start_ && position < tail_start_ + tail_rows_) {
    window.first = window.id = tail_start_;
    window.end = tail_start_ + tail_rows_;
    window.blocks = 1;
    window.tail = true;
    return window;
  }
  // As in operator(): positions after the tail's window come tail_rows_ later. The
  // tail's window starts at a window boundary, so no window straddles it.
  const std::uint64_t shift = tail_rows_ != 0 && position >= tail_start_ ? tail_rows_ : 0;
  const std::uint64_t window_positions = window_blocks_ * block_rows_;
  const std::uint64_t index = (position - shift) / window_positions;
  window.first_block = index * window_blocks_;
  window.blocks = std::min(window_blocks_, full_blocks_ - window.first_block);
  window.first = window.id = index * window_positions + shift;
  window.end = window.first + window.blocks * block_rows_;
  return window;
}

RowRange BlockShuffle::window_block(const BlockWindow& window, std::uint64_t k) const noexcept {
  if (window.tail) return RowRange{full_blocks_ * block_rows_, tail_rows_};
  return RowRange{blocks_(window.first_block + k) * block_rows_, block_rows_};
}

}  // namespace pyloader
