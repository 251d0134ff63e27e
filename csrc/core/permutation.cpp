#include "permutation.hpp"

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

unsigned bits_needed(std::uint64_t size) noexcept {
  unsigned bits = 0;
  while (bits < 64 && (std::uint64_t{1} << bits) < size) ++bits;
  return bits;
}

}  // namespace

std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t stream) noexcept {
  return avalanche(avalanche(seed + 0x9e3779b97f4a7c15ULL) ^ (stream * 0xd1b54a32d192ed03ULL));
}

FeistelPermutation::FeistelPermutation(std::uint64_t size, std::uint64_t seed) noexcept
    : size_(size) {
  // A balanced Feistel network needs an even bit count; at least 2 bits so the
  // network is defined for size <= 2. The domain is then < 4 * size, which bounds the
  // expected cycle-walking steps by 4.
  const unsigned bits = bits_needed(size);
  half_bits_ = bits < 2 ? 1 : (bits + 1) / 2;
  half_mask_ = (std::uint64_t{1} << half_bits_) - 1;
  std::uint64_t state = seed;
  for (auto& key : round_keys_) {
    state += 0x9e3779b97f4a7c15ULL;
    key = avalanche(state);
  }
}

std::uint64_t FeistelPermutation::encrypt(std::uint64_t value) const noexcept {
  std::uint64_t left = value >> half_bits_;
  std::uint64_t right = value & half_mask_;
  for (const std::uint64_t key : round_keys_) {
    const std::uint64_t mixed = (left + avalanche(right ^ key)) & half_mask_;
    left = right;
    right = mixed;
  }
  return (left << half_bits_) | right;
}

std::uint64_t FeistelPermutation::operator()(std::uint64_t position) const noexcept {
  // Cycle-walking: encrypting repeatedly until the value lands inside [0, size)
  // restricts a bijection of the larger domain to a bijection of [0, size).
  std::uint64_t value = encrypt(position);
  while (value >= size_) value = encrypt(value);
  return value;
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

IndexOrder IndexOrder::strided(std::uint64_t offset, std::uint64_t stride,
                               std::uint64_t count) const {
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
