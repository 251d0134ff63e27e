// Which of a batch's rows a pipeline reads from their files explicitly, and reading them.
//
// What ReadPolicy (the IO seam of BatchPipeline) uses to read a batch's rows. For each
// batch and each file-backed column, one of:
//   * copy from the mapping: rows already in the page cache, long runs in file order
//     (the kernel's read-ahead streams them), small fixed rows under IoMode::kAuto, and
//     fixed columns of batches whose blocks were read ahead (read_ahead(): the pipeline
//     says which blocks, for orders that know them);
//   * read at depth with the process's ReadEngine, straight into the batch buffer; or,
//     where rows must be converted (uint16 tokens delivered as int64) or several columns
//     overlap in the file (a token window's inputs and its targets, one token later),
//     into a staging area that is then widened or split, so each window is read once.
// Variable-length records are read into a staging area and their spans pointed at it,
// so that padding and packing (write_records) stay the only code that lays them out.
//
// Contract:
//   * Built by a ReadPolicy from its pipeline's columns, which it borrows: they must
//     outlive it. Immutable after construction.
//   * start() and finish() are thread-safe: gather threads call them concurrently, and a
//     thread may have several batches' reads in flight. They allocate, so they run
//     outside the SIGBUS guard; finish() throws SourceReadError (the message names the
//     file) when a read failed or came back short, and both throw std::bad_alloc.
//   * A Pending's destructor waits for its reads, so buffers are never written after.
//   * In a forked child usable() is false and start() must not be called: the engine's
//     threads exist only in the parent.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "file_reads.hpp"
#include "gather.hpp"
#include "permutation.hpp"
#include "ragged.hpp"

namespace pyloader {

class ExplicitReads {
  struct Group;

 public:
  // Holds the process's engine (ReadEngine::shared(threads)) when some column can be
  // read explicitly: every piece names its file and its rows lie at a positive stride.
  ExplicitReads(const std::vector<Column>& columns, const std::vector<RaggedColumn>& ragged, IoMode mode,
                std::size_t threads);

  bool active() const noexcept { return engine_ != nullptr; }
  // Whether blocks of rows are read ahead into the page cache (IoMode::kAuto, fixed-size
  // columns with files) rather than read explicitly, for orders that say what comes next.
  bool reads_ahead() const noexcept { return reads_ahead_; }
  bool usable() const noexcept { return engine_ && engine_->usable(); }

  // One gathered batch as the pipeline lays it out.
  struct Batch {
    const ReadPlan* plan;
    std::size_t rows;
    bool read_ahead;  // its blocks were read ahead into the page cache
    std::byte* buffer;
    const std::vector<std::size_t>* column_offsets;  // fixed column c's rows at buffer + [c]
    std::vector<std::vector<RecordSpan>>* spans;     // ragged column r's located records
  };

  // Asks the kernel to read the rows of `block` of every fixed-size column read from its
  // file (each group's union once) into the page cache, and returns without waiting (advice: see
  // ReadEngine::read_ahead). Consecutive rows and token windows (at a stride, perhaps overlapping) alike: a block's
  // rows lie in one range of the file. Precondition: usable().
  void read_ahead(const RowRange& block) const;

  // One batch's reads in flight, and what is left to do once they are in (built by
  // start(), used by finish()).
  class Pending {
   public:
    struct StagedGroup {
      const Group* group;
      std::size_t area;
    };
    // Staging, one per group or ragged column read through one: uninitialised, since
    // every byte is read into before it is used.
    std::vector<std::unique_ptr<std::byte[]>> areas;
    std::vector<StagedGroup> groups;
    std::vector<std::pair<std::size_t, std::size_t>> records;  // (ragged column, area)
    std::uint64_t bytes = 0;
    std::unique_ptr<ReadEngine::Reads> reads;  // last: destroyed (waited for) first

    std::byte* area(std::size_t bytes);
    // Whether its reads are all in (finish() would not wait).
    bool done() const { return !reads || ReadEngine::done(*reads); }
  };

  // Starts the reads the mode says `batch` needs, and returns without waiting (null
  // when nothing is read explicitly): sets done[c] for each fixed column whose output
  // the reads will write. Precondition: usable().
  std::unique_ptr<Pending> start(const Batch& batch, std::vector<char>& done) const;
  // Waits for the reads, then widens and splits what was staged and points the spans
  // of each ragged column read at the bytes read (valid while `pending` lives).
  // Returns the bytes read from files. `batch` must be the one given to start().
  std::uint64_t finish(Pending& pending, const Batch& batch) const;

 private:
  // Fixed columns read together: rows of one file at the same stride whose byte ranges
  // overlap (a window's inputs and targets), each row's union read once.
  struct Group {
    std::vector<std::size_t> members;  // column indices, the first at the lowest offset
    std::vector<std::int64_t> shifts;  // where each member's row starts within the union
    std::int64_t union_bytes = 0;
  };

  bool read_now(const Column& column, const ReadPlan& plan, std::size_t count, bool read_ahead) const;
  bool read_now(const RaggedColumn& column, const ReadPlan& plan, std::size_t count,
                const std::vector<RecordSpan>& spans) const;

  const std::vector<Column>& columns_;
  const std::vector<RaggedColumn>& ragged_;
  IoMode mode_;
  std::vector<Group> groups_;
  std::vector<std::size_t> ragged_readable_;  // indices of ragged columns with files
  bool reads_ahead_ = false;
  std::shared_ptr<ReadEngine> engine_;
};

}  // namespace pyloader
