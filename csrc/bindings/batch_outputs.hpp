// How a gathered batch becomes Python objects: per column, in the caller's order, a
// tensor (or numpy array) over the batch's memory, or for a ragged column a tuple
// (values, lengths, mask).
//
// The core lays a batch out as fixed-size columns, then ragged ones (GatheredBatch);
// the caller may have interleaved them. This keeps the caller's order and each column's
// dtype and trailing shape, fixed when the pipeline is built, so that per batch only
// views are made: no copy, one small allocation per tensor. Needs the GIL.
#pragma once

#include <pybind11/numpy.h>

#include <cstddef>
#include <utility>
#include <vector>

#include "../core/batch_pipeline.hpp"
#include "dlpack_tensor.hpp"

namespace pyloader::bindings {

// What a fixed-size column's output looks like: its dtype and the shape of one row.
struct FixedOutput {
  pybind11::dtype dtype;
  std::vector<pybind11::ssize_t> trailing_shape;
  DLDataType dl_dtype{};  // set by resolve_tensor_types()
};

// What a ragged column's output looks like: its values' dtype and the shape of one
// value row, and whether it is padded (else packed) with a mask.
struct RaggedOutput {
  pybind11::dtype dtype;
  std::vector<pybind11::ssize_t> trailing_shape;
  bool padded = false, masked = false;
  DLDataType dl_dtype{};  // set by resolve_tensor_types()
};

class BatchOutputs {
 public:
  // Where the caller's column k is: among the fixed-size or among the ragged columns.
  struct Place {
    bool ragged;
    std::size_t index;
  };

  BatchOutputs(std::vector<Place> places, std::vector<FixedOutput> fixed, std::vector<RaggedOutput> ragged)
      : places_(std::move(places)), fixed_(std::move(fixed)), ragged_(std::move(ragged)) {}

  // Looks up each column's DLPack element type (TypeError for dtypes DLPack cannot
  // describe); called once the pipeline accepted the columns, so that its errors come
  // first. Before tensors().
  void resolve_tensor_types();

  // Torch tensors over a batch laid out at `base` on `device`, each holding `owner`.
  pybind11::list tensors(const GatheredBatch& batch, const MemoryOwner& owner, std::byte* base, DLDevice device) const;
  // Numpy arrays over a batch laid out at `base`, each with `owner` as its base.
  pybind11::tuple arrays(const GatheredBatch& batch, const pybind11::object& owner, const std::byte* base) const;

 private:
  static constexpr DLDataType kInt64{0, 64, 1};
  static constexpr DLDataType kBool{6, 8, 1};

  std::vector<Place> places_;
  std::vector<FixedOutput> fixed_;
  std::vector<RaggedOutput> ragged_;
  TensorMaker make_tensor_;
};

}  // namespace pyloader::bindings
