#include "pipeline_arguments.hpp"

#include <string>

namespace py = pybind11;

namespace pyloader::bindings {
namespace {

ElementType element_type_of(const py::dtype& dtype) {
  const char kind = dtype.kind();
  const auto bytes = static_cast<std::size_t>(dtype.itemsize());
  if (kind == 'i') return ElementType{ElementType::kSigned, bytes};
  if (kind == 'u') return ElementType{ElementType::kUnsigned, bytes};
  if (kind == 'f') return ElementType{ElementType::kFloat, bytes};
  return ElementType{ElementType::kOther, bytes};
}

}  // namespace

std::vector<std::int64_t> indices_from_python(py::handle indices) {
  std::vector<std::int64_t> result;
  if (py::isinstance<py::array>(indices)) {
    const auto array = py::reinterpret_borrow<py::array>(indices);
    const char kind = array.dtype().kind();
    if (kind != 'i' && kind != 'u') {
      throw py::type_error("sampler indices must be integers, got an array of dtype " +
                           py::str(array.dtype()).cast<std::string>());
    }
    if (array.ndim() != 1) throw py::value_error("a batch of indices must be one-dimensional");
    if (kind == 'u' && array.itemsize() == 8) {
      // uint64 values above INT64_MAX would wrap to negative (from-the-end) indices.
      const auto as_uint64 = py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>::ensure(array);
      for (py::ssize_t k = 0; k < as_uint64.size(); ++k) {
        if (as_uint64.data()[k] > static_cast<std::uint64_t>(INT64_MAX)) {
          throw py::index_error("index " + std::to_string(as_uint64.data()[k]) + " is out of range");
        }
      }
    }
    const auto as_int64 = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(array);
    result.assign(as_int64.data(), as_int64.data() + as_int64.size());
    return result;
  }
  const auto sequence = py::reinterpret_borrow<py::sequence>(indices);
  result.reserve(sequence.size());
  for (py::handle item : sequence) {
    // __index__ accepts ints, numpy integers and integer 0-d tensors. Floats and bools
    // are refused with IndexError, as indexing a tensor refuses them.
    if (PyBool_Check(item.ptr())) throw py::index_error("sampler indices must be integers, not bool");
    py::object as_int = py::reinterpret_steal<py::object>(PyNumber_Index(item.ptr()));
    if (!as_int) {
      PyErr_Clear();
      throw py::index_error("sampler indices must be integers, not " +
                            py::str(py::type::handle_of(item).attr("__name__")).cast<std::string>());
    }
    const long long value = PyLong_AsLongLong(as_int.ptr());
    if (value == -1 && PyErr_Occurred()) {
      PyErr_Clear();  // beyond int64: no dataset has such a row
      throw py::index_error("index " + py::str(as_int).cast<std::string>() + " is out of range");
    }
    result.push_back(value);
  }
  return result;
}

PythonRowMap::PythonRowMap(const py::array& rows, std::int64_t source_rows) : source_rows_(source_rows) {
  rows_ = py::array_t<std::int64_t, py::array::c_style>::ensure(rows);
  if (!rows_ || rows_.ndim() != 1) {
    throw py::type_error("a row map must be a one-dimensional C-contiguous int64 array");
  }
  if (rows_.writeable() || !rows_.owndata()) {
    // Pipelines read it from worker threads: keep a copy nobody else can change.
    rows_ = py::array_t<std::int64_t, py::array::c_style>::ensure(rows_.attr("copy")());
    rows_.attr("setflags")(py::arg("write") = false);
  }
  check_row_map(view(), source_rows);
}

ElementCast cast_between(const py::dtype& source, const py::object& target) {
  if (target.is_none()) return ElementCast{};
  const py::dtype to = py::dtype::from_args(target);
  if (const std::optional<ElementCast> cast = element_cast(element_type_of(source), element_type_of(to))) return *cast;
  throw py::type_error("only integers (to int32 or int64) and float32/float64 (to each other) convert (asked: " +
                       py::str(source).cast<std::string>() + " to " + py::str(to).cast<std::string>() + ")");
}

Padding padding_from(const py::handle& spec, std::int64_t element_bytes) {
  if (spec.is_none()) return Padding{};
  const auto options = py::reinterpret_borrow<py::dict>(spec);
  const auto max_length = options["max_length"].cast<std::int64_t>();
  const auto multiple = options["multiple"].cast<std::int64_t>();
  const bool left = options["left"].cast<bool>();
  const bool mask = options["mask"].cast<bool>();
  const auto value = options["value"].cast<std::string>();
  return padding_of(max_length, multiple, left, mask, value, element_bytes);
}

std::shared_ptr<const FileSource> file_from(const py::handle& entry) {
  const auto fields = py::reinterpret_borrow<py::tuple>(entry);
  return FileSource::open_if_same(fields[0].cast<std::string>(), fields[1].cast<std::int64_t>(),
                                  fields[2].cast<std::uint64_t>(), fields[3].cast<std::uint64_t>());
}

}  // namespace pyloader::bindings
