#include <pybind11/stl.h>

#include "../core/reference_gather.hpp"
#include "../core/reference_reads.hpp"
#include "../core/thread_pool.hpp"
#include "column_arrays.hpp"
#include "registry.hpp"

namespace py = pybind11;

namespace pyloader::bindings {

void register_gather(py::module_& module) {
  py::class_<ThreadPool, std::shared_ptr<ThreadPool>>(module, "ThreadPool",
                                                      "Persistent gather threads, shared by the pipelines built on it.")
      .def(py::init([](std::size_t num_threads) {
             if (num_threads == 0) throw py::value_error("num_threads must be at least 1");
             return std::make_shared<ThreadPool>(num_threads);
           }),
           py::arg("num_threads"))
      .def_property_readonly("size", &ThreadPool::size);

  module.def(
      "check_column",
      [](const py::array& array) {
        const ColumnView column = column_from_array(array);
        return py::make_tuple(column.rows, column.row_bytes, column.row_stride);
      },
      py::arg("array"), "Validate that `array` can be gathered natively; returns (rows, row_bytes, row_stride).");

  module.def(
      "reference_gather",
      [](ThreadPool& pool, const std::vector<py::object>& sources,
         const py::array_t<std::int64_t, py::array::c_style>& indices, std::size_t batch_size) {
        std::vector<py::array> arrays;  // referenced here for the duration of the call
        const std::vector<Column> columns = columns_from_sources(sources, arrays);
        const std::int64_t rows = columns.empty() ? 0 : columns.front().rows();
        const std::int64_t* data = indices.data();
        for (py::ssize_t k = 0; k < indices.size(); ++k) {
          if (data[k] < 0 || data[k] >= rows) throw py::index_error("index out of range");
        }
        py::gil_scoped_release release;  // raw pointers only; `arrays` keeps the memory referenced
        gather_batches_reference(pool, columns, data, static_cast<std::size_t>(indices.size()), batch_size);
      },
      py::arg("pool"), py::arg("columns"), py::arg("indices"), py::arg("batch_size"),
      "Copy every batch of `indices` from `columns` with all pool threads into private "
      "buffers and return nothing: the copy-only ceiling used by the benchmarks.");

  module.def(
      "reference_read",
      [](int descriptor, std::int64_t offset, std::int64_t row_bytes,
         const py::array_t<std::int64_t, py::array::c_style>& rows, std::size_t depth) {
        if (row_bytes <= 0) throw py::value_error("row_bytes must be positive");
        const std::int64_t* data = rows.data();
        for (py::ssize_t k = 0; k < rows.size(); ++k) {
          if (data[k] < 0) throw py::index_error("negative row");
        }
        py::gil_scoped_release release;  // a descriptor and an index array the caller keeps
        read_rows_reference(descriptor, offset, row_bytes, data, static_cast<std::size_t>(rows.size()), depth);
      },
      py::arg("descriptor"), py::arg("offset"), py::arg("row_bytes"), py::arg("rows"), py::arg("depth"),
      "pread() each of `rows` (row r at offset + r * row_bytes) from `descriptor` with `depth` "
      "reads in flight into private buffers: the explicit-read ceiling used by the benchmarks.");
}

}  // namespace pyloader::bindings
