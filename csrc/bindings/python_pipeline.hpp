// PythonBatchPipeline: the Python face of a BatchPipeline (bound as `BatchPipeline`).
//
// Owns references to the source arrays for as long as the pipeline may read them,
// serves Python threads one at a time, waits with the GIL released and Ctrl-C checked,
// supplies host blocks ahead of requests, and hands batches over as tensors (or numpy
// arrays over supplied host blocks). Everything it decides is the core's: this class
// converts, holds references, and releases the GIL around waits.
//
// Contract:
//   * Safe to share between Python threads: calls are served one at a time (Consumer),
//     each batch to exactly one caller.
//   * close() may come from any thread (or a signal handler) at any time: the pipeline is
//     destroyed, without the GIL, when its last user lets go.
//   * Batches already handed out stay valid after close() and after destruction.
#pragma once

#include <pybind11/numpy.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../core/batch_pipeline.hpp"
#include "batch_outputs.hpp"
#include "host_supplies.hpp"
#include "pipeline_arguments.hpp"
#include "pipeline_columns.hpp"
#include "ragged_source.hpp"

namespace pyloader::bindings {

class PythonBatchPipeline {
 public:
  // `casts`, `paddings` and `files`: see pipeline_columns(). `io`: "mmap", "read" or "auto".
  PythonBatchPipeline(const std::vector<pybind11::object>& sources, std::shared_ptr<ThreadPool> pool,
                      std::size_t max_in_flight, std::shared_ptr<const PythonRowMap> row_map,
                      const pybind11::object& casts, const pybind11::object& paddings, const pybind11::object& files,
                      const std::string& io, std::size_t read_threads, bool counting);
  ~PythonBatchPipeline() { close(); }

  // Stops the pipeline: waits for running gathers and drops queued ones; a next() in
  // progress on another thread finishes first. The source arrays stay referenced until
  // this object is destroyed (a gather may still be reading them until the pipeline
  // is gone), and so do supplied blocks unless the pipeline stopped here. Batches
  // already handed out stay valid.
  void close();

  // Either batches are gathered into host blocks from `host_allocator(nbytes)` (a
  // uint8 tensor of at least nbytes, called on the consumer's thread ahead of need),
  // or they are delivered on `device` (gathered into its pinned pool, copied to its
  // device pool). `device_memory_on_host`: the driver's "device" memory is host memory
  // (a stand-in driver), so device batches are CPU tensors.
  void set_staging(const pybind11::object& host_allocator, std::shared_ptr<DeviceStaging> device,
                   bool device_memory_on_host);

  void enqueue_indices(pybind11::handle indices);
  void enqueue_positions(const IndexOrder& order, std::uint64_t first, std::uint64_t count);
  void schedule_positions(const IndexOrder& order, std::uint64_t first, std::uint64_t end, std::uint64_t batch_size);

  // The oldest batch as a list of tensors, one per column, or None if `timeout_seconds`
  // (when > 0) passed first. StopIteration when nothing is in flight (a schedule is
  // exhausted); KeyboardInterrupt on Ctrl-C while waiting. Calls from several threads
  // are served one at a time, each batch to exactly one caller.
  pybind11::object next(double timeout_seconds, std::uintptr_t stream);

  std::size_t supplied_blocks() const { return host_supplies_ ? host_supplies_->size() : 0; }
  std::size_t in_flight();
  std::uint64_t explicitly_read_batches();
  std::uint64_t windows_read_ahead();
  // The pipeline's counters (see PipelineStats), by name; as they stood when it closed.
  pybind11::dict stats();
  std::uint64_t popped();
  bool last_error_consumed_batch() const { return last_error_consumed_batch_; }
  bool front_ready();
  std::size_t max_in_flight();

 private:
  class Consumer;

  PythonBatchPipeline(PipelineColumns columns, std::shared_ptr<ThreadPool> pool, std::size_t max_in_flight,
                      std::shared_ptr<const PythonRowMap> row_map, const std::string& io, std::size_t read_threads,
                      bool counting);

  // Drops a reference to a pipeline; if it is the last, the pipeline's destructor
  // waits for its worker threads, which must not happen while holding the GIL.
  static void release_without_gil(std::shared_ptr<BatchPipeline>& pipeline);
  // Supplies host blocks before a request, when batches are gathered into them.
  void top_up_supplies(const BatchPipeline& pipeline);
  void forget_supplied();
  // The one warning that host blocks fell back to pageable memory.
  void warn_if_pinning_failed();
  // A device batch handed to the consumer's `stream` (see next()).
  pybind11::list on_device(GatheredBatch& batch, CuStream stream);
  // The batch as numpy arrays whose base is the StagedBuffer naming its blocks.
  pybind11::object arrays_of(GatheredBatch& batch);

  std::timed_mutex consumer_mutex_;
  std::atomic<std::thread::id> consumer_thread_{};  // the thread holding consumer_mutex_, if any
  PipelineStats final_stats_;  // the counters as the pipeline closed
  bool last_error_consumed_batch_ = false;  // written by next() under the consumer lock
  std::unique_ptr<HostSupplies> host_supplies_;  // outlives pipeline_'s use of its blocks
  std::shared_ptr<DeviceStaging> device_;  // batches are delivered on this device
  DLDevice device_location_{kDLCUDA, 0};
  std::uint64_t expected_rows_ = 0;  // rows of the latest request

  // Declared before pipeline_: released after it stops.
  std::vector<pybind11::array> arrays_;
  std::vector<std::shared_ptr<RaggedSource>> ragged_sources_;
  std::shared_ptr<const PythonRowMap> row_map_;
  BatchOutputs outputs_;
  std::shared_ptr<BatchPipeline> pipeline_;
};

}  // namespace pyloader::bindings
