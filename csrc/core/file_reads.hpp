// Explicit reads of a column's rows from the file that backs its memory mapping.
//
// Page faults read one page run per faulting thread at a time; storage serves several
// times more random reads per second with dozens in flight. A ReadEngine keeps a batch's
// reads in flight at once on its own threads, each read a preadv() of consecutive rows
// straight into their places in the batch buffer (neighbouring rows coalesced into one
// call), so the only copy is the kernel's.
//
// Contract:
//   * FileSource owns its descriptor (closed by its destructor); it is immutable after
//     construction and safe to share between threads.
//   * ReadEngine::start()/read() are thread-safe: gather threads call them concurrently,
//     each waiting only for its own reads. read() and finish() return after every read
//     issued has finished (so `out` is no longer written), and throw SourceReadError when
//     one failed or came back short (the file shrank): the message names the file.
//   * One engine per process (shared()), whatever the number of loaders and iterators:
//     its threads (a ThreadPool of at most the first caller's count) start on the first
//     read and are joined when the last pipeline holding the engine lets go of it, once
//     no read() call is running. Fork: in a forked child usable() is false (the
//     parent's engine leaks its bookkeeping there), and shared() makes the child its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "gather.hpp"
#include "process_owner.hpp"
#include "thread_pool.hpp"

namespace pyloader {

// Reading a column's source failed: a SIGBUS on its mapping (the file was truncated or
// became unreadable) or a failed or short explicit read. An I/O failure, not a logic
// error: the bindings raise it as OSError.
class SourceReadError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The file behind one column piece: the piece's row 0 starts at byte `offset`.
class FileSource {
 public:
  // Opens `path` read-only and asks the kernel not to read ahead around each read
  // (random rows gain nothing from it). Throws std::system_error when it cannot open.
  FileSource(std::string path, std::int64_t offset);
  // The file (st_dev, st_ino) opened at `path`, or null when it cannot be opened or
  // another file now has that path: its piece is then copied from its mapping, which
  // stays valid whatever happened to the path (unlinked, replaced, no descriptors left).
  static std::shared_ptr<const FileSource> open_if_same(const std::string& path, std::int64_t offset,
                                                        std::uint64_t device, std::uint64_t inode);
  ~FileSource();
  FileSource(const FileSource&) = delete;
  FileSource& operator=(const FileSource&) = delete;

  int descriptor() const noexcept { return descriptor_; }
  // Whether the opened file is the one identified by (st_dev, st_ino).
  bool is(std::uint64_t device, std::uint64_t inode) const noexcept;
  std::int64_t offset() const noexcept { return offset_; }
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
  std::int64_t offset_;
  int descriptor_;
};

// How a pipeline reads rows of file-backed columns.
enum class IoMode {
  kMmap,  // copy from the mapping (page faults read what is not cached)
  kRead,  // explicit reads at depth for every batch
  kAuto,  // explicit reads for a batch whose rows are not in the page cache, are
          // large enough that kernel read-around around a fault would mostly be wasted,
          // and are not one long run (such runs stream best through read-ahead)
};

// Rows of at least this many bytes are read explicitly in IoMode::kAuto when not
// cached: smaller rows share pages, and a shuffled pass over them touches nearly every
// page, so the kernel's read-around already reads at close to sequential bandwidth.
constexpr std::int64_t kExplicitReadMinRowBytes = 2048;

// True when the pages of `bytes` bytes at `address` of a mapping (their first few
// pages, for long ranges) are in the page cache: one mincore(), which never faults.
bool bytes_cached(const std::byte* address, std::int64_t bytes);

class ReadEngine {
 public:
  // The process's engine, made with `threads` threads if none is alive in this process.
  static std::shared_ptr<ReadEngine> shared(std::size_t threads);

  explicit ReadEngine(std::size_t threads);
  ReadEngine(const ReadEngine&) = delete;
  ReadEngine& operator=(const ReadEngine&) = delete;

  // `bytes` bytes of `file` from byte `offset`, to be read into `out`.
  struct Extent {
    const FileSource* file;
    std::int64_t offset;
    std::byte* out;
    std::size_t bytes;
  };

  struct Batch;
  // A batch of reads in flight; finish() it before it is destroyed (its destructor
  // waits for what is still in flight, so its buffers are never written after; in a
  // forked child, where nothing will finish them, it leaks them instead).
  class Reads {
   public:
    ~Reads();
    Reads(const Reads&) = delete;
    Reads& operator=(const Reads&) = delete;

   private:
    friend class ReadEngine;
    explicit Reads(std::unique_ptr<Batch> batch);
    std::unique_ptr<Batch> batch_;
    ProcessOwner owner_;
  };

  // Starts reading every extent (one batch's) with all their reads in flight at once,
  // so a batch spread over many pieces, columns or records keeps the engine's depth,
  // and returns without waiting (null when there was nothing to read). An extent that
  // starts where the one before it (in the order given) ends, in the same file, shares
  // its preadv(): give a batch's extents in file order and neighbouring rows coalesce.
  // Preconditions: the `out` ranges do not overlap; they and the files outlive the reads.
  std::unique_ptr<Reads> start(const std::vector<Extent>& extents);
  // Waits until every read of `reads` has finished; throws SourceReadError when one
  // failed or came back short (the file shrank): the message names the file.
  static void finish(Reads& reads);
  // Whether every read of `reads` has finished (finish() would not wait).
  static bool done(Reads& reads);
  // start() then finish().
  void read(const std::vector<Extent>& extents);

  // Asks the kernel to read bytes [offset, offset + length) of `file` into the page
  // cache, and returns without waiting: posix_fadvise(WILLNEED) calls on the engine's
  // threads, which hold `file` open until they are done. Advice only: a failure changes
  // speed, not results, and bytes past the end of the file (truncated) are not read.
  // Precondition: usable().
  void read_ahead(std::shared_ptr<const FileSource> file, std::int64_t offset, std::int64_t length);

  std::size_t threads() const noexcept { return threads_; }
  // False in a forked child, which has none of the engine's threads: reads there would
  // wait forever, so callers copy from the mapping instead.
  bool usable() const noexcept { return owner_.is_current(); }

 private:
  struct Run {
    Batch* batch;
    const FileSource* file;
    std::int64_t offset;  // in the file
    std::size_t first_iov, iov_count;
  };

  // Reads one run and records its outcome in its batch; never throws (a pool task).
  static void serve(const Run& run) noexcept;
  static void read_run(const Run& run);
  ThreadPool& pool();

  std::size_t threads_;
  std::once_flag started_;
  std::unique_ptr<ThreadPool> pool_;  // started by the first read; fork-safe on its own
  ProcessOwner owner_;
};

}  // namespace pyloader
