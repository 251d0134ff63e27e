// Row gathering: copy selected rows of a strided 2-D byte table into a dense buffer.
//
// Contract:
//   * ColumnView does not own memory. Whoever builds one keeps `base` readable for
//     every row in [0, rows) for as long as any gather over it may run.
//   * Each row is `row_bytes` contiguous bytes; consecutive rows are `row_stride`
//     bytes apart (negative strides are allowed, e.g. a reversed numpy view).
//   * Indices passed here are already validated: 0 <= index < rows.
//   * Functions keep no state of their own; a ReadPlan is owned by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace pyloader {

struct ColumnView {
  const std::byte* base = nullptr;
  std::int64_t rows = 0;
  std::int64_t row_bytes = 0;
  std::int64_t row_stride = 0;
  std::int64_t first_row = 0;  // index of `base`'s row when the view is a piece of a column

  const std::byte* row(std::int64_t index) const noexcept {
    return base + (index - first_row) * row_stride;
  }
};

// A column stored in consecutive pieces (one per dataset of a ConcatDataset): piece p
// holds rows [first_row, first_row + rows) of the column, pieces in ascending order
// without gaps, all with the same row_bytes. A plain array is a single piece.
struct Column {
  std::vector<ColumnView> pieces;

  std::int64_t rows() const noexcept {
    return pieces.empty() ? 0 : pieces.back().first_row + pieces.back().rows;
  }
  std::int64_t row_bytes() const noexcept { return pieces.empty() ? 0 : pieces.front().row_bytes; }
};

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

// Copies all `count` plan rows of a (possibly pieced) column into `out`. The plan's
// sources ascend, so each piece's rows are one contiguous range of the plan.
void gather_column(const Column& column, const ReadPlan& plan, std::size_t count,
                   std::byte* out) noexcept;

// Copies plan rows [begin, end) of one column into `out` (row p at out + p * row_bytes).
// A column with negative stride is walked backwards, so it too is read in ascending
// address order.
void gather_rows(const ColumnView& column, const ReadPlan& plan, std::size_t begin,
                 std::size_t end, std::byte* out) noexcept;

}  // namespace pyloader
