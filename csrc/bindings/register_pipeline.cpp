#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "../core/batch_pipeline.hpp"
#include "column_arrays.hpp"
#include "dlpack_tensor.hpp"
#include "ragged_source.hpp"
#include "registry.hpp"
#include "staged_buffer.hpp"

namespace py = pybind11;

namespace pyloader::bindings {
namespace {

// How long a waiting consumer sleeps between checks for Ctrl-C (and its timeout).
constexpr std::chrono::milliseconds kSignalPollInterval{50};

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

// A validated, immutable map from dataset rows to column rows (see RowMap): checked
// once when built, so that every pipeline of every epoch can use it in O(1).
class PythonRowMap {
 public:
  PythonRowMap(const py::array& rows, std::int64_t source_rows) : source_rows_(source_rows) {
    rows_ = py::array_t<std::int64_t, py::array::c_style>::ensure(rows);
    if (!rows_ || rows_.ndim() != 1) {
      throw py::type_error("a row map must be a one-dimensional C-contiguous int64 array");
    }
    if (rows_.writeable() || !rows_.owndata()) {
      // Pipelines read it from worker threads: keep a copy nobody else can change.
      rows_ = py::array_t<std::int64_t, py::array::c_style>::ensure(rows_.attr("copy")());
      rows_.attr("setflags")(py::arg("write") = false);
    }
    const std::int64_t* data = rows_.data();
    for (py::ssize_t k = 0; k < rows_.size(); ++k) {
      if (data[k] < 0 || data[k] >= source_rows) {
        throw py::index_error("row map entry " + std::to_string(data[k]) + " is out of range for " +
                              std::to_string(source_rows) + " rows");
      }
    }
  }

  RowMap view() const { return RowMap{rows_.data(), static_cast<std::int64_t>(rows_.size())}; }
  std::int64_t source_rows() const { return source_rows_; }
  py::ssize_t size() const { return rows_.size(); }

 private:
  py::array_t<std::int64_t> rows_;
  std::int64_t source_rows_;
};

// The conversion from `source` elements to `target` (None: none). Only integers are
// converted, to int32 or int64.
ElementCast cast_between(const py::dtype& source, const py::object& target) {
  if (target.is_none()) return ElementCast{};
  const py::dtype to = py::dtype::from_args(target);
  const char from_kind = source.kind();
  if ((from_kind != 'i' && from_kind != 'u') || to.kind() != 'i' || (to.itemsize() != 4 && to.itemsize() != 8)) {
    throw py::type_error("only integer elements can be converted, to int32 or int64 (asked: " +
                         py::str(source).cast<std::string>() + " to " + py::str(to).cast<std::string>() + ")");
  }
  ElementCast cast;
  cast.source_bytes = static_cast<std::uint8_t>(source.itemsize());
  cast.source_signed = from_kind == 'i';
  cast.target_bytes = static_cast<std::uint8_t>(to.itemsize());
  return cast;
}

Padding padding_from(const py::handle& spec) {
  Padding padding;
  if (spec.is_none()) return padding;
  const auto options = py::reinterpret_borrow<py::dict>(spec);
  padding.enabled = true;
  padding.max_length = options["max_length"].cast<std::int64_t>();
  padding.multiple = options["multiple"].cast<std::int64_t>();
  padding.left = options["left"].cast<bool>();
  padding.mask = options["mask"].cast<bool>();
  const std::string value = options["value"].cast<std::string>();
  if (padding.max_length < 0 || padding.multiple < 1 || padding.multiple > (std::int64_t{1} << 32) ||
      value.size() > padding.value.size()) {
    throw py::value_error("invalid padding options");
  }
  std::memcpy(padding.value.data(), value.data(), value.size());
  return padding;
}

bool is_ragged_source(const py::handle& source) {
  if (py::isinstance<RaggedSource>(source)) return true;
  if (py::isinstance<py::list>(source) || py::isinstance<py::tuple>(source)) {
    for (py::handle piece : source) return py::isinstance<RaggedSource>(piece);
  }
  return false;
}

IoMode io_mode_from(const std::string& name) {
  if (name == "mmap") return IoMode::kMmap;
  if (name == "read") return IoMode::kRead;
  if (name == "auto") return IoMode::kAuto;
  throw py::value_error("io must be 'auto', 'mmap' or 'read', not '" + name + "'");
}

// The file behind a mapped piece, for explicit reads, or null when it cannot be read
// as the mapping would be: the piece then keeps being copied from its mapping, which
// stays valid whatever happened to the path (unlinked, replaced, no descriptors left).
std::shared_ptr<const FileSource> open_file_source(const std::string& path, std::int64_t offset, std::uint64_t device,
                                                   std::uint64_t inode) {
  try {
    auto file = std::make_shared<const FileSource>(path, offset);
    if (!file->is(device, inode)) return nullptr;  // another file now has that path
    return file;
  } catch (const std::system_error&) {
    return nullptr;
  }
}

// Python face of a BatchPipeline: owns references to the source arrays for as long
// as the pipeline may read them, and turns gathered buffers into numpy arrays.
class PythonBatchPipeline {
 public:
  // `casts[c]` (a dtype or None) converts column c's integers; `paddings[c]` (None:
  // packed) says how ragged column c's batches are padded. Both default to None.
  PythonBatchPipeline(const std::vector<py::object>& sources, std::shared_ptr<ThreadPool> pool,
                      std::size_t max_in_flight, std::shared_ptr<const PythonRowMap> row_map, const py::object& casts,
                      const py::object& paddings, const py::object& files, const std::string& io,
                      std::size_t read_threads, bool counting)
      : row_map_(std::move(row_map)) {
    auto option = [&](const py::object& options, std::size_t c) -> py::object {
      if (options.is_none()) return py::none();
      const auto list = py::reinterpret_borrow<py::sequence>(options);
      if (list.size() != sources.size()) throw py::value_error("one option per column is needed");
      return list[c];
    };
    std::vector<py::object> fixed_sources;
    std::vector<RaggedColumn> ragged;
    for (std::size_t c = 0; c < sources.size(); ++c) {
      if (!is_ragged_source(sources[c])) {
        output_.push_back(Output{false, fixed_sources.size()});
        fixed_sources.push_back(sources[c]);
        continue;
      }
      RaggedColumn column;
      std::vector<std::shared_ptr<RaggedSource>> pieces;
      if (py::isinstance<RaggedSource>(sources[c])) {
        pieces.push_back(sources[c].cast<std::shared_ptr<RaggedSource>>());
      } else {
        for (py::handle piece : sources[c]) pieces.push_back(piece.cast<std::shared_ptr<RaggedSource>>());
      }
      const py::array& first = pieces.front()->values();
      for (const auto& piece : pieces) {
        const py::array& values = piece->values();
        if (!values.dtype().equal(first.dtype()) || values.ndim() != first.ndim() ||
            !std::equal(values.shape() + 1, values.shape() + values.ndim(), first.shape() + 1)) {
          throw py::value_error("the pieces of a ragged column must share dtype and trailing shape");
        }
        RaggedPiece view = piece->piece();
        view.first_record = column.records();
        column.pieces.push_back(view);
        ragged_sources_.push_back(piece);
      }
      column.cast = cast_between(first.dtype(), option(casts, c));
      const py::dtype out = column.cast.active() ? py::dtype::from_args(option(casts, c)) : first.dtype();
      column.element_bytes = out.itemsize();
      column.padding = padding_from(option(paddings, c));
      padded_.push_back(column.padding.enabled);
      masked_.push_back(column.padding.mask);
      if (column.padding.enabled && static_cast<std::size_t>(column.element_bytes) > column.padding.value.size()) {
        throw py::value_error("elements wider than 8 bytes cannot be padded");
      }
      ragged_shapes_.emplace_back(first.shape() + 1, first.shape() + first.ndim());
      ragged_dtypes_.push_back(out);
      output_.push_back(Output{true, ragged.size()});
      ragged.push_back(std::move(column));
    }
    std::vector<Column> columns = columns_from_sources(fixed_sources, arrays_);
    std::size_t first_piece = 0;
    for (std::size_t c = 0; c < columns.size(); ++c) {
      const py::array& array = arrays_[first_piece];
      py::object target = py::none();
      for (std::size_t k = 0; k < output_.size(); ++k) {
        if (!output_[k].ragged && output_[k].index == c) target = option(casts, k);
      }
      columns[c].cast = cast_between(array.dtype(), target);
      dtypes_.push_back(columns[c].cast.active() ? py::dtype::from_args(target) : array.dtype());
      trailing_shapes_.emplace_back(array.shape() + 1, array.shape() + array.ndim());
      first_piece += columns[c].pieces.size();
    }
    for (std::size_t k = 0; k < output_.size(); ++k) {
      const py::object spec = option(files, k);
      if (spec.is_none()) continue;
      const auto per_piece = py::reinterpret_borrow<py::sequence>(spec);
      const std::size_t pieces =
          output_[k].ragged ? ragged[output_[k].index].pieces.size() : columns[output_[k].index].pieces.size();
      if (per_piece.size() != pieces) throw py::value_error("one file (or None) per column piece is needed");
      for (std::size_t p = 0; p < pieces; ++p) {
        if (per_piece[p].is_none()) continue;
        const auto entry = py::reinterpret_borrow<py::tuple>(per_piece[p]);
        auto file = open_file_source(entry[0].cast<std::string>(), entry[1].cast<std::int64_t>(),
                                     entry[2].cast<std::uint64_t>(), entry[3].cast<std::uint64_t>());
        if (output_[k].ragged) {
          ragged[output_[k].index].pieces[p].file = std::move(file);
        } else {
          columns[output_[k].index].pieces[p].file = std::move(file);
        }
      }
    }
    std::optional<RowMap> map;
    if (row_map_) {
      const std::int64_t source_rows =
          !columns.empty() ? columns.front().rows() : (ragged.empty() ? 0 : ragged.front().records());
      if (row_map_->source_rows() != source_rows) {
        throw py::value_error("the row map was built for " + std::to_string(row_map_->source_rows()) +
                              " column rows, the columns have " + std::to_string(source_rows));
      }
      map = row_map_->view();
    }
    pipeline_ =
        std::make_shared<BatchPipeline>(std::move(columns), std::move(ragged), std::move(pool), max_in_flight, map);
    pipeline_->set_io_mode(io_mode_from(io), read_threads);
    pipeline_->set_counting(counting);
    for (const py::dtype& dtype : dtypes_) dl_dtypes_.push_back(dlpack_dtype(dtype));
    for (const py::dtype& dtype : ragged_dtypes_) ragged_dl_dtypes_.push_back(dlpack_dtype(dtype));
  }

  ~PythonBatchPipeline() { close(); }

  // Stops the pipeline: waits for running gathers and drops queued ones; a next() in
  // progress on another thread finishes first. The source arrays stay referenced until
  // this object is destroyed (a gather may still be reading them until the pipeline
  // is gone), and so do supplied blocks unless the pipeline stopped here. Batches
  // already handed out stay valid.
  void close() {
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

  // Either batches are gathered into host blocks from `host_allocator(nbytes)` (a
  // uint8 tensor of at least nbytes, called on the consumer's thread ahead of need),
  // or they are delivered on `device` (gathered into its pinned pool, copied to its
  // device pool). `device_memory_on_host`: the driver's "device" memory is host memory
  // (a stand-in driver), so device batches are CPU tensors.
  void set_staging(const py::object& host_allocator, std::shared_ptr<DeviceStaging> device,
                   bool device_memory_on_host) {
    Consumer consumer(*this);
    Staging staging;
    if (!host_allocator.is_none()) {
      host_blocks_ = std::make_shared<SuppliedBlocks>();
      host_allocator_ = host_allocator;
      staging.host = host_blocks_;
    }
    staging.device = device;
    consumer.pipeline().set_staging(std::move(staging));
    device_ = std::move(device);
    if (device_) device_location_ = DLDevice{device_memory_on_host ? kDLCPU : kDLCUDA, device_->copier()->ordinal()};
    supplied_host_ = static_cast<bool>(host_blocks_);
  }

  void enqueue_indices(py::handle indices) {
    std::vector<std::int64_t> rows = indices_from_python(indices);
    Consumer consumer(*this);
    expected_rows_ = rows.size();
    top_up_supplies(consumer.pipeline());
    consumer.pipeline().enqueue_indices(std::move(rows));
  }

  void enqueue_positions(const IndexOrder& order, std::uint64_t first, std::uint64_t count) {
    Consumer consumer(*this);
    expected_rows_ = count;
    top_up_supplies(consumer.pipeline());
    consumer.pipeline().enqueue_positions(order, first, count);
  }

  void schedule_positions(const IndexOrder& order, std::uint64_t first, std::uint64_t end, std::uint64_t batch_size) {
    Consumer consumer(*this);
    expected_rows_ = batch_size;
    top_up_supplies(consumer.pipeline());
    consumer.pipeline().schedule_positions(order, first, end, batch_size);
  }

  std::size_t supplied_blocks() const { return supplied_.size(); }

  std::size_t in_flight() {
    if (!pipeline_) return 0;
    Consumer consumer(*this);
    return consumer.pipeline().in_flight();
  }
  std::uint64_t explicitly_read_batches() {
    if (!pipeline_) return 0;
    Consumer consumer(*this);
    return consumer.pipeline().explicitly_read_batches();
  }
  std::uint64_t windows_read_ahead() {
    if (!pipeline_) return 0;
    Consumer consumer(*this);
    return consumer.pipeline().windows_read_ahead();
  }
  // The pipeline's counters (see PipelineStats), by name; zeros once closed.
  py::dict stats() {
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
  std::uint64_t popped() {
    Consumer consumer(*this);
    return consumer.pipeline().popped();
  }
  bool last_error_consumed_batch() const { return last_error_consumed_batch_; }
  bool front_ready() {
    if (!pipeline_) return false;
    Consumer consumer(*this);
    return consumer.pipeline().front_ready();
  }
  std::size_t max_in_flight() {
    Consumer consumer(*this);
    return consumer.pipeline().max_in_flight();
  }

  // The oldest batch as a tuple of arrays, one per column, or None if `timeout_seconds`
  // (when > 0) passed first. StopIteration when nothing is in flight (a schedule is
  // exhausted); KeyboardInterrupt on Ctrl-C while waiting. Calls from several threads
  // are served one at a time, each batch to exactly one caller.
  py::object next(double timeout_seconds, std::uintptr_t stream) {
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
        if (bounded)
          wait = std::min(wait, std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - clock::now()));
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
    if (supplied_host_) top_up_supplies(pipeline);  // for the batch pop_front() enqueues
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
    if (device_ || supplied_host_) {
      py::object delivered =
          device_ ? py::object(on_device(batch, reinterpret_cast<CuStream>(stream))) : arrays_of(batch);
      last_error_consumed_batch_ = false;
      return delivered;
    }
    const MemoryOwner owner = std::move(batch.buffer);
    py::list tensors = tensors_of(batch, owner, static_cast<std::byte*>(owner.get()), DLDevice{kDLCPU, 0});
    last_error_consumed_batch_ = false;
    return tensors;
  }

 private:
  // The one warning that host blocks fell back to pageable memory.
  void warn_if_pinning_failed() {
    std::string reason;
    if (!device_->take_pinning_failure(reason)) return;
    const std::string message = "pinned memory could not be allocated (" + reason +
                                "); batches are staged in pageable memory, and copies to the device are "
                                "not asynchronous";
    if (PyErr_WarnEx(PyExc_RuntimeWarning, message.c_str(), 1) != 0) throw py::error_already_set();
  }

  // A device batch handed to the consumer's `stream`: the stream waits for the copy
  // (on the device), and the device block goes back to its pool once the work queued
  // on that stream by the time the batch's last tensor dies is done.
  py::list on_device(GatheredBatch& batch, CuStream stream) {
    if (batch.fence) batch.fence->wait_on(stream);
    batch.device->release_after_work_on(device_->copier(), stream);
    batch.buffer.reset();  // its pinned block goes back to the pool, for reuse after the copy
    const MemoryOwner owner = std::move(batch.device);
    return tensors_of(batch, owner, static_cast<FencedPool::Lease*>(owner.get())->data(), device_location_);
  }

  // The batch as torch tensors over memory laid out as the batch (`base`, on `device`),
  // held by `owner`: a list with, per column, a tensor, or for a ragged column a tuple
  // (values, lengths, mask).
  py::list tensors_of(const GatheredBatch& batch, const MemoryOwner& owner, std::byte* base, DLDevice device) const {
    const auto rows = static_cast<std::int64_t>(batch.rows);
    py::list columns(output_.size());
    std::vector<std::int64_t> shape;
    for (std::size_t k = 0; k < output_.size(); ++k) {
      const std::size_t c = output_[k].index;
      shape.assign(1, rows);
      if (!output_[k].ragged) {
        shape.insert(shape.end(), trailing_shapes_[c].begin(), trailing_shapes_[c].end());
        columns[k] = make_tensor_(owner, base + batch.column_offsets[c], device, dl_dtypes_[c], shape);
        continue;
      }
      const GatheredBatch::RaggedParts parts = batch.ragged(c);
      const auto width = static_cast<std::int64_t>(parts.width);
      const bool padded = padded_[c];
      if (padded) {
        shape.push_back(width);
      } else {
        shape.assign(1, width);
      }
      shape.insert(shape.end(), ragged_shapes_[c].begin(), ragged_shapes_[c].end());
      py::object values = make_tensor_(owner, base + parts.values, device, ragged_dl_dtypes_[c], shape);
      py::object lengths = make_tensor_(owner, base + parts.lengths, device, kInt64, {rows});
      py::object mask = py::none();
      if (padded && masked_[c]) mask = make_tensor_(owner, base + parts.mask, device, kBool, {rows, width});
      columns[k] = py::make_tuple(values, lengths, mask);
    }
    return columns;
  }

  // The batch as numpy arrays whose base is the StagedBuffer naming its blocks.
  py::object arrays_of(GatheredBatch& batch) {
    py::capsule capsule(new std::shared_ptr<std::byte>(std::move(batch.buffer)),
                        [](void* held) { delete static_cast<std::shared_ptr<std::byte>*>(held); });
    const std::byte* base = static_cast<std::shared_ptr<std::byte>*>(capsule.get_pointer())->get();
    StagedBuffer staged;
    staged.address = reinterpret_cast<std::uintptr_t>(base);
    staged.host = take_supplied(batch.host_token);
    staged.keep_alive = capsule;
    const py::object owner = py::cast(std::move(staged));
    const auto rows = static_cast<py::ssize_t>(batch.rows);
    py::tuple columns(output_.size());
    for (std::size_t k = 0; k < output_.size(); ++k) {
      const std::size_t c = output_[k].index;
      if (!output_[k].ragged) {
        std::vector<py::ssize_t> shape{rows};
        shape.insert(shape.end(), trailing_shapes_[c].begin(), trailing_shapes_[c].end());
        columns[k] = py::array(dtypes_[c], shape, base + batch.column_offsets[c], owner);
        continue;
      }
      const GatheredBatch::RaggedParts parts = batch.ragged(c);
      const auto width = static_cast<py::ssize_t>(parts.width);
      const bool padded = padded_[c];
      std::vector<py::ssize_t> shape = padded ? std::vector<py::ssize_t>{rows, width} : std::vector<py::ssize_t>{width};
      shape.insert(shape.end(), ragged_shapes_[c].begin(), ragged_shapes_[c].end());
      py::array values(ragged_dtypes_[c], shape, base + parts.values, owner);
      py::array lengths(py::dtype::of<std::int64_t>(), std::vector<py::ssize_t>{rows}, base + parts.lengths, owner);
      py::object mask = py::none();
      if (padded && masked_[c]) {
        mask = py::array(py::dtype::of<bool>(), std::vector<py::ssize_t>{rows, width}, base + parts.mask, owner);
      }
      columns[k] = py::make_tuple(values, lengths, mask);
    }
    return std::move(columns);
  }

  // Exclusive use of the pipeline by one caller, which holds the GIL. Waiting for
  // another caller happens with the GIL released and Ctrl-C checked; the pipeline is
  // referenced for the duration, so a close() meanwhile (from another thread or a
  // signal handler) only takes effect when the last user lets go, without the GIL.
  class Consumer {
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

  // Drops a reference to a pipeline; if it is the last, the pipeline's destructor
  // waits for its worker threads, which must not happen while holding the GIL.
  static void release_without_gil(std::shared_ptr<BatchPipeline>& pipeline) {
    if (PyGILState_Check()) {
      py::gil_scoped_release release;  // the destructor only waits for worker threads
      pipeline.reset();
    } else {
      pipeline.reset();
    }
  }

  // Supplies host blocks as the pipeline asks (see BatchPipeline::expected_batch_bytes),
  // so that pinned memory stays within about one prefetch depth.
  void top_up_supplies(const BatchPipeline& pipeline) {
    if (!supplied_host_) return;
    const std::size_t bytes = pipeline.expected_batch_bytes(expected_rows_);
    if (bytes == 0) return;
    for (std::uint64_t token : host_blocks_->discard_smaller_than(bytes)) supplied_.erase(token);
    while (supplied_.size() < pipeline.supplied_blocks_wanted() && supply_host_block(bytes)) {
    }
  }

  // One block from the host allocator, supplied to the pipeline under a new token;
  // false when the allocator declined (returned None).
  bool supply_host_block(std::size_t bytes) {
    py::object tensor = host_allocator_(bytes);
    if (tensor.is_none()) return false;
    const auto address = tensor.attr("data_ptr")().cast<std::uintptr_t>();
    const auto size = tensor.attr("nbytes").cast<std::size_t>();
    if (size < bytes) {
      throw py::value_error("the allocator returned " + std::to_string(size) + " bytes, " + std::to_string(bytes) +
                            " were asked for");
    }
    const std::uint64_t token = next_token_++;
    supplied_.emplace(token, std::move(tensor));
    host_blocks_->supply(SuppliedBlock{reinterpret_cast<std::byte*>(address), size, token});
    return true;
  }

  void forget_supplied() { supplied_.clear(); }

  py::object take_supplied(std::uint64_t token) {
    if (token == 0) return py::none();
    auto found = supplied_.find(token);
    if (found == supplied_.end()) return py::none();
    py::object tensor = std::move(found->second);
    supplied_.erase(found);
    return tensor;
  }

  std::timed_mutex consumer_mutex_;
  std::atomic<std::thread::id> consumer_thread_{};  // the thread holding consumer_mutex_, if any
  PipelineStats final_stats_;  // the counters as the pipeline closed
  bool last_error_consumed_batch_ = false;  // written by next() under the consumer lock
  bool supplied_host_ = false;  // batches are gathered into supplied host blocks
  std::shared_ptr<SuppliedBlocks> host_blocks_;
  py::object host_allocator_;
  std::shared_ptr<DeviceStaging> device_;  // batches are delivered on this device
  DLDevice device_location_{kDLCUDA, 0};
  std::map<std::uint64_t, py::object> supplied_;  // token -> host tensor, until delivered; outlives pipeline_
  std::uint64_t next_token_ = 1;
  std::uint64_t expected_rows_ = 0;  // rows of the latest request

  struct Output {
    bool ragged;
    std::size_t index;  // among the fixed-size or among the ragged columns
  };
  std::vector<Output> output_;  // the columns in the caller's order
  std::vector<py::array> arrays_;  // declared before pipeline_: released after it stops
  std::vector<std::shared_ptr<RaggedSource>> ragged_sources_;
  std::vector<std::vector<py::ssize_t>> ragged_shapes_;
  std::vector<py::dtype> ragged_dtypes_;
  std::vector<bool> padded_, masked_;
  std::shared_ptr<const PythonRowMap> row_map_;
  std::vector<py::dtype> dtypes_;
  std::vector<DLDataType> dl_dtypes_, ragged_dl_dtypes_;
  static constexpr DLDataType kInt64{0, 64, 1};
  static constexpr DLDataType kBool{6, 8, 1};
  TensorMaker make_tensor_;
  std::vector<std::vector<py::ssize_t>> trailing_shapes_;
  std::shared_ptr<BatchPipeline> pipeline_;
};

}  // namespace

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
