// A pipeline's columns from what Python passed: arrays (or lists of arrays, a column's
// pieces) for fixed-size columns and RaggedSources (or lists of them) for ragged ones,
// with optional per-column casts, paddings and backing files.
//
// Builds the core's Columns and RaggedColumns over the arrays' memory, and what the
// Python side needs to turn the batches back into tensors (BatchOutputs). The arrays
// and sources are kept here: the core only borrows their memory, so whoever holds the
// pipeline holds these until the pipeline is gone. Needs the GIL.
#pragma once

#include <pybind11/numpy.h>

#include <memory>
#include <vector>

#include "../core/gather.hpp"
#include "../core/ragged.hpp"
#include "batch_outputs.hpp"
#include "ragged_source.hpp"

namespace pyloader::bindings {

struct PipelineColumns {
  std::vector<Column> fixed;
  std::vector<RaggedColumn> ragged;
  BatchOutputs outputs;
  std::vector<pybind11::array> arrays;  // the fixed columns' pieces
  std::vector<std::shared_ptr<RaggedSource>> ragged_sources;
};

// `casts[c]` (a dtype or None) converts column c's integers; `paddings[c]` (None:
// packed) says how ragged column c's batches are padded; `files[c]` (None, or per piece
// None or (path, offset, st_dev, st_ino)) names the files behind column c's pieces.
// Each is None or has one entry per column.
PipelineColumns pipeline_columns(const std::vector<pybind11::object>& sources, const pybind11::object& casts,
                                 const pybind11::object& paddings, const pybind11::object& files);

}  // namespace pyloader::bindings
