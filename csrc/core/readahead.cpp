#include "readahead.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

namespace pyloader {

void advise_will_need(const Column& column, std::int64_t first_row, std::int64_t last_row) noexcept {
  static const std::uintptr_t page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  for (const ColumnView& piece : column.pieces) {
    const std::int64_t begin = std::max(first_row, piece.first_row);
    const std::int64_t end = std::min(last_row, piece.first_row + piece.rows - 1);
    if (begin > end) continue;
    const std::byte* low = piece.row(piece.row_stride >= 0 ? begin : end);
    const std::byte* high = piece.row(piece.row_stride >= 0 ? end : begin) + piece.row_bytes;
    const auto start = reinterpret_cast<std::uintptr_t>(low) / page * page;
    const auto stop = reinterpret_cast<std::uintptr_t>(high);
    ::madvise(reinterpret_cast<void*>(start), stop - start, MADV_WILLNEED);
  }
}

}  // namespace pyloader
