// RaggedSource: one piece of a variable-length column (values + record spans), as the
// Python layer hands it to pipelines.
//
// Built once per dataset: the constructor checks every span (O(records), GIL
// released, under the SIGBUS guard) so that pipelines of every epoch can trust it.
// Holds references to its arrays, so a RaggedPiece viewing them stays valid for the
// object's lifetime. Immutable after construction; safe to share between pipelines.
#pragma once

#include <pybind11/numpy.h>

#include "../core/ragged.hpp"

namespace pyloader::bindings {

class RaggedSource {
 public:
  // `offsets` (CSR, records + 1 int64 entries in value rows), or `pointers` (int64 byte
  // offsets) with `lengths` (int32 value rows) for the Megatron layout.
  RaggedSource(const pybind11::array& values, const pybind11::object& offsets, const pybind11::object& pointers,
               const pybind11::object& lengths);

  RaggedPiece piece() const { return piece_; }
  const pybind11::array& values() const { return values_; }
  std::int64_t records() const { return piece_.records; }
  // The constructor's arguments, so that a dataset holding this can be pickled (spawned
  // worker processes); unpickling checks the spans again.
  pybind11::tuple arguments() const;

 private:
  pybind11::array values_;
  pybind11::array_t<std::int64_t> offsets_;
  pybind11::array_t<std::int64_t> pointers_;
  pybind11::array_t<std::int32_t> lengths_;
  RaggedPiece piece_;
};

void register_ragged(pybind11::module_& module);

}  // namespace pyloader::bindings
