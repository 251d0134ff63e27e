#include "registry.hpp"

PYBIND11_MODULE(_core, module) {
  module.doc() = "pyloader's native core: index orders, row gathering, batch prefetch.";
  pyloader::bindings::register_order(module);
  pyloader::bindings::register_gather(module);
  pyloader::bindings::register_ragged(module);
  pyloader::bindings::register_staging(module);
  pyloader::bindings::register_pipeline(module);
}
