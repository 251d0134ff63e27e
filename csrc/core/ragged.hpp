// Variable-length records: gathering a batch of them packed or padded.
//
// A record is a run of consecutive rows ("value rows": one token, or one audio frame
// with its features) of a values table. Where records start and end comes from CSR
// offsets (records + 1 entries, in value rows) or from byte pointers with lengths
// (the Megatron .idx layout). A batch of records is delivered either packed (value
// rows back to back, in batch order, plus each record's length) or padded to a
// common width (plus lengths and, optionally, a mask of the real positions).
//
// Contract:
//   * RaggedPiece borrows all its memory, as ColumnView does; the owner keeps it
//     readable while any gather over it may run. It may name the file its values map
//     (`file`), so that records can also be read from it explicitly (explicit_reads.hpp).
//   * The spans are validated by whoever builds a piece: offsets non-decreasing within
//     [0, value_rows]; pointers multiples of value_row_bytes, lengths >= 0, and every
//     record inside the table. locate_records() checks each span it reads again (the
//     arrays may be pages of a file that changes), so a bad span fails the batch
//     instead of reading outside the values. Span arrays need no alignment.
//   * Pieces follow each other without gaps (first_record ascending), as Column's do.
//   * locate_records() and write_records() only read and copy: they allocate nothing
//     and may run under the SIGBUS guard. ragged_layout() does neither.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gather.hpp"

namespace pyloader {

struct RaggedPiece {
  const std::byte* values = nullptr;
  std::int64_t value_rows = 0;
  std::int64_t value_row_bytes = 0;
  const std::int64_t* offsets = nullptr;   // CSR layout, or null when pointers are used
  const std::int64_t* pointers = nullptr;  // byte offsets into `values`
  const std::int32_t* lengths = nullptr;   // value rows per record, with `pointers`
  std::int64_t records = 0;
  std::int64_t first_record = 0;
  std::shared_ptr<const FileSource> file;  // the file behind `values` (value row 0 at its offset()); or none
};

struct Padding {
  bool enabled = false;              // padded batches; packed when false
  std::int64_t max_length = 0;       // records longer are truncated to their first rows; 0: no limit
  std::int64_t multiple = 1;         // the width is rounded up to a multiple of this
  bool left = false;                 // pad before the values instead of after
  bool mask = false;                 // also deliver a bool mask of the real positions
  std::array<std::byte, 8> value{};  // one output element of padding
};

// The padding of a column of `element_bytes`-byte output elements: records truncated to
// `max_length` rows (0: no limit), widths rounded up to a `multiple` (1 to 2^32), and
// `value` (at most one element's bytes, the rest zero) in the padded positions. Throws
// std::invalid_argument for options outside those ranges, or elements wider than a
// padding value holds.
Padding padding_of(std::int64_t max_length, std::int64_t multiple, bool left, bool mask, const std::string& value,
                   std::int64_t element_bytes);

struct RaggedColumn {
  std::vector<RaggedPiece> pieces;
  ElementCast cast;
  std::int64_t element_bytes = 1;  // of an output element (cast target or source item)
  Padding padding;

  std::int64_t records() const noexcept {
    return pieces.empty() ? 0 : pieces.back().first_record + pieces.back().records;
  }
  std::int64_t value_row_bytes() const noexcept { return pieces.empty() ? 0 : pieces.front().value_row_bytes; }
  std::int64_t output_row_bytes() const noexcept { return cast.output_bytes(value_row_bytes()); }
};

// One record of a batch: where its rows are and how many are delivered.
struct RecordSpan {
  const std::byte* rows = nullptr;
  std::int64_t length = 0;
};

// Sizes of one batch's output for a ragged column.
struct RaggedLayout {
  std::int64_t width = 0;  // padded: the common length; packed: total value rows
  std::size_t values_bytes = 0;
  std::size_t lengths_bytes = 0;  // int64 per record
  std::size_t mask_bytes = 0;     // bool per padded position, when asked
};

// spans[plan.positions[k]] = the record plan.sources[k], for k < count (truncated to
// max_length when padding). Reads the offsets in ascending record order. False when a
// span no longer lies inside its values (its arrays changed since they were checked).
bool locate_records(const RaggedColumn& column, const ReadPlan& plan, std::size_t count, RecordSpan* spans) noexcept;

// The output sizes of a batch whose spans are known; fills `starts` (packed: where
// each record's rows begin, in rows) and may allocate. Throws std::length_error when
// the padded batch would not fit in memory's address range.
RaggedLayout ragged_layout(const RaggedColumn& column, const RecordSpan* spans, std::size_t count,
                           std::vector<std::int64_t>& starts);

// Writes the batch: values (packed or padded), lengths and the mask (when asked).
// Records are copied in `plan` order, so the source is read in address order.
void write_records(const RaggedColumn& column, const ReadPlan& plan, const RecordSpan* spans, std::size_t count,
                   const RaggedLayout& layout, const std::vector<std::int64_t>& starts, std::byte* values,
                   std::int64_t* lengths, bool* mask) noexcept;

}  // namespace pyloader
