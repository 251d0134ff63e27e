// Host blocks from a Python allocator (pinned uint8 tensors), supplied to a pipeline
// ahead of need, and the tensor each block is, until its batch is delivered.
//
// The pipeline's threads cannot call the framework's allocator, so the consumer's
// thread supplies blocks before it requests batches (top_up), as many and as large as
// the pipeline asks (SupplyLedger keeps the policy); a delivered batch names its block
// by token, and take() hands back the tensor its arrays stand for. Needs the GIL.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "../core/batch_pipeline.hpp"
#include "../core/supply_ledger.hpp"

namespace pyloader::bindings {

class HostSupplies {
 public:
  // `allocator(nbytes)`: a uint8 tensor of at least nbytes, or None to decline.
  explicit HostSupplies(pybind11::object allocator);

  const std::shared_ptr<SuppliedBlocks>& blocks() const noexcept { return ledger_.blocks(); }
  // Supplies what `pipeline` wants before a request of batches of `rows` rows.
  void top_up(const BatchPipeline& pipeline, std::uint64_t rows);
  // The tensor of the block `token` names (0: none), no longer held here; None if none.
  pybind11::object take(std::uint64_t token);
  // Lets go of every tensor: the pipeline that could write into them is gone.
  void forget_all() { ledger_.forget_all(); }
  // Blocks supplied and not yet delivered with a batch.
  std::size_t size() const noexcept { return ledger_.size(); }

 private:
  pybind11::object allocator_;
  SupplyLedger<pybind11::object> ledger_;
};

}  // namespace pyloader::bindings
