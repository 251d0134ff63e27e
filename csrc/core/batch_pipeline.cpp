#include "batch_pipeline.hpp"

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "bus_error_guard.hpp"

namespace pyloader {
namespace {

constexpr std::size_t kColumnAlignment = 64;
// Batches one drainer keeps reading at once: a batch's reads are waited for only after
// the next few batches' reads are in flight, so the read engine is never left idle
// between batches (one gather thread on a small machine still keeps dozens of reads in
// flight).
constexpr std::size_t kBatchesReadAtOnce = 4;
// Free batch buffers kept beyond the in-flight ones, so that a consumer that drops
// each batch before taking the next never makes the pool allocate.
constexpr std::size_t kSpareBuffers = 2;

std::size_t align_up(std::size_t value, std::size_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

}  // namespace

// A batch whose explicit reads are in flight: what end_fill() needs of begin_fill().
struct BatchPipeline::Reading {
  ReadPlan plan;
  std::vector<char> done;  // per fixed column: written by the reads
  std::unique_ptr<ExplicitReads::Pending> pending;
};

struct BatchPipeline::Slot {
  std::vector<std::int64_t> indices;
  std::optional<IndexOrder> order;  // set for position requests (then `indices` stays empty)
  std::uint64_t first_position = 0;
  bool read_ahead = false;  // its rows' blocks were read ahead: copied from the mapping
  std::vector<std::size_t> column_offsets;
  std::shared_ptr<std::byte> buffer;
  std::size_t rows = 0;
  std::size_t bytes = 0;
  std::optional<SuppliedBlock> host_block;  // staging: the supplied block this batch took
  std::shared_ptr<FencedPool::Lease> host_lease, device_lease;  // device staging: its blocks
  std::shared_ptr<CopyFence> fence;
  // Ragged columns: each record's span, where packed records start, the batch layout.
  std::vector<std::vector<RecordSpan>> spans;
  std::vector<std::vector<std::int64_t>> starts;
  std::vector<RaggedLayout> layouts;
  std::vector<std::int64_t> ragged_widths;
  // queued -> gathering (claimed by one thread, worker or consumer) -> done
  std::atomic<int> state{kQueued};
  std::exception_ptr error;  // set by the gathering thread before the batch is marked done
  bool retry = false;        // the error was a failed allocation: nothing consumed, gather again

  // Between begin_fill() and end_fill(): its reads in flight. Last, so that it is
  // destroyed (its reads waited for) before the buffers they write into.
  std::unique_ptr<Reading> reading;

  static constexpr int kQueued = 0;
  static constexpr int kGathering = 1;
  static constexpr int kDone = 2;

  bool claim() noexcept {
    int expected = kQueued;
    return state.compare_exchange_strong(expected, kGathering, std::memory_order_acq_rel);
  }
  bool done() const noexcept { return state.load(std::memory_order_acquire) == kDone; }
};

BatchPipeline::BatchPipeline(std::vector<Column> columns, std::shared_ptr<ThreadPool> pool, std::size_t max_in_flight,
                             std::optional<RowMap> row_map)
    : BatchPipeline(std::move(columns), {}, std::move(pool), max_in_flight, row_map) {}

BatchPipeline::BatchPipeline(std::vector<Column> columns, std::vector<RaggedColumn> ragged_columns,
                             std::shared_ptr<ThreadPool> pool, std::size_t max_in_flight, std::optional<RowMap> row_map)
    : columns_(std::move(columns)),
      ragged_(std::move(ragged_columns)),
      rows_(0),
      source_rows_(column_rows(columns_, ragged_)),
      row_map_(row_map),
      reads_(std::make_unique<ReadPolicy>(columns_, ragged_, IoMode::kMmap, 0, row_map.has_value())),
      max_in_flight_(max_in_flight == 0 ? 1 : max_in_flight),
      wake_queued_(std::max<std::size_t>(1, max_in_flight_ / 4)),
      pool_(std::move(pool)),
      sync_(std::make_unique<Sync>()) {
  if (!pool_) throw std::invalid_argument("BatchPipeline needs a thread pool");
  rows_ = row_map ? row_map->size : source_rows_;
  for (const RaggedColumn& column : ragged_) {
    if (column.pieces.empty()) throw std::invalid_argument("a ragged column needs at least one piece");
    if (column.records() != source_rows_) {
      throw std::invalid_argument("all columns must have the same number of rows");
    }
    std::int64_t next_record = 0;
    for (const RaggedPiece& piece : column.pieces) {
      if (piece.first_record != next_record || piece.records < 0 || piece.value_row_bytes != column.value_row_bytes() ||
          (piece.offsets == nullptr && (piece.pointers == nullptr || piece.lengths == nullptr))) {
        throw std::invalid_argument("ragged pieces must follow each other and share a row size");
      }
      next_record += piece.records;
    }
  }
  install_bus_error_handler();
  for (const Column& column : columns_) {
    if (column.pieces.empty()) throw std::invalid_argument("a column needs at least one piece");
    if (column.rows() != source_rows_) throw std::invalid_argument("all columns must have the same number of rows");
    std::int64_t next_row = 0;
    for (const ColumnView& piece : column.pieces) {
      if (piece.first_row != next_row || piece.rows < 0) {
        throw std::invalid_argument("column pieces must follow each other without gaps");
      }
      if (piece.row_bytes != column.row_bytes() || piece.row_bytes < 0) {
        throw std::invalid_argument("column pieces must have the same row size");
      }
      next_row += piece.rows;
    }
  }
  buffers_ = BufferPool::create(max_in_flight_ + kSpareBuffers);
}

std::int64_t BatchPipeline::column_rows(const std::vector<Column>& columns, const std::vector<RaggedColumn>& ragged) {
  return !columns.empty() ? columns.front().rows() : (ragged.empty() ? 0 : ragged.front().records());
}

BatchPipeline::~BatchPipeline() {
  if (!owner_.is_current()) {
    (void)sync_.release();  // forked child: see the class comment
    return;
  }
  // Queued gathers that have not started skip their copy; running ones finish. Either
  // way no worker reads the columns once this returns, so their owner may free them.
  sync_->cancelled.store(true, std::memory_order_relaxed);
  {
    std::unique_lock<std::mutex> lock(sync_->mutex);
    sync_->completed.wait(lock, [this] { return sync_->tasks_outstanding == 0; });
  }
}

void BatchPipeline::check_capacity() const {
  if (slots_.size() >= max_in_flight_) {
    throw std::logic_error("BatchPipeline: too many batches in flight");
  }
}

void BatchPipeline::check_batch_rows(std::uint64_t rows) const {
  if (rows > kMaxBatchRows) {
    throw std::length_error("a batch of " + std::to_string(rows) + " rows is larger than the " +
                            std::to_string(kMaxBatchRows) + " rows one batch can hold");
  }
}

void BatchPipeline::enqueue_indices(std::vector<std::int64_t> indices) {
  check_capacity();
  check_batch_rows(indices.size());
  for (std::int64_t& index : indices) {
    const std::int64_t requested = index;
    if (index < 0) index += rows_;
    if (index < 0 || index >= rows_) {
      throw std::out_of_range("index " + std::to_string(requested) + " is out of range for a dataset of " +
                              std::to_string(rows_) + " rows");
    }
  }
  auto slot = std::make_shared<Slot>();
  slot->rows = indices.size();
  slot->indices = std::move(indices);
  start(std::move(slot));
}

void BatchPipeline::enqueue_positions(const IndexOrder& order, std::uint64_t first, std::uint64_t count) {
  check_capacity();
  if (order.rows() > static_cast<std::uint64_t>(rows_) || first > order.size() || count > order.size() - first) {
    throw std::out_of_range("positions [" + std::to_string(first) + ", " + std::to_string(first + count) +
                            ") outside an order of " + std::to_string(order.size()) + " positions over " +
                            std::to_string(order.rows()) + " of " + std::to_string(rows_) + " rows");
  }
  check_batch_rows(count);
  auto slot = std::make_shared<Slot>();
  slot->rows = static_cast<std::size_t>(count);
  slot->order = order;
  slot->first_position = first;
  slot->read_ahead = reads_->read_ahead(order, first, count);
  start(std::move(slot));
}

void BatchPipeline::schedule_positions(const IndexOrder& order, std::uint64_t first, std::uint64_t end,
                                       std::uint64_t batch_size) {
  if (batch_size == 0) throw std::invalid_argument("batch_size must be positive");
  check_batch_rows(batch_size);
  if (first > end || end > order.size() || order.rows() > static_cast<std::uint64_t>(rows_)) {
    throw std::out_of_range("scheduled positions [" + std::to_string(first) + ", " + std::to_string(end) +
                            ") outside an order of " + std::to_string(order.size()) + " over " + std::to_string(rows_) +
                            " rows");
  }
  schedule_ = Schedule{order, first, end, batch_size};
  top_up();
}

void BatchPipeline::top_up() {
  if (!schedule_) return;
  Schedule& schedule = *schedule_;
  while (slots_.size() < max_in_flight_ && schedule.next < schedule.end) {
    const std::uint64_t count = std::min(schedule.batch_size, schedule.end - schedule.next);
    enqueue_positions(schedule.order, schedule.next, count);
    schedule.next += count;
  }
}

void BatchPipeline::start(std::shared_ptr<Slot> slot) {
  slots_.push_back(slot);
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(sync_->mutex);
    sync_->queued.push_back(std::move(slot));
    // A drainer gathers every queued batch before it returns, so one is started only
    // when a few batches have queued up, or when none is running and the consumer is
    // about to wait: the wake-up of a pool thread costs more than a small gather, and
    // batching wake-ups keeps it off the per-batch path.
    const std::size_t queued = sync_->queued.size();
    wake = sync_->drainers < pool_->size() && (queued >= wake_queued_ || (sync_->drainers == 0 && !front_ready()));
    if (wake) {
      ++sync_->drainers;
      ++sync_->tasks_outstanding;
    }
  }
  if (wake) {
    if (counting_) wakeups_.fetch_add(1, std::memory_order_relaxed);
    submit_drainer();
  }
}

void BatchPipeline::wake_for_queued() {
  {
    std::lock_guard<std::mutex> lock(sync_->mutex);
    if (sync_->drainers > 0 || sync_->queued.empty()) return;
    ++sync_->drainers;
    ++sync_->tasks_outstanding;
  }
  if (counting_) wakeups_.fetch_add(1, std::memory_order_relaxed);
  submit_drainer();
}

void BatchPipeline::submit_drainer() {
  try {
    pool_->submit([this] { drain(); });
  } catch (...) {
    // Only allocation can fail here; the requests stay queued and the consumer
    // gathers them itself (help_one), so nothing is lost, but the counts must be right.
    std::lock_guard<std::mutex> lock(sync_->mutex);
    --sync_->drainers;
    --sync_->tasks_outstanding;
    sync_->completed.notify_all();
  }
}

void BatchPipeline::drain() noexcept {
  std::vector<std::shared_ptr<Slot>> taken;
  for (;;) {
    taken.clear();
    {
      std::lock_guard<std::mutex> lock(sync_->mutex);
      if (sync_->queued.empty() || sync_->cancelled.load(std::memory_order_relaxed)) {
        // Count down while holding the lock: once it is released the destructor may
        // run, and nothing of `this` may be touched after that.
        --sync_->drainers;
        --sync_->tasks_outstanding;
        sync_->completed.notify_all();
        return;
      }
      // A share of what is queued, oldest first: one lock per share rather than per
      // batch keeps the drainers and the consumer (which queues) from contending.
      const std::size_t share = (sync_->queued.size() + sync_->drainers - 1) / sync_->drainers;
      try {
        for (std::size_t k = 0; k < share; ++k) {
          taken.push_back(std::move(sync_->queued.front()));
          sync_->queued.pop_front();
        }
      } catch (...) {
        // Out of memory for the list: what was taken is gathered; the rest stays queued.
      }
    }
    // The consumer may have gathered some. Each reference is let go before its batch is
    // published, so that the consumer's is the last: what a batch holds (its buffer,
    // its error) is then released on the consumer's thread, never under its feet.
    std::size_t reading_first = 0, reading_end = 0;  // taken[first, end): reads in flight, oldest first
    auto finish_oldest = [&] {
      end_fill(*taken[reading_first]);
      publish(*taken[reading_first], &taken[reading_first]);
      ++reading_first;
    };
    for (std::size_t k = 0; k < taken.size(); ++k) {
      Slot& slot = *taken[k];
      if (!slot.claim()) {
        taken[k].reset();
        continue;
      }
      if (sync_->cancelled.load(std::memory_order_relaxed) || !begin_fill(slot)) {
        publish(slot, &taken[k]);
      } else {
        std::swap(taken[reading_end++], taken[k]);  // kept in request order among the reading
      }
      // The oldest reading batch is finished as soon as its reads are in (or when the
      // limit is reached), so that it never waits behind later batches copied meanwhile.
      while (reading_first < reading_end &&
             (reading_end - reading_first == kBatchesReadAtOnce || taken[reading_first]->reading->pending->done())) {
        finish_oldest();
      }
    }
    while (reading_first < reading_end) finish_oldest();
  }
}

bool BatchPipeline::gather_if_unclaimed(Slot& slot, std::shared_ptr<Slot>* release) noexcept {
  if (!slot.claim()) {
    if (release) release->reset();
    return false;
  }
  if (!sync_->cancelled.load(std::memory_order_relaxed) && begin_fill(slot)) end_fill(slot);
  publish(slot, release);
  return true;
}

void BatchPipeline::publish(Slot& slot, std::shared_ptr<Slot>* release) noexcept {
  if (!sync_->cancelled.load(std::memory_order_relaxed)) {
    if (!slot.error && counting_) gathered_bytes_.fetch_add(slot.bytes, std::memory_order_relaxed);
    if (!slot.error && staging_.device) stage_to_device(slot);
  }
  // slots_ holds the slot until the consumer pops it, which it cannot before this.
  if (release) release->reset();
  // A consumer waits only after announcing itself in `waiters`, then checks the slot
  // (both sequentially consistent), so either it sees the slot done or this sees it
  // waiting: the lock and the wake-up are paid only when someone waits.
  slot.state.store(Slot::kDone, std::memory_order_seq_cst);
  if (sync_->waiters.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(sync_->mutex);
    sync_->completed.notify_all();
  }
}

bool BatchPipeline::help_one() {
  for (const auto& slot : slots_) {
    if (gather_if_unclaimed(*slot)) {
      consumer_stats_.consumer_gathers += counting_ ? 1 : 0;
      return true;
    }
  }
  return false;
}

PipelineStats BatchPipeline::stats() const noexcept {
  PipelineStats stats = consumer_stats_;
  stats.wakeups = wakeups_.load(std::memory_order_relaxed);
  stats.gathered_bytes = gathered_bytes_.load(std::memory_order_relaxed);
  stats.read_bytes = reads_->read_bytes();
  return stats;
}

bool BatchPipeline::begin_fill(Slot& slot) noexcept {
  try {
    // The batch's column rows, in a per-thread buffer: the request itself stays as it
    // was asked, so that a batch gathered again (after running out of memory) maps
    // its rows once, not twice.
    thread_local std::vector<std::int64_t> rows;
    if (slot.order) {
      rows.resize(slot.rows);
      slot.order->fill(slot.first_position, slot.rows, rows.data());
    } else {
      rows.assign(slot.indices.begin(), slot.indices.end());
    }
    if (row_map_) {
      for (std::int64_t& index : rows) index = row_map_->rows[index];
    }
    // Per thread, so the sort workspace is allocated once per thread, not per batch
    // (a batch whose reads go in flight takes them along, and the next batch allocates).
    thread_local ReadPlan plan;
    plan_reads(rows.data(), slot.rows, plan);
    thread_local std::vector<char> done;
    done.assign(columns_.size(), 0);
    if (!ragged_.empty()) {
      CopyJob job{this, &slot, &plan};
      slot.spans.resize(ragged_.size());
      for (auto& spans : slot.spans) spans.resize(slot.rows);
      if (!run_with_bus_error_guard(&BatchPipeline::locate_ragged, &job)) {
        throw SourceReadError(
            "reading the record offsets failed with SIGBUS: a memory-mapped file was "
            "truncated or became unreadable while the loader was using it");
      }
      if (!job.spans_valid) {
        throw SourceReadError(
            "a record's offsets point outside its values: the offsets changed after the "
            "dataset checked them (a file rewritten, or an array modified in place)");
      }
      allocate_ragged(slot);
    } else {
      allocate_fixed(slot);
    }
    if (reads_->reads_explicitly()) {  // outside the guard: it allocates
      const ExplicitReads::Batch batch{&plan,      slot.rows, slot.read_ahead, slot.buffer.get(), &slot.column_offsets,
                                       &slot.spans};
      if (std::unique_ptr<ExplicitReads::Pending> pending = reads_->start(batch, done)) {
        auto reading = std::make_unique<Reading>();
        reading->pending = std::move(pending);
        // The plan's rows go with the batch; the sort workspace stays with the thread.
        std::swap(reading->plan.sources, plan.sources);
        std::swap(reading->plan.positions, plan.positions);
        std::swap(reading->done, done);
        slot.reading = std::move(reading);
        return true;
      }
    }
    copy_from_mappings(slot, plan, done);
  } catch (const std::bad_alloc&) {
    slot.error = std::current_exception();
    slot.retry = true;
  } catch (...) {
    slot.error = std::current_exception();
  }
  return false;
}

void BatchPipeline::end_fill(Slot& slot) noexcept {
  Reading& reading = *slot.reading;
  try {
    const ExplicitReads::Batch batch{&reading.plan,        slot.rows,  slot.read_ahead, slot.buffer.get(),
                                     &slot.column_offsets, &slot.spans};
    reads_->finish(*reading.pending, batch);
    copy_from_mappings(slot, reading.plan, reading.done);
  } catch (const std::bad_alloc&) {
    slot.error = std::current_exception();
    slot.retry = true;
  } catch (...) {
    slot.error = std::current_exception();
  }
  slot.reading.reset();  // after the copy: record spans may point into its staging
}

void BatchPipeline::copy_from_mappings(Slot& slot, const ReadPlan& plan, const std::vector<char>& done) {
  CopyJob job{this, &slot, &plan};
  job.read_explicitly = &done;
  if (!run_with_bus_error_guard(&BatchPipeline::copy_columns, &job)) {
    slot.error = std::make_exception_ptr(
        SourceReadError("reading the source failed with SIGBUS: a memory-mapped file was truncated or "
                        "became unreadable while the loader was using it"));
  }
}

void BatchPipeline::set_io_mode(IoMode mode, std::size_t read_threads) {
  if (!slots_.empty() || popped_ != 0) throw std::logic_error("set_io_mode() after the first batch");
  reads_ = std::make_unique<ReadPolicy>(columns_, ragged_, mode, read_threads, row_map_.has_value());
}

void BatchPipeline::copy_columns(void* job_pointer) {
  const CopyJob& job = *static_cast<const CopyJob*>(job_pointer);
  const Slot& slot = *job.slot;
  const std::size_t fixed = job.pipeline->columns_.size();
  for (std::size_t c = 0; c < fixed; ++c) {
    if ((*job.read_explicitly)[c]) continue;
    gather_column(job.pipeline->columns_[c], *job.plan, slot.rows, slot.buffer.get() + slot.column_offsets[c]);
  }
  for (std::size_t r = 0; r < job.pipeline->ragged_.size(); ++r) {
    const std::size_t* offsets = &slot.column_offsets[fixed + 3 * r];
    std::byte* base = slot.buffer.get();
    write_records(job.pipeline->ragged_[r], *job.plan, slot.spans[r].data(), slot.rows, slot.layouts[r], slot.starts[r],
                  base + offsets[0], reinterpret_cast<std::int64_t*>(base + offsets[1]),
                  slot.layouts[r].mask_bytes ? reinterpret_cast<bool*>(base + offsets[2]) : nullptr);
  }
}

void BatchPipeline::locate_ragged(void* job_pointer) {
  CopyJob& job = *static_cast<CopyJob*>(job_pointer);
  Slot& slot = *job.slot;  // this batch's claimant is its only writer
  for (std::size_t r = 0; r < job.pipeline->ragged_.size(); ++r) {
    if (!locate_records(job.pipeline->ragged_[r], *job.plan, slot.rows, slot.spans[r].data())) {
      job.spans_valid = false;
    }
  }
}

void BatchPipeline::allocate_fixed(Slot& slot) {
  slot.column_offsets.clear();
  take_buffer(slot, fixed_layout(slot.rows, &slot.column_offsets));
}

std::size_t BatchPipeline::fixed_layout(std::uint64_t rows, std::vector<std::size_t>* offsets) const {
  std::size_t bytes = 0;
  for (const Column& column : columns_) {
    bytes = align_up(bytes, kColumnAlignment);
    if (offsets) offsets->push_back(bytes);
    bytes += rows * static_cast<std::size_t>(column.output_row_bytes());
  }
  return bytes;
}

void BatchPipeline::allocate_ragged(Slot& slot) {
  std::size_t batch_bytes = 0;
  auto place = [&](std::size_t bytes) {
    batch_bytes = align_up(batch_bytes, kColumnAlignment);
    slot.column_offsets.push_back(batch_bytes);
    batch_bytes += bytes;
  };
  slot.column_offsets.clear();
  for (const Column& column : columns_) {
    place(slot.rows * static_cast<std::size_t>(column.output_row_bytes()));
  }
  slot.starts.resize(ragged_.size());
  slot.layouts.clear();
  slot.ragged_widths.clear();
  for (std::size_t r = 0; r < ragged_.size(); ++r) {
    const RaggedLayout layout = ragged_layout(ragged_[r], slot.spans[r].data(), slot.rows, slot.starts[r]);
    place(layout.values_bytes);
    place(layout.lengths_bytes);
    if (layout.mask_bytes) {
      place(layout.mask_bytes);
    } else {
      slot.column_offsets.push_back(0);
    }
    slot.layouts.push_back(layout);
    slot.ragged_widths.push_back(layout.width);
  }
  take_buffer(slot, batch_bytes);
}

void BatchPipeline::take_buffer(Slot& slot, std::size_t bytes) {
  slot.bytes = bytes;
  if (staging_.device) {
    slot.host_lease = staging_.device->host_block(bytes);
    slot.buffer = std::shared_ptr<std::byte>(slot.host_lease, slot.host_lease->data());
    return;
  }
  if (staging_.host) {
    if (std::optional<SuppliedBlock> block = staging_.host->take(bytes)) {
      slot.buffer = std::shared_ptr<std::byte>(block->data, [](std::byte*) {});  // the owner frees it
      slot.host_block = block;
      return;
    }
  }
  slot.buffer = buffers_->acquire(bytes);
}

void BatchPipeline::stage_to_device(Slot& slot) noexcept {
  try {
    std::shared_ptr<FencedPool::Lease> device = staging_.device->device_block(slot.bytes);
    try {
      slot.fence =
          staging_.device->copier()->copy(reinterpret_cast<CuDevicePtr>(device->data()), slot.buffer.get(), slot.bytes);
    } catch (const CopyPendingError&) {
      device->abandon();
      slot.host_lease->abandon();
      throw;
    }
    device->release_after(slot.fence);  // unless delivered: then after the consumer's work
    slot.host_lease->release_after(slot.fence);
    slot.device_lease = std::move(device);
  } catch (const std::bad_alloc&) {
    slot.error = std::current_exception();  // device memory ran out: gathered again later
    slot.retry = true;
  } catch (...) {
    slot.error = std::current_exception();
  }
}

void BatchPipeline::set_staging(Staging staging) {
  if (!slots_.empty() || popped_ != 0) throw std::logic_error("set_staging() after the first batch");
  if (staging.device && staging.host) throw std::invalid_argument("supplied host blocks or a device, not both");
  staging_ = std::move(staging);
}

std::size_t BatchPipeline::expected_batch_bytes(std::uint64_t rows) const {
  const std::size_t fixed = fixed_batch_bytes(rows);
  return fixed > 0 ? fixed : largest_batch_bytes_;
}

std::size_t BatchPipeline::fixed_batch_bytes(std::uint64_t rows) const {
  return ragged_.empty() ? fixed_layout(rows, nullptr) : 0;
}

bool BatchPipeline::front_ready() const noexcept { return !slots_.empty() && slots_.front()->done(); }

bool BatchPipeline::wait_front(std::chrono::nanoseconds timeout) {
  if (slots_.empty()) throw std::logic_error("BatchPipeline: no batch in flight");
  if (front_ready()) return true;
  front_waited_ = true;
  const auto start = counting_ ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  wake_for_queued();  // too few requests queued to have woken one (the end of a schedule)
  // Gathering a queued batch here beats sleeping: on a machine with few cores the
  // consumer's idle time is a large share of the CPU, and a wake-up costs microseconds.
  while (!front_ready() && help_one()) {
  }
  bool ready = front_ready();
  if (!ready) {
    const Slot& front = *slots_.front();
    std::unique_lock<std::mutex> lock(sync_->mutex);
    sync_->waiters.fetch_add(1, std::memory_order_seq_cst);
    ready = sync_->completed.wait_for(lock, timeout,
                                      [&front] { return front.state.load(std::memory_order_seq_cst) == Slot::kDone; });
    sync_->waiters.fetch_sub(1, std::memory_order_relaxed);
  }
  if (counting_) {
    consumer_stats_.waited_ns += static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
  }
  return ready;
}

GatheredBatch BatchPipeline::pop_front() {
  if (slots_.empty()) throw std::logic_error("BatchPipeline: no batch in flight");
  while (!wait_front(std::chrono::hours(1))) {
  }
  if (slots_.front()->retry) {
    // Memory ran out while gathering it: the batch stays first in line, to be gathered
    // again by the next call, so that a caller who frees memory loses nothing.
    Slot& front = *slots_.front();
    const std::exception_ptr error = std::exchange(front.error, nullptr);
    if (front.host_block) staging_.host->give_back(*std::exchange(front.host_block, std::nullopt));
    front.buffer.reset();
    front.host_lease.reset();
    front.device_lease.reset();
    front.retry = false;
    front.state.store(Slot::kQueued, std::memory_order_release);
    std::rethrow_exception(error);
  }
  std::shared_ptr<Slot> slot = std::move(slots_.front());
  slots_.pop_front();
  try {
    top_up();
  } catch (...) {
    slots_.push_front(std::move(slot));  // nothing was delivered: the position stays
    throw;
  }
  ++popped_;
  const bool waited = front_waited_;
  front_waited_ = false;
  if (!slot->error && counting_) {
    ++consumer_stats_.batches;
    consumer_stats_.ready_when_asked += waited ? 0 : 1;
    for (const auto& behind : slots_) consumer_stats_.finished_ahead += behind->done() ? 1 : 0;
  }
  if (slot->error) {
    if (slot->host_block) staging_.host->give_back(*slot->host_block);  // nothing reads it any more
    // Out of the slot first: a gather thread may drop the slot's last reference at any
    // time, and the error the caller is about to read must not go with it.
    const std::exception_ptr error = std::exchange(slot->error, nullptr);
    std::rethrow_exception(error);
  }
  slot->host_lease.reset();  // the buffer holds the block while the batch needs it
  largest_batch_bytes_ = std::max(largest_batch_bytes_, slot->bytes);
  return GatheredBatch{std::move(slot->buffer),
                       std::move(slot->column_offsets),
                       std::move(slot->ragged_widths),
                       slot->rows,
                       slot->bytes,
                       slot->host_block ? slot->host_block->token : 0,
                       std::move(slot->device_lease),
                       std::move(slot->fence),
                       columns_.size()};
}

}  // namespace pyloader
