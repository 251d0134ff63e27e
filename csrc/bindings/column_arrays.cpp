#include "column_arrays.hpp"

#include <algorithm>
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
      throw py::value_error("rows of this array are not contiguous (axis " + std::to_string(axis) + " has stride " +
                            std::to_string(array.strides(axis)) + ", expected " + std::to_string(expected_stride) +
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

std::vector<Column> columns_from_sources(const std::vector<py::object>& sources, std::vector<py::array>& arrays) {
  std::vector<Column> columns;
  columns.reserve(sources.size());
  for (const py::object& source : sources) {
    std::vector<py::array> pieces;
    if (py::isinstance<py::list>(source) || py::isinstance<py::tuple>(source)) {
      for (py::handle piece : source) pieces.push_back(py::cast<py::array>(piece));
    } else {
      pieces.push_back(py::cast<py::array>(source));
    }
    if (pieces.empty()) throw py::value_error("a column needs at least one array");
    Column column;
    for (const py::array& piece : pieces) {
      const py::array& first = pieces.front();
      const bool same_trailing_shape = piece.ndim() == first.ndim() &&
                                       std::equal(piece.shape() + 1, piece.shape() + piece.ndim(), first.shape() + 1);
      if (!piece.dtype().equal(first.dtype()) || !same_trailing_shape) {
        throw py::value_error("the pieces of a column must share dtype and trailing shape");
      }
      ColumnView view = column_from_array(piece);
      view.first_row = column.rows();
      column.pieces.push_back(view);
      arrays.push_back(piece);
    }
    if (!columns.empty() && column.rows() != columns.front().rows()) {
      throw py::value_error("columns differ in length: " + std::to_string(columns.front().rows()) + " vs " +
                            std::to_string(column.rows()) + " rows");
    }
    columns.push_back(std::move(column));
  }
  return columns;
}

}  // namespace pyloader::bindings
