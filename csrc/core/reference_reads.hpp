// Reference reader: the explicit-read ceiling that cold-cache benchmarks hold the
// loader to.
//
// Reads rows `rows[0, count)` of `row_bytes` bytes each from the file descriptor
// `descriptor` (row r at byte offset + r * row_bytes) with `depth` threads, each
// issuing one pread() per row into a private buffer that is never handed out: `depth`
// reads in flight, no coalescing, no batches, nothing else. It ships in the extension
// for the reason reference_gather.hpp gives.
//
// Contract: blocks until every row is read; throws SourceReadError on a failed or
// short read; thread-safe (it owns its threads for the duration of the call).
#pragma once

#include <cstddef>
#include <cstdint>

namespace pyloader {

void read_rows_reference(int descriptor, std::int64_t offset, std::int64_t row_bytes, const std::int64_t* rows,
                         std::size_t count, std::size_t depth);

}  // namespace pyloader
