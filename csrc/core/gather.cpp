#include "gather.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>

namespace pyloader {
namespace {

std::vector<std::uint32_t>& bucket_counts() {
  thread_local std::vector<std::uint32_t> counts;
  return counts;
}

// How many rows ahead to issue software prefetches. Random rows miss every cache
// level; keeping several misses in flight is what makes a gather memory-parallel.
constexpr std::size_t kPrefetchDistance = 8;
constexpr std::int64_t kCacheLine = 64;
// Prefetch the head of each row only; the hardware streamer follows longer rows.
constexpr std::int64_t kPrefetchBytes = 512;
// Bucket counts per sort pass: about one bucket per key keeps buckets near-singletons
// (so the pass that sorts inside buckets does almost nothing) and the counters small.
constexpr unsigned kMinBucketBits = 4;
constexpr unsigned kMaxBucketBits = 16;
// Buckets up to this size are insertion-sorted; larger ones (clustered or repeated
// indices) get std::sort, so no input costs more than O(count log count).
constexpr std::size_t kInsertionSortLimit = 16;

unsigned bit_width(std::uint64_t value) noexcept {
  unsigned bits = 0;
  while (bits < 64 && (value >> bits) != 0) ++bits;
  return bits;
}

void insertion_sort(std::uint64_t* begin, std::uint64_t* end) noexcept {
  for (std::uint64_t* k = begin + 1; k < end; ++k) {
    const std::uint64_t key = *k;
    std::uint64_t* j = k;
    for (; j > begin && *(j - 1) > key; --j) *j = *(j - 1);
    *j = key;
  }
}

// Sorts `keys` (each below 2^key_bits) ascending. One counting pass on the top
// `bucket_bits` of the keys leaves every key in its bucket; each bucket is then sorted
// on its own. Comparison sorts of a few hundred random keys mispredict most branches;
// this costs O(count) for keys spread as a shuffle spreads them, and a bucket that
// collects many keys costs a comparison sort of that bucket, never more.
void bucket_sort(std::vector<std::uint64_t>& keys, std::vector<std::uint64_t>& scratch, unsigned key_bits) {
  const std::size_t count = keys.size();
  const unsigned bucket_bits = std::min(key_bits, std::clamp(bit_width(count), kMinBucketBits, kMaxBucketBits));
  const unsigned shift = key_bits - bucket_bits;
  std::vector<std::uint32_t>& counts = bucket_counts();
  counts.assign((std::size_t{1} << bucket_bits) + 1, 0);
  for (const std::uint64_t key : keys) ++counts[(key >> shift) + 1];
  for (std::size_t b = 1; b < counts.size(); ++b) counts[b] += counts[b - 1];
  scratch.resize(count);
  // counts[b] is bucket b's start; the scatter advances it to bucket b's end, which is
  // bucket b + 1's start: afterwards bucket b spans [counts[b - 1], counts[b]).
  for (const std::uint64_t key : keys) scratch[counts[key >> shift]++] = key;
  keys.swap(scratch);
  std::uint64_t* const data = keys.data();
  std::size_t begin = 0;
  for (std::size_t b = 0; b + 1 < counts.size(); ++b) {
    const std::size_t end = counts[b];
    if (end - begin > kInsertionSortLimit) {
      std::sort(data + begin, data + end);
    } else if (end - begin > 1) {
      insertion_sort(data + begin, data + end);
    }
    begin = end;
  }
}

inline void prefetch_row(const std::byte* row, std::int64_t row_bytes) noexcept {
  const std::int64_t limit = std::min(row_bytes, kPrefetchBytes);
  for (std::int64_t offset = 0; offset < limit; offset += kCacheLine) {
    __builtin_prefetch(row + offset, 0, 0);
  }
}

// Fixed-size copies compile to single moves; a runtime-sized memcpy costs a call and
// a size dispatch, which dominates for label columns of 1-16 bytes.
// Rows this small are one cache line each: a row a few iterations ahead is prefetched
// so that the misses of a shuffled batch overlap instead of following one another.
template <std::int64_t kBytes>
void copy_fixed(const ColumnView& column, const ReadPlan& plan, std::size_t begin, std::size_t end, std::byte* out,
                bool forward) noexcept {
  constexpr std::size_t kSmallRowPrefetchDistance = 16;
  const std::size_t count = end - begin;
  auto slot_at = [&](std::size_t k) { return forward ? begin + k : end - 1 - k; };
  for (std::size_t k = 0; k < std::min(count, kSmallRowPrefetchDistance); ++k) {
    __builtin_prefetch(column.row(plan.sources[slot_at(k)]), 0, 0);
  }
  for (std::size_t k = 0; k < count; ++k) {
    if (k + kSmallRowPrefetchDistance < count) {
      __builtin_prefetch(column.row(plan.sources[slot_at(k + kSmallRowPrefetchDistance)]), 0, 0);
    }
    const std::size_t slot = slot_at(k);
    std::memcpy(out + plan.positions[slot] * kBytes, column.row(plan.sources[slot]), kBytes);
  }
}

void copy_general(const ColumnView& column, const ReadPlan& plan, std::size_t begin, std::size_t end, std::byte* out,
                  bool forward) noexcept {
  const std::int64_t row_bytes = column.row_bytes;
  const std::size_t count = end - begin;
  auto slot_at = [&](std::size_t k) { return forward ? begin + k : end - 1 - k; };
  for (std::size_t k = 0; k < std::min(count, kPrefetchDistance); ++k) {
    prefetch_row(column.row(plan.sources[slot_at(k)]), row_bytes);
  }
  for (std::size_t k = 0; k < count; ++k) {
    if (k + kPrefetchDistance < count) {
      prefetch_row(column.row(plan.sources[slot_at(k + kPrefetchDistance)]), row_bytes);
    }
    const std::size_t slot = slot_at(k);
    std::memcpy(out + static_cast<std::int64_t>(plan.positions[slot]) * row_bytes, column.row(plan.sources[slot]),
                static_cast<std::size_t>(row_bytes));
  }
}

template <typename Source, typename Target>
void cast_typed(const std::byte* source, std::int64_t elements, std::byte* target) noexcept {
  for (std::int64_t k = 0; k < elements; ++k) {
    Source value;
    std::memcpy(&value, source + k * static_cast<std::int64_t>(sizeof(Source)), sizeof(Source));
    const auto converted = static_cast<Target>(value);
    std::memcpy(target + k * static_cast<std::int64_t>(sizeof(Target)), &converted, sizeof(Target));
  }
}

template <typename Target>
void cast_to(const ElementCast& cast, const std::byte* source, std::int64_t elements, std::byte* target) noexcept {
  switch (cast.source_bytes * 2 + (cast.source_signed ? 1 : 0)) {
    case 2: return cast_typed<std::uint8_t, Target>(source, elements, target);
    case 3: return cast_typed<std::int8_t, Target>(source, elements, target);
    case 4: return cast_typed<std::uint16_t, Target>(source, elements, target);
    case 5: return cast_typed<std::int16_t, Target>(source, elements, target);
    case 8: return cast_typed<std::uint32_t, Target>(source, elements, target);
    case 9: return cast_typed<std::int32_t, Target>(source, elements, target);
    case 16: return cast_typed<std::uint64_t, Target>(source, elements, target);
    case 17: return cast_typed<std::int64_t, Target>(source, elements, target);
    default: return;
  }
}

void copy_cast(const ColumnView& column, const ElementCast& cast, const ReadPlan& plan, std::size_t begin,
               std::size_t end, std::byte* out) noexcept {
  const std::int64_t elements = column.row_bytes / cast.source_bytes;
  const std::int64_t out_row_bytes = elements * cast.target_bytes;
  for (std::size_t k = begin; k < end; ++k) {
    if (k + kPrefetchDistance < end) {
      prefetch_row(column.row(plan.sources[k + kPrefetchDistance]), column.row_bytes);
    }
    cast_elements(cast, column.row(plan.sources[k]), elements,
                  out + static_cast<std::int64_t>(plan.positions[k]) * out_row_bytes);
  }
}

}  // namespace

std::optional<ElementCast> element_cast(ElementType source, ElementType target) noexcept {
  const bool wide_enough = target.bytes == 4 || target.bytes == 8;
  ElementCast cast;
  cast.source_bytes = static_cast<std::uint8_t>(source.bytes);
  cast.target_bytes = static_cast<std::uint8_t>(target.bytes);
  if (source.kind == ElementType::kFloat && target.kind == ElementType::kFloat) {
    if (!wide_enough || (source.bytes != 4 && source.bytes != 8)) return std::nullopt;
    cast.floating = true;
    return cast;
  }
  const bool integer_source = source.kind == ElementType::kSigned || source.kind == ElementType::kUnsigned;
  if (!integer_source || target.kind != ElementType::kSigned || !wide_enough) return std::nullopt;
  cast.source_signed = source.kind == ElementType::kSigned;
  return cast;
}

void cast_elements(const ElementCast& cast, const std::byte* source, std::int64_t elements,
                   std::byte* target) noexcept {
  if (cast.floating) {
    if (cast.source_bytes == 8 && cast.target_bytes == 4) return cast_typed<double, float>(source, elements, target);
    if (cast.source_bytes == 4 && cast.target_bytes == 8) return cast_typed<float, double>(source, elements, target);
    if (cast.source_bytes == 4) return cast_typed<float, float>(source, elements, target);
    return cast_typed<double, double>(source, elements, target);
  }
  if (cast.target_bytes == 8) return cast_to<std::int64_t>(cast, source, elements, target);
  return cast_to<std::int32_t>(cast, source, elements, target);
}

void plan_reads(const std::int64_t* indices, std::size_t count, ReadPlan& plan) {
  plan.sources.assign(indices, indices + count);
  plan.positions.resize(count);
  std::iota(plan.positions.begin(), plan.positions.end(), 0U);
  if (std::is_sorted(indices, indices + count)) return;

  // Keys span the batch's own range, not the dataset's: a batch drawn from a narrow
  // window of a huge dataset still spreads over all buckets.
  const auto [lowest, highest] = std::minmax_element(indices, indices + count);
  const std::int64_t low = *lowest;
  const unsigned position_bits = bit_width(count);
  const unsigned offset_bits = bit_width(static_cast<std::uint64_t>(*highest - low));
  if (position_bits + offset_bits <= 64) {
    // Pack (offset in range, position) into one word, so the sort moves plain integers.
    plan.keys.resize(count);
    for (std::size_t k = 0; k < count; ++k) {
      plan.keys[k] = (static_cast<std::uint64_t>(indices[k] - low) << position_bits) | k;
    }
    bucket_sort(plan.keys, plan.scratch, position_bits + offset_bits);
    const std::uint64_t position_mask = (std::uint64_t{1} << position_bits) - 1;
    for (std::size_t k = 0; k < count; ++k) {
      plan.sources[k] = static_cast<std::int64_t>(plan.keys[k] >> position_bits) + low;
      plan.positions[k] = static_cast<std::uint32_t>(plan.keys[k] & position_mask);
    }
    return;
  }
  std::sort(plan.positions.begin(), plan.positions.end(),
            [indices](std::uint32_t a, std::uint32_t b) { return indices[a] < indices[b]; });
  for (std::size_t k = 0; k < count; ++k) plan.sources[k] = indices[plan.positions[k]];
}

void gather_column(const Column& column, const ReadPlan& plan, std::size_t count, std::byte* out) noexcept {
  auto gather_piece = [&](const ColumnView& piece, std::size_t begin, std::size_t end) {
    if (column.cast.active()) {
      copy_cast(piece, column.cast, plan, begin, end, out);
    } else {
      gather_rows(piece, plan, begin, end, out);
    }
  };
  for_each_piece(column, plan, count, gather_piece);
}

void gather_rows(const ColumnView& column, const ReadPlan& plan, std::size_t begin, std::size_t end,
                 std::byte* out) noexcept {
  if (begin >= end || column.row_bytes == 0) return;
  const bool forward = column.row_stride >= 0;
  switch (column.row_bytes) {
    case 1: return copy_fixed<1>(column, plan, begin, end, out, forward);
    case 2: return copy_fixed<2>(column, plan, begin, end, out, forward);
    case 4: return copy_fixed<4>(column, plan, begin, end, out, forward);
    case 8: return copy_fixed<8>(column, plan, begin, end, out, forward);
    case 16: return copy_fixed<16>(column, plan, begin, end, out, forward);
    default: return copy_general(column, plan, begin, end, out, forward);
  }
}

}  // namespace pyloader
