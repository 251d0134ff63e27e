#include <pybind11/numpy.h>

#include "../core/permutation.hpp"
#include "registry.hpp"

namespace py = pybind11;

namespace pyloader::bindings {

void register_order(py::module_& module) {
  module.def("mix_seed", &mix_seed, py::arg("seed"), py::arg("stream"),
             "Derive an independent 64-bit seed for `stream` (e.g. an epoch) from `seed`.");

  py::class_<IndexOrder>(module, "IndexOrder", "Which row comes at each position of an epoch; O(1) memory.")
      .def_static("sequential", &IndexOrder::sequential, py::arg("size"))
      .def_static("shuffled", &IndexOrder::shuffled, py::arg("size"), py::arg("seed"))
      .def_static("block_shuffled", &IndexOrder::block_shuffled, py::arg("size"), py::arg("seed"),
                  py::arg("block_rows"), py::arg("window_blocks"),
                  "Blocks of `block_rows` consecutive rows in a shuffled order, `window_blocks` at a "
                  "time, rows shuffled within each window: every row once, reads close together.")
      .def("strided", &IndexOrder::strided, py::arg("offset"), py::arg("stride"), py::arg("count"),
           "`count` positions offset, offset + stride, ... of this order, wrapping past the "
           "end (torch DistributedSampler's padding and sharding).")
      .def_property_readonly("rows", &IndexOrder::rows)
      .def_property_readonly("is_shuffled", &IndexOrder::is_shuffled)
      .def("__len__", &IndexOrder::size)
      .def("__getitem__",
           [](const IndexOrder& order, std::int64_t position) {
             if (position < 0) position += static_cast<std::int64_t>(order.size());
             if (position < 0 || static_cast<std::uint64_t>(position) >= order.size()) {
               throw py::index_error("position out of range");
             }
             return order(static_cast<std::uint64_t>(position));
           })
      .def(
          "take",
          [](const IndexOrder& order, std::uint64_t first, std::uint64_t count) {
            if (first > order.size() || count > order.size() - first) {
              throw py::index_error("positions out of range");
            }
            py::array_t<std::int64_t> out(static_cast<py::ssize_t>(count));
            std::int64_t* data = out.mutable_data();
            {
              py::gil_scoped_release release;  // pure arithmetic into a buffer we own
              order.fill(first, static_cast<std::size_t>(count), data);
            }
            return out;
          },
          py::arg("first"), py::arg("count"), "Rows at positions [first, first + count) as an int64 array.");
}

}  // namespace pyloader::bindings
