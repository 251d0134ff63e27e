// Row gathering: copy selected rows of a strided 2-D byte table into a dense buffer.
//
// Contract:
//   * ColumnView does not own memory. Whoever builds one keeps `base` readable for
//     every row in [0, rows) for as long as any gather over it may run.
//   * Each row is `row_bytes` contiguous bytes; consecutive rows are `row_stride`
//     bytes apart (negative strides are allowed, e.g. a reversed numpy view).
//   * Indices passed to the gather functions are already validated: 0 <= i < rows.
//   * The functions are reentrant and keep no state; concurrent calls on disjoint
//     output ranges are safe.
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

  const std::byte* row(std::int64_t index) const noexcept { return base + index * row_stride; }
};

// Fills `read_order` with the output positions [0, count) sorted by their source
// index, so a gather touches the source in ascending address order (page-cache and
// readahead friendly for memory-mapped files) while still writing each row to the
// position the sampler asked for. Leaves identity order when indices are sorted.
void sort_by_source(const std::int64_t* indices, std::size_t count,
                    std::vector<std::uint32_t>& read_order);

// Copies rows indices[read_order[k]] for k in [begin, end) of one column into
// out + read_order[k] * row_bytes. A column with negative stride is walked backwards
// so that it too is read in ascending address order.
void gather_rows(const ColumnView& column, const std::int64_t* indices,
                 const std::uint32_t* read_order, std::size_t begin, std::size_t end,
                 std::byte* out) noexcept;

}  // namespace pyloader
