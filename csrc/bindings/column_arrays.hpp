// Translation of numpy arrays into core ColumnViews and Columns.
//
// column_from_array() accepts any numpy array whose rows are dense: the first axis may
// have any stride (memmaps, slices, reversed views), the trailing axes must be
// C-contiguous, and the dtype must hold no Python objects. Anything else raises
// ValueError/TypeError naming the problem. The view borrows the array's memory: the
// caller keeps the array alive for as long as the view is used. Needs the GIL.
#pragma once

#include <pybind11/numpy.h>

#include <vector>

#include "../core/gather.hpp"

namespace pyloader::bindings {

ColumnView column_from_array(const pybind11::array& array);

// Columns of equal length from `sources`, each an array or a non-empty list of arrays
// (the pieces of a column, e.g. the datasets of a ConcatDataset) with one dtype and one
// trailing shape. `arrays` receives every array used, for the caller to keep alive.
std::vector<Column> columns_from_sources(const std::vector<pybind11::object>& sources,
                                         std::vector<pybind11::array>& arrays);

}  // namespace pyloader::bindings
