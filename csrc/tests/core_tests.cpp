// Tests of the C++ core alone (no Python), meant to run under sanitizers:
// tests/test_core_cpp.py builds this with AddressSanitizer+UBSan and ThreadSanitizer.
// Each check failure prints its line and makes the program exit non-zero.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/batch_pipeline.hpp"
#include "core/device_copier.hpp"
#include "core/file_reads.hpp"
#include "core/gather.hpp"
#include "core/permutation.hpp"
#include "core/ragged.hpp"
#include "core/read_policy.hpp"
#include "core/row_map.hpp"
#include "core/supplied_blocks.hpp"
#include "core/supply_ledger.hpp"
#include "core/thread_pool.hpp"

// LeakSanitizer's entry point when the tests are built with it (null otherwise).
extern "C" void __lsan_do_leak_check(void) __attribute__((weak));

namespace {

int failures = 0;

// Tests register themselves: TEST(name) { ... } defines a test that main() runs, in the
// order of the file, so a test cannot be written and then forgotten.
struct TestCase {
  const char* name;
  void (*run)();
};

std::vector<TestCase>& registered_tests() {
  static std::vector<TestCase> tests;
  return tests;
}

struct TestRegistration {
  TestRegistration(const char* name, void (*run)()) { registered_tests().push_back({name, run}); }
};

#define TEST(name)                                          \
  void name();                                              \
  const TestRegistration name##_registration{#name, &name}; \
  void name()

#define CHECK(condition)                                                                 \
  do {                                                                                   \
    if (!(condition)) {                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #condition); \
      ++failures;                                                                        \
    }                                                                                    \
  } while (0)

using pyloader::BatchPipeline;
using pyloader::Column;
using pyloader::ColumnView;
using pyloader::GatheredBatch;
using pyloader::IndexOrder;
using pyloader::ThreadPool;

// Whether the oldest batch fails with a SourceReadError naming `path`.
bool fails_naming(BatchPipeline& pipeline, const char* path) {
  try {
    pipeline.pop_front();
  } catch (const pyloader::SourceReadError& error) {
    return std::strstr(error.what(), path) != nullptr;
  }
  return false;
}

TEST(permutations_are_bijections) {
  for (std::uint64_t rows : {1ULL, 2ULL, 3ULL, 17ULL, 65536ULL, 65537ULL, 100000ULL, 1ULL << 20}) {
    for (std::uint64_t seed : {0ULL, 1ULL, 0xdeadbeefULL}) {
      const IndexOrder order = IndexOrder::shuffled(rows, seed);
      std::vector<bool> seen(rows, false);
      for (std::uint64_t p = 0; p < rows; ++p) {
        const std::uint64_t row = order(p);
        CHECK(row < rows);
        if (row < rows) {
          CHECK(!seen[row]);
          seen[row] = true;
        }
      }
    }
  }
}

TEST(batched_evaluation_matches_single_positions) {
  for (std::uint64_t rows : {5ULL, 65537ULL, 100003ULL, 1ULL << 20}) {
    const IndexOrder base = IndexOrder::shuffled(rows, rows * 7);
    for (const IndexOrder& order : {base, base.strided(3, 4, rows / 4 + 1), IndexOrder::sequential(rows)}) {
      for (std::uint64_t first : {std::uint64_t{0}, std::uint64_t{1}, order.size() / 3}) {
        const std::size_t count = static_cast<std::size_t>(std::min<std::uint64_t>(1000, order.size() - first));
        std::vector<std::int64_t> filled(count);
        order.fill(first, count, filled.data());
        for (std::size_t k = 0; k < count; ++k) CHECK(filled[k] == static_cast<std::int64_t>(order(first + k)));
      }
    }
  }
}

TEST(strided_orders_pad_and_shard_like_torch) {
  // 10 rows over 4 ranks: 3 samples each, positions wrap past the end.
  const IndexOrder base = IndexOrder::sequential(10);
  std::vector<std::uint64_t> all;
  for (std::uint64_t rank = 0; rank < 4; ++rank) {
    const IndexOrder shard = base.strided(rank, 4, 3);
    CHECK(shard.size() == 3);
    for (std::uint64_t k = 0; k < 3; ++k) {
      CHECK(shard(k) == (rank + 4 * k) % 10);
      all.push_back(shard(k));
    }
  }
  std::set<std::uint64_t> distinct(all.begin(), all.end());
  CHECK(distinct.size() == 10);
}

TEST(gather_reads_pieces_and_negative_strides) {
  // Column rows r hold bytes {r, r+1, r+2, r+3}; piece 0 is stored reversed.
  std::vector<std::byte> forward(6 * 4), reversed(4 * 4);
  for (int r = 0; r < 4; ++r) {
    for (int b = 0; b < 4; ++b) reversed[(3 - r) * 4 + b] = std::byte(r + b);
  }
  for (int r = 0; r < 6; ++r) {
    for (int b = 0; b < 4; ++b) forward[r * 4 + b] = std::byte(4 + r + b);
  }
  Column column;
  column.pieces.push_back(ColumnView{reversed.data() + 3 * 4, 4, 4, -4, 0});
  column.pieces.push_back(ColumnView{forward.data(), 6, 4, 4, 4});
  const std::vector<std::int64_t> indices{9, 0, 5, 3, 4, 0, 8};
  pyloader::ReadPlan plan;
  pyloader::plan_reads(indices.data(), indices.size(), plan);
  CHECK(std::is_sorted(plan.sources.begin(), plan.sources.end()));
  std::vector<std::byte> out(indices.size() * 4);
  pyloader::gather_column(column, plan, indices.size(), out.data());
  for (std::size_t k = 0; k < indices.size(); ++k) {
    for (int b = 0; b < 4; ++b) CHECK(out[k * 4 + b] == std::byte(indices[k] + b));
  }
}

// Orders that defeat a bucket pass over the whole index range (a descending run, a
// narrow window of a huge dataset, repeats, two far clusters) must still give a
// correct plan: sources ascending, each one the index of the position it fills.
TEST(read_plans_are_correct_for_any_order) {
  const std::int64_t far = std::int64_t{1} << 40;
  std::vector<std::vector<std::int64_t>> batches;
  std::vector<std::int64_t> descending(16384), window(16384), repeats(5000, 12345), clusters;
  for (std::size_t k = 0; k < descending.size(); ++k) descending[k] = 100000000 - static_cast<std::int64_t>(k);
  std::uint64_t state = 1;
  for (auto& index : window) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    index = far + static_cast<std::int64_t>(state >> 50);  // 16 Ki-wide window, far from 0
  }
  for (int k = 0; k < 3000; ++k) clusters.push_back(k % 2 == 0 ? 7 + k % 5 : far - k % 11);
  batches = {descending, window, repeats, clusters, {3, 1, 2}, {5, 5}, {far, 0, far - 1, 1}};
  pyloader::ReadPlan plan;
  for (const auto& indices : batches) {
    pyloader::plan_reads(indices.data(), indices.size(), plan);
    CHECK(std::is_sorted(plan.sources.begin(), plan.sources.end()));
    std::vector<bool> filled(indices.size(), false);
    for (std::size_t k = 0; k < indices.size(); ++k) {
      const std::uint32_t position = plan.positions[k];
      CHECK(position < indices.size());
      if (position >= indices.size()) continue;
      CHECK(!filled[position]);
      filled[position] = true;
      CHECK(plan.sources[k] == indices[position]);
    }
  }
}

TEST(pipeline_delivers_in_order_under_concurrency) {
  const std::int64_t rows = 50000;
  std::vector<std::int64_t> data(rows);
  std::iota(data.begin(), data.end(), 0);
  Column column;
  column.pieces.push_back(ColumnView{reinterpret_cast<const std::byte*>(data.data()), rows, 8, 8, 0});
  auto pool = std::make_shared<ThreadPool>(4);
  for (int round = 0; round < 3; ++round) {
    BatchPipeline pipeline({column}, pool, 8);
    const IndexOrder order = IndexOrder::shuffled(static_cast<std::uint64_t>(rows), round);
    pipeline.schedule_positions(order, 0, rows, 3000);  // batches above the inline limit
    std::vector<GatheredBatch> held;  // keep every buffer alive: none may be reused
    std::uint64_t position = 0;
    while (pipeline.in_flight() > 0) {
      GatheredBatch batch = pipeline.pop_front();
      const auto* values = reinterpret_cast<const std::int64_t*>(batch.buffer.get() + batch.column_offsets[0]);
      for (std::size_t k = 0; k < batch.rows; ++k) CHECK(values[k] == static_cast<std::int64_t>(order(position + k)));
      position += batch.rows;
      held.push_back(std::move(batch));
    }
    CHECK(position == static_cast<std::uint64_t>(rows));
    for (std::size_t b = 0, first = 0; b < held.size(); first += held[b].rows, ++b) {
      const auto* values = reinterpret_cast<const std::int64_t*>(held[b].buffer.get());
      for (std::size_t k = 0; k < held[b].rows; ++k) CHECK(values[k] == static_cast<std::int64_t>(order(first + k)));
    }
  }
}

TEST(pipeline_destroyed_mid_flight_waits_for_its_gathers) {
  std::vector<std::int64_t> data(1 << 20, 7);
  Column column;
  column.pieces.push_back(ColumnView{reinterpret_cast<const std::byte*>(data.data()), 1 << 20, 8, 8, 0});
  auto pool = std::make_shared<ThreadPool>(3);
  for (int round = 0; round < 50; ++round) {
    auto pipeline = std::make_unique<BatchPipeline>(std::vector<Column>{column}, pool, 6);
    pipeline->schedule_positions(IndexOrder::shuffled(1 << 20, round), 0, 1 << 20, 4096);
    if (round % 2 == 0) pipeline->pop_front();
    pipeline.reset();  // workers may still be copying: the destructor must wait for them
  }
}

TEST(out_of_range_indices_are_refused) {
  std::vector<std::int64_t> data(10);
  Column column;
  column.pieces.push_back(ColumnView{reinterpret_cast<const std::byte*>(data.data()), 10, 8, 8, 0});
  BatchPipeline pipeline({column}, std::make_shared<ThreadPool>(1), 2);
  bool threw = false;
  try {
    pipeline.enqueue_indices({1, 10});
  } catch (const std::out_of_range&) {
    threw = true;
  }
  CHECK(threw);
  CHECK(pipeline.in_flight() == 0);
  pipeline.enqueue_indices({-1, 0});
  GatheredBatch batch = pipeline.pop_front();
  CHECK(batch.rows == 2);
}

// Token windows (inputs and targets one token apart, overlapping, widened uint16 ->
// int64) and padded records read explicitly give the mapping's batches, with several
// batches' reads in flight per gather thread; a short read of a record fails its batch.
TEST(explicit_reads_of_windows_and_records_match_the_mapping) {
  char path[] = "/tmp/pyloader_core_windows_XXXXXX";
  const int descriptor = ::mkstemp(path);
  CHECK(descriptor >= 0);
  constexpr std::int64_t kTokens = 1 << 18, kBlock = 300, kStride = 7, kHeader = 64;
  std::vector<std::uint16_t> tokens(static_cast<std::size_t>(kTokens + kHeader / 2));
  for (std::size_t k = 0; k < tokens.size(); ++k) tokens[k] = static_cast<std::uint16_t>((k * 2654435761U) >> 7);
  const auto* bytes = reinterpret_cast<const std::byte*>(tokens.data());
  CHECK(::write(descriptor, bytes, tokens.size() * 2) == static_cast<ssize_t>(tokens.size() * 2));
  const std::int64_t windows = (kTokens - kBlock - 1) / kStride;
  auto window_column = [&](std::int64_t shift) {
    ColumnView view{bytes + kHeader + shift, windows, kBlock * 2, kStride * 2, 0};
    view.file = std::make_shared<const pyloader::FileSource>(path, kHeader + shift);
    Column column;
    column.pieces.push_back(view);
    column.cast = pyloader::ElementCast{2, false, 8};
    return column;
  };
  // Records over the same bytes: record r holds (r * 37) % 500 tokens from token r * 61.
  constexpr std::int64_t kRecords = 4000;
  std::vector<std::int64_t> pointers;
  std::vector<std::int32_t> lengths;
  for (std::int64_t r = 0; r < kRecords; ++r) {
    pointers.push_back(r * 61 * 2);
    lengths.push_back(static_cast<std::int32_t>((r * 37) % 500));
  }
  pyloader::RaggedColumn records;
  records.element_bytes = 8;
  records.cast = pyloader::ElementCast{2, false, 8};
  records.padding.enabled = true;
  records.padding.mask = true;
  records.pieces.push_back(
      pyloader::RaggedPiece{bytes + kHeader, kTokens, 2, nullptr, pointers.data(), lengths.data(), kRecords, 0});
  auto pool = std::make_shared<ThreadPool>(2);
  auto batches = [&](pyloader::IoMode mode, bool ragged, std::uint64_t* read) {
    std::vector<Column> columns{window_column(0), window_column(2)};
    std::vector<pyloader::RaggedColumn> ragged_columns;
    if (ragged) {
      columns.clear();
      ragged_columns.push_back(records);
      if (mode != pyloader::IoMode::kMmap) {
        ragged_columns[0].pieces[0].file = std::make_shared<const pyloader::FileSource>(path, kHeader);
      }
    }
    BatchPipeline pipeline(columns, ragged_columns, pool, 16);
    pipeline.set_io_mode(mode, 8);
    const std::int64_t rows = ragged ? kRecords : windows;
    const IndexOrder order = IndexOrder::shuffled(static_cast<std::uint64_t>(rows), 11);
    pipeline.schedule_positions(order, 0, 40 * 24, 24);
    std::vector<std::vector<std::byte>> out;
    for (int b = 0; b < 40; ++b) {
      GatheredBatch batch = pipeline.pop_front();
      // Each column's bytes (not the alignment gaps between them).
      std::vector<std::size_t> sizes{24 * kBlock * 8, 24 * kBlock * 8};
      if (ragged) {
        const auto width = static_cast<std::size_t>(batch.ragged_widths[0]);
        sizes = {24 * width * 8, 24 * 8, 24 * width};
      }
      out.emplace_back();
      for (std::size_t c = 0; c < sizes.size(); ++c) {
        const std::byte* at = batch.buffer.get() + batch.column_offsets[c];
        out.back().insert(out.back().end(), at, at + sizes[c]);
      }
    }
    *read = pipeline.explicitly_read_batches();
    return out;
  };
  for (bool ragged : {false, true}) {
    std::uint64_t mapped_reads = 0, explicit_reads = 0;
    const auto expected = batches(pyloader::IoMode::kMmap, ragged, &mapped_reads);
    const auto got = batches(pyloader::IoMode::kRead, ragged, &explicit_reads);
    CHECK(mapped_reads == 0 && explicit_reads >= 40);
    CHECK(got == expected);
  }
  {
    pyloader::RaggedColumn column = records;
    column.pieces[0].file = std::make_shared<const pyloader::FileSource>(path, kHeader);
    BatchPipeline pipeline({}, {column}, pool, 4);
    pipeline.set_io_mode(pyloader::IoMode::kRead, 8);
    CHECK(::ftruncate(descriptor, kHeader + 1000) == 0);
    pipeline.enqueue_indices({3, kRecords - 1});
    CHECK(fails_naming(pipeline, path));
  }
  ::close(descriptor);
  ::unlink(path);
}

TEST(casts_widen_signed_and_unsigned_integers) {
  const std::vector<std::uint16_t> unsigned_rows{1, 65535, 7, 8};
  const std::vector<std::int8_t> signed_rows{-1, 5, -128, 127};
  Column wide;
  wide.pieces.push_back(ColumnView{reinterpret_cast<const std::byte*>(unsigned_rows.data()), 2, 4, 4, 0});
  wide.cast = pyloader::ElementCast{2, false, 8};
  Column narrow;
  narrow.pieces.push_back(ColumnView{reinterpret_cast<const std::byte*>(signed_rows.data()), 2, 2, 2, 0});
  narrow.cast = pyloader::ElementCast{1, true, 4};
  BatchPipeline pipeline({wide, narrow}, std::make_shared<ThreadPool>(1), 2);
  pipeline.enqueue_indices({1, 0});
  GatheredBatch batch = pipeline.pop_front();
  const auto* widened = reinterpret_cast<const std::int64_t*>(batch.buffer.get() + batch.column_offsets[0]);
  CHECK(widened[0] == 7 && widened[1] == 8 && widened[2] == 1 && widened[3] == 65535);
  const auto* signed_out = reinterpret_cast<const std::int32_t*>(batch.buffer.get() + batch.column_offsets[1]);
  CHECK(signed_out[0] == -128 && signed_out[1] == 127 && signed_out[2] == -1 && signed_out[3] == 5);
}

TEST(ragged_batches_pack_and_pad_across_pieces) {
  // Piece 0: records {10,11,12}, {}, {13}; piece 1 (pointer layout): {20,21}, {22}.
  const std::vector<std::int32_t> values0{10, 11, 12, 13};
  const std::vector<std::int64_t> offsets0{0, 3, 3, 4};
  const std::vector<std::int32_t> values1{20, 21, 22};
  const std::vector<std::int64_t> pointers1{0, 8};
  const std::vector<std::int32_t> lengths1{2, 1};
  pyloader::RaggedColumn column;
  column.element_bytes = 4;
  column.pieces.push_back(pyloader::RaggedPiece{reinterpret_cast<const std::byte*>(values0.data()), 4, 4,
                                                offsets0.data(), nullptr, nullptr, 3, 0});
  column.pieces.push_back(pyloader::RaggedPiece{reinterpret_cast<const std::byte*>(values1.data()), 3, 4, nullptr,
                                                pointers1.data(), lengths1.data(), 2, 3});
  auto pool = std::make_shared<ThreadPool>(2);
  {
    BatchPipeline packed({}, {column}, pool, 2);
    packed.enqueue_indices({3, 0, 1, 4});
    GatheredBatch batch = packed.pop_front();
    CHECK(batch.ragged_widths.size() == 1 && batch.ragged_widths[0] == 6);
    const auto* out = reinterpret_cast<const std::int32_t*>(batch.buffer.get() + batch.column_offsets[0]);
    const std::vector<std::int32_t> expected{20, 21, 10, 11, 12, 22};
    CHECK(std::equal(expected.begin(), expected.end(), out));
    const auto* lengths = reinterpret_cast<const std::int64_t*>(batch.buffer.get() + batch.column_offsets[1]);
    CHECK(lengths[0] == 2 && lengths[1] == 3 && lengths[2] == 0 && lengths[3] == 1);
  }
  column.padding.enabled = true;
  column.padding.left = true;
  column.padding.mask = true;
  column.padding.max_length = 2;
  column.padding.multiple = 3;
  const std::int32_t pad = -9;
  std::memcpy(column.padding.value.data(), &pad, sizeof(pad));
  BatchPipeline padded({}, {column}, pool, 2);
  CHECK(padded.expected_batch_bytes(3) == 0);  // record batches vary: nothing known before the first
  padded.enqueue_indices({0, 1, 4});
  GatheredBatch batch = padded.pop_front();
  CHECK(padded.expected_batch_bytes(3) == batch.bytes && batch.bytes > 0);  // the largest so far
  const GatheredBatch::RaggedParts parts = batch.ragged(0);
  CHECK(parts.width == 3);  // max_length 2, rounded up to a multiple of 3
  const auto* out = reinterpret_cast<const std::int32_t*>(batch.buffer.get() + parts.values);
  const std::vector<std::int32_t> expected{-9, 10, 11, -9, -9, -9, -9, -9, 22};
  CHECK(std::equal(expected.begin(), expected.end(), out));
  const auto* lengths = reinterpret_cast<const std::int64_t*>(batch.buffer.get() + parts.lengths);
  CHECK(lengths[0] == 2 && lengths[1] == 0 && lengths[2] == 1);  // truncated to max_length
  const auto* mask = reinterpret_cast<const bool*>(batch.buffer.get() + parts.mask);
  const std::vector<bool> expected_mask{false, true, true, false, false, false, false, false, true};
  for (std::size_t k = 0; k < expected_mask.size(); ++k) CHECK(mask[k] == expected_mask[k]);
}

// Explicit reads land the same bytes the mapping would give, for coalesced runs,
// duplicates and unsorted batches, from many threads at once; a short read fails the
// batch with SourceReadError and the pipeline goes on.
TEST(explicit_reads_match_the_mapping) {
  char path[] = "/tmp/pyloader_core_reads_XXXXXX";
  const int descriptor = ::mkstemp(path);
  CHECK(descriptor >= 0);
  constexpr std::int64_t kRows = 4096, kRowBytes = 3000;  // rows straddle pages
  constexpr std::int64_t kHeader = 128;
  std::vector<std::byte> contents(static_cast<std::size_t>(kHeader + kRows * kRowBytes));
  for (std::size_t k = 0; k < contents.size(); ++k) contents[k] = static_cast<std::byte>((k * 2654435761U) >> 13);
  CHECK(::write(descriptor, contents.data(), contents.size()) == static_cast<ssize_t>(contents.size()));
  ColumnView view{contents.data() + kHeader, kRows, kRowBytes, kRowBytes, 0};
  view.file = std::make_shared<const pyloader::FileSource>(path, kHeader);
  Column column;
  column.pieces.push_back(view);
  auto pool = std::make_shared<ThreadPool>(3);
  {
    BatchPipeline pipeline({column}, pool, 4);
    pipeline.set_io_mode(pyloader::IoMode::kRead, 8);
    std::vector<std::vector<std::int64_t>> requests;
    for (std::int64_t b = 0; b < 16; ++b) {
      std::vector<std::int64_t> indices;
      for (std::int64_t k = 0; k < 200; ++k) indices.push_back((b * 997 + k * (k % 3 == 0 ? 1 : 31)) % kRows);
      indices.push_back(indices.front());  // a duplicate
      requests.push_back(indices);
    }
    std::size_t next = 0;
    for (std::size_t done = 0; done < requests.size(); ++done) {
      while (next < requests.size() && pipeline.in_flight() < pipeline.max_in_flight()) {
        pipeline.enqueue_indices(requests[next++]);
      }
      GatheredBatch batch = pipeline.pop_front();
      const auto& indices = requests[done];
      for (std::size_t p = 0; p < indices.size(); ++p) {
        CHECK(std::memcmp(batch.buffer.get() + p * kRowBytes, view.row(indices[p]), kRowBytes) == 0);
      }
    }
    CHECK(pipeline.explicitly_read_batches() == requests.size());
    CHECK(::ftruncate(descriptor, kHeader + 100 * kRowBytes) == 0);
    pipeline.enqueue_indices({5, 4000});
    CHECK(fails_naming(pipeline, path));
    pipeline.enqueue_indices({5, 6});
    GatheredBatch batch = pipeline.pop_front();
    CHECK(std::memcmp(batch.buffer.get(), view.row(5), kRowBytes) == 0);
  }
  ::close(descriptor);
  ::unlink(path);
}

// BlockWindow: every position's window holds its row, a window's positions visit
// exactly its blocks' rows, and the windows of an epoch visit every block once, for the
// whole order and for ranks' contiguous shares (padded past the end, as torch pads).
TEST(block_windows_cover_every_block_once) {
  struct Case {
    std::uint64_t rows, block_rows, window_blocks, seed;
  };
  for (const Case& c : {Case{1, 1, 1, 0}, Case{10, 3, 2, 1}, Case{1000, 7, 3, 2}, Case{64, 8, 8, 3}, Case{5, 8, 2, 4},
                        Case{100003, 64, 16, 5}, Case{4096, 16, 4, 6}, Case{1037, 100, 2, 7}}) {
    const IndexOrder order = IndexOrder::block_shuffled(c.rows, c.seed, c.block_rows, c.window_blocks);
    std::vector<char> row_seen(c.rows, 0);
    std::set<std::uint64_t> ids;
    std::uint64_t windows = 0;
    for (std::uint64_t p = 0; p < c.rows;) {
      pyloader::BlockWindow window;
      CHECK(order.block_window(p, window));
      CHECK(window.first == p && window.end > p && window.end <= c.rows);
      CHECK(window.blocks >= 1 && window.blocks <= c.window_blocks);
      CHECK(ids.insert(window.id).second);
      std::set<std::uint64_t> block_rows;
      for (std::uint64_t k = 0; k < window.blocks; ++k) {
        const pyloader::RowRange block = order.window_block(window, k);
        CHECK(block.rows == c.block_rows || (window.tail && block.rows == c.rows % c.block_rows));
        CHECK(block.first + block.rows <= c.rows);
        for (std::uint64_t r = block.first; r < block.first + block.rows && r < c.rows; ++r) {
          CHECK(!row_seen[r]);  // no block in two windows, or twice in one
          row_seen[r] = 1;
          block_rows.insert(r);
        }
      }
      std::set<std::uint64_t> visited;
      for (std::uint64_t q = window.first; q < window.end; ++q) {
        visited.insert(order(q));
        pyloader::BlockWindow same;
        CHECK(order.block_window(q, same) && same.id == window.id && same.first == window.first &&
              same.end == window.end);
      }
      CHECK(visited == block_rows);
      ++windows;
      p = window.end;
    }
    CHECK(std::count(row_seen.begin(), row_seen.end(), 1) == static_cast<std::ptrdiff_t>(c.rows));
    CHECK(windows == ids.size());
    // Ranks' shares: strided(start, 1, count), padded from the start of the order.
    for (std::uint64_t world : {2ULL, 3ULL}) {
      const std::uint64_t count = (c.rows + world - 1) / world;
      for (std::uint64_t rank = 0; rank < world; ++rank) {
        const IndexOrder share = order.strided(rank * count, 1, count);
        for (std::uint64_t p = 0; p < count; ++p) {
          pyloader::BlockWindow window, whole;
          CHECK(share.block_window(p, window));
          CHECK(order.block_window((rank * count + p) % c.rows, whole));
          CHECK(window.id == whole.id && window.first <= p && p < window.end && window.end <= count);
          CHECK(window.end - window.first <= whole.end - whole.first);
          bool found = false;
          for (std::uint64_t k = 0; k < window.blocks; ++k) {
            const pyloader::RowRange block = share.window_block(window, k);
            found = found || (share(p) >= block.first && share(p) < block.first + block.rows);
          }
          CHECK(found);
        }
      }
    }
  }
  // Other orders have no windows: shuffled, sequential, and strides other than 1.
  pyloader::BlockWindow window;
  CHECK(!IndexOrder::shuffled(100, 1).block_window(0, window));
  CHECK(!IndexOrder::sequential(100).block_window(0, window));
  CHECK(!IndexOrder::block_shuffled(100, 1, 4, 2).strided(1, 3, 30).block_window(0, window));
}

// A block-shuffled order over a file-backed column in IoMode::kAuto reads its windows
// ahead and delivers the same bytes; non-block orders read nothing ahead; a file
// truncated under it changes nothing for a column whose memory stays readable.
TEST(block_orders_read_their_windows_ahead) {
  char path[] = "/tmp/pyloader_core_ahead_XXXXXX";
  const int descriptor = ::mkstemp(path);
  CHECK(descriptor >= 0);
  constexpr std::int64_t kRows = 5000, kRowBytes = 2500;
  constexpr std::int64_t kHeader = 64;
  std::vector<std::byte> contents(static_cast<std::size_t>(kHeader + kRows * kRowBytes));
  for (std::size_t k = 0; k < contents.size(); ++k) contents[k] = static_cast<std::byte>((k * 2654435761U) >> 11);
  CHECK(::write(descriptor, contents.data(), contents.size()) == static_cast<ssize_t>(contents.size()));
  // Two pieces, so that blocks straddle a piece boundary.
  ColumnView first{contents.data() + kHeader, 1800, kRowBytes, kRowBytes, 0};
  first.file = std::make_shared<const pyloader::FileSource>(path, kHeader);
  ColumnView second{contents.data() + kHeader + 1800 * kRowBytes, kRows - 1800, kRowBytes, kRowBytes, 1800};
  second.file = std::make_shared<const pyloader::FileSource>(path, kHeader + 1800 * kRowBytes);
  Column column;
  column.pieces = {first, second};
  auto pool = std::make_shared<ThreadPool>(2);
  const IndexOrder whole = IndexOrder::block_shuffled(kRows, 3, 64, 4);
  for (const IndexOrder& order : {whole, whole.strided(1700, 1, 2500), IndexOrder::shuffled(kRows, 3)}) {
    BatchPipeline pipeline({column}, pool, 3);
    pipeline.set_io_mode(pyloader::IoMode::kAuto, 8);
    constexpr std::uint64_t kBatch = 100;
    pipeline.schedule_positions(order, 0, order.size(), kBatch);
    for (std::uint64_t first_position = 0; first_position < order.size(); first_position += kBatch) {
      if (first_position == 1000) CHECK(::ftruncate(descriptor, kHeader + 10 * kRowBytes) == 0);
      GatheredBatch batch = pipeline.pop_front();
      CHECK(batch.rows == std::min<std::uint64_t>(kBatch, order.size() - first_position));
      for (std::size_t p = 0; p < batch.rows; ++p) {
        const std::byte* row = contents.data() + kHeader + order(first_position + p) * kRowBytes;
        CHECK(std::memcmp(batch.buffer.get() + p * kRowBytes, row, kRowBytes) == 0);
      }
    }
    // Each window its positions touch, once (windows ahead stop at the order's end).
    std::uint64_t windows = 0;
    pyloader::BlockWindow window;
    for (std::uint64_t p = 0; p < order.size() && order.block_window(p, window); p = window.end) ++windows;
    CHECK(pipeline.windows_read_ahead() == windows);
    CHECK(pipeline.explicitly_read_batches() == 0);  // the column's memory is resident
    CHECK(::ftruncate(descriptor, static_cast<off_t>(contents.size())) == 0);
  }
  ::close(descriptor);
  ::unlink(path);
}

// Host blocks supplied by the owner are used when they fit and named by token; device
// staging (run when STAND_IN_CUDA_DRIVER names the stand-in driver library) copies
// each batch as it is gathered into pooled blocks, and blocks of batches never
// delivered wait for their copies before they are reused.
TEST(staging_uses_supplied_blocks_and_copies_to_the_device) {
  const std::int64_t rows = 20000;
  std::vector<std::int64_t> data(rows);
  std::iota(data.begin(), data.end(), 0);
  Column column;
  column.pieces.push_back(ColumnView{reinterpret_cast<const std::byte*>(data.data()), rows, 8, 8, 0});
  auto pool = std::make_shared<ThreadPool>(3);
  const std::size_t batch_rows = 500;
  const std::size_t batch_bytes = batch_rows * 8;

  pyloader::SuppliedBlocks blocks;
  std::vector<std::vector<std::byte>> small(2, std::vector<std::byte>(100));
  blocks.supply({small[0].data(), small[0].size(), 1});
  blocks.supply({small[1].data(), small[1].size(), 2});
  CHECK(!blocks.take(101));
  CHECK(blocks.take(50)->token == 1);
  CHECK(blocks.discard_smaller_than(101) == std::vector<std::uint64_t>{2});
  CHECK(blocks.size() == 0);

  const char* driver_path = std::getenv("STAND_IN_CUDA_DRIVER");
  std::shared_ptr<pyloader::DeviceStaging> device;
  if (driver_path) device = std::make_shared<pyloader::DeviceStaging>(pyloader::CudaDriver::load(driver_path), 0);
  for (int round = 0; round < 3; ++round) {
    std::map<std::uint64_t, std::vector<std::byte>> host;  // token -> memory, owned here
    pyloader::Staging staging;
    if (device) {
      staging.device = device;
    } else {
      staging.host = std::make_shared<pyloader::SuppliedBlocks>();
    }
    std::uint64_t token = 1;
    auto supply = [&] {
      auto& memory = host[token] = std::vector<std::byte>(batch_bytes);
      staging.host->supply({memory.data(), memory.size(), token++});
    };
    if (!device) {
      for (int k = 0; k < 4; ++k) supply();  // fewer than the batches in flight
    }
    {
      BatchPipeline pipeline({column}, pool, 8);
      pipeline.set_staging(staging);
      CHECK(pipeline.fixed_batch_bytes(batch_rows) == batch_bytes);
      CHECK(pipeline.expected_batch_bytes(batch_rows) == batch_bytes);  // fixed-size columns: exact
      const IndexOrder order = IndexOrder::shuffled(static_cast<std::uint64_t>(rows), round);
      pipeline.schedule_positions(order, 0, rows, batch_rows);
      std::uint64_t position = 0;
      std::size_t supplied_used = 0;
      while (pipeline.in_flight() > 0 && position < rows / 2) {
        GatheredBatch batch = pipeline.pop_front();
        CHECK(batch.bytes == batch_rows * 8);
        if (batch.host_token != 0) {
          ++supplied_used;
          CHECK(batch.buffer.get() == host.at(batch.host_token).data());
        }
        const std::int64_t* values = reinterpret_cast<const std::int64_t*>(batch.buffer.get());
        if (device) {
          CHECK(batch.device && batch.fence);
          batch.fence->wait();
          values = reinterpret_cast<const std::int64_t*>(batch.device->data());  // the stand-in's device memory
        }
        for (std::size_t k = 0; k < batch.rows; ++k) CHECK(values[k] == static_cast<std::int64_t>(order(position + k)));
        position += batch.rows;
        if (!device && position < 4 * batch_rows) supply();
      }
      if (!device) CHECK(supplied_used >= 4);
    }  // destroyed with copies pending (run under the sanitizers by tests/test_core_cpp.py)
  }
}

// Whether `run` throws an exception of type E.
template <typename E, typename F>
bool throws(F&& run) {
  try {
    run();
  } catch (const E&) {
    return true;
  } catch (...) {
    return false;
  }
  return false;
}

// The io mode decides what ReadPolicy reads: nothing with kMmap or without files;
// explicit reads with kRead; windows of block orders read ahead only in kAuto, without a
// row map, each window once however often its positions are requested.
TEST(read_policy_follows_the_io_mode) {
  CHECK(pyloader::io_mode_named("mmap") == pyloader::IoMode::kMmap);
  CHECK(pyloader::io_mode_named("read") == pyloader::IoMode::kRead);
  CHECK(pyloader::io_mode_named("auto") == pyloader::IoMode::kAuto);
  CHECK(throws<std::invalid_argument>([] { pyloader::io_mode_named("fast"); }));

  char path[] = "/tmp/pyloader_core_policy_XXXXXX";
  const int descriptor = ::mkstemp(path);
  CHECK(descriptor >= 0);
  constexpr std::int64_t kRows = 1024, kRowBytes = 4096;
  std::vector<std::byte> contents(static_cast<std::size_t>(kRows * kRowBytes));
  CHECK(::write(descriptor, contents.data(), contents.size()) == static_cast<ssize_t>(contents.size()));
  Column in_memory;
  in_memory.pieces.push_back(ColumnView{contents.data(), kRows, kRowBytes, kRowBytes, 0});
  Column from_file = in_memory;
  from_file.pieces[0].file = std::make_shared<const pyloader::FileSource>(path, 0);
  const std::vector<pyloader::RaggedColumn> no_ragged;
  const std::vector<Column> memory_columns{in_memory}, file_columns{from_file};
  const IndexOrder blocks = IndexOrder::block_shuffled(kRows, 1, 16, 4);

  using pyloader::IoMode;
  using pyloader::ReadPolicy;
  for (IoMode mode : {IoMode::kMmap, IoMode::kRead, IoMode::kAuto}) {
    ReadPolicy policy(memory_columns, no_ragged, mode, 4, false);
    CHECK(policy.mode() == mode);
    CHECK(!policy.reads_explicitly());
    CHECK(!policy.read_ahead(blocks, 0, 32));
  }
  CHECK(!ReadPolicy(file_columns, no_ragged, IoMode::kMmap, 4, false).reads_explicitly());
  {
    ReadPolicy policy(file_columns, no_ragged, IoMode::kRead, 4, false);
    CHECK(policy.reads_explicitly());
    CHECK(!policy.read_ahead(blocks, 0, 32));  // read row by row instead
  }
  {
    ReadPolicy policy(file_columns, no_ragged, IoMode::kAuto, 4, true);
    CHECK(policy.reads_explicitly());
    CHECK(!policy.read_ahead(blocks, 0, 32));  // a row map scatters the blocks' rows
  }
  {
    ReadPolicy policy(file_columns, no_ragged, IoMode::kAuto, 4, false);
    CHECK(policy.reads_explicitly());
    CHECK(!policy.read_ahead(IndexOrder::shuffled(kRows, 1), 0, 32));  // no windows
    CHECK(!policy.read_ahead(blocks, 0, 0));
    CHECK(policy.windows_read_ahead() == 0);
    std::uint64_t windows = 0;
    pyloader::BlockWindow window;
    for (std::uint64_t p = 0; p < blocks.size() && blocks.block_window(p, window); p = window.end) ++windows;
    for (int pass = 0; pass < 2; ++pass) {  // positions requested again: nothing twice
      for (std::uint64_t first = 0; first < blocks.size(); first += 32) CHECK(policy.read_ahead(blocks, first, 32));
    }
    CHECK(policy.windows_read_ahead() == 2 * windows);  // the second pass is a new request of the order
    CHECK(policy.explicitly_read_batches() == 0 && policy.read_bytes() == 0);
  }
  ::close(descriptor);
  ::unlink(path);
}

// What the bindings check for Python callers: row maps, casts, paddings, the file
// behind a piece.
TEST(pipeline_arguments_are_checked) {
  const std::vector<std::int64_t> rows{0, 4, 2};
  CHECK(!throws<std::exception>([&] { pyloader::check_row_map({rows.data(), 3}, 5); }));
  CHECK(throws<std::out_of_range>([&] { pyloader::check_row_map({rows.data(), 3}, 4); }));
  const std::vector<std::int64_t> negative{0, -1};
  CHECK(throws<std::out_of_range>([&] { pyloader::check_row_map({negative.data(), 2}, 4); }));
  CHECK(!throws<std::exception>([] { pyloader::check_row_map_serves(5, 5); }));
  CHECK(throws<std::invalid_argument>([] { pyloader::check_row_map_serves(5, 6); }));

  using pyloader::ElementType;
  const auto cast = pyloader::element_cast({ElementType::kUnsigned, 2}, {ElementType::kSigned, 8});
  CHECK(cast && cast->source_bytes == 2 && !cast->source_signed && !cast->floating && cast->target_bytes == 8);
  CHECK(pyloader::element_cast({ElementType::kSigned, 4}, {ElementType::kSigned, 4}));
  CHECK(!pyloader::element_cast({ElementType::kFloat, 4}, {ElementType::kSigned, 8}));
  CHECK(!pyloader::element_cast({ElementType::kSigned, 4}, {ElementType::kFloat, 8}));
  CHECK(!pyloader::element_cast({ElementType::kOther, 1}, {ElementType::kSigned, 8}));  // bools
  CHECK(!pyloader::element_cast({ElementType::kSigned, 4}, {ElementType::kUnsigned, 8}));
  CHECK(!pyloader::element_cast({ElementType::kSigned, 4}, {ElementType::kSigned, 2}));
  CHECK(!pyloader::element_cast({ElementType::kFloat, 2}, {ElementType::kFloat, 4}));  // float16
  const auto narrowing = pyloader::element_cast({ElementType::kFloat, 8}, {ElementType::kFloat, 4});
  CHECK(narrowing && narrowing->floating && narrowing->output_bytes(16) == 8);
  const double wide[3] = {1.5, -2.25, 1e300};
  float narrow[3] = {};
  pyloader::cast_elements(*narrowing, reinterpret_cast<const std::byte*>(wide), 3,
                          reinterpret_cast<std::byte*>(narrow));
  CHECK(narrow[0] == 1.5F && narrow[1] == -2.25F && narrow[2] == static_cast<float>(1e300));
  const auto widening = pyloader::element_cast({ElementType::kFloat, 4}, {ElementType::kFloat, 8});
  double back[3] = {};
  pyloader::cast_elements(*widening, reinterpret_cast<const std::byte*>(narrow), 2, reinterpret_cast<std::byte*>(back));
  CHECK(back[0] == 1.5 && back[1] == -2.25 && back[2] == 0.0);

  const pyloader::Padding padding = pyloader::padding_of(16, 8, true, true, std::string("\x01\x02", 2), 2);
  CHECK(padding.enabled && padding.max_length == 16 && padding.multiple == 8 && padding.left && padding.mask);
  CHECK(padding.value[0] == std::byte{1} && padding.value[1] == std::byte{2} && padding.value[2] == std::byte{0});
  CHECK(throws<std::invalid_argument>([] { pyloader::padding_of(-1, 1, false, false, "", 4); }));
  CHECK(throws<std::invalid_argument>([] { pyloader::padding_of(0, 0, false, false, "", 4); }));
  CHECK(
      throws<std::invalid_argument>([] { pyloader::padding_of(0, (std::int64_t{1} << 32) + 1, false, false, "", 4); }));
  CHECK(throws<std::invalid_argument>([] { pyloader::padding_of(0, 1, false, false, std::string(9, 'x'), 4); }));
  CHECK(throws<std::invalid_argument>([] { pyloader::padding_of(0, 1, false, false, "", 16); }));

  char path[] = "/tmp/pyloader_core_same_XXXXXX";
  const int descriptor = ::mkstemp(path);
  CHECK(descriptor >= 0);
  struct stat status{};
  CHECK(::fstat(descriptor, &status) == 0);
  const auto device = static_cast<std::uint64_t>(status.st_dev), inode = static_cast<std::uint64_t>(status.st_ino);
  const auto file = pyloader::FileSource::open_if_same(path, 64, device, inode);
  CHECK(file && file->offset() == 64);
  CHECK(!pyloader::FileSource::open_if_same(path, 0, device, inode + 1));  // another file has the path now
  ::close(descriptor);
  ::unlink(path);
  CHECK(!pyloader::FileSource::open_if_same(path, 0, device, inode));  // gone
}

// The owner's ledger of supplied blocks: keeps the wanted number of large enough blocks
// supplied, drops those too small, hands back what held a block by its token once.
TEST(supply_ledger_holds_blocks_until_delivered) {
  struct Memory {
    std::shared_ptr<std::vector<std::byte>> bytes;
  };
  using Ledger = pyloader::SupplyLedger<Memory>;
  Ledger ledger(std::make_shared<pyloader::SuppliedBlocks>());
  std::size_t allocations = 0;
  auto allocate = [&](std::size_t bytes) -> std::optional<Ledger::Allocation> {
    ++allocations;
    auto memory = std::make_shared<std::vector<std::byte>>(bytes);
    return Ledger::Allocation{Memory{memory}, memory->data(), memory->size()};
  };
  ledger.top_up(0, 3, allocate);  // size not known yet
  CHECK(ledger.size() == 0 && allocations == 0);
  ledger.top_up(100, 3, allocate);
  CHECK(ledger.size() == 3 && ledger.blocks()->size() == 3);
  std::optional<pyloader::SuppliedBlock> taken = ledger.blocks()->take(100);  // a pipeline takes one
  CHECK(taken && taken->token == 1);
  ledger.top_up(100, 3, allocate);  // the taken block still counts until delivered
  CHECK(ledger.size() == 3 && allocations == 3);
  CHECK(ledger.take(taken->token).bytes != nullptr);
  CHECK(ledger.take(taken->token).bytes == nullptr);  // once
  CHECK(ledger.take(0).bytes == nullptr);
  ledger.top_up(200, 3, allocate);  // larger batches: the small blocks go
  CHECK(ledger.size() == 3 && ledger.blocks()->size() == 3 && allocations == 6);
  CHECK(!ledger.blocks()->take(201));
  auto decline = [](std::size_t) -> std::optional<Ledger::Allocation> { return std::nullopt; };
  ledger.forget_all();
  CHECK(ledger.size() == 0);
  ledger.top_up(200, 2, decline);
  CHECK(ledger.size() == 0);
  auto short_block = [](std::size_t bytes) -> std::optional<Ledger::Allocation> {
    return Ledger::Allocation{Memory{}, nullptr, bytes - 1};
  };
  CHECK(throws<std::invalid_argument>([&] { ledger.top_up(300, 1, short_block); }));
}

}  // namespace

int main(int argc, char** argv) {
  // Arguments, if any, name the tests to run (all by default).
  int ran = 0;
  for (const TestCase& test : registered_tests()) {
    bool wanted = argc == 1;
    for (int a = 1; a < argc; ++a) wanted = wanted || std::strcmp(argv[a], test.name) == 0;
    if (!wanted) continue;
    test.run();
    ++ran;
  }
  std::printf("core tests: %d run, %d failure(s)\n", ran, failures);
  std::fflush(stdout);  // a sanitizer's report ends the process without flushing
  if (__lsan_do_leak_check != nullptr) {
    // Now, with every test's threads joined, rather than at exit, where the checker
    // stops a process whose threads may be exiting (its tracer has crashed doing so).
    __lsan_do_leak_check();
  }
  return failures == 0 && ran > 0 ? 0 : 1;
}
