#include "python_pipeline.hpp"

#include <algorithm>
#include <chrono>
#include <utility>

#include "../core/read_policy.hpp"
#include "staged_buffer.hpp"

namespace py = pybind11;

namespace pyloader::bindings {
namespace {

// How long a waiting consumer sleeps between checks for Ctrl-C (and its timeout).
constexpr std::chrono::milliseconds kSignalPollInterval{50};

}  // namespace

// Exclusive use of the pipeline by one caller, which holds the GIL. Waiting for
// another caller happens with the GIL released and Ctrl-C checked; the pipeline is
// referenced for the duration, so a close() meanwhile (from another thread or a
// signal handler) only takes effect when the last user lets go, without the GIL.
class PythonBatchPipeline::Consumer {
 public:
  explicit Consumer(PythonBatchPipeline& owner) : owner_(owner), lock_(owner.consumer_mutex_, std::defer_lock) {
    if (!lock_.try_lock()) {
      for (;;) {
        bool locked = false;
        {
          py::gil_scoped_release release;  // waits for another caller; no Python objects touched
          locked = lock_.try_lock_for(kSignalPollInterval);
        }
        if (locked) break;
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      }
    }
    owner_.consumer_thread_.store(std::this_thread::get_id());
    pipeline_ = owner_.pipeline_;
    if (!pipeline_) {
      owner_.consumer_thread_.store(std::thread::id());
      throw py::value_error("the pipeline is closed");
    }
  }
  ~Consumer() {
    owner_.consumer_thread_.store(std::thread::id());
    if (pipeline_ && pipeline_ != owner_.pipeline_) {  // closed meanwhile: the last user lets it go
      owner_.final_stats_ = pipeline_->stats();
      const bool last = pipeline_.use_count() == 1;
      release_without_gil(pipeline_);
      if (last) owner_.forget_supplied();  // as close() would have (this thread holds the GIL)
    }
  }
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;

  BatchPipeline& pipeline() const { return *pipeline_; }

 private:
  PythonBatchPipeline& owner_;
  std::unique_lock<std::timed_mutex> lock_;
  std::shared_ptr<BatchPipeline> pipeline_;
};

PythonBatchPipeline::PythonBatchPipeline(const std::vector<py::object>& sources, std::shared_ptr<ThreadPool> pool,
                                         std::size_t max_in_flight, std::shared_ptr<const PythonRowMap> row_map,
                                         const py::object& casts, const py::object& paddings, const py::object& files,
                                         const std::string& io, std::size_t read_threads, bool counting)
    : PythonBatchPipeline(pipeline_columns(sources, casts, paddings, files), std::move(pool), max_in_flight,
                          std::move(row_map), io, read_threads, counting) {}

PythonBatchPipeline::PythonBatchPipeline(PipelineColumns columns, std::shared_ptr<ThreadPool> pool,
                                         std::size_t max_in_flight, std::shared_ptr<const PythonRowMap> row_map,
                                         const std::string& io, std::size_t read_threads, bool counting)
    : arrays_(std::move(columns.arrays)),
      ragged_sources_(std::move(columns.ragged_sources)),
      row_map_(std::move(row_map)),
      outputs_(std::move(columns.outputs)) {
  std::optional<RowMap> map;
  if (row_map_) {
    check_row_map_serves(row_map_->source_rows(), BatchPipeline::column_rows(columns.fixed, columns.ragged));
    map = row_map_->view();
  }
  pipeline_ = std::make_shared<BatchPipeline>(std::move(columns.fixed), std::move(columns.ragged), std::move(pool),
                                              max_in_flight, map);
  pipeline_->set_io_mode(io_mode_named(io), read_threads);
  pipeline_->set_counting(counting);
  outputs_.resolve_tensor_types();
}

void PythonBatchPipeline::close() {
  if (!pipeline_) return;
  if (consumer_thread_.load() != std::this_thread::get_id()) {  // not from inside this thread's own next()
    std::unique_lock<std::timed_mutex> idle(consumer_mutex_, std::try_to_lock);
    if (idle.owns_lock()) final_stats_ = pipeline_->stats();  // else the caller in next() keeps them
  }
  std::shared_ptr<BatchPipeline> closing = std::move(pipeline_);
  const bool last = closing.use_count() == 1;  // the GIL keeps a Consumer from copying it meanwhile
  release_without_gil(closing);
  if (last) forget_supplied();  // the pipeline is gone: nothing uses them
}

void PythonBatchPipeline::set_staging(const py::object& host_allocator, std::shared_ptr<DeviceStaging> device,
                                      bool device_memory_on_host) {
  Consumer consumer(*this);
  Staging staging;
  std::unique_ptr<HostSupplies> supplies;
  if (!host_allocator.is_none()) {
    supplies = std::make_unique<HostSupplies>(host_allocator);
    staging.host = supplies->blocks();
  }
  staging.device = device;
  consumer.pipeline().set_staging(std::move(staging));
  if (supplies) host_supplies_ = std::move(supplies);
  device_ = std::move(device);
  if (device_) device_location_ = DLDevice{device_memory_on_host ? kDLCPU : kDLCUDA, device_->copier()->ordinal()};
}

void PythonBatchPipeline::enqueue_indices(py::handle indices) {
  std::vector<std::int64_t> rows = indices_from_python(indices);
  Consumer consumer(*this);
  expected_rows_ = rows.size();
  top_up_supplies(consumer.pipeline());
  consumer.pipeline().enqueue_indices(std::move(rows));
}

void PythonBatchPipeline::enqueue_positions(const IndexOrder& order, std::uint64_t first, std::uint64_t count) {
  Consumer consumer(*this);
  expected_rows_ = count;
  top_up_supplies(consumer.pipeline());
  consumer.pipeline().enqueue_positions(order, first, count);
}

void PythonBatchPipeline::schedule_positions(const IndexOrder& order, std::uint64_t first, std::uint64_t end,
                                             std::uint64_t batch_size) {
  Consumer consumer(*this);
  expected_rows_ = batch_size;
  top_up_supplies(consumer.pipeline());
  consumer.pipeline().schedule_positions(order, first, end, batch_size);
}

std::size_t PythonBatchPipeline::in_flight() {
  if (!pipeline_) return 0;
  Consumer consumer(*this);
  return consumer.pipeline().in_flight();
}

std::uint64_t PythonBatchPipeline::explicitly_read_batches() {
  if (!pipeline_) return 0;
  Consumer consumer(*this);
  return consumer.pipeline().explicitly_read_batches();
}

std::uint64_t PythonBatchPipeline::windows_read_ahead() {
  if (!pipeline_) return 0;
  Consumer consumer(*this);
  return consumer.pipeline().windows_read_ahead();
}

py::dict PythonBatchPipeline::stats() {
  PipelineStats stats = final_stats_;
  if (pipeline_) {
    Consumer consumer(*this);
    stats = consumer.pipeline().stats();
  }
  py::dict out;
  out["batches"] = stats.batches;
  out["ready_when_asked"] = stats.ready_when_asked;
  out["waited_ns"] = stats.waited_ns;
  out["finished_ahead"] = stats.finished_ahead;
  out["consumer_gathers"] = stats.consumer_gathers;
  out["wakeups"] = stats.wakeups;
  out["gathered_bytes"] = stats.gathered_bytes;
  out["read_bytes"] = stats.read_bytes;
  return out;
}

std::uint64_t PythonBatchPipeline::popped() {
  Consumer consumer(*this);
  return consumer.pipeline().popped();
}

bool PythonBatchPipeline::front_ready() {
  if (!pipeline_) return false;
  Consumer consumer(*this);
  return consumer.pipeline().front_ready();
}

std::size_t PythonBatchPipeline::max_in_flight() {
  Consumer consumer(*this);
  return consumer.pipeline().max_in_flight();
}

py::object PythonBatchPipeline::next(double timeout_seconds, std::uintptr_t stream) {
  Consumer consumer(*this);
  last_error_consumed_batch_ = false;
  BatchPipeline& pipeline = consumer.pipeline();
  if (pipeline.in_flight() == 0) throw py::stop_iteration();
  if (!pipeline.front_ready()) {
    using clock = std::chrono::steady_clock;
    const bool bounded = timeout_seconds > 0;
    const auto deadline = clock::now() + std::chrono::duration_cast<clock::duration>(
                                             std::chrono::duration<double>(bounded ? timeout_seconds : 0));
    for (;;) {
      auto wait = std::chrono::duration_cast<std::chrono::nanoseconds>(kSignalPollInterval);
      if (bounded) wait = std::min(wait, std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - clock::now()));
      bool ready = false;
      {
        py::gil_scoped_release release;  // waits on worker completion; no Python objects touched
        ready = pipeline.wait_front(wait);
      }
      if (ready) break;
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      if (bounded && clock::now() >= deadline) return py::none();
    }
  }
  top_up_supplies(pipeline);  // for the batch pop_front() enqueues
  if (device_) warn_if_pinning_failed();  // before the batch is taken: an error here consumes nothing
  const std::uint64_t popped_before = pipeline.popped();
  GatheredBatch batch;
  try {
    batch = pipeline.pop_front();  // the front is ready: this does not wait
  } catch (...) {
    last_error_consumed_batch_ = pipeline.popped() != popped_before;
    throw;
  }
  // From here the batch is out of the pipeline: a failure to hand it over is its outcome.
  last_error_consumed_batch_ = true;
  if (device_ || host_supplies_) {
    py::object delivered =
        device_ ? py::object(on_device(batch, reinterpret_cast<CuStream>(stream))) : arrays_of(batch);
    last_error_consumed_batch_ = false;
    return delivered;
  }
  const MemoryOwner owner = std::move(batch.buffer);
  py::list tensors = outputs_.tensors(batch, owner, static_cast<std::byte*>(owner.get()), DLDevice{kDLCPU, 0});
  last_error_consumed_batch_ = false;
  return tensors;
}

void PythonBatchPipeline::release_without_gil(std::shared_ptr<BatchPipeline>& pipeline) {
  if (PyGILState_Check()) {
    py::gil_scoped_release release;  // the destructor only waits for worker threads
    pipeline.reset();
  } else {
    pipeline.reset();
  }
}

void PythonBatchPipeline::top_up_supplies(const BatchPipeline& pipeline) {
  if (host_supplies_) host_supplies_->top_up(pipeline, expected_rows_);
}

void PythonBatchPipeline::forget_supplied() {
  if (host_supplies_) host_supplies_->forget_all();
}

void PythonBatchPipeline::warn_if_pinning_failed() {
  std::string reason;
  if (!device_->take_pinning_failure(reason)) return;
  const std::string message = "pinned memory could not be allocated (" + reason +
                              "); batches are staged in pageable memory, and copies to the device are "
                              "not asynchronous";
  if (PyErr_WarnEx(PyExc_RuntimeWarning, message.c_str(), 1) != 0) throw py::error_already_set();
}

// The stream waits for the copy (on the device), and the device block goes back to its
// pool once the work queued on that stream by the time the batch's last tensor dies is done.
py::list PythonBatchPipeline::on_device(GatheredBatch& batch, CuStream stream) {
  if (batch.fence) batch.fence->wait_on(stream);
  batch.device->release_after_work_on(device_->copier(), stream);
  batch.buffer.reset();  // its pinned block goes back to the pool, for reuse after the copy
  const MemoryOwner owner = std::move(batch.device);
  return outputs_.tensors(batch, owner, static_cast<FencedPool::Lease*>(owner.get())->data(), device_location_);
}

py::object PythonBatchPipeline::arrays_of(GatheredBatch& batch) {
  py::capsule capsule(new std::shared_ptr<std::byte>(std::move(batch.buffer)),
                      [](void* held) { delete static_cast<std::shared_ptr<std::byte>*>(held); });
  const std::byte* base = static_cast<std::shared_ptr<std::byte>*>(capsule.get_pointer())->get();
  StagedBuffer staged;
  staged.address = reinterpret_cast<std::uintptr_t>(base);
  staged.host = host_supplies_->take(batch.host_token);
  staged.keep_alive = capsule;
  const py::object owner = py::cast(std::move(staged));
  return outputs_.arrays(batch, owner, base);
}

}  // namespace pyloader::bindings
