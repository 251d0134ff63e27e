#include "permutation.hpp"

#include "block_order.hpp"

#include <algorithm>
#include <utility>

namespace pyloader {
namespace {

// splitmix64's finaliser: a cheap mixer with full avalanche, good enough for round
// functions (we need decorrelation between positions, not cryptographic strength).
std::uint64_t avalanche(std::uint64_t x) noexcept {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// The network on `lanes` independent values at once (their dependency chains overlap).
// value = high << low_bits | low. A round hashes the low part into the high one and
// rotates: the result is low << high_bits | (high + F(low)), whose split is the other
// way round, so the widths swap every round; rounds therefore come in pairs.
template <std::size_t lanes, std::size_t rounds>
inline void apply_rounds(std::uint64_t* values, unsigned high_bits, unsigned low_bits,
                         const std::array<std::uint64_t, rounds>& keys) noexcept {
  static_assert(rounds % 2 == 0, "the split must be back to (high, low) at the end");
  const std::uint64_t high_mask = (std::uint64_t{1} << high_bits) - 1;
  const std::uint64_t low_mask = (std::uint64_t{1} << low_bits) - 1;
  for (std::size_t r = 0; r < rounds; r += 2) {
    for (std::size_t lane = 0; lane < lanes; ++lane) {
      std::uint64_t value = values[lane];
      std::uint64_t low = value & low_mask;
      value = (low << high_bits) | (((value >> low_bits) + avalanche(low ^ keys[r])) & high_mask);
      low = value & high_mask;
      values[lane] = (low << low_bits) | (((value >> high_bits) + avalanche(low ^ keys[r + 1])) & low_mask);
    }
  }
}

unsigned bits_needed(std::uint64_t size) noexcept {
  unsigned bits = 0;
  while (bits < 64 && (std::uint64_t{1} << bits) < size) ++bits;
  return bits;
}

}  // namespace

std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t stream) noexcept {
  return avalanche(avalanche(seed + 0x9e3779b97f4a7c15ULL) ^ (stream * 0xd1b54a32d192ed03ULL));
}

FeistelPermutation::FeistelPermutation(std::uint64_t size, std::uint64_t seed) noexcept : size_(size) {
  // At least 2 bits, so that both parts have one and the network is defined for size <= 2.
  const unsigned bits = std::max(2U, bits_needed(size));
  high_bits_ = bits - bits / 2;
  low_bits_ = bits / 2;
  std::uint64_t state = seed;
  for (auto& key : round_keys_) {
    state += 0x9e3779b97f4a7c15ULL;
    key = avalanche(state);
  }
}

std::uint64_t FeistelPermutation::encrypt(std::uint64_t value) const noexcept {
  apply_rounds<1>(&value, high_bits_, low_bits_, round_keys_);
  return value;
}

std::uint64_t FeistelPermutation::operator()(std::uint64_t position) const noexcept {
  // Cycle-walking: encrypting repeatedly until the value lands inside [0, size)
  // restricts a bijection of the larger domain to a bijection of [0, size).
  std::uint64_t value = encrypt(position);
  while (value >= size_) value = encrypt(value);
  return value;
}

void FeistelPermutation::apply(std::uint64_t* values, std::size_t count) const noexcept {
  constexpr std::size_t kLanes = 8;
  std::size_t k = 0;
  for (; k + kLanes <= count; k += kLanes) {
    apply_rounds<kLanes>(values + k, high_bits_, low_bits_, round_keys_);
    for (std::size_t lane = 0; lane < kLanes; ++lane) {
      while (values[k + lane] >= size_) values[k + lane] = encrypt(values[k + lane]);
    }
  }
  for (; k < count; ++k) values[k] = (*this)(values[k]);
}

std::uint64_t IndexOrder::block_row(std::uint64_t base) const noexcept { return (*blocks_)(base); }

IndexOrder IndexOrder::block_shuffled(std::uint64_t rows, std::uint64_t seed, std::uint64_t block_rows,
                                      std::uint64_t window_blocks) {
  IndexOrder order{rows, seed, true};
  order.blocks_ = std::make_shared<const BlockShuffle>(rows, block_rows, window_blocks, seed);
  return order;
}

bool IndexOrder::block_window(std::uint64_t position, BlockWindow& window) const noexcept {
  if (!blocks_ || stride_ != 1) return false;
  const std::uint64_t base = base_position(position);
  BlockWindow found = blocks_->window(base);
  // Stride 1: this order's position p is base (offset + p) mod rows, so the window's
  // positions lie base - found.first before and found.end - base after `position`.
  const std::uint64_t before = base - found.first, after = found.end - base;
  found.first = position >= before ? position - before : 0;
  found.end = size_ - position > after ? position + after : size_;
  window = found;
  return true;
}

RowRange IndexOrder::window_block(const BlockWindow& window, std::uint64_t k) const noexcept {
  return blocks_->window_block(window, k);
}

void IndexOrder::fill(std::uint64_t first, std::size_t count, std::int64_t* out) const noexcept {
  auto* values = reinterpret_cast<std::uint64_t*>(out);  // same size; every value < 2^63
  for (std::size_t k = 0; k < count; ++k) values[k] = base_position(first + k);
  if (!shuffled_) return;
  if (blocks_) {
    for (std::size_t k = 0; k < count; ++k) values[k] = (*blocks_)(values[k]);
    return;
  }
  if (table_) {
    for (std::size_t k = 0; k < count; ++k) values[k] = (*table_)[values[k]];
    return;
  }
  permutation_.apply(values, count);
}

IndexOrder IndexOrder::sequential(std::uint64_t rows) noexcept { return {rows, 0, false}; }

// FeistelPermutation is still built for tabled orders: it is cheap and keeps rows().

IndexOrder IndexOrder::shuffled(std::uint64_t rows, std::uint64_t seed) {
  IndexOrder order{rows, seed, true};
  if (rows <= kTableRows) {
    auto table = std::make_shared<std::vector<std::uint32_t>>(rows);
    for (std::uint32_t k = 0; k < rows; ++k) (*table)[k] = k;
    std::uint64_t state = mix_seed(seed, 0x7461626c65ULL);  // a stream apart from Feistel's keys
    for (std::uint64_t k = rows; k > 1; --k) {
      state += 0x9e3779b97f4a7c15ULL;
      // Multiply-shift maps a 64-bit draw onto [0, k) with bias below k / 2^64.
      const auto pick = static_cast<std::uint64_t>((static_cast<uint128>(avalanche(state)) * k) >> 64);
      std::swap((*table)[k - 1], (*table)[pick]);
    }
    order.table_ = std::move(table);
  }
  return order;
}

IndexOrder IndexOrder::strided(std::uint64_t offset, std::uint64_t stride, std::uint64_t count) const {
  if (stride == 0) throw std::invalid_argument("stride must be positive");
  if (count > 0 && rows() == 0) throw std::invalid_argument("cannot take positions of an empty order");
  IndexOrder result = *this;
  result.size_ = count;
  if (rows() == 0) return result;
  // Compose with this order's own striding; everything is modulo rows(), so reduce
  // once here and the per-position arithmetic stays in 128 bits.
  const uint128 n = rows();
  result.offset_ = static_cast<std::uint64_t>((static_cast<uint128>(offset) * stride_ + offset_) % n);
  result.stride_ = static_cast<std::uint64_t>((static_cast<uint128>(stride) * stride_) % n);
  if (result.stride_ == 0) result.stride_ = static_cast<std::uint64_t>(n);  // keeps p*stride = 0 mod n
  return result;
}

}  // namespace pyloader
