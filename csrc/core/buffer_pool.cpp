#include "buffer_pool.hpp"

#include <cstdlib>
#include <new>

namespace pyloader {
namespace {

constexpr std::size_t kPageBytes = 4096;

std::size_t round_up_to_page(std::size_t bytes) {
  const std::size_t at_least_one = bytes == 0 ? 1 : bytes;
  return (at_least_one + kPageBytes - 1) / kPageBytes * kPageBytes;
}

}  // namespace

std::shared_ptr<BufferPool> BufferPool::create(std::size_t max_idle) {
  return std::shared_ptr<BufferPool>(new BufferPool(max_idle));
}

BufferPool::BufferPool(std::size_t max_idle) : max_idle_(max_idle) {
  idle_.reserve(max_idle_);  // release() is noexcept: it must never allocate
}

BufferPool::~BufferPool() {
  if (!owner_.is_current()) return;
  for (const Block& block : idle_) std::free(block.data);
}

std::shared_ptr<std::byte> BufferPool::acquire(std::size_t bytes) {
  Block block{nullptr, 0};
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = idle_.begin(); it != idle_.end(); ++it) {
      if (it->bytes >= bytes) {
        block = *it;
        idle_.erase(it);
        break;
      }
    }
  }
  if (block.data == nullptr) {
    block.bytes = round_up_to_page(bytes == 0 ? 1 : bytes);  // aligned_alloc(…, 0) may fail
    block.data = static_cast<std::byte*>(std::aligned_alloc(kPageBytes, block.bytes));
    if (block.data == nullptr) throw std::bad_alloc();
  }
  return std::shared_ptr<std::byte>(block.data,
                                    [pool = shared_from_this(), block](std::byte*) { pool->release(block); });
}

void BufferPool::release(Block block) noexcept {
  if (!owner_.is_current()) {
    std::free(block.data);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (idle_.size() < max_idle_) {
      idle_.push_back(block);
      return;
    }
  }
  std::free(block.data);
}

}  // namespace pyloader
