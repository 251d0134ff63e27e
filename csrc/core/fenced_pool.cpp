#include "fenced_pool.hpp"

namespace pyloader {

std::shared_ptr<FencedPool> FencedPool::create(Memory memory, std::size_t max_idle_bytes) {
  return std::shared_ptr<FencedPool>(new FencedPool(std::move(memory), max_idle_bytes));
}

FencedPool::~FencedPool() {
  if (!owner_.is_current()) return;
  for (const Idle& idle : idle_) {
    try {
      if (idle.after) idle.after->wait();  // freeing memory under a running copy is undefined
      memory_.free(idle.block);
    } catch (...) {
      // The driver is gone (process exit): so is the memory.
    }
  }
}

bool FencedPool::done(const std::shared_ptr<const CopyFence>& fence) noexcept {
  if (!fence) return true;
  try {
    return fence->done();
  } catch (...) {
    return false;  // a failed query: never reuse what a copy may still touch
  }
}

std::shared_ptr<FencedPool::Lease> FencedPool::acquire(std::size_t bytes) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // Only the oldest fitting block's fence is asked, one query per batch: blocks come
    // back mostly in fence order, so when the oldest is not done the later ones are
    // rarely done either. One that is not goes to the back, so that a block held up
    // (a copy of a batch never delivered, on another stream) does not stop the others
    // from being reused.
    for (auto idle = idle_.begin(); idle != idle_.end(); ++idle) {
      if (idle->block.bytes < bytes) continue;
      if (!done(idle->after)) {
        Idle waiting = std::move(*idle);
        idle_.erase(idle);
        idle_.push_back(std::move(waiting));
        break;
      }
      const Block block = idle->block;
      idle_bytes_ -= block.bytes;
      idle_.erase(idle);
      return std::make_shared<Lease>(shared_from_this(), block);
    }
  }
  const Block block = memory_.allocate(bytes);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++allocations_;
  }
  try {
    return std::make_shared<Lease>(shared_from_this(), block);
  } catch (...) {
    memory_.free(block);
    throw;
  }
}

std::size_t FencedPool::allocations() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return allocations_;
}

void FencedPool::release(const Block& block, std::shared_ptr<const CopyFence> after) noexcept {
  if (!owner_.is_current()) return;  // forked child: see the class comment
  std::vector<Block> surplus;
  try {
    std::lock_guard<std::mutex> lock(mutex_);
    idle_.push_back(Idle{block, std::move(after)});
    idle_bytes_ += block.bytes;
    // Free the oldest finished blocks while over the budget (they fit the fewest
    // later batches when sizes grow, and freeing device memory stalls the device, so
    // only surplus goes).
    while (idle_.size() > kMinIdle && idle_bytes_ > max_idle_bytes_ && done(idle_.front().after)) {
      idle_bytes_ -= idle_.front().block.bytes;
      surplus.push_back(idle_.front().block);
      idle_.pop_front();
    }
  } catch (...) {
    return;  // out of memory for the idle list: the block is leaked, never misused
  }
  for (const Block& freed : surplus) {
    try {
      memory_.free(freed);
    } catch (...) {
    }
  }
}

FencedPool::Lease::~Lease() {
  if (abandoned_) return;
  std::shared_ptr<const CopyFence> after = std::move(after_);
  if (recorder_) {
    try {
      after = recorder_->record(stream_);
    } catch (...) {
      return;  // no fence for the consumer's work: the block is never reused
    }
  }
  pool_->release(block_, std::move(after));
}

}  // namespace pyloader
