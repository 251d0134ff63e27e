#include "batch_outputs.hpp"

namespace py = pybind11;

namespace pyloader::bindings {

void BatchOutputs::resolve_tensor_types() {
  for (FixedOutput& column : fixed_) column.dl_dtype = dlpack_dtype(column.dtype);
  for (RaggedOutput& column : ragged_) column.dl_dtype = dlpack_dtype(column.dtype);
}

py::list BatchOutputs::tensors(const GatheredBatch& batch, const MemoryOwner& owner, std::byte* base,
                               DLDevice device) const {
  const auto rows = static_cast<std::int64_t>(batch.rows);
  py::list columns(places_.size());
  std::vector<std::int64_t> shape;
  for (std::size_t k = 0; k < places_.size(); ++k) {
    const std::size_t c = places_[k].index;
    shape.assign(1, rows);
    if (!places_[k].ragged) {
      const FixedOutput& column = fixed_[c];
      shape.insert(shape.end(), column.trailing_shape.begin(), column.trailing_shape.end());
      columns[k] = make_tensor_(owner, base + batch.column_offsets[c], device, column.dl_dtype, shape);
      continue;
    }
    const RaggedOutput& column = ragged_[c];
    const GatheredBatch::RaggedParts parts = batch.ragged(c);
    const auto width = static_cast<std::int64_t>(parts.width);
    if (column.padded) {
      shape.push_back(width);
    } else {
      shape.assign(1, width);
    }
    shape.insert(shape.end(), column.trailing_shape.begin(), column.trailing_shape.end());
    py::object values = make_tensor_(owner, base + parts.values, device, column.dl_dtype, shape);
    py::object lengths = make_tensor_(owner, base + parts.lengths, device, kInt64, {rows});
    py::object mask = py::none();
    if (column.padded && column.masked) mask = make_tensor_(owner, base + parts.mask, device, kBool, {rows, width});
    columns[k] = py::make_tuple(values, lengths, mask);
  }
  return columns;
}

py::tuple BatchOutputs::arrays(const GatheredBatch& batch, const py::object& owner, const std::byte* base) const {
  const auto rows = static_cast<py::ssize_t>(batch.rows);
  py::tuple columns(places_.size());
  for (std::size_t k = 0; k < places_.size(); ++k) {
    const std::size_t c = places_[k].index;
    if (!places_[k].ragged) {
      const FixedOutput& column = fixed_[c];
      std::vector<py::ssize_t> shape{rows};
      shape.insert(shape.end(), column.trailing_shape.begin(), column.trailing_shape.end());
      columns[k] = py::array(column.dtype, shape, base + batch.column_offsets[c], owner);
      continue;
    }
    const RaggedOutput& column = ragged_[c];
    const GatheredBatch::RaggedParts parts = batch.ragged(c);
    const auto width = static_cast<py::ssize_t>(parts.width);
    std::vector<py::ssize_t> shape =
        column.padded ? std::vector<py::ssize_t>{rows, width} : std::vector<py::ssize_t>{width};
    shape.insert(shape.end(), column.trailing_shape.begin(), column.trailing_shape.end());
    py::array values(column.dtype, shape, base + parts.values, owner);
    py::array lengths(py::dtype::of<std::int64_t>(), std::vector<py::ssize_t>{rows}, base + parts.lengths, owner);
    py::object mask = py::none();
    if (column.padded && column.masked) {
      mask = py::array(py::dtype::of<bool>(), std::vector<py::ssize_t>{rows, width}, base + parts.mask, owner);
    }
    columns[k] = py::make_tuple(values, lengths, mask);
  }
  return columns;
}

}  // namespace pyloader::bindings
