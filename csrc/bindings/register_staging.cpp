#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <string>

#include "../core/device_copier.hpp"
#include "../core/device_staging.hpp"
#include "registry.hpp"
#include "staged_buffer.hpp"

namespace py = pybind11;

namespace pyloader::bindings {

void register_staging(py::module_& module) {
  py::register_exception<CudaError>(module, "CudaError", PyExc_RuntimeError);
  py::class_<CopyFence, std::shared_ptr<CopyFence>>(
      module, "CopyFence", "Completion of one host-to-device copy (a CUDA event recorded after it).")
      .def("done", &CopyFence::done, "Whether the copy has finished.")
      .def("wait", &CopyFence::wait, py::call_guard<py::gil_scoped_release>(),  // blocks on the driver only
           "Blocks until the copy has finished.")
      .def(
          "wait_on",
          [](const CopyFence& fence, std::uintptr_t stream) { fence.wait_on(reinterpret_cast<CuStream>(stream)); },
          py::arg("stream"),
          "Makes the CUDA stream `stream` (a cudaStream_t as an int) wait for the copy, "
          "without blocking the host.");
  py::class_<DeviceCopier, std::shared_ptr<DeviceCopier>>(
      module, "DeviceCopier",
      "Issues host-to-device copies on one CUDA stream of device `ordinal`, through the "
      "driver library `driver` loaded at run time, in the device's primary context.")
      .def(py::init([](const std::string& driver, int ordinal, std::uintptr_t stream) {
             return std::make_shared<DeviceCopier>(CudaDriver::load(driver), ordinal,
                                                   reinterpret_cast<CuStream>(stream));
           }),
           py::arg("driver"), py::arg("ordinal"), py::arg("stream") = 0,
           "`stream`: a cudaStream_t (as an int) the caller keeps alive, or 0 for a stream "
           "of the copier's own.")
      .def_property_readonly("ordinal", &DeviceCopier::ordinal)
      .def_property_readonly(
          "stream", [](const DeviceCopier& copier) { return reinterpret_cast<std::uintptr_t>(copier.stream()); })
      .def(
          "copy",
          [](const DeviceCopier& copier, std::uintptr_t destination, std::uintptr_t source, std::size_t bytes) {
            return copier.copy(static_cast<CuDevicePtr>(destination), reinterpret_cast<const void*>(source), bytes);
          },
          py::arg("destination"), py::arg("source"), py::arg("bytes"),
          "Copies `bytes` from host address `source` to device address `destination` "
          "asynchronously; both must stay valid until the returned fence is done.");
  py::class_<DeviceStaging, std::shared_ptr<DeviceStaging>>(
      module, "DeviceStaging",
      "Delivery on CUDA device `ordinal` through the driver library `driver`: a copier with "
      "a stream of its own, and pools of pinned host blocks and device blocks, shared by "
      "the pipelines (epochs) of one loader.")
      .def(py::init([](const std::string& driver, int ordinal) {
             return std::make_shared<DeviceStaging>(CudaDriver::load(driver), ordinal);
           }),
           py::arg("driver"), py::arg("ordinal"))
      .def_property_readonly(
          "copier",
          [](const DeviceStaging& staging) { return std::const_pointer_cast<DeviceCopier>(staging.copier()); })
      .def_property_readonly("allocations", &DeviceStaging::allocations, "Pinned and device blocks allocated so far.");
  py::class_<StagedBuffer>(module, "StagedBuffer",
                           "The base of the arrays of a batch gathered into a supplied host block.")
      .def_readonly("address", &StagedBuffer::address)
      .def_readonly("host", &StagedBuffer::host);
}

}  // namespace pyloader::bindings
