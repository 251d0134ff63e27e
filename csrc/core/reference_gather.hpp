// Reference gather loop: the throughput ceiling that benchmarks hold the pipeline to.
//
// Gathers `indices` batch by batch (batch k is indices[k*batch_size, ...)) with every
// thread of `pool`, each thread copying whole batches into a private buffer that is
// reused and never handed out. Nothing else happens per batch, so the time it takes is
// the cost of the copies alone.
//
// It ships in the extension although only bench/ calls it: a ceiling is only fair when
// built by the same compiler, flags and gather code as the pipeline it bounds, which a
// second extension module would not guarantee. It costs a few KiB and no start-up time.
//
// Contract: same column and index preconditions as gather_rows (indices validated);
// blocks the calling thread until all batches are copied; thread-safe only as far as
// the pool is (concurrent calls share its threads).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "gather.hpp"
#include "thread_pool.hpp"

namespace pyloader {

void gather_batches_reference(ThreadPool& pool, const std::vector<Column>& columns, const std::int64_t* indices,
                              std::size_t count, std::size_t batch_size);

}  // namespace pyloader
