#include "reference_gather.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <new>

namespace pyloader {

void gather_batches_reference(ThreadPool& pool, const std::vector<Column>& columns, const std::int64_t* indices,
                              std::size_t count, std::size_t batch_size) {
  if (batch_size == 0 || count == 0 || columns.empty()) return;
  batch_size = std::min(batch_size, count);  // also bounds the per-thread buffer below
  std::size_t row_bytes = 0;
  for (const Column& column : columns) row_bytes += static_cast<std::size_t>(column.row_bytes());
  const std::size_t batches = (count + batch_size - 1) / batch_size;

  std::atomic<std::size_t> next_batch{0};
  std::mutex mutex;
  std::condition_variable finished;
  std::size_t workers_left = pool.size();
  std::atomic<bool> failed{false};

  for (std::size_t worker = 0; worker < pool.size(); ++worker) {
    pool.submit([&] {
      try {
        std::vector<std::byte> buffer(batch_size * row_bytes);
        ReadPlan plan;
        for (std::size_t batch = next_batch++; batch < batches; batch = next_batch++) {
          const std::size_t first = batch * batch_size;
          const std::size_t rows = std::min(batch_size, count - first);
          plan_reads(indices + first, rows, plan);
          std::byte* out = buffer.data();
          for (const Column& column : columns) {
            gather_column(column, plan, rows, out);
            out += rows * static_cast<std::size_t>(column.row_bytes());
          }
        }
      } catch (...) {
        failed = true;
      }
      std::lock_guard<std::mutex> lock(mutex);
      if (--workers_left == 0) finished.notify_all();
    });
  }
  std::unique_lock<std::mutex> lock(mutex);
  finished.wait(lock, [&] { return workers_left == 0; });
  if (failed) throw std::bad_alloc();
}

}  // namespace pyloader
