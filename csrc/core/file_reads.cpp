#include "file_reads.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <new>
#include <system_error>

namespace pyloader {
namespace {

// One preadv() takes at most this many rows (IOV_MAX is 1024 on Linux) and bytes: long
// runs are split so that several threads share them.
constexpr std::size_t kMaxRunRows = 512;
constexpr std::int64_t kMaxRunBytes = 1 << 20;
// Bytes per posix_fadvise(WILLNEED) call: one call reads at most the file's readahead
// window (read_ahead_kb, 128 KiB by default) and ignores the rest of its range; the
// cost per page is the same for smaller calls (measured: 128 KiB and 1 MiB calls filled
// the cache equally fast, 4 MiB ones more slowly under an 8-MiB window).
constexpr std::int64_t kReadAheadCallBytes = 128 << 10;
// Bytes one read_ahead() task covers: a range is shared among several threads, since a
// call blocks while the kernel allocates its pages and queues its reads.
constexpr std::int64_t kReadAheadTaskBytes = 4 << 20;
// Pages row_cached() looks at: enough to tell, few enough to stay one cheap call.
constexpr std::size_t kResidencyPagesPerRow = 8;

std::size_t page_size() {
  static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

}  // namespace

FileSource::FileSource(std::string path, std::int64_t offset)
    : path_(std::move(path)), offset_(offset), descriptor_(::open(path_.c_str(), O_RDONLY | O_CLOEXEC)) {
  if (descriptor_ < 0) {
    throw std::system_error(errno, std::generic_category(), "cannot open " + path_ + " for reading");
  }
  // Advice only: its failure changes speed, not results.
  (void)::posix_fadvise(descriptor_, 0, 0, POSIX_FADV_RANDOM);
}

FileSource::~FileSource() { ::close(descriptor_); }

std::shared_ptr<const FileSource> FileSource::open_if_same(const std::string& path, std::int64_t offset,
                                                           std::uint64_t device, std::uint64_t inode) {
  try {
    auto file = std::make_shared<const FileSource>(path, offset);
    if (!file->is(device, inode)) return nullptr;
    return file;
  } catch (const std::system_error&) {
    return nullptr;
  }
}

bool FileSource::is(std::uint64_t device, std::uint64_t inode) const noexcept {
  struct stat status{};
  return ::fstat(descriptor_, &status) == 0 && static_cast<std::uint64_t>(status.st_dev) == device &&
         static_cast<std::uint64_t>(status.st_ino) == inode;
}

bool bytes_cached(const std::byte* address, std::int64_t bytes) {
  if (bytes <= 0) return true;
  const std::size_t page = page_size();
  unsigned char resident[kResidencyPagesPerRow + 1];
  const auto start = reinterpret_cast<std::uintptr_t>(address);
  const std::uintptr_t first_page = start / page * page;
  const std::size_t span =
      std::min<std::size_t>(start + static_cast<std::size_t>(bytes) - first_page, kResidencyPagesPerRow * page);
  if (::mincore(reinterpret_cast<void*>(first_page), span, resident) != 0) return true;  // not ours to ask about
  const std::size_t pages = (span + page - 1) / page;
  for (std::size_t p = 0; p < pages; ++p) {
    if ((resident[p] & 1) == 0) return false;
  }
  return true;
}

struct ReadEngine::Batch {
  std::vector<iovec> iovs;
  std::mutex mutex;
  std::condition_variable finished;
  std::size_t runs_left = 0;
  std::string error;           // the first failure's message
  bool out_of_memory = false;  // some runs could not be queued: nothing failed, try again
};

ReadEngine::ReadEngine(std::size_t threads) : threads_(threads == 0 ? 1 : threads) {}

std::shared_ptr<ReadEngine> ReadEngine::shared(std::size_t threads) {
  static std::mutex mutex;
  // Never destroyed: a weak reference, and a forked child's engine replaces the parent's.
  static auto* current = new std::weak_ptr<ReadEngine>();
  std::lock_guard<std::mutex> lock(mutex);
  std::shared_ptr<ReadEngine> engine = current->lock();
  if (!engine || !engine->usable()) {
    engine = std::make_shared<ReadEngine>(threads);
    *current = engine;
  }
  return engine;
}

void ReadEngine::serve(const Run& run) noexcept {
  Batch& batch = *run.batch;
  bool failed;
  {
    std::lock_guard<std::mutex> lock(batch.mutex);
    failed = !batch.error.empty();
  }
  std::string error;
  if (!failed) {  // after one failure the batch is lost: its other reads are skipped
    try {
      read_run(run);
    } catch (const std::exception& caught) {
      error = caught.what();
    }
  }
  std::lock_guard<std::mutex> lock(batch.mutex);
  if (!error.empty() && batch.error.empty()) batch.error = std::move(error);
  if (--batch.runs_left == 0) batch.finished.notify_all();
}

void ReadEngine::read_run(const Run& run) {
  iovec iovs[kMaxRunRows];
  std::size_t count = run.iov_count;
  std::copy_n(run.batch->iovs.data() + run.first_iov, count, iovs);
  iovec* next = iovs;
  std::int64_t offset = run.offset;
  while (count > 0) {
    const ssize_t got = ::preadv(run.file->descriptor(), next, static_cast<int>(count), offset);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw SourceReadError("reading " + run.file->path() + " at byte " + std::to_string(offset) +
                            " failed: " + std::strerror(errno));
    }
    if (got == 0) {
      throw SourceReadError("reading " + run.file->path() + " at byte " + std::to_string(offset) +
                            " came back short: the file ends there, so it shrank while the loader was "
                            "using it");
    }
    offset += got;
    auto left = static_cast<std::size_t>(got);
    while (count > 0 && left >= next->iov_len) {
      left -= next->iov_len;
      ++next;
      --count;
    }
    if (count > 0) {
      next->iov_base = static_cast<std::byte*>(next->iov_base) + left;
      next->iov_len -= left;
    }
  }
}

ReadEngine::Reads::Reads(std::unique_ptr<Batch> batch) : batch_(std::move(batch)) {}

ReadEngine::Reads::~Reads() {
  if (!owner_.is_current()) {
    // A forked child: no thread here will finish these reads, and the mutex may have
    // been copied locked. The bookkeeping leaks, as the engine's does.
    (void)batch_.release();
    return;
  }
  std::unique_lock<std::mutex> lock(batch_->mutex);
  batch_->finished.wait(lock, [&] { return batch_->runs_left == 0; });
}

std::unique_ptr<ReadEngine::Reads> ReadEngine::start(const std::vector<Extent>& extents) {
  auto batch = std::make_unique<Batch>();
  std::vector<Run> runs;
  batch->iovs.reserve(extents.size());
  std::int64_t run_end = -1;  // file offset where the last run ends
  std::int64_t run_bytes = 0;
  for (const Extent& extent : extents) {
    if (extent.bytes == 0) continue;
    const bool continues = !runs.empty() && runs.back().file == extent.file && extent.offset == run_end &&
                           runs.back().iov_count < kMaxRunRows &&
                           run_bytes + static_cast<std::int64_t>(extent.bytes) <= kMaxRunBytes;
    if (continues) {
      ++runs.back().iov_count;
      run_bytes += static_cast<std::int64_t>(extent.bytes);
    } else {
      runs.push_back(Run{batch.get(), extent.file, extent.offset, batch->iovs.size(), 1});
      run_bytes = static_cast<std::int64_t>(extent.bytes);
    }
    run_end = extent.offset + static_cast<std::int64_t>(extent.bytes);
    batch->iovs.push_back(iovec{extent.out, extent.bytes});
  }
  if (runs.empty()) return nullptr;
  ThreadPool& threads = pool();
  // Counted before the first is queued: a submit that fails (no memory) leaves the runs
  // never queued to be counted off here, so that finish() does not wait for them.
  batch->runs_left = runs.size();
  std::unique_ptr<Reads> reads(new Reads(std::move(batch)));
  Batch& pending = *reads->batch_;
  for (std::size_t k = 0; k < runs.size(); ++k) {
    try {
      const Run run = runs[k];
      threads.submit([run] { serve(run); });
    } catch (...) {
      std::lock_guard<std::mutex> lock(pending.mutex);
      pending.runs_left -= runs.size() - k;
      pending.out_of_memory = true;
      break;
    }
  }
  return reads;
}

void ReadEngine::finish(Reads& reads) {
  Batch& batch = *reads.batch_;
  std::unique_lock<std::mutex> lock(batch.mutex);
  batch.finished.wait(lock, [&] { return batch.runs_left == 0; });
  if (!batch.error.empty()) throw SourceReadError(batch.error);
  if (batch.out_of_memory) throw std::bad_alloc();  // as for any allocation: the batch is gathered again
}

bool ReadEngine::done(Reads& reads) {
  std::lock_guard<std::mutex> lock(reads.batch_->mutex);
  return reads.batch_->runs_left == 0;
}

void ReadEngine::read(const std::vector<Extent>& extents) {
  if (std::unique_ptr<Reads> reads = start(extents)) finish(*reads);
}

ThreadPool& ReadEngine::pool() {
  std::call_once(started_, [this] { pool_ = std::make_unique<ThreadPool>(threads_); });
  return *pool_;
}

void ReadEngine::read_ahead(std::shared_ptr<const FileSource> file, std::int64_t offset, std::int64_t length) {
  if (!file || length <= 0 || offset < 0) return;
  ThreadPool& threads = pool();
  for (std::int64_t first = offset, end = offset + length; first < end; first += kReadAheadTaskBytes) {
    const std::int64_t last = std::min(end, first + kReadAheadTaskBytes);
    threads.submit([file, first, last] {
      for (std::int64_t at = first; at < last; at += kReadAheadCallBytes) {
        (void)::posix_fadvise(file->descriptor(), at, std::min(kReadAheadCallBytes, last - at), POSIX_FADV_WILLNEED);
      }
    });
  }
}

}  // namespace pyloader
