#include "read_policy.hpp"

#include <algorithm>
#include <stdexcept>

namespace pyloader {
namespace {

// Batches of a block-shuffled order read ahead at least, past the one requested.
constexpr std::uint64_t kBatchesAhead = 4;

}  // namespace

IoMode io_mode_named(const std::string& name) {
  if (name == "mmap") return IoMode::kMmap;
  if (name == "read") return IoMode::kRead;
  if (name == "auto") return IoMode::kAuto;
  throw std::invalid_argument("io must be 'auto', 'mmap' or 'read', not '" + name + "'");
}

ReadPolicy::ReadPolicy(const std::vector<Column>& columns, const std::vector<RaggedColumn>& ragged, IoMode mode,
                       std::size_t read_threads, bool row_mapped)
    : mode_(mode) {
  if (mode == IoMode::kMmap) return;
  reads_ = std::make_unique<ExplicitReads>(columns, ragged, mode, read_threads);
  if (!reads_->active()) {
    reads_.reset();
    return;
  }
  // A row map scatters a block's rows over the file: nothing to read ahead as a range.
  reads_windows_ahead_ = reads_->reads_ahead() && !row_mapped;
}

bool ReadPolicy::read_ahead(const IndexOrder& order, std::uint64_t first, std::uint64_t count) noexcept {
  BlockWindow window;
  if (!reads_windows_ahead_ || count == 0 || !reads_->usable() || !order.block_window(first, window)) return false;
  try {
    if (!read_ahead_order_ || !read_ahead_order_->same_block_order(order) || first < read_ahead_first_) {
      read_ahead_order_ = order;  // a new order, or positions requested again
      read_ahead_end_ = first;
    }
    read_ahead_first_ = first;
    // Through the window holding the position kBatchesAhead batches or half a window
    // (the larger) past the batch's last one: the next window then starts once the
    // batches are half way through the current one, since issued at once its reads
    // would share the disk with the current one's, which the batches are waiting for
    // (measured: windows of 64 blocks of 1024 rows read 1.5x faster so); small windows
    // are still read a few batches ahead.
    const std::uint64_t last = first + count - 1;
    order.block_window(last, window);
    const std::uint64_t ahead = std::max((window.end - window.first) / 2, kBatchesAhead * count);
    const std::uint64_t goal = order.size() - last > ahead ? last + ahead : order.size() - 1;
    std::uint64_t target = window.end;
    while (target <= goal) {
      order.block_window(target, window);
      target = window.end;
    }
    for (std::uint64_t p = std::max(first, read_ahead_end_); p < target; p = window.end) {
      order.block_window(p, window);
      read_ahead_window(order, window);
    }
    read_ahead_end_ = std::max(read_ahead_end_, target);
  } catch (...) {
    // Only allocation can fail: the reads not queued are left to the gather.
  }
  return true;
}

void ReadPolicy::read_ahead_window(const IndexOrder& order, const BlockWindow& window) {
  for (std::uint64_t k = 0; k < window.blocks; ++k) reads_->read_ahead(order.window_block(window, k));
  windows_read_ahead_.fetch_add(1, std::memory_order_relaxed);
}

std::unique_ptr<ExplicitReads::Pending> ReadPolicy::start(const ExplicitReads::Batch& batch,
                                                          std::vector<char>& done) const {
  return reads_->start(batch, done);
}

void ReadPolicy::finish(ExplicitReads::Pending& pending, const ExplicitReads::Batch& batch) {
  const std::uint64_t bytes = reads_->finish(pending, batch);
  explicitly_read_.fetch_add(1, std::memory_order_relaxed);
  read_bytes_.fetch_add(bytes, std::memory_order_relaxed);
}

}  // namespace pyloader
