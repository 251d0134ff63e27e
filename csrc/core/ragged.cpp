#include "ragged.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>

namespace pyloader {
namespace {

// Span arrays may be unaligned views of a file (the .idx layout packs int32 lengths
// before int64 pointers): read them byte-wise.
template <typename T>
T load(const T* array, std::int64_t index) noexcept {
  T value;
  std::memcpy(&value, reinterpret_cast<const std::byte*>(array) + index * static_cast<std::int64_t>(sizeof(T)),
              sizeof(T));
  return value;
}

void copy_rows(const RaggedColumn& column, const RecordSpan& span, std::byte* out) noexcept {
  const std::int64_t row_bytes = column.value_row_bytes();
  if (column.cast.active()) {
    cast_elements(column.cast, span.rows, span.length * row_bytes / column.cast.source_bytes, out);
  } else if (span.length > 0) {
    std::memcpy(out, span.rows, static_cast<std::size_t>(span.length * row_bytes));
  }
}

// Fills `bytes` bytes with the padding element repeated; doubling copies keep this a
// handful of memcpy calls for any width.
void fill_padding(const RaggedColumn& column, std::byte* out, std::size_t bytes) noexcept {
  if (bytes == 0) return;
  const auto element = static_cast<std::size_t>(column.element_bytes);
  const auto& value = column.padding.value;
  if (std::all_of(value.begin(), value.begin() + static_cast<std::ptrdiff_t>(element),
                  [](std::byte b) { return b == std::byte{0}; })) {
    std::memset(out, 0, bytes);
    return;
  }
  std::memcpy(out, value.data(), std::min(element, bytes));
  std::size_t filled = std::min(element, bytes);
  while (filled < bytes) {
    const std::size_t step = std::min(filled, bytes - filled);
    std::memcpy(out + filled, out, step);
    filled += step;
  }
}

}  // namespace

Padding padding_of(std::int64_t max_length, std::int64_t multiple, bool left, bool mask, const std::string& value,
                   std::int64_t element_bytes) {
  Padding padding;
  padding.enabled = true;
  padding.max_length = max_length;
  padding.multiple = multiple;
  padding.left = left;
  padding.mask = mask;
  if (max_length < 0 || multiple < 1 || multiple > (std::int64_t{1} << 32) || value.size() > padding.value.size()) {
    throw std::invalid_argument("invalid padding options");
  }
  std::memcpy(padding.value.data(), value.data(), value.size());
  if (static_cast<std::size_t>(element_bytes) > padding.value.size()) {
    throw std::invalid_argument("elements wider than 8 bytes cannot be padded");
  }
  return padding;
}

bool locate_records(const RaggedColumn& column, const ReadPlan& plan, std::size_t count, RecordSpan* spans) noexcept {
  const std::int64_t limit = column.padding.enabled ? column.padding.max_length : 0;
  std::size_t k = 0;
  auto next_piece = column.pieces.begin();
  while (k < count) {
    // The piece of the next record, found by bisection (see for_each_piece).
    const std::int64_t record = plan.sources[k];
    next_piece = std::partition_point(next_piece, column.pieces.end(), [record](const RaggedPiece& piece) {
      return piece.first_record + piece.records <= record;
    });
    if (next_piece == column.pieces.end()) return false;
    const RaggedPiece& piece = *next_piece++;
    const std::int64_t end_record = piece.first_record + piece.records;
    for (; k < count && plan.sources[k] < end_record; ++k) {
      const std::int64_t local = plan.sources[k] - piece.first_record;
      std::int64_t first = 0;
      std::int64_t length = 0;
      if (piece.offsets != nullptr) {
        first = load(piece.offsets, local);
        length = load(piece.offsets, local + 1) - first;
      } else {
        const std::int64_t pointer = load(piece.pointers, local);
        if (pointer % piece.value_row_bytes != 0) return false;
        first = pointer / piece.value_row_bytes;
        length = load(piece.lengths, local);
      }
      // Checked when the source was built; checked again because the arrays may be a
      // file's pages, which can change under a running job.
      if (first < 0 || length < 0 || first > piece.value_rows || length > piece.value_rows - first) {
        return false;
      }
      RecordSpan span;
      span.rows = piece.values + first * piece.value_row_bytes;
      span.length = limit > 0 ? std::min(length, limit) : length;
      spans[plan.positions[k]] = span;
    }
  }
  return true;
}

RaggedLayout ragged_layout(const RaggedColumn& column, const RecordSpan* spans, std::size_t count,
                           std::vector<std::int64_t>& starts) {
  RaggedLayout layout;
  const auto row_bytes = static_cast<std::size_t>(column.output_row_bytes());
  layout.lengths_bytes = count * sizeof(std::int64_t);
  auto too_large = [] {
    return std::length_error("a padded batch of variable-length records would exceed the address space");
  };
  if (column.padding.enabled) {
    std::int64_t width = 0;
    for (std::size_t b = 0; b < count; ++b) width = std::max(width, spans[b].length);
    const std::int64_t multiple = std::max<std::int64_t>(1, column.padding.multiple);
    if (width > INT64_MAX - multiple) throw too_large();
    layout.width = (width + multiple - 1) / multiple * multiple;
    std::size_t positions = 0;
    std::size_t bytes = 0;
    if (__builtin_mul_overflow(count, static_cast<std::size_t>(layout.width), &positions) ||
        __builtin_mul_overflow(positions, row_bytes, &bytes) || bytes > (std::size_t{1} << 62)) {
      throw too_large();
    }
    layout.values_bytes = bytes;
    layout.mask_bytes = column.padding.mask ? positions : 0;
    return layout;
  }
  starts.resize(count);
  std::int64_t total = 0;
  for (std::size_t b = 0; b < count; ++b) {
    starts[b] = total;
    total += spans[b].length;  // each span lies inside its values: no overflow
  }
  layout.width = total;
  layout.values_bytes = static_cast<std::size_t>(total) * row_bytes;
  return layout;
}

void write_records(const RaggedColumn& column, const ReadPlan& plan, const RecordSpan* spans, std::size_t count,
                   const RaggedLayout& layout, const std::vector<std::int64_t>& starts, std::byte* values,
                   std::int64_t* lengths, bool* mask) noexcept {
  const std::int64_t row_bytes = column.output_row_bytes();
  const bool padded = column.padding.enabled;
  const bool left = column.padding.left;
  for (std::size_t k = 0; k < count; ++k) {
    const std::size_t b = plan.positions[k];
    const RecordSpan& span = spans[b];
    lengths[b] = span.length;
    if (!padded) {
      copy_rows(column, span, values + starts[b] * row_bytes);
      continue;
    }
    std::byte* row = values + static_cast<std::int64_t>(b) * layout.width * row_bytes;
    const std::int64_t pad = layout.width - span.length;
    const auto pad_bytes = static_cast<std::size_t>(pad * row_bytes);
    if (left) {
      fill_padding(column, row, pad_bytes);
      copy_rows(column, span, row + pad * row_bytes);
    } else {
      copy_rows(column, span, row);
      fill_padding(column, row + span.length * row_bytes, pad_bytes);
    }
    if (mask != nullptr) {
      bool* mask_row = mask + static_cast<std::int64_t>(b) * layout.width;
      const std::int64_t real_begin = left ? pad : 0;
      std::memset(mask_row, 0, static_cast<std::size_t>(layout.width));
      std::memset(mask_row + real_begin, 1, static_cast<std::size_t>(span.length));
    }
  }
}

}  // namespace pyloader
