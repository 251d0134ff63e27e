// Optional indirection from dataset rows to column rows (a Subset, or a Subset of a
// Subset composed): dataset row k is column row rows[k].
//
// Contract:
//   * Borrowed like the columns: the owner keeps `rows` alive and unchanged for as long
//     as a pipeline uses the map (pipelines read it from their gather threads).
//   * Checked once when the owner builds it (check_row_map), so that every pipeline of
//     every epoch can use it in O(1): every entry lies in [0, column rows).
#pragma once

#include <cstdint>

namespace pyloader {

struct RowMap {
  const std::int64_t* rows = nullptr;
  std::int64_t size = 0;
};

// Throws std::out_of_range naming the first entry outside [0, source_rows).
void check_row_map(const RowMap& map, std::int64_t source_rows);

// Throws std::invalid_argument unless a map checked against `checked_rows` column rows
// serves columns of `source_rows` rows.
void check_row_map_serves(std::int64_t checked_rows, std::int64_t source_rows);

}  // namespace pyloader
