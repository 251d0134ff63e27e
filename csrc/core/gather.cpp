#include "gather.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>

namespace pyloader {
namespace {

// How many rows ahead to issue software prefetches. Random rows miss every cache
// level; keeping several misses in flight is what makes a gather memory-parallel.
constexpr std::size_t kPrefetchDistance = 8;
constexpr std::int64_t kCacheLine = 64;
// Prefetch the head of each row only; the hardware streamer follows longer rows.
constexpr std::int64_t kPrefetchBytes = 512;

inline void prefetch_row(const std::byte* row, std::int64_t row_bytes) noexcept {
  const std::int64_t limit = std::min(row_bytes, kPrefetchBytes);
  for (std::int64_t offset = 0; offset < limit; offset += kCacheLine) {
    __builtin_prefetch(row + offset, 0, 0);
  }
}

// Fixed-size copies compile to single moves; a runtime-sized memcpy costs a call and
// a size dispatch, which dominates for label columns of 1-8 bytes.
template <std::int64_t kBytes>
void copy_fixed(const ColumnView& column, const std::int64_t* indices,
                const std::uint32_t* read_order, std::size_t begin, std::size_t end,
                std::byte* out, bool forward) noexcept {
  for (std::size_t k = begin; k < end; ++k) {
    const std::size_t slot = forward ? k : (end - 1 - (k - begin));
    const std::uint32_t position = read_order[slot];
    std::memcpy(out + position * kBytes, column.row(indices[position]), kBytes);
  }
}

void copy_general(const ColumnView& column, const std::int64_t* indices,
                  const std::uint32_t* read_order, std::size_t begin, std::size_t end,
                  std::byte* out, bool forward) noexcept {
  const std::int64_t row_bytes = column.row_bytes;
  const std::size_t count = end - begin;
  auto slot_at = [&](std::size_t k) { return forward ? begin + k : end - 1 - k; };
  for (std::size_t k = 0; k < std::min(count, kPrefetchDistance); ++k) {
    prefetch_row(column.row(indices[read_order[slot_at(k)]]), row_bytes);
  }
  for (std::size_t k = 0; k < count; ++k) {
    if (k + kPrefetchDistance < count) {
      prefetch_row(column.row(indices[read_order[slot_at(k + kPrefetchDistance)]]), row_bytes);
    }
    const std::uint32_t position = read_order[slot_at(k)];
    std::memcpy(out + static_cast<std::int64_t>(position) * row_bytes,
                column.row(indices[position]), static_cast<std::size_t>(row_bytes));
  }
}

}  // namespace

void sort_by_source(const std::int64_t* indices, std::size_t count,
                    std::vector<std::uint32_t>& read_order) {
  read_order.resize(count);
  std::iota(read_order.begin(), read_order.end(), 0U);
  if (std::is_sorted(indices, indices + count)) return;
  std::sort(read_order.begin(), read_order.end(),
            [indices](std::uint32_t a, std::uint32_t b) { return indices[a] < indices[b]; });
}

void gather_rows(const ColumnView& column, const std::int64_t* indices,
                 const std::uint32_t* read_order, std::size_t begin, std::size_t end,
                 std::byte* out) noexcept {
  if (begin >= end || column.row_bytes == 0) return;
  const bool forward = column.row_stride >= 0;
  switch (column.row_bytes) {
    case 1: return copy_fixed<1>(column, indices, read_order, begin, end, out, forward);
    case 2: return copy_fixed<2>(column, indices, read_order, begin, end, out, forward);
    case 4: return copy_fixed<4>(column, indices, read_order, begin, end, out, forward);
    case 8: return copy_fixed<8>(column, indices, read_order, begin, end, out, forward);
    case 16: return copy_fixed<16>(column, indices, read_order, begin, end, out, forward);
    default: return copy_general(column, indices, read_order, begin, end, out, forward);
  }
}

}  // namespace pyloader
