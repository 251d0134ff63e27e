// Row gathering: copy selected rows of a strided 2-D byte table into a dense buffer.
//
// Contract:
//   * ColumnView does not own memory. Whoever builds one keeps `base` readable for
//     every row in [0, rows) for as long as any gather over it may run.
//   * Each row is `row_bytes` contiguous bytes; consecutive rows are `row_stride`
//     bytes apart (negative strides are allowed, e.g. a reversed numpy view).
//   * Indices passed here are already validated: 0 <= index < rows.
//   * Functions keep no state of their own; a ReadPlan is owned by one thread at a time.
//   * A view may name the file its memory maps (`file`), so that rows can also be read
//     from it explicitly (see file_reads.hpp); the gathers here only ever use `base`.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace pyloader {

class FileSource;

struct ColumnView {
  const std::byte* base = nullptr;
  std::int64_t rows = 0;
  std::int64_t row_bytes = 0;
  std::int64_t row_stride = 0;
  std::int64_t first_row = 0;  // index of `base`'s row when the view is a piece of a column
  std::shared_ptr<const FileSource> file;  // the file behind `base` (row r at its offset() + r * row_stride); or none

  const std::byte* row(std::int64_t index) const noexcept { return base + (index - first_row) * row_stride; }
};

// Elements converted on the way out, without a second pass over the batch: integers to
// int32/int64 (token ids stored as uint16 and delivered as int64, what embedding layers
// take), or floats between float32 and float64 (a float64 column delivered as float32,
// as Hugging Face datasets' torch format does). Inactive (source_bytes == 0): rows are
// copied byte for byte.
struct ElementCast {
  std::uint8_t source_bytes = 0;  // 1, 2, 4 or 8
  bool source_signed = false;
  std::uint8_t target_bytes = 0;  // 4 or 8: signed integers, or floats when `floating`
  bool floating = false;  // float to float: source and target are 4 or 8 bytes

  bool active() const noexcept { return source_bytes != 0; }
  // Bytes a source row of `row_bytes` takes in the output.
  std::int64_t output_bytes(std::int64_t row_bytes) const noexcept {
    return active() ? row_bytes / source_bytes * target_bytes : row_bytes;
  }
};

// An element type as far as casts go: integers by signedness and width, IEEE floats by
// width, anything else (bools, records) as kOther.
struct ElementType {
  enum Kind { kSigned, kUnsigned, kFloat, kOther } kind = kOther;
  std::size_t bytes = 0;
};

// The cast from `source` elements to `target` ones: integers to signed integers of 4 or
// 8 bytes, and float32 <-> float64; nothing for any other pair (float16 included).
std::optional<ElementCast> element_cast(ElementType source, ElementType target) noexcept;

// A column stored in consecutive pieces (one per dataset of a ConcatDataset, or per
// shard file): piece p holds rows [first_row, first_row + rows) of the column, pieces
// in ascending order without gaps, all with the same row_bytes. A plain array is a
// single piece. Precondition for an active cast: row_bytes is a multiple of
// cast.source_bytes.
struct Column {
  std::vector<ColumnView> pieces;
  ElementCast cast;

  std::int64_t rows() const noexcept { return pieces.empty() ? 0 : pieces.back().first_row + pieces.back().rows; }
  std::int64_t row_bytes() const noexcept { return pieces.empty() ? 0 : pieces.front().row_bytes; }
  std::int64_t output_row_bytes() const noexcept { return cast.output_bytes(row_bytes()); }
};

// Copies `elements` elements from `source` to `target` converting them as `cast` says
// (which must be active). Narrowing integers keeps the low bytes, as a C cast does;
// float64 to float32 rounds to nearest, as a C cast does.
void cast_elements(const ElementCast& cast, const std::byte* source, std::int64_t elements, std::byte* target) noexcept;

// The rows of one batch in the order they are read: sources[k] is copied to output
// row positions[k], and sources ascend, so the source is touched in address order
// (page-cache and readahead friendly for memory-mapped files) while each row still
// lands where the sampler put it. Buffers are reused from batch to batch.
struct ReadPlan {
  std::vector<std::int64_t> sources;
  std::vector<std::uint32_t> positions;
  std::vector<std::uint64_t> keys, scratch;  // sort workspace
};

// Builds `plan` for the batch indices[0, count). Preconditions: every index >= 0 and
// count < 2^32 (positions are 32-bit). Costs O(count) for shuffled batches and at most
// O(count log count) for any order of indices.
void plan_reads(const std::int64_t* indices, std::size_t count, ReadPlan& plan);

// Calls visit(piece, begin, end) for every piece of `column` that holds plan rows, with
// the range of plan rows [begin, end) that lie in it (the plan's sources ascend, so each
// piece's rows are one contiguous range of the plan). Pieces without plan rows are
// skipped by bisection: a column of thousands of pieces (the record batches of an Arrow
// table) costs a batch O(pieces touched x log pieces), not O(pieces).
// Precondition: every plan source is below column.rows().
template <typename Visit>
void for_each_piece(const Column& column, const ReadPlan& plan, std::size_t count, Visit&& visit) {
  if (column.pieces.size() == 1) return visit(column.pieces.front(), std::size_t{0}, count);
  const auto sources_begin = plan.sources.begin();
  const auto sources_end = sources_begin + static_cast<std::ptrdiff_t>(count);
  auto range_begin = sources_begin;
  auto piece = column.pieces.begin();
  while (range_begin != sources_end) {
    const std::int64_t row = *range_begin;
    piece = std::partition_point(piece, column.pieces.end(),
                                 [row](const ColumnView& view) { return view.first_row + view.rows <= row; });
    if (piece == column.pieces.end()) return;
    const auto range_end = std::lower_bound(range_begin, sources_end, piece->first_row + piece->rows);
    visit(*piece, static_cast<std::size_t>(range_begin - sources_begin),
          static_cast<std::size_t>(range_end - sources_begin));
    range_begin = range_end;
    ++piece;
  }
}

// Copies all `count` plan rows of a (possibly pieced) column into `out`, converting
// elements when the column has an active cast (rows are then output_row_bytes() apart
// in `out`). The plan's sources ascend, so each piece's rows are one contiguous range
// of the plan.
void gather_column(const Column& column, const ReadPlan& plan, std::size_t count, std::byte* out) noexcept;

// Copies plan rows [begin, end) of one column into `out` (row p at out + p * row_bytes).
// A column with negative stride is walked backwards, so it too is read in ascending
// address order.
void gather_rows(const ColumnView& column, const ReadPlan& plan, std::size_t begin, std::size_t end,
                 std::byte* out) noexcept;

}  // namespace pyloader
