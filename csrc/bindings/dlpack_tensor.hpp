// Framework tensors over pipeline memory, made through the DLPack exchange format.
//
// A batch's arrays are handed to torch as DLPack capsules (torch's `_from_dlpack`),
// which costs one small allocation and one call per column, and needs neither torch's
// headers at build time nor a numpy array in between. The capsule's deleter owns a
// reference to the memory's owner, so the memory lives exactly as long as the last
// tensor (or view) that torch made from it.
//
// Contract:
//   * The struct layouts below are the DLPack ABI (version 0.x "DLManagedTensor"),
//     which every framework's `from_dlpack` accepts under the capsule name "dltensor".
//   * `make_tensor` needs the GIL. The deleter it installs runs on whichever thread
//     drops the last tensor, with or without the GIL: it touches no Python object.
//   * `TensorMaker` holds torch's `_from_dlpack`, looked up once.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace pyloader::bindings {

struct DLDevice {
  std::int32_t device_type;  // kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3
  std::int32_t device_id;
};

struct DLDataType {
  std::uint8_t code;  // kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLComplex = 5, kDLBool = 6
  std::uint8_t bits;
  std::uint16_t lanes;
};

struct DLTensor {
  void* data;
  DLDevice device;
  std::int32_t ndim;
  DLDataType dtype;
  std::int64_t* shape;
  std::int64_t* strides;  // null: C-contiguous
  std::uint64_t byte_offset;
};

struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);
};

constexpr std::int32_t kDLCPU = 1;
constexpr std::int32_t kDLCUDA = 2;

// The DLPack element type of a numpy dtype; throws TypeError for dtypes DLPack cannot
// describe (objects, strings, structured records).
DLDataType dlpack_dtype(const pybind11::dtype& dtype);

// What keeps a tensor's memory alive: released (from any thread) when torch lets go.
using MemoryOwner = std::shared_ptr<void>;

class TensorMaker {
 public:
  TensorMaker();

  // A torch tensor of `shape` and `dtype` over `data` on `device`, C-contiguous,
  // holding `owner` until its storage is freed.
  pybind11::object operator()(const MemoryOwner& owner, void* data, DLDevice device, DLDataType dtype,
                              const std::vector<std::int64_t>& shape) const;

 private:
  pybind11::object from_dlpack_;
};

}  // namespace pyloader::bindings
