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
//     batch's outcome and consumes it). Running out of memory while gathering (host
//     or device memory) is not the batch's outcome: pop_front() throws std::bad_alloc
//     and the batch is gathered again by the next call.
//   * Every per-batch step (order evaluation, sorting, buffer and block supply,
//     gathering, the device copy) runs on the gathering thread. Requests queue up and
//     pool threads drain them: a thread is woken only once a few requests are queued
//     (or none is draining), so the consumer's per-batch work is a queue push, not a
//     wake-up. A consumer that waits gathers queued batches itself.
//   * File-backed columns (ColumnView::file on every piece; rows consecutive in the
//     file, or at any positive stride, as token windows are) are read as its ReadPolicy
//     says (set_io_mode()): copied from the mapping, read explicitly at depth, or read
//     ahead a block window at a time. A column whose integers are converted is read as
//     stored into a per-thread staging area and converted from there. The batch bytes
//     are the same either way. A failed or short read fails that batch with
//     SourceReadError naming the file.
//   * Staging (set_staging): a batch is gathered into a supplied host block when one
//     fits (else into the pipeline's own pool). With a device, it is gathered into a
//     pinned block of the device's pools and copied to a device block by the thread
//     that gathered it, as soon as it is gathered; the delivered batch carries the
//     device block and the copy's fence. Pinned blocks go back to their pool once the
//     batch is delivered or dropped, to be reused only after the copy's fence; device
//     blocks as their lease says (see FencedPool). A copy that may still be running
//     after a failure (CopyPendingError) leaks both blocks rather than reuse them.
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
#include "device_staging.hpp"
#include "explicit_reads.hpp"
#include "file_reads.hpp"
#include "gather.hpp"
#include "permutation.hpp"
#include "process_owner.hpp"
#include "ragged.hpp"
#include "read_policy.hpp"
#include "row_map.hpp"
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
  std::uint64_t host_token = 0;      // the supplied host block it was gathered into (0: none)
  std::shared_ptr<FencedPool::Lease> device;  // the device block it was copied to (device staging)
  std::shared_ptr<CopyFence> fence;  // done once that copy is
  std::size_t fixed_columns = 0;     // the first fixed_columns offsets are the fixed-size columns'

  // Where ragged column r's parts lie from `buffer`: its values, lengths (int64 per row)
  // and mask (bool per padded position; 0 when it has none), and its width (padded: the
  // common length; packed: the total value rows).
  struct RaggedParts {
    std::size_t values, lengths, mask;
    std::int64_t width;
  };
  RaggedParts ragged(std::size_t r) const {
    const std::size_t* at = &column_offsets[fixed_columns + 3 * r];
    return RaggedParts{at[0], at[1], at[2], ragged_widths[r]};
  }
};

// What a pipeline has done so far, for a training loop that wants to know whether its
// input is the bottleneck. Consumer-side fields are counted by the consumer thread,
// worker-side ones with relaxed atomics; a snapshot is consistent per field only.
struct PipelineStats {
  std::uint64_t batches = 0;           // delivered by pop_front() (failed ones excluded)
  std::uint64_t ready_when_asked = 0;  // of those, finished before the consumer asked
  std::uint64_t waited_ns = 0;         // consumer time spent waiting for the oldest batch
  std::uint64_t finished_ahead = 0;    // summed over deliveries: finished batches behind it
  std::uint64_t consumer_gathers = 0;  // batches the waiting consumer gathered itself
  std::uint64_t wakeups = 0;           // gather threads woken
  std::uint64_t gathered_bytes = 0;    // of the batches gathered (their layout)
  std::uint64_t read_bytes = 0;        // read from files explicitly (IoMode)
};

// Where batches are written (see the class contract): into host blocks supplied by the
// owner (pinned memory of the framework's), or, with a device, into the device's
// pinned pool and from there to its device pool. At most one of the two.
struct Staging {
  std::shared_ptr<SuppliedBlocks> host;
  std::shared_ptr<DeviceStaging> device;
};

class BatchPipeline {
 public:
  BatchPipeline(std::vector<Column> columns, std::shared_ptr<ThreadPool> pool, std::size_t max_in_flight,
                std::optional<RowMap> row_map = std::nullopt);
  // With variable-length columns too (delivered after the fixed-size ones). Every
  // column, fixed or ragged, must have the same number of rows (records).
  BatchPipeline(std::vector<Column> columns, std::vector<RaggedColumn> ragged_columns, std::shared_ptr<ThreadPool> pool,
                std::size_t max_in_flight, std::optional<RowMap> row_map = std::nullopt);
  ~BatchPipeline();

  // The rows every column has (records, for variable-length columns): what a row map
  // of the pipeline indexes.
  static std::int64_t column_rows(const std::vector<Column>& columns, const std::vector<RaggedColumn>& ragged);

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
  void schedule_positions(const IndexOrder& order, std::uint64_t first, std::uint64_t end, std::uint64_t batch_size);

  // How file-backed columns are read (default IoMode::kMmap; see ReadPolicy), with
  // `read_threads` reads in flight at most. Precondition: no batch requested yet.
  void set_io_mode(IoMode mode, std::size_t read_threads);
  IoMode io_mode() const noexcept { return reads_->mode(); }

  // Precondition: no batch requested yet. Throws std::invalid_argument when both
  // parts are given.
  void set_staging(Staging staging);
  // The bytes of a batch of `rows` rows when every column has a fixed row size; 0
  // for pipelines with variable-length columns (their size depends on the records).
  std::size_t fixed_batch_bytes(std::uint64_t rows) const;
  // What an owner that supplies blocks ahead of need (set_staging) should supply before
  // requesting a batch of `rows` rows: blocks of expected_batch_bytes() (exact for
  // fixed-size columns; otherwise the largest batch delivered so far, 0 while none is),
  // supplied_blocks_wanted() of them at a time (batches take their blocks when a
  // gather thread claims them, which may be long after they were requested: one for
  // every batch the pipeline may hold, and one more). Consumer thread only.
  std::size_t expected_batch_bytes(std::uint64_t rows) const;
  std::size_t supplied_blocks_wanted() const noexcept { return max_in_flight_ + 1; }
  // Batches whose rows were read explicitly so far (at least one column), for tests
  // and diagnostics.
  std::uint64_t explicitly_read_batches() const noexcept { return reads_->explicitly_read_batches(); }

  // Windows of block-shuffled orders read ahead so far, for tests and diagnostics.
  std::uint64_t windows_read_ahead() const noexcept { return reads_->windows_read_ahead(); }

  PipelineStats stats() const noexcept;
  // Whether the counters are kept (default true); off, stats() reports zeros. For
  // measuring what they cost. Precondition: no batch requested yet.
  void set_counting(bool counting) noexcept { counting_ = counting; }

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
  // SourceReadError, CudaError, ...). If topping up throws, the oldest request stays in
  // place. Precondition: in_flight() > 0.
  GatheredBatch pop_front();

 private:
  struct Slot;

  void check_capacity() const;
  void check_batch_rows(std::uint64_t rows) const;
  void top_up();
  void start(std::shared_ptr<Slot> slot);
  void submit_drainer();
  // Starts a drainer when requests are queued and none runs.
  void wake_for_queued();
  // A pool task: gathers queued requests, oldest first, a share at a time, until none
  // is left.
  void drain() noexcept;
  // The one transition of a batch: claim it (unless another thread has), gather it,
  // mark it done and wake every waiter. False when another thread had claimed it.
  // `release`, when given, is a reference to the slot let go before it is marked done.
  bool gather_if_unclaimed(Slot& slot, std::shared_ptr<Slot>* release = nullptr) noexcept;
  // Gathers a claimed batch: plans it, takes its buffer and copies what is not read
  // explicitly; returns true, with the batch's reads in flight, when end_fill() is
  // still to be called (failures become the batch's error either way).
  bool begin_fill(Slot& slot) noexcept;
  // Waits for the batch's reads and copies the rest.
  void end_fill(Slot& slot) noexcept;
  // Stages a gathered batch to the device, then marks it done and wakes a waiting
  // consumer. `release`, when given, is a reference to the slot let go before.
  void publish(Slot& slot, std::shared_ptr<Slot>* release) noexcept;
  struct Reading;
  // The part of fill() that reads the source: runs under a SIGBUS guard, so it owns
  // nothing with a destructor.
  struct CopyJob {
    const BatchPipeline* pipeline;
    Slot* slot;
    const ReadPlan* plan;
    bool spans_valid = true;  // cleared by locate_ragged for a span outside its values
    const std::vector<char>* read_explicitly = nullptr;  // per fixed column: already read from its file
  };
  void copy_from_mappings(Slot& slot, const ReadPlan& plan, const std::vector<char>& done);
  static void copy_columns(void* job);
  static void locate_ragged(void* job);
  // Lays out the batch's columns and takes its buffer (fixed-size columns only).
  void allocate_fixed(Slot& slot);
  // The bytes of a batch of `rows` rows of the fixed-size columns, each column 64-byte
  // aligned; appends each column's offset to `offsets` when given.
  std::size_t fixed_layout(std::uint64_t rows, std::vector<std::size_t>* offsets) const;
  // Sizes the batch from its records' lengths and takes its buffer (ragged pipelines).
  void allocate_ragged(Slot& slot);
  bool help_one();  // gathers one queued batch on the calling thread, if any is left
  void take_buffer(Slot& slot, std::size_t bytes);
  // Copies a gathered batch to a device block; a failure becomes the batch's error.
  void stage_to_device(Slot& slot) noexcept;

  std::vector<Column> columns_;
  std::vector<RaggedColumn> ragged_;
  std::int64_t rows_;         // dataset rows: what indices and orders range over
  std::int64_t source_rows_;  // column rows
  std::optional<RowMap> row_map_;
  std::unique_ptr<ReadPolicy> reads_;  // borrows columns_ and ragged_: declared after them
  std::size_t max_in_flight_;
  std::size_t wake_queued_;  // queued requests that wake another drainer
  PipelineStats consumer_stats_;  // the consumer-side fields
  bool front_waited_ = false;     // the consumer waited for the current oldest batch
  std::size_t largest_batch_bytes_ = 0;  // of the batches delivered so far
  bool counting_ = true;
  std::atomic<std::uint64_t> wakeups_{0}, gathered_bytes_{0};
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
    std::size_t drainers = 0;           // drain() tasks submitted and not yet returned
    std::deque<std::shared_ptr<Slot>> queued;  // requested, not yet taken by a drainer
    std::atomic<bool> cancelled{false};
    std::atomic<int> waiters{0};  // consumers waiting on `completed` for a batch
  };
  std::unique_ptr<Sync> sync_;
  ProcessOwner owner_;
};

}  // namespace pyloader
