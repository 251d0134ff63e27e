#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <string>

#include "../core/device_copier.hpp"
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
      .def("wait_on", [](const CopyFence& fence, std::uintptr_t stream) {
             fence.wait_on(reinterpret_cast<CuStream>(stream));
           }, py::arg("stream"),
           "Makes the CUDA stream `stream` (a cudaStream_t as an int) wait for the copy, "
           "without blocking the host.");
  py::class_<DeviceCopier, std::shared_ptr<DeviceCopier>>(
      module, "DeviceCopier",
      "Issues host-to-device copies on one CUDA stream of device `ordinal`, through the "
      "driver library `driver` loaded at run time, in the device's primary context.")
      .def(py::init([](const std::string& driver, int ordinal, std::uintptr_t stream) {
             return std::make_shared<DeviceCopier>(CudaDriver::load(driver), ordinal,
                                                   reinterpret_cast<CuStream>(stream));
           }), py::arg("driver"), py::arg("ordinal"), py::arg("stream") = 0,
           "`stream`: a cudaStream_t (as an int) the caller keeps alive, or 0 for a stream "
           "of the copier's own.")
      .def_property_readonly("ordinal", &DeviceCopier::ordinal)
      .def_property_readonly("stream", [](const DeviceCopier& copier) {
        return reinterpret_cast<std::uintptr_t>(copier.stream());
      })
      .def("copy", [](const DeviceCopier& copier, std::uintptr_t destination, std::uintptr_t source,
                      std::size_t bytes) {
             return copier.copy(static_cast<CuDevicePtr>(destination), reinterpret_cast<const void*>(source), bytes);
           }, py::arg("destination"), py::arg("source"), py::arg("bytes"),
           "Copies `bytes` from host address `source` to device address `destination` "
           "asynchronously; both must stay valid until the returned fence is done.");
  py::class_<StagedBuffer>(module, "StagedBuffer",
                           "The base of a staged batch's arrays: its host and device blocks.")
      .def_readonly("address", &StagedBuffer::address)
      .def_readonly("host", &StagedBuffer::host)
      .def_readonly("device", &StagedBuffer::device)
      .def_readonly("fence", &StagedBuffer::fence);
}

}  // namespace pyloader::bindings
