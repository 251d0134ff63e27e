// Conversion of a pipeline's Python arguments into the core's terms: batch indices,
// row maps, element casts, padding options and the files behind column pieces.
//
// Each function takes what Python passed (ints, arrays, dtypes, dicts, tuples), checks
// only what Python types can get wrong, and leaves the rules to the core (element_cast,
// padding_of, check_row_map, FileSource::open_if_same). Needs the GIL.
#pragma once

#include <pybind11/numpy.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "../core/file_reads.hpp"
#include "../core/gather.hpp"
#include "../core/ragged.hpp"
#include "../core/row_map.hpp"

namespace pyloader::bindings {

// Batch indices from a numpy integer array or a sequence of ints (anything with
// __index__). Raises TypeError for a non-integer array, IndexError for floats, bools and
// values beyond int64.
std::vector<std::int64_t> indices_from_python(pybind11::handle indices);

// The Python face of a RowMap: owns a copy of the map nobody else can change (gather
// threads read it), checked against `source_rows` once, then shared by pipelines.
class PythonRowMap {
 public:
  PythonRowMap(const pybind11::array& rows, std::int64_t source_rows);

  RowMap view() const { return RowMap{rows_.data(), static_cast<std::int64_t>(rows_.size())}; }
  std::int64_t source_rows() const { return source_rows_; }
  pybind11::ssize_t size() const { return rows_.size(); }

 private:
  pybind11::array_t<std::int64_t> rows_;
  std::int64_t source_rows_;
};

// The conversion from `source` elements to the dtype `target` (None: none). Raises
// TypeError for what element_cast refuses.
ElementCast cast_between(const pybind11::dtype& source, const pybind11::object& target);

// The padding a spec dict (max_length, multiple, left, mask, value) asks for, None:
// packed. Raises ValueError for what padding_of refuses.
Padding padding_from(const pybind11::handle& spec, std::int64_t element_bytes);

// The file behind a piece from (path, byte offset of row 0, st_dev, st_ino), or null
// (then the piece is copied from its mapping).
std::shared_ptr<const FileSource> file_from(const pybind11::handle& entry);

}  // namespace pyloader::bindings
