// Ordered, bounded prefetch of gathered batches.
//
// A BatchPipeline turns a stream of batch requests (explicit row indices, or a run of
// positions of an IndexOrder) into filled batch buffers. Requests are gathered on a
// shared ThreadPool, possibly out of order, and handed back strictly in request order.
//
// Contract:
//   * Ownership: the pipeline does not own the column memory (see ColumnView). The
//     owner must keep it alive until the pipeline is destroyed; the destructor waits
//     for every gather it started, so after it returns no thread reads the columns.
//   * Thread safety: all member functions are for one consumer thread at a time.
//     Each batch is claimed by exactly one thread (a worker, or the consumer while it
//     waits), which alone writes that batch's buffer.
//   * Bounds: at most max_in_flight() requests may be pending (checked; violating it
//     throws std::logic_error). Buffers come from a BufferPool and are never reused
//     while a GatheredBatch (or a copy of its buffer pointer) is alive.
//   * Small batches are gathered inline on the calling thread: below a few KiB the
//     hand-off to a worker costs more than the copy itself.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "buffer_pool.hpp"
#include "gather.hpp"
#include "permutation.hpp"
#include "thread_pool.hpp"

namespace pyloader {

struct GatheredBatch {
  std::shared_ptr<std::byte> buffer;  // column c starts at buffer + column_offsets[c]
  std::vector<std::size_t> column_offsets;
  std::size_t rows = 0;
};

class BatchPipeline {
 public:
  BatchPipeline(std::vector<ColumnView> columns, std::shared_ptr<ThreadPool> pool,
                std::size_t max_in_flight);
  ~BatchPipeline();

  BatchPipeline(const BatchPipeline&) = delete;
  BatchPipeline& operator=(const BatchPipeline&) = delete;

  // Requests the rows `indices` as the next batch. Negative indices count from the
  // end, as in numpy and torch. Throws std::out_of_range (nothing is enqueued) for
  // an index outside [-rows, rows). Batches may differ in size.
  void enqueue_indices(std::vector<std::int64_t> indices);

  // Requests rows order(first), ..., order(first + count - 1) as the next batch.
  // Throws std::out_of_range unless first + count <= order.size() <= rows.
  void enqueue_positions(const IndexOrder& order, std::uint64_t first, std::uint64_t count);

  std::size_t in_flight() const noexcept { return slots_.size(); }
  std::size_t max_in_flight() const noexcept { return max_in_flight_; }
  bool front_ready() const noexcept;

  // Waits up to `timeout` for the oldest request; true when it is ready. While
  // requests are still queued the calling thread gathers them itself instead of
  // sleeping. Precondition: in_flight() > 0.
  bool wait_front(std::chrono::nanoseconds timeout);

  // Removes and returns the oldest request, waiting for it if needed. Rethrows a
  // failure of its gather as std::runtime_error. Precondition: in_flight() > 0.
  GatheredBatch pop_front();

  const std::vector<ColumnView>& columns() const noexcept { return columns_; }

 private:
  struct Slot;

  void check_capacity() const;
  void start(std::shared_ptr<Slot> slot);
  void fill(Slot& slot) noexcept;
  bool help_one();  // gathers one queued batch on the calling thread, if any is left

  std::vector<ColumnView> columns_;
  std::int64_t rows_;
  std::size_t max_in_flight_;
  std::size_t inline_limit_bytes_;
  std::shared_ptr<ThreadPool> pool_;
  std::shared_ptr<BufferPool> buffers_;
  std::deque<std::shared_ptr<Slot>> slots_;

  // Guards completion state shared with the workers.
  std::mutex mutex_;
  std::condition_variable completed_;
  std::size_t tasks_outstanding_ = 0;  // submitted to the pool and not yet returned
  std::atomic<bool> cancelled_{false};
};

}  // namespace pyloader
