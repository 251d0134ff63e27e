// Asynchronous read-ahead hints for memory-mapped columns.
//
// Gather threads working on different batches fault on different parts of a file at
// once, which defeats the kernel's sequential read-ahead: a cold sequential epoch then
// reads in small synchronous pieces. Hinting a batch's byte range when the batch is
// requested (MADV_WILLNEED starts the reads and returns) lets storage work ahead of the
// copies. Hints never change results; failures (e.g. memory that is not a file mapping)
// are ignored.
//
// Contract: rows [first_row, last_row] must exist in `column`; thread-safe (a system
// call on memory the caller keeps mapped).
#pragma once

#include <cstdint>

#include "gather.hpp"

namespace pyloader {

void advise_will_need(const Column& column, std::int64_t first_row, std::int64_t last_row) noexcept;

}  // namespace pyloader
