// The `BatchPipeline` and `RowMap` classes of pyloader._core, and the pipeline's
// exception and constants: registration only (PythonBatchPipeline does the work).
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "../core/batch_pipeline.hpp"
#include "pipeline_arguments.hpp"
#include "python_pipeline.hpp"
#include "registry.hpp"

namespace py = pybind11;

namespace pyloader::bindings {

void register_pipeline(py::module_& module) {
  py::register_exception<SourceReadError>(module, "SourceReadError", PyExc_OSError);
  module.attr("EXPLICIT_READ_MIN_ROW_BYTES") = kExplicitReadMinRowBytes;
  py::class_<PythonRowMap, std::shared_ptr<PythonRowMap>>(
      module, "RowMap",
      "Dataset row k is column row rows[k]: validated against `source_rows` once, then "
      "shared by pipelines. A writeable array is copied, so later changes cannot reach it.")
      .def(py::init<const py::array&, std::int64_t>(), py::arg("rows"), py::arg("source_rows"))
      .def_property_readonly("source_rows", &PythonRowMap::source_rows)
      .def("__len__", &PythonRowMap::size);
  py::class_<PythonBatchPipeline>(module, "BatchPipeline",
                                  "Ordered, bounded prefetch of row batches gathered from numpy columns; a column is "
                                  "an array or a list of arrays (its pieces, concatenated).\n\n"
                                  "Safe to share between Python threads: calls are served one at a time.")
      .def(py::init<const std::vector<py::object>&, std::shared_ptr<ThreadPool>, std::size_t,
                    std::shared_ptr<const PythonRowMap>, const py::object&, const py::object&, const py::object&,
                    const std::string&, std::size_t, bool>(),
           py::arg("columns"), py::arg("pool"), py::arg("max_in_flight"), py::arg("row_map") = py::none(),
           py::arg("casts") = py::none(), py::arg("paddings") = py::none(), py::arg("files") = py::none(),
           py::arg("io") = "mmap", py::arg("read_threads") = 64, py::arg("stats") = true,
           "`files[c]` (None, or per piece None or (path, byte offset of row 0, st_dev, st_ino) of "
           "the file mapped; for records, of their values' row 0) names the file behind column c's memory mapping, "
           "which `io` ('mmap', "
           "'read' or 'auto'; 'mmap' here, the loader picks its own default) may read explicitly "
           "with `read_threads` reads in flight. A piece whose file cannot be opened, or is no "
           "longer that file, is copied from its mapping. `stats=False` keeps no counters.")
      .def("enqueue_indices", &PythonBatchPipeline::enqueue_indices, py::arg("indices"),
           "Request the rows `indices` (ints; negatives count from the end) as the next batch.")
      .def("enqueue_positions", &PythonBatchPipeline::enqueue_positions, py::arg("order"), py::arg("first"),
           py::arg("count"), "Request the rows at positions [first, first + count) of `order` as the next batch.")
      .def("schedule_positions", &PythonBatchPipeline::schedule_positions, py::arg("order"), py::arg("first"),
           py::arg("end"), py::arg("batch_size"),
           "Gather positions [first, end) of `order` in batches of `batch_size`, keeping "
           "the pipeline full by itself from now on.")
      .def("next", &PythonBatchPipeline::next, py::arg("timeout") = 0.0, py::arg("stream") = 0,
           "The oldest batch, as a list with per column a tensor, or for a ragged column a "
           "tuple (values, lengths, mask): values padded to (rows, width, ...) with a bool "
           "mask (None unless asked for), or packed to (total rows, ...) with mask None. "
           "Device batches are handed to the CUDA stream `stream` (a cudaStream_t as an "
           "int; 0: the legacy default stream), which waits for their copy; their memory is "
           "reused only after the work queued there by the time their last tensor dies. "
           "Batches gathered into supplied host blocks come as numpy arrays whose base is a "
           "StagedBuffer.")
      .def("close", &PythonBatchPipeline::close)
      .def("set_staging", &PythonBatchPipeline::set_staging, py::arg("host_allocator") = py::none(),
           py::arg("device") = nullptr, py::arg("device_memory_on_host") = false,
           "Gather into blocks from `host_allocator(nbytes)` (uint8 tensors, or None to use "
           "the pipeline's memory), or deliver each batch on `device` (a DeviceStaging), "
           "copied there as soon as it is gathered. Before the first request only.")
      .def_property_readonly("supplied_blocks", &PythonBatchPipeline::supplied_blocks,
                             "Supplied blocks not yet delivered with a batch.")
      .def_property_readonly("front_ready", &PythonBatchPipeline::front_ready,
                             "Whether next() would return the oldest batch without waiting.")
      .def_property_readonly("popped", &PythonBatchPipeline::popped,
                             "Batches next() has removed so far, failed ones included.")
      .def_property_readonly("last_error_consumed_batch", &PythonBatchPipeline::last_error_consumed_batch,
                             "Whether the error the last next() raised was that batch's own outcome "
                             "(its gather failed; the batch is consumed) rather than a failed call.")
      .def_property_readonly("explicitly_read_batches", &PythonBatchPipeline::explicitly_read_batches,
                             "Batches whose rows were read from their files explicitly so far.")
      .def_property_readonly("windows_read_ahead", &PythonBatchPipeline::windows_read_ahead,
                             "Windows of block-shuffled orders whose blocks were read ahead so far.")
      .def("stats", &PythonBatchPipeline::stats,
           "Counters so far (as they stood when closed, once closed), by name: batches, "
           "ready_when_asked, waited_ns, finished_ahead, consumer_gathers, wakeups, "
           "gathered_bytes, read_bytes (see PipelineStats).")
      .def_property_readonly("in_flight", &PythonBatchPipeline::in_flight)
      .def_property_readonly("max_in_flight", &PythonBatchPipeline::max_in_flight);
}

}  // namespace pyloader::bindings
