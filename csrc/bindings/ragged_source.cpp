#include "ragged_source.hpp"

#include <cstring>
#include <string>

#include "../core/bus_error_guard.hpp"
#include "column_arrays.hpp"
#include "registry.hpp"

namespace py = pybind11;

namespace pyloader::bindings {
namespace {

template <typename T>
py::array_t<T> exact_array(const py::object& value, const char* what, const char* dtype) {
  if (!py::isinstance<py::array>(value)) {
    throw py::type_error(std::string(what) + " must be a numpy array of " + dtype);
  }
  const auto array = py::reinterpret_borrow<py::array>(value);
  if (!array.dtype().equal(py::dtype::of<T>()) || array.ndim() != 1 || !(array.flags() & py::array::c_style)) {
    throw py::type_error(std::string(what) + " must be a one-dimensional C-contiguous " + dtype + " array, got " +
                         py::str(array.dtype()).cast<std::string>() + " with " + std::to_string(array.ndim()) +
                         " dimension(s)");
  }
  return py::reinterpret_borrow<py::array_t<T>>(array);
}

// Span arrays are read by gather threads for the source's lifetime: a writeable array
// (the caller may change it) is copied once; a read-only one (a file mapped read-only)
// is used in place, and each span is checked again as it is read.
template <typename T>
py::array_t<T> private_copy_if_writeable(py::array_t<T> array) {
  if (!array.writeable()) return array;
  auto copy = py::reinterpret_borrow<py::array_t<T>>(array.attr("copy")());
  copy.attr("setflags")(py::arg("write") = false);
  return copy;
}

// The first bad record, or -1: spans are checked here once so that gathers need not.
struct SpanCheck {
  const RaggedPiece* piece;
  std::int64_t bad = -1;
  const char* why = "";  // no allocation: this runs under the SIGBUS guard
};

template <typename T>
T load(const T* array, std::int64_t index) {
  T value;  // the arrays may be unaligned views of a file
  std::memcpy(&value, reinterpret_cast<const std::byte*>(array) + index * static_cast<std::int64_t>(sizeof(T)),
              sizeof(T));
  return value;
}

void check_spans(void* context) {
  auto& check = *static_cast<SpanCheck*>(context);
  const RaggedPiece& piece = *check.piece;
  if (piece.offsets != nullptr) {
    const std::int64_t* offsets = piece.offsets;
    if (load(offsets, 0) < 0) {
      check.bad = 0;
      check.why = "the first offset is negative";
      return;
    }
    for (std::int64_t r = 0; r < piece.records; ++r) {
      if (load(offsets, r + 1) < load(offsets, r)) {
        check.bad = r;
        check.why = "offsets decrease (they must be non-decreasing)";
        return;
      }
    }
    if (load(offsets, piece.records) > piece.value_rows) {
      check.bad = piece.records - 1;
      check.why = "the last offset is past the end of the values";
    }
    return;
  }
  for (std::int64_t r = 0; r < piece.records; ++r) {
    const std::int64_t pointer = load(piece.pointers, r);
    const std::int64_t length = load(piece.lengths, r);
    if (pointer < 0 || length < 0 || pointer % piece.value_row_bytes != 0 ||
        pointer / piece.value_row_bytes > piece.value_rows ||
        length > piece.value_rows - pointer / piece.value_row_bytes) {
      check.bad = r;
      check.why = "it is negative, misaligned or reaches past the end of the values";
      return;
    }
  }
}

}  // namespace

RaggedSource::RaggedSource(const py::array& values, const py::object& offsets, const py::object& pointers,
                           const py::object& lengths)
    : values_(values) {
  const ColumnView view = column_from_array(values);
  if (view.rows > 1 && view.row_stride != view.row_bytes) {
    throw py::value_error("the values of variable-length records must be one contiguous array");
  }
  piece_.values = view.base;
  piece_.value_rows = view.rows;
  piece_.value_row_bytes = view.row_bytes;
  if (!offsets.is_none()) {
    if (!pointers.is_none() || !lengths.is_none()) {
      throw py::value_error("give offsets, or pointers with lengths, not both");
    }
    offsets_ = private_copy_if_writeable(exact_array<std::int64_t>(offsets, "offsets", "int64"));
    if (offsets_.size() < 1) throw py::value_error("offsets need at least one entry (records + 1)");
    piece_.offsets = offsets_.data();
    piece_.records = static_cast<std::int64_t>(offsets_.size()) - 1;
  } else {
    if (pointers.is_none() || lengths.is_none()) {
      throw py::value_error("give offsets, or pointers with lengths");
    }
    pointers_ = private_copy_if_writeable(exact_array<std::int64_t>(pointers, "pointers", "int64"));
    lengths_ = private_copy_if_writeable(exact_array<std::int32_t>(lengths, "lengths", "int32"));
    if (pointers_.size() != lengths_.size()) {
      throw py::value_error("pointers and lengths differ in length: " + std::to_string(pointers_.size()) + " vs " +
                            std::to_string(lengths_.size()));
    }
    if (piece_.value_row_bytes == 0) throw py::value_error("records of zero-byte rows cannot be located");
    piece_.pointers = pointers_.data();
    piece_.lengths = lengths_.data();
    piece_.records = static_cast<std::int64_t>(pointers_.size());
  }
  SpanCheck check{&piece_};
  bool completed = false;
  {
    py::gil_scoped_release release;  // reads the span arrays only; no Python objects touched
    install_bus_error_handler();
    completed = run_with_bus_error_guard(&check_spans, &check);
  }
  if (!completed) throw py::value_error("reading the record spans failed: a memory-mapped file was truncated");
  if (check.bad >= 0) {
    throw py::value_error("record " + std::to_string(check.bad) + " is invalid: " + check.why + " (" +
                          std::to_string(piece_.value_rows) + " value rows)");
  }
}

py::tuple RaggedSource::arguments() const {
  // Unused members hold empty arrays, not null handles: which layout is in use decides.
  if (piece_.offsets != nullptr) return py::make_tuple(values_, offsets_, py::none(), py::none());
  return py::make_tuple(values_, py::none(), pointers_, lengths_);
}

void register_ragged(py::module_& module) {
  py::class_<RaggedSource, std::shared_ptr<RaggedSource>>(
      module, "RaggedSource",
      "Variable-length records over a values array: CSR `offsets` (int64, records + 1), "
      "or byte `pointers` (int64) with `lengths` (int32). Every span is checked once, here.")
      .def(py::init<const py::array&, const py::object&, const py::object&, const py::object&>(), py::arg("values"),
           py::arg("offsets") = py::none(), py::arg("pointers") = py::none(), py::arg("lengths") = py::none())
      .def(py::pickle([](const RaggedSource& source) { return source.arguments(); },
                      [](const py::tuple& state) {
                        if (state.size() != 4) throw py::value_error("invalid RaggedSource state");
                        return std::make_shared<RaggedSource>(state[0].cast<py::array>(), state[1], state[2], state[3]);
                      }))
      .def_property_readonly("records", &RaggedSource::records)
      .def("__len__", &RaggedSource::records);
}

}  // namespace pyloader::bindings
