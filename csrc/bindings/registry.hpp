// One registration function per binding area; module.cpp calls them all.
#pragma once

#include <pybind11/pybind11.h>

namespace pyloader::bindings {

void register_order(pybind11::module_& module);
void register_gather(pybind11::module_& module);
void register_pipeline(pybind11::module_& module);
void register_ragged(pybind11::module_& module);
void register_staging(pybind11::module_& module);

}  // namespace pyloader::bindings
