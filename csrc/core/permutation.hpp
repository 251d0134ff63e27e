// Index order as a pure function of (size, seed, position).
//
// Contract:
//   * FeistelPermutation is a bijection of [0, size) onto itself: a keyed Feistel
//     network over the smallest power-of-two domain holding `size` (split into a high
//     and a low part whose widths differ by at most one bit and swap every round),
//     restricted to [0, size) by cycle-walking. The domain is below 2 * size, so a
//     position costs fewer than 2 network evaluations on average, O(1) memory.
//   * Rounds add the round function modulo 2^width instead of xoring it: an xor
//     network over equal halves is always an even permutation of its domain,
//     whatever the keys, which a caller can observe; addition reaches both parities.
//   * Objects are immutable after construction: concurrent calls from any number of
//     threads are safe.
//   * Precondition of operator(): position < size(). Callers check; the permutation
//     does not (it sits on the gather hot path).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

namespace pyloader {

class BlockShuffle;

// 128-bit products keep position * stride exact for any 64-bit operands.
__extension__ using uint128 = unsigned __int128;

// Derives an independent 64-bit stream seed from (seed, stream); used to give every
// epoch its own permutation without storing anything per epoch.
std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t stream) noexcept;

class FeistelPermutation {
 public:
  FeistelPermutation(std::uint64_t size, std::uint64_t seed) noexcept;

  std::uint64_t size() const noexcept { return size_; }
  std::uint64_t operator()(std::uint64_t position) const noexcept;

  // Replaces values[k] (each < size()) by its image, for k < count. Same results as
  // operator(); evaluates several positions at once so their rounds overlap.
  void apply(std::uint64_t* values, std::size_t count) const noexcept;

 private:
  // Luby-Rackoff needs 4 rounds of a random round function; 6 leave a margin for a
  // cheap mixer. Even, so the split is back to (high, low) after the last round.
  static constexpr int kRounds = 6;

  std::uint64_t encrypt(std::uint64_t value) const noexcept;

  std::uint64_t size_;
  unsigned high_bits_;  // width of the part the first round adds into
  unsigned low_bits_;   // width of the part the first round hashes
  std::array<std::uint64_t, kRounds> round_keys_;
};

// A window of a block shuffle (block_order.hpp): a run of consecutive positions whose
// rows are exactly the rows of `blocks` whole blocks, each block a run of consecutive
// rows. Filled by BlockShuffle::window() and IndexOrder::block_window(); read its blocks
// with the same object's window_block().
struct BlockWindow {
  std::uint64_t first = 0, end = 0;  // positions [first, end) of the order asked
  std::uint64_t blocks = 0;          // blocks the window holds (at least 1)
  // The window's first position in the block shuffle itself: within one shuffle,
  // distinct windows have distinct ids (a rank's share keeps the shuffle's ids).
  std::uint64_t id = 0;
  std::uint64_t first_block = 0;  // where its blocks start in the block visiting order
  bool tail = false;              // the window of the last, shorter block
};

// Rows [first, first + rows) of the source.
struct RowRange {
  std::uint64_t first = 0, rows = 0;
};

// Which row comes at each position of an epoch: the single place where sample order is
// decided for native samplers. A base order over `rows` rows is the identity or a
// seeded shuffle: up to kTableRows rows an explicit Fisher-Yates table (a Feistel
// network over a few bits reaches only a biased subset of the permutations), above
// that a Feistel permutation in O(1) memory, or a block shuffle (block_order.hpp);
// strided() then selects every stride-th position from an
// offset, wrapping past the end, which is exactly how torch's DistributedSampler pads
// and shards an epoch. Position p maps to base((offset + p * stride) mod rows).
// Immutable and cheap to copy; thread-safe.
class IndexOrder {
 public:
  // Largest size shuffled through a table: 256 KiB, shared by copies of the order.
  static constexpr std::uint64_t kTableRows = std::uint64_t{1} << 16;

  static IndexOrder sequential(std::uint64_t rows) noexcept;
  static IndexOrder shuffled(std::uint64_t rows, std::uint64_t seed);
  // A locality-aware shuffle (see block_order.hpp). Throws std::invalid_argument for
  // block_rows or window_blocks 0.
  static IndexOrder block_shuffled(std::uint64_t rows, std::uint64_t seed, std::uint64_t block_rows,
                                   std::uint64_t window_blocks);

  // `count` positions of this order: offset, offset + stride, ... (in this order's
  // positions, wrapping modulo rows()). Throws std::invalid_argument for stride 0, or
  // for count > 0 over zero rows.
  IndexOrder strided(std::uint64_t offset, std::uint64_t stride, std::uint64_t count) const;

  std::uint64_t size() const noexcept { return size_; }
  std::uint64_t rows() const noexcept { return permutation_.size(); }
  bool is_shuffled() const noexcept { return shuffled_; }

  // Precondition: position < size().
  std::uint64_t operator()(std::uint64_t position) const noexcept {
    const std::uint64_t base = base_position(position);
    if (!shuffled_) return base;
    if (blocks_) return block_row(base);
    return table_ ? (*table_)[base] : permutation_(base);
  }

  // Block-shuffled orders taken with stride 1 (the whole epoch, or a rank's contiguous
  // share: strided(start, 1, count)): sets `window` to the block-shuffle window holding
  // position `position`, its first and end in this order's positions, clipped to
  // [0, size()) (a share may begin or end inside a window; a share padded past the end
  // of the epoch meets its first windows again, with their ids), and returns true. O(1).
  // False, leaving `window` as it was, for any other order (stride other than 1: each
  // window's positions would be spread over several ranks). Precondition: position < size().
  bool block_window(std::uint64_t position, BlockWindow& window) const noexcept;
  // Rows of block k (< window.blocks) of a window that block_window() of this order (or
  // of any order over the same block shuffle) returned.
  RowRange window_block(const BlockWindow& window, std::uint64_t k) const noexcept;
  // Whether both are block-shuffled orders over one block shuffle object (copies of an
  // order, or strided() of it) with the same positions: then their windows are the same.
  bool same_block_order(const IndexOrder& other) const noexcept {
    return blocks_ != nullptr && blocks_ == other.blocks_ && offset_ == other.offset_ && stride_ == other.stride_ &&
           size_ == other.size_;
  }

  // out[k] = (*this)(first + k) for k < count, faster than one call per position.
  // Precondition: first + count <= size().
  void fill(std::uint64_t first, std::size_t count, std::int64_t* out) const noexcept;

 private:
  std::uint64_t base_position(std::uint64_t position) const noexcept {
    if (stride_ != 1 || offset_ != 0 || size_ > rows()) {
      return static_cast<std::uint64_t>((static_cast<uint128>(position) * stride_ + offset_) % rows());
    }
    return position;
  }

  IndexOrder(std::uint64_t rows, std::uint64_t seed, bool shuffled) noexcept
      : permutation_(rows, seed), shuffled_(shuffled), size_(rows) {}

  std::uint64_t block_row(std::uint64_t base) const noexcept;

  FeistelPermutation permutation_;
  std::shared_ptr<const std::vector<std::uint32_t>> table_;  // small shuffles only
  std::shared_ptr<const BlockShuffle> blocks_;               // block shuffles only
  bool shuffled_;
  std::uint64_t offset_ = 0;  // reduced modulo rows()
  std::uint64_t stride_ = 1;  // reduced modulo rows() (rows() itself when it divides it)
  std::uint64_t size_;
};

}  // namespace pyloader
