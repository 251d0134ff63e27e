// How a pipeline's file-backed columns are read: copied from the mapping, read
// explicitly at depth, or read ahead a block window at a time.
//
// The IO seam of BatchPipeline, which keeps ordered prefetch and asks this class two
// things: for each request of positions, whether its rows arrive by read-ahead; for each
// batch a gather thread fills, which of its rows are read explicitly (ExplicitReads
// decides per column from the mode, the row size, the run lengths and sampled page-cache
// residency), and to read them.
//
//   * IoMode::kMmap: nothing is read explicitly; every batch is copied from the mapping.
//   * IoMode::kRead: every file-backed column of every batch is read explicitly.
//   * IoMode::kAuto: as ExplicitReads decides per batch; and for block-shuffled orders
//     (IndexOrder::block_window) requesting a batch asks the kernel to read the whole
//     blocks of the windows its positions lie in into the page cache, and those of the
//     next window once the batch is half way through its window or a few batches from
//     its end (large sequential reads on the ReadEngine's threads; each window once; at
//     most about one window ahead). Such a batch's fixed columns are then copied from the
//     mapping, not read row by row. Advice only: the bytes are the same, and a truncated
//     file is still caught by the SIGBUS guard. Not with a row map (its rows need not be
//     the blocks' rows).
//
// Contract:
//   * Ownership: borrows the pipeline's columns, which must outlive it; holds the
//     process's ReadEngine while some column can be read explicitly.
//   * Thread safety: read_ahead() is for the consumer thread only (it keeps the windows
//     already read ahead); start(), finish() and the counters are thread-safe, for the
//     gather threads.
//   * Preconditions: built before the pipeline's first request; start() and finish()
//     only while reads_explicitly().
//   * read_ahead() never throws (it is advice); start() and finish() throw as
//     ExplicitReads does (SourceReadError naming the file, std::bad_alloc).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "explicit_reads.hpp"
#include "file_reads.hpp"
#include "gather.hpp"
#include "permutation.hpp"
#include "ragged.hpp"

namespace pyloader {

// The mode named "mmap", "read" or "auto"; throws std::invalid_argument for any other.
IoMode io_mode_named(const std::string& name);

class ReadPolicy {
 public:
  // `read_threads`: reads in flight at most. `row_mapped`: the pipeline maps dataset rows
  // through a row map.
  ReadPolicy(const std::vector<Column>& columns, const std::vector<RaggedColumn>& ragged, IoMode mode,
             std::size_t read_threads, bool row_mapped);

  ReadPolicy(const ReadPolicy&) = delete;
  ReadPolicy& operator=(const ReadPolicy&) = delete;

  IoMode mode() const noexcept { return mode_; }
  // Whether a batch may have rows read explicitly in this process (false in a forked
  // child, whose engine's threads do not exist).
  bool reads_explicitly() const noexcept { return reads_ && reads_->usable(); }

  // For a request of positions [first, first + count) of `order`: reads ahead the
  // windows not read ahead yet, and the next window; true when the order's batches are
  // read ahead (then they are copied from the mapping).
  bool read_ahead(const IndexOrder& order, std::uint64_t first, std::uint64_t count) noexcept;

  // Starts the explicit reads `batch` needs (null when none): see ExplicitReads::start.
  std::unique_ptr<ExplicitReads::Pending> start(const ExplicitReads::Batch& batch, std::vector<char>& done) const;
  // Waits for them and completes the batch's explicitly read columns, and counts them.
  void finish(ExplicitReads::Pending& pending, const ExplicitReads::Batch& batch);

  // Batches with rows read explicitly (at least one column), bytes read so, and windows
  // of block-shuffled orders read ahead, so far.
  std::uint64_t explicitly_read_batches() const noexcept { return explicitly_read_.load(std::memory_order_relaxed); }
  std::uint64_t read_bytes() const noexcept { return read_bytes_.load(std::memory_order_relaxed); }
  std::uint64_t windows_read_ahead() const noexcept { return windows_read_ahead_.load(std::memory_order_relaxed); }

 private:
  void read_ahead_window(const IndexOrder& order, const BlockWindow& window);

  IoMode mode_;
  std::unique_ptr<ExplicitReads> reads_;  // null when nothing can be read explicitly
  bool reads_windows_ahead_ = false;
  // Positions of read_ahead_order_ in [read_ahead_first_, read_ahead_end_) lie in
  // windows already read ahead.
  std::optional<IndexOrder> read_ahead_order_;
  std::uint64_t read_ahead_first_ = 0, read_ahead_end_ = 0;
  std::atomic<std::uint64_t> explicitly_read_{0}, read_bytes_{0}, windows_read_ahead_{0};
};

}  // namespace pyloader
