#include "explicit_reads.hpp"

#include <algorithm>
#include <cstring>

namespace pyloader {
namespace {

// Rows sampled to tell a cached batch (copied from the mapping, the fast path) from one
// that would be read through page faults, one page run at a time per thread.
constexpr std::size_t kResidencySamples = 4;
// Mean run length from which a batch is left to the mapping's read-ahead (measured:
// explicit reads were 0.6x the mapping for 12-KiB rows in file order).
constexpr std::size_t kStreamedRunBytes = std::size_t{1} << 20;

bool readable(const Column& column) noexcept {
  // Rows at a positive stride: consecutive rows, or token windows (which may overlap).
  for (const ColumnView& piece : column.pieces) {
    if (!piece.file || piece.row_stride <= 0) return false;
  }
  return !column.pieces.empty();
}

bool readable(const RaggedColumn& column) noexcept {
  for (const RaggedPiece& piece : column.pieces) {
    if (!piece.file) return false;
  }
  return !column.pieces.empty();
}

// Where column b's rows start relative to column a's in the same file, when the two
// can be read as one: every piece maps the same rows of the same file at the same
// stride, at one fixed distance that leaves their byte ranges overlapping.
bool overlap_shift(const Column& a, const Column& b, std::int64_t& shift) {
  if (a.pieces.size() != b.pieces.size() || a.row_bytes() != b.row_bytes()) return false;
  for (std::size_t p = 0; p < a.pieces.size(); ++p) {
    const ColumnView& x = a.pieces[p];
    const ColumnView& y = b.pieces[p];
    if (x.first_row != y.first_row || x.rows != y.rows || x.row_stride != y.row_stride ||
        x.file->path() != y.file->path()) {
      return false;
    }
    const std::int64_t distance = y.file->offset() - x.file->offset();
    if (p == 0) shift = distance;
    if (distance != shift) return false;
  }
  return shift >= 0 && shift < a.row_bytes();
}

std::size_t runs_of(const ReadPlan& plan, std::size_t count) {
  std::size_t runs = 1;
  for (std::size_t k = 1; k < count; ++k) runs += plan.sources[k] != plan.sources[k - 1] + 1;
  return runs;
}

template <typename Piece, typename FirstOf>
const Piece& piece_holding(const std::vector<Piece>& pieces, std::int64_t index, FirstOf first_of) {
  auto next = std::upper_bound(pieces.begin(), pieces.end(), index,
                               [&](std::int64_t i, const Piece& p) { return i < first_of(p); });
  return *(next - 1);
}

const ColumnView& piece_of(const Column& column, std::int64_t row) {
  return piece_holding(column.pieces, row, [](const ColumnView& p) { return p.first_row; });
}

const RaggedPiece& piece_of(const RaggedColumn& column, std::int64_t record) {
  return piece_holding(column.pieces, record, [](const RaggedPiece& p) { return p.first_record; });
}

}  // namespace

ExplicitReads::ExplicitReads(const std::vector<Column>& columns, const std::vector<RaggedColumn>& ragged, IoMode mode,
                             std::size_t threads)
    : columns_(columns), ragged_(ragged), mode_(mode) {
  if (mode == IoMode::kMmap) return;
  std::vector<char> grouped(columns.size(), 0);
  for (std::size_t c = 0; c < columns.size(); ++c) {
    if (grouped[c] || !readable(columns[c])) continue;
    Group group;
    group.members.push_back(c);
    group.shifts.push_back(0);
    grouped[c] = 1;
    for (std::size_t d = c + 1; d < columns.size(); ++d) {
      std::int64_t shift = 0;
      if (grouped[d] || !readable(columns[d])) continue;
      if (overlap_shift(columns[group.members.front()], columns[d], shift)) {
        group.members.push_back(d);
        group.shifts.push_back(shift);
        grouped[d] = 1;
      } else if (group.members.size() == 1 && overlap_shift(columns[d], columns[c], shift)) {
        // d starts first: it leads, and c's rows start `shift` bytes into d's.
        group.members.insert(group.members.begin(), d);
        group.shifts = {0, shift};
        grouped[d] = 1;
      }
    }
    group.union_bytes = columns[c].row_bytes();
    for (std::int64_t shift : group.shifts) {
      group.union_bytes = std::max(group.union_bytes, shift + columns[c].row_bytes());
    }
    groups_.push_back(std::move(group));
  }
  for (std::size_t r = 0; r < ragged.size(); ++r) {
    if (readable(ragged[r])) ragged_readable_.push_back(r);
  }
  if (!groups_.empty() || !ragged_readable_.empty()) engine_ = ReadEngine::shared(threads);
  reads_ahead_ = mode == IoMode::kAuto && !groups_.empty();  // fixed columns read from their files
}

void ExplicitReads::read_ahead(const RowRange& block) const {
  const auto first = static_cast<std::int64_t>(block.first);
  const auto end = static_cast<std::int64_t>(block.first + block.rows);
  // Once per group: a window's inputs and targets are one range of the file.
  for (const Group& group : groups_) {
    for (const ColumnView& piece : columns_[group.members.front()].pieces) {
      const std::int64_t lo = std::max(first, piece.first_row);
      const std::int64_t hi = std::min(end, piece.first_row + piece.rows);
      if (lo >= hi) continue;
      engine_->read_ahead(piece.file, piece.file->offset() + (lo - piece.first_row) * piece.row_stride,
                          (hi - lo - 1) * piece.row_stride + group.union_bytes);
    }
  }
}

bool ExplicitReads::read_now(const Column& column, const ReadPlan& plan, std::size_t count, bool read_ahead) const {
  if (mode_ == IoMode::kRead) return true;
  if (read_ahead) return false;  // its blocks are arriving in the cache
  if (column.row_bytes() < kExplicitReadMinRowBytes) return false;
  // Shorter runs than this (blocks of a block shuffle) are read explicitly, all at once.
  if (count / runs_of(plan, count) * static_cast<std::size_t>(column.row_bytes()) >= kStreamedRunBytes) return false;
  const std::size_t samples = std::min(count, kResidencySamples);
  for (std::size_t s = 0; s < samples; ++s) {
    const std::int64_t row = plan.sources[s * count / samples];
    const ColumnView& piece = piece_of(column, row);
    if (!bytes_cached(piece.row(row), piece.row_bytes)) return true;
  }
  return false;
}

bool ExplicitReads::read_now(const RaggedColumn& column, const ReadPlan& plan, std::size_t count,
                             const std::vector<RecordSpan>& spans) const {
  if (mode_ == IoMode::kRead) return true;
  // Block windows read ahead cover fixed columns only: records are read here. Records
  // have no size floor: a record under a page still costs a page fault, and
  // the kernel's read-around then reads up to its window around each record of a
  // shuffled batch (see the README's cold record figures).
  std::uint64_t bytes = 0;
  for (std::size_t k = 0; k < count; ++k) bytes += static_cast<std::uint64_t>(spans[k].length);
  bytes *= static_cast<std::uint64_t>(column.value_row_bytes());
  if (bytes / runs_of(plan, count) >= kStreamedRunBytes) return false;
  const std::size_t samples = std::min(count, kResidencySamples);
  for (std::size_t s = 0; s < samples; ++s) {
    const RecordSpan& span = spans[plan.positions[s * count / samples]];
    if (!bytes_cached(span.rows, span.length * column.value_row_bytes())) return true;
  }
  return false;
}

std::byte* ExplicitReads::Pending::area(std::size_t bytes) {
  areas.emplace_back(new std::byte[std::max<std::size_t>(bytes, 1)]);  // never null, even for empty records
  return areas.back().get();
}

std::unique_ptr<ExplicitReads::Pending> ExplicitReads::start(const Batch& batch, std::vector<char>& done) const {
  const ReadPlan& plan = *batch.plan;
  const std::size_t count = batch.rows;
  if (count == 0) return nullptr;
  thread_local std::vector<ReadEngine::Extent> extents;
  extents.clear();
  std::unique_ptr<Pending> pending;  // made once something is to be read: cached batches allocate nothing

  for (const Group& group : groups_) {
    const Column& lead = columns_[group.members.front()];
    if (!read_now(lead, plan, count, batch.read_ahead)) continue;
    if (!pending) pending = std::make_unique<Pending>();
    const auto row_bytes = static_cast<std::size_t>(group.union_bytes);
    std::byte* out;
    if (group.members.size() == 1 && !lead.cast.active()) {  // straight into the batch
      out = batch.buffer + (*batch.column_offsets)[group.members.front()];
    } else {
      pending->groups.push_back(Pending::StagedGroup{&group, pending->areas.size()});
      out = pending->area(count * row_bytes);
    }
    for_each_piece(lead, plan, count, [&](const ColumnView& piece, std::size_t begin, std::size_t end) {
      for (std::size_t k = begin; k < end; ++k) {
        const std::int64_t at = piece.file->offset() + (plan.sources[k] - piece.first_row) * piece.row_stride;
        extents.push_back(ReadEngine::Extent{piece.file.get(), at, out + plan.positions[k] * row_bytes, row_bytes});
      }
    });
    pending->bytes += count * row_bytes;
    for (std::size_t member : group.members) done[member] = 1;
  }

  for (std::size_t r : ragged_readable_) {
    const RaggedColumn& column = ragged_[r];
    const std::vector<RecordSpan>& spans = (*batch.spans)[r];
    if (!read_now(column, plan, count, spans)) continue;
    if (!pending) pending = std::make_unique<Pending>();
    const auto value_row_bytes = static_cast<std::size_t>(column.value_row_bytes());
    std::size_t total = 0;
    for (std::size_t k = 0; k < count; ++k) total += static_cast<std::size_t>(spans[k].length) * value_row_bytes;
    pending->records.emplace_back(r, pending->areas.size());
    std::byte* out = pending->area(total);
    // In file order: neighbouring records coalesce into one read.
    for (std::size_t k = 0; k < count; ++k) {
      const RecordSpan& span = spans[plan.positions[k]];
      const RaggedPiece& piece = piece_of(column, plan.sources[k]);
      const std::size_t bytes = static_cast<std::size_t>(span.length) * value_row_bytes;
      extents.push_back(
          ReadEngine::Extent{piece.file.get(), piece.file->offset() + (span.rows - piece.values), out, bytes});
      out += bytes;
    }
    pending->bytes += total;
  }

  if (extents.empty()) return nullptr;
  pending->reads = engine_->start(extents);
  return pending;
}

std::uint64_t ExplicitReads::finish(Pending& pending, const Batch& batch) const {
  if (pending.reads) ReadEngine::finish(*pending.reads);
  const std::size_t count = batch.rows;
  for (const Pending::StagedGroup& entry : pending.groups) {
    const Group& group = *entry.group;
    const std::byte* area = pending.areas[entry.area].get();
    const auto union_bytes = static_cast<std::size_t>(group.union_bytes);
    for (std::size_t m = 0; m < group.members.size(); ++m) {
      const Column& column = columns_[group.members[m]];
      std::byte* out = batch.buffer + (*batch.column_offsets)[group.members[m]];
      const std::int64_t row_bytes = column.row_bytes();
      const auto out_row_bytes = static_cast<std::size_t>(column.output_row_bytes());
      const std::byte* from = area + group.shifts[m];
      if (union_bytes == static_cast<std::size_t>(row_bytes)) {  // rows back to back: one pass
        if (column.cast.active()) {
          cast_elements(column.cast, from, row_bytes / column.cast.source_bytes * static_cast<std::int64_t>(count),
                        out);
        } else {
          std::memcpy(out, from, count * union_bytes);
        }
        continue;
      }
      for (std::size_t k = 0; k < count; ++k, from += union_bytes, out += out_row_bytes) {
        if (column.cast.active()) {
          cast_elements(column.cast, from, row_bytes / column.cast.source_bytes, out);
        } else {
          std::memcpy(out, from, static_cast<std::size_t>(row_bytes));
        }
      }
    }
  }
  for (const auto& [r, area] : pending.records) {
    const auto value_row_bytes = static_cast<std::size_t>(ragged_[r].value_row_bytes());
    std::vector<RecordSpan>& spans = (*batch.spans)[r];
    const std::byte* at = pending.areas[area].get();
    for (std::size_t k = 0; k < count; ++k) {
      RecordSpan& span = spans[batch.plan->positions[k]];
      span.rows = at;
      at += static_cast<std::size_t>(span.length) * value_row_bytes;
    }
  }
  return pending.bytes;
}

}  // namespace pyloader
