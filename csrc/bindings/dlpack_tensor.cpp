#include "dlpack_tensor.hpp"

#include <new>
#include <string>

namespace py = pybind11;

namespace pyloader::bindings {
namespace {

constexpr const char* kCapsuleName = "dltensor";
constexpr const char* kUsedCapsuleName = "used_dltensor";

// One allocation per tensor: the DLPack header, the owner and the shape.
struct ManagedTensor {
  DLManagedTensor managed;
  MemoryOwner owner;
  std::vector<std::int64_t> shape;
};

void delete_managed(DLManagedTensor* self) { delete static_cast<ManagedTensor*>(self->manager_ctx); }

// A capsule torch never consumed (an error between making and taking it) frees itself.
void free_unused_capsule(PyObject* capsule) {
  if (PyCapsule_IsValid(capsule, kUsedCapsuleName)) return;
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, kCapsuleName));
  if (managed == nullptr) {
    PyErr_Clear();
    return;
  }
  managed->deleter(managed);
}

}  // namespace

DLDataType dlpack_dtype(const py::dtype& dtype) {
  if (!dtype.attr("isnative").cast<bool>()) {
    throw py::type_error("arrays of non-native byte order (" + py::str(dtype).cast<std::string>() +
                         ") cannot be delivered as tensors");
  }
  const auto bits = static_cast<std::uint8_t>(dtype.itemsize() * 8);
  switch (dtype.kind()) {
    case 'i': return DLDataType{0, bits, 1};
    case 'u': return DLDataType{1, bits, 1};
    case 'f': return DLDataType{2, bits, 1};
    case 'c': return DLDataType{5, bits, 1};
    case 'b': return DLDataType{6, bits, 1};
    default:
      throw py::type_error("arrays of dtype " + py::str(dtype).cast<std::string>() + " cannot be delivered as tensors");
  }
}

TensorMaker::TensorMaker() : from_dlpack_(py::module_::import("torch").attr("_C").attr("_from_dlpack")) {}

py::object TensorMaker::operator()(const MemoryOwner& owner, void* data, DLDevice device, DLDataType dtype,
                                   const std::vector<std::int64_t>& shape) const {
  auto* held = new ManagedTensor{DLManagedTensor{}, owner, shape};
  DLManagedTensor& managed = held->managed;
  managed.dl_tensor =
      DLTensor{data, device, static_cast<std::int32_t>(held->shape.size()), dtype, held->shape.data(), nullptr, 0};
  managed.manager_ctx = held;
  managed.deleter = &delete_managed;
  PyObject* capsule = PyCapsule_New(&managed, kCapsuleName, &free_unused_capsule);
  if (capsule == nullptr) {
    delete held;
    throw py::error_already_set();
  }
  const py::object holder = py::reinterpret_steal<py::object>(capsule);
  return from_dlpack_(holder);
}

}  // namespace pyloader::bindings
