#include "column_arrays.hpp"

#include <string>

namespace py = pybind11;

namespace pyloader::bindings {

ColumnView column_from_array(const py::array& array) {
  if (array.ndim() < 1) throw py::value_error("a column needs at least one dimension (rows)");
  if (py::bool_(array.dtype().attr("hasobject"))) {
    throw py::type_error("dtype " + py::str(array.dtype()).cast<std::string>() +
                         " holds Python objects; only fixed-size numeric dtypes can be gathered");
  }
  const py::ssize_t itemsize = array.itemsize();
  py::ssize_t expected_stride = itemsize;
  for (py::ssize_t axis = array.ndim() - 1; axis >= 1; --axis) {
    // An empty array has no bytes to gather, whatever strides numpy gave it.
    if (array.size() > 0 && array.shape(axis) > 1 && array.strides(axis) != expected_stride) {
      throw py::value_error(
          "rows of this array are not contiguous (axis " + std::to_string(axis) +
          " has stride " + std::to_string(array.strides(axis)) + ", expected " +
          std::to_string(expected_stride) +
          "); pass numpy.ascontiguousarray(a) or a C-ordered file");
    }
    expected_stride *= array.shape(axis);
  }
  ColumnView column;
  column.base = static_cast<const std::byte*>(array.data());
  column.rows = array.shape(0);
  column.row_bytes = expected_stride;
  column.row_stride = array.strides(0);
  return column;
}

std::vector<ColumnView> columns_from_arrays(const std::vector<py::array>& arrays) {
  std::vector<ColumnView> columns;
  columns.reserve(arrays.size());
  for (const py::array& array : arrays) {
    columns.push_back(column_from_array(array));
    if (columns.back().rows != columns.front().rows) {
      throw py::value_error("columns differ in length: " + std::to_string(columns.front().rows) +
                            " vs " + std::to_string(columns.back().rows) + " rows");
    }
  }
  return columns;
}

}  // namespace pyloader::bindings
