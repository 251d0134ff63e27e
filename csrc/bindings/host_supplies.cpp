#include "host_supplies.hpp"

#include <optional>
#include <utility>

namespace py = pybind11;

namespace pyloader::bindings {

HostSupplies::HostSupplies(py::object allocator)
    : allocator_(std::move(allocator)), ledger_(std::make_shared<SuppliedBlocks>()) {}

void HostSupplies::top_up(const BatchPipeline& pipeline, std::uint64_t rows) {
  using Allocation = SupplyLedger<py::object>::Allocation;
  ledger_.top_up(pipeline.expected_batch_bytes(rows), pipeline.supplied_blocks_wanted(),
                 [this](std::size_t bytes) -> std::optional<Allocation> {
                   py::object tensor = allocator_(bytes);
                   if (tensor.is_none()) return std::nullopt;
                   const auto address = tensor.attr("data_ptr")().cast<std::uintptr_t>();
                   const auto size = tensor.attr("nbytes").cast<std::size_t>();
                   return Allocation{std::move(tensor), reinterpret_cast<std::byte*>(address), size};
                 });
}

py::object HostSupplies::take(std::uint64_t token) {
  py::object tensor = ledger_.take(token);
  if (!tensor) return py::none();
  return tensor;
}

}  // namespace pyloader::bindings
