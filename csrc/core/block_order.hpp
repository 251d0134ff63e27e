// Locality-aware shuffle for data far larger than RAM.
//
// A BlockShuffle is a bijection of [0, rows) onto itself, a pure function of (rows,
// block_rows, window_blocks, seed, position) with O(1) memory: the rows are cut into
// blocks of `block_rows` consecutive rows, the blocks are visited in a shuffled order,
// `window_blocks` of them at a time, and the rows of each such window are shuffled among
// themselves. A batch then draws from a few blocks (reads that are large and close
// together) while an epoch still visits every row exactly once. The rows of a last,
// shorter block form a window of their own, placed among the others by the seed.
//
// Contract: immutable after construction, so concurrent calls are safe; block_rows and
// window_blocks are at least 1 (checked: std::invalid_argument). Precondition of
// operator(): position < rows.
#pragma once

#include <cstdint>

#include "permutation.hpp"

namespace pyloader {

class BlockShuffle {
 public:
  BlockShuffle(std::uint64_t rows, std::uint64_t block_rows, std::uint64_t window_blocks, std::uint64_t seed);

  std::uint64_t operator()(std::uint64_t position) const noexcept;

  // The window holding `position` (< rows()), in this shuffle's positions: positions
  // [first, end) visit exactly the rows of its `blocks` blocks, and the windows of an
  // epoch visit every block once (the tail's window holds the short block alone). O(1).
  BlockWindow window(std::uint64_t position) const noexcept;
  // Rows of block k (< window.blocks) of `window` (returned by window() of this shuffle).
  RowRange window_block(const BlockWindow& window, std::uint64_t k) const noexcept;

  std::uint64_t rows() const noexcept { return rows_; }
  std::uint64_t block_rows() const noexcept { return block_rows_; }
  std::uint64_t window_blocks() const noexcept { return window_blocks_; }

 private:
  std::uint64_t rows_, block_rows_, window_blocks_, seed_;
  std::uint64_t full_blocks_;  // blocks of block_rows rows
  std::uint64_t tail_rows_;    // rows of the last, shorter block (0: none)
  std::uint64_t tail_start_;   // first position of the tail's window
  IndexOrder blocks_;          // the order in which full blocks are visited
};

}  // namespace pyloader
