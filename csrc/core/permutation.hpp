// Index order as a pure function of (size, seed, position).
//
// Contract:
//   * FeistelPermutation is a bijection of [0, size) onto itself; evaluating one
//     position costs O(1) expected time (a few rounds, cycle-walking over a domain
//     smaller than 4 * size) and the object holds O(1) memory, whatever `size` is.
//   * Objects are immutable after construction: concurrent calls from any number of
//     threads are safe.
//   * Precondition of operator(): position < size(). Callers check; the permutation
//     does not (it sits on the gather hot path).
#pragma once

#include <array>
#include <cstdint>

namespace pyloader {

// Derives an independent 64-bit stream seed from (seed, stream); used to give every
// epoch its own permutation without storing anything per epoch.
std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t stream) noexcept;

class FeistelPermutation {
 public:
  FeistelPermutation(std::uint64_t size, std::uint64_t seed) noexcept;

  std::uint64_t size() const noexcept { return size_; }
  std::uint64_t operator()(std::uint64_t position) const noexcept;

 private:
  static constexpr int kRounds = 4;  // Luby-Rackoff: 4 rounds of a good round function give a strong permutation

  std::uint64_t encrypt(std::uint64_t value) const noexcept;

  std::uint64_t size_;
  unsigned half_bits_;
  std::uint64_t half_mask_;
  std::array<std::uint64_t, kRounds> round_keys_;
};

// Either the identity (sequential order) or a seeded Feistel shuffle; the single
// place where "which row comes at position p" is decided for native samplers.
class IndexOrder {
 public:
  static IndexOrder sequential(std::uint64_t size) noexcept;
  static IndexOrder shuffled(std::uint64_t size, std::uint64_t seed) noexcept;

  std::uint64_t size() const noexcept { return permutation_.size(); }
  bool is_shuffled() const noexcept { return shuffled_; }
  std::uint64_t operator()(std::uint64_t position) const noexcept {
    return shuffled_ ? permutation_(position) : position;
  }

 private:
  IndexOrder(std::uint64_t size, std::uint64_t seed, bool shuffled) noexcept
      : permutation_(size, seed), shuffled_(shuffled) {}

  FeistelPermutation permutation_;
  bool shuffled_;
};

}  // namespace pyloader
