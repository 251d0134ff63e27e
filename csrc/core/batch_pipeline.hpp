// Ordered, bounded prefetch of gathered batches.
//
// A BatchPipeline turns a stream of batch requests (explicit row indices, or a run of
// positions of an IndexOrder) into filled batch buffers. Requests are gathered on a
// shared ThreadPool, possibly out of order, and handed back strictly in request order.
//
// Contract:
//   * Ownership: the pipeline does not own the column memory (see Column). The
//     owner must keep it alive until the pipeline is destroyed; the destructor waits
//     for every gather it started, so after it returns no thread reads the columns.
//   * Thread safety: all member functions are for one consumer thread at a time.
//     Each batch is claimed by exactly one thread (a worker, or the consumer while it
//     waits), which alone writes that batch's buffer.
//   * Bounds: at most max_in_flight() requests may be pending (checked; violating it
//     throws std::logic_error). Buffers come from a BufferPool and are never reused
//     while a GatheredBatch (or a copy of its buffer pointer) is alive.
//   * Fork: destroyed in a forked child, the pipeline abandons the parent's gathers
//     (their threads do not exist there) without waiting for them.
//   * A SIGBUS while reading a column (its memory-mapped file was truncated) fails
//     that batch with SourceReadError instead of killing the process. A batch whose
//     gather failed is rethrown by pop_front() with its original exception type.
//   * A failed pop_front() never moves the position: either the oldest batch is
//     returned, or it stays first in line (its own gather error aside, which is that
//     batch's outcome and consumes it).
//   * Small batches are gathered inline on the calling thread: below a few KiB the
//     hand-off to a worker costs more than the copy itself.
//   * File-backed columns (ColumnView::file on every piece, no cast) may be read with
//     explicit reads at depth instead of page faults, as set_io_mode() says; the batch
//     bytes are the same either way. A failed or short read fails that batch with
//     SourceReadError naming the file.
//   * Staging (set_staging): a batch is gathered into a supplied host block when one
//     fits (else into the pipeline's own pool), and, with device blocks and a copier,
//     copied to a supplied device block by the thread that gathered it, as soon as it
//     is gathered; pop_front() copies a batch no block fitted. A delivered batch names
//     its blocks by token and carries the copy's fence. A host buffer is not reused
//     before its copy's fence is done: the destructor waits for the fences of batches
//     never delivered, and a delivered batch's owner waits for its own.
//   * Block-shuffled orders (IndexOrder::block_window) in IoMode::kAuto: requesting a
//     batch asks the kernel to read the whole blocks of the windows its positions lie
//     in into the page cache, and those of the next window once the batch is half way
//     through its window or a few batches from its end (large sequential reads on the
//     ReadEngine's threads; each window once; at most about one window ahead), and the
//     batch is then copied from the mapping, not read row by row.
//     Advice only: the bytes are the same, a truncated file is still caught by the
//     SIGBUS guard. Not with a row map (its rows need not be the blocks' rows).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "buffer_pool.hpp"
#include "device_copier.hpp"
#include "file_reads.hpp"
#include "gather.hpp"
#include "permutation.hpp"
#include "process_owner.hpp"
#include "ragged.hpp"
#include "supplied_blocks.hpp"
#include "thread_pool.hpp"

namespace pyloader {

// One delivered batch. Fixed-size column c starts at buffer + column_offsets[c]; then,
// per ragged column r, three offsets follow: its values, its int64 lengths and its
// bool mask (0 when no mask was asked for), and ragged_widths[r] is its padded width
// (or, packed, its total value rows).
struct GatheredBatch {
  std::shared_ptr<std::byte> buffer;
  std::vector<std::size_t> column_offsets;
  std::vector<std::int64_t> ragged_widths;
  std::size_t rows = 0;
  std::size_t bytes = 0;             // of the batch's layout, from buffer on
  std::uint64_t host_token = 0;      // the supplied host block it was gathered into (0: own pool)
  std::uint64_t device_token = 0;    // the supplied device block it was copied to (0: none)
  std::shared_ptr<CopyFence> fence;  // done once that copy is
};

// Where batches are written (see the class contract). Either part may be empty; a
// device part needs both its blocks and its copier.
struct Staging {
  std::shared_ptr<SuppliedBlocks> host;
  std::shared_ptr<SuppliedBlocks> device;
  std::shared_ptr<const DeviceCopier> copier;
};

// Optional indirection from dataset rows to column rows: dataset row k is column row
// rows[k] (a Subset, or a Subset of a Subset composed). Borrowed like the columns;
// every entry must lie in [0, column rows).
struct RowMap {
  const std::int64_t* rows = nullptr;
  std::int64_t size = 0;
};

class BatchPipeline {
 public:
  BatchPipeline(std::vector<Column> columns, std::shared_ptr<ThreadPool> pool,
                std::size_t max_in_flight, std::optional<RowMap> row_map = std::nullopt);
  // With variable-length columns too (delivered after the fixed-size ones). Every
  // column, fixed or ragged, must have the same number of rows (records).
  BatchPipeline(std::vector<Column> columns, std::vector<RaggedColumn> ragged_columns,
                std::shared_ptr<ThreadPool> pool, std::size_t max_in_flight,
                std::optional<RowMap> row_map = std::nullopt);
  ~BatchPipeline();

  BatchPipeline(const BatchPipeline&) = delete;
  BatchPipeline& operator=(const BatchPipeline&) = delete;

  // Largest batch, in rows: read plans number output rows with 32 bits.
  static constexpr std::uint64_t kMaxBatchRows = 0xffffffffULL;

  // Requests the rows `indices` as the next batch. Negative indices count from the
  // end, as in numpy and torch. Throws std::out_of_range (nothing is enqueued) for
  // an index outside [-rows, rows), std::length_error for more than kMaxBatchRows
  // indices. Batches may differ in size.
  void enqueue_indices(std::vector<std::int64_t> indices);

  // Requests rows order(first), ..., order(first + count - 1) as the next batch.
  // Throws std::out_of_range unless first + count <= order.size() and order.rows() <= rows.
  void enqueue_positions(const IndexOrder& order, std::uint64_t first, std::uint64_t count);

  // Schedules positions [first, end) of `order` as consecutive batches of
  // `batch_size` rows (the last may be shorter). The pipeline then keeps itself
  // max_in_flight() deep on its own: each pop_front() enqueues the next batch, so the
  // consumer makes one call per batch. Replaces any earlier schedule.
  // Throws std::out_of_range unless first <= end <= order.size() and order.rows() <= rows, and
  // std::invalid_argument for batch_size 0.
  void schedule_positions(const IndexOrder& order, std::uint64_t first, std::uint64_t end,
                          std::uint64_t batch_size);

  // How file-backed columns are read (default IoMode::kMmap), with `read_threads`
  // reads in flight at most. Precondition: no batch requested yet.
  void set_io_mode(IoMode mode, std::size_t read_threads);
  IoMode io_mode() const noexcept { return io_mode_; }

  // Precondition: no batch requested yet. Throws std::invalid_argument for device
  // blocks without a copier.
  void set_staging(Staging staging);
  // The bytes of a batch of `rows` rows when every column has a fixed row size; 0
  // for pipelines with variable-length columns (their size depends on the records).
  std::size_t fixed_batch_bytes(std::uint64_t rows) const;
  // When the oldest batch is gathered without error but not yet copied to the device
  // (device staging only): its bytes, the size of device block pop_front() needs.
  std::optional<std::size_t> front_unstaged_bytes() const noexcept;
  // Batches whose rows were read explicitly so far (at least one column), for tests
  // and diagnostics.
  std::uint64_t explicitly_read_batches() const noexcept {
    return explicitly_read_.load(std::memory_order_relaxed);
  }

  // Windows of block-shuffled orders read ahead so far, for tests and diagnostics.
  std::uint64_t windows_read_ahead() const noexcept {
    return windows_read_ahead_.load(std::memory_order_relaxed);
  }

  std::size_t in_flight() const noexcept { return slots_.size(); }
  // Requests removed by pop_front() so far, failed ones included: a caller that sees
  // pop_front() throw tells a failed batch (consumed) from a failed call by this count.
  std::uint64_t popped() const noexcept { return popped_; }
  std::size_t max_in_flight() const noexcept { return max_in_flight_; }
  bool front_ready() const noexcept;

  // Waits up to `timeout` for the oldest request; true when it is ready. While
  // requests are still queued the calling thread gathers them itself instead of
  // sleeping. Precondition: in_flight() > 0.
  bool wait_front(std::chrono::nanoseconds timeout);

  // Removes and returns the oldest request, waiting for it if needed, and tops the
  // schedule up. Rethrows a failure of its gather as it was thrown (std::bad_alloc,
  // SourceReadError, ...). If topping up throws, the oldest request stays in place.
  // Device staging: `front_block` is the device block for the oldest batch when no
  // block fitted it as it was gathered (see front_unstaged_bytes); when not needed it
  // joins the supplied device blocks. Precondition: in_flight() > 0.
  GatheredBatch pop_front(std::optional<SuppliedBlock> front_block = std::nullopt);


 private:
  struct Slot;

  void check_capacity() const;
  void check_batch_rows(std::uint64_t rows) const;
  void top_up();
  void start(std::shared_ptr<Slot> slot);
  void submit_gather(std::shared_ptr<Slot> slot);
  // The one transition of a batch: claim it (unless another thread has), gather it,
  // mark it done and wake every waiter. False when another thread had claimed it.
  bool gather_if_unclaimed(Slot& slot) noexcept;
  void fill(Slot& slot) noexcept;
  // The part of fill() that reads the source: runs under a SIGBUS guard, so it owns
  // nothing with a destructor.
  struct CopyJob {
    const BatchPipeline* pipeline;
    Slot* slot;
    const ReadPlan* plan;
    bool spans_valid = true;  // cleared by locate_ragged for a span outside its values
    const std::vector<char>* read_explicitly = nullptr;  // per fixed column: already read from its file
  };
  // Reads the fixed columns that IoMode says to read explicitly; marks them in `done`.
  void read_from_files(Slot& slot, const ReadPlan& plan, std::vector<char>& done);
  // Reads ahead the windows of positions [first, first + count) of `order` not read
  // ahead yet, and the next window; true when the order's batches are read ahead
  // (then they are copied from the mapping). Never throws: it is advice.
  bool read_ahead_windows(const IndexOrder& order, std::uint64_t first, std::uint64_t count) noexcept;
  void read_ahead_window(const IndexOrder& order, const BlockWindow& window);
  bool readable_from_file(const Column& column) const noexcept;
  static void copy_columns(void* job);
  static void locate_ragged(void* job);
  // Sizes the batch from its records' lengths and takes its buffer (ragged pipelines).
  void allocate_ragged(Slot& slot);
  bool help_one();  // gathers one queued batch on the calling thread, if any is left
  void take_buffer(Slot& slot, std::size_t bytes);
  // Copies a gathered batch to a supplied device block, if one fits; a failure
  // becomes the batch's error.
  void stage_to_device(Slot& slot) noexcept;
  void copy_to_device(Slot& slot, const SuppliedBlock& block) noexcept;

  std::vector<Column> columns_;
  IoMode io_mode_ = IoMode::kMmap;
  std::unique_ptr<ReadEngine> reads_;
  std::atomic<std::uint64_t> explicitly_read_{0};
  bool read_ahead_ = false;  // IoMode::kAuto with file-backed columns and no row map
  // Block orders: positions of read_ahead_order_ in [read_ahead_first_, read_ahead_end_)
  // lie in windows already read ahead.
  std::optional<IndexOrder> read_ahead_order_;
  std::uint64_t read_ahead_first_ = 0, read_ahead_end_ = 0;
  std::atomic<std::uint64_t> windows_read_ahead_{0};
  std::vector<RaggedColumn> ragged_;
  std::int64_t rows_;         // dataset rows: what indices and orders range over
  std::int64_t source_rows_;  // column rows
  std::optional<RowMap> row_map_;
  std::size_t max_in_flight_;
  std::size_t inline_limit_bytes_;
  std::shared_ptr<ThreadPool> pool_;
  std::shared_ptr<BufferPool> buffers_;
  Staging staging_;
  std::deque<std::shared_ptr<Slot>> slots_;
  std::uint64_t popped_ = 0;

  struct Schedule {
    IndexOrder order;
    std::uint64_t next;
    std::uint64_t end;
    std::uint64_t batch_size;
  };
  std::optional<Schedule> schedule_;

  // Completion state shared with the workers; on the heap so that a forked child,
  // whose copy may be locked or count the parent's waiters, can leak it untouched.
  struct Sync {
    std::mutex mutex;
    std::condition_variable completed;
    std::size_t tasks_outstanding = 0;  // submitted to the pool and not yet returned
    std::atomic<bool> cancelled{false};
  };
  std::unique_ptr<Sync> sync_;
  ProcessOwner owner_;
};

}  // namespace pyloader
