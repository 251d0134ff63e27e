#include "row_map.hpp"

#include <stdexcept>
#include <string>

namespace pyloader {

void check_row_map(const RowMap& map, std::int64_t source_rows) {
  for (std::int64_t k = 0; k < map.size; ++k) {
    if (map.rows[k] < 0 || map.rows[k] >= source_rows) {
      throw std::out_of_range("row map entry " + std::to_string(map.rows[k]) + " is out of range for " +
                              std::to_string(source_rows) + " rows");
    }
  }
}

void check_row_map_serves(std::int64_t checked_rows, std::int64_t source_rows) {
  if (checked_rows != source_rows) {
    throw std::invalid_argument("the row map was built for " + std::to_string(checked_rows) +
                                " column rows, the columns have " + std::to_string(source_rows));
  }
}

}  // namespace pyloader
