#include "reference_reads.hpp"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "file_reads.hpp"

namespace pyloader {

void read_rows_reference(int descriptor, std::int64_t offset, std::int64_t row_bytes, const std::int64_t* rows,
                         std::size_t count, std::size_t depth) {
  if (depth == 0) depth = 1;
  std::atomic<std::size_t> next{0};
  std::mutex error_mutex;
  std::string error;
  auto reader = [&] {
    std::vector<std::byte> buffer(static_cast<std::size_t>(row_bytes));
    for (std::size_t k = next.fetch_add(1); k < count; k = next.fetch_add(1)) {
      const std::int64_t at = offset + rows[k] * row_bytes;
      ssize_t got;
      do {
        got = ::pread(descriptor, buffer.data(), buffer.size(), at);
      } while (got < 0 && errno == EINTR);
      if (got != static_cast<ssize_t>(buffer.size())) {
        const std::string failure = got < 0 ? std::strerror(errno) : "short read at byte " + std::to_string(at);
        std::lock_guard<std::mutex> lock(error_mutex);
        if (error.empty()) error = failure;  // the first failure is the cause
        next.store(count);
        return;
      }
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(depth);
  for (std::size_t t = 0; t < depth; ++t) threads.emplace_back(reader);
  for (std::thread& thread : threads) thread.join();
  if (!error.empty()) throw SourceReadError("reference read failed: " + error);
}

}  // namespace pyloader
