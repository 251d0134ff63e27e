#include "pipeline_columns.hpp"

#include <algorithm>
#include <utility>

#include "column_arrays.hpp"
#include "pipeline_arguments.hpp"

namespace py = pybind11;

namespace pyloader::bindings {
namespace {

bool is_ragged_source(const py::handle& source) {
  if (py::isinstance<RaggedSource>(source)) return true;
  if (py::isinstance<py::list>(source) || py::isinstance<py::tuple>(source)) {
    for (py::handle piece : source) return py::isinstance<RaggedSource>(piece);
  }
  return false;
}

std::vector<py::ssize_t> trailing_shape(const py::array& array) {
  return std::vector<py::ssize_t>(array.shape() + 1, array.shape() + array.ndim());
}

// A ragged column from its source (one RaggedSource or a list of them), with its output.
RaggedColumn ragged_column(const py::object& source, const py::object& cast, const py::object& padding,
                           std::vector<std::shared_ptr<RaggedSource>>& kept, std::vector<RaggedOutput>& outputs) {
  RaggedColumn column;
  std::vector<std::shared_ptr<RaggedSource>> pieces;
  if (py::isinstance<RaggedSource>(source)) {
    pieces.push_back(source.cast<std::shared_ptr<RaggedSource>>());
  } else {
    for (py::handle piece : source) pieces.push_back(piece.cast<std::shared_ptr<RaggedSource>>());
  }
  const py::array& first = pieces.front()->values();
  for (const auto& piece : pieces) {
    const py::array& values = piece->values();
    if (!values.dtype().equal(first.dtype()) || values.ndim() != first.ndim() ||
        !std::equal(values.shape() + 1, values.shape() + values.ndim(), first.shape() + 1)) {
      throw py::value_error("the pieces of a ragged column must share dtype and trailing shape");
    }
    RaggedPiece view = piece->piece();
    view.first_record = column.records();
    column.pieces.push_back(view);
    kept.push_back(piece);
  }
  column.cast = cast_between(first.dtype(), cast);
  const py::dtype out = column.cast.active() ? py::dtype::from_args(cast) : first.dtype();
  column.element_bytes = out.itemsize();
  column.padding = padding_from(padding, column.element_bytes);
  RaggedOutput output;
  output.dtype = out;
  output.trailing_shape = trailing_shape(first);
  output.padded = column.padding.enabled;
  output.masked = column.padding.mask;
  outputs.push_back(std::move(output));
  return column;
}

}  // namespace

PipelineColumns pipeline_columns(const std::vector<py::object>& sources, const py::object& casts,
                                 const py::object& paddings, const py::object& files) {
  auto option = [&](const py::object& options, std::size_t c) -> py::object {
    if (options.is_none()) return py::none();
    const auto list = py::reinterpret_borrow<py::sequence>(options);
    if (list.size() != sources.size()) throw py::value_error("one option per column is needed");
    return list[c];
  };
  std::vector<RaggedColumn> ragged;
  std::vector<std::shared_ptr<RaggedSource>> ragged_sources;
  std::vector<BatchOutputs::Place> places;
  std::vector<py::object> fixed_sources;
  std::vector<RaggedOutput> ragged_outputs;
  for (std::size_t c = 0; c < sources.size(); ++c) {
    if (!is_ragged_source(sources[c])) {
      places.push_back(BatchOutputs::Place{false, fixed_sources.size()});
      fixed_sources.push_back(sources[c]);
      continue;
    }
    RaggedColumn column =
        ragged_column(sources[c], option(casts, c), option(paddings, c), ragged_sources, ragged_outputs);
    places.push_back(BatchOutputs::Place{true, ragged.size()});
    ragged.push_back(std::move(column));
  }
  std::vector<py::array> arrays;
  std::vector<Column> fixed = columns_from_sources(fixed_sources, arrays);
  std::vector<FixedOutput> fixed_outputs;
  std::size_t first_piece = 0;
  for (std::size_t c = 0; c < fixed.size(); ++c) {
    const py::array& array = arrays[first_piece];
    py::object target = py::none();
    for (std::size_t k = 0; k < places.size(); ++k) {
      if (!places[k].ragged && places[k].index == c) target = option(casts, k);
    }
    fixed[c].cast = cast_between(array.dtype(), target);
    fixed_outputs.push_back(
        FixedOutput{fixed[c].cast.active() ? py::dtype::from_args(target) : array.dtype(), trailing_shape(array)});
    first_piece += fixed[c].pieces.size();
  }
  for (std::size_t k = 0; k < places.size(); ++k) {
    const py::object spec = option(files, k);
    if (spec.is_none()) continue;
    const auto per_piece = py::reinterpret_borrow<py::sequence>(spec);
    const std::size_t pieces =
        places[k].ragged ? ragged[places[k].index].pieces.size() : fixed[places[k].index].pieces.size();
    if (per_piece.size() != pieces) throw py::value_error("one file (or None) per column piece is needed");
    for (std::size_t p = 0; p < pieces; ++p) {
      if (per_piece[p].is_none()) continue;
      auto file = file_from(per_piece[p]);
      if (places[k].ragged) {
        ragged[places[k].index].pieces[p].file = std::move(file);
      } else {
        fixed[places[k].index].pieces[p].file = std::move(file);
      }
    }
  }
  return PipelineColumns{std::move(fixed), std::move(ragged),
                         BatchOutputs(std::move(places), std::move(fixed_outputs), std::move(ragged_outputs)),
                         std::move(arrays), std::move(ragged_sources)};
}

}  // namespace pyloader::bindings
