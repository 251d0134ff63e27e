"""Whether a dataset is array-shaped and plain, and its columns if it is.

The native path replaces torch's fetch (``dataset.__getitems__(indices)`` when the
dataset has it, else ``[dataset[i] for i in indices]``) by a gather, which is only
equivalent when nothing that fetch would call has been changed. A dataset is *plain*
when it is an ArrayDataset, a TensorDataset, a Subset or a ConcatDataset (or a
subclass) and neither its class below that base nor the instance itself defines any
method torch's fetch or the base's ``__getitem__`` would reach, nor any of the data
attributes the base reads (a property there could compute anything). Everything else
takes torch's path: slower is acceptable, different data is not.

The columns of a plain dataset (and the row map of its Subsets) are derived once per
loader by :class:`ColumnsCache`, and derived again only when the dataset's structure
changes: another object in an attribute the base reads (``indices``, ``dataset``,
``datasets``, ``tensors``, ``columns``), a different length of ``indices`` or
``datasets``, or a tensor resized or re-pointed in place. Editing entries of a
Subset's ``indices`` in place, keeping its length, is not noticed (checking would cost
O(N) per epoch, the cost this cache exists to avoid); assign a new sequence instead.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
from torch.utils.data import ConcatDataset, Subset, TensorDataset

from .. import _core
from ..dataset import ArrayDataset
from .columns import Column, checked_row_map, column_from
from .hf_datasets import ROW_ACCESS, dataset_class, hf_columns, hf_structure, is_hf_dataset

# What torch's fetcher, or the base classes' own __getitem__/__len__, look up on a dataset.
_FETCH_METHODS = ("__getitem__", "__getitems__", "__len__", "__getattr__", "__getattribute__")
# The data attributes each base class reads to produce a sample.
_BASE_ATTRIBUTES = {
    ArrayDataset: ("columns", "names", "bare", "_row", "row_map"),
    TensorDataset: ("tensors",),
    Subset: ("dataset", "indices"),
    ConcatDataset: ("datasets", "cumulative_sizes"),
}


@dataclass(frozen=True)
class DatasetColumns:
    """The columns of a plain dataset, as the native pipeline reads them."""

    pieces: tuple[tuple[Column, ...], ...]  # per column, its pieces in order (shards, ConcatDataset)
    names: tuple[str, ...] | None  # dict samples/batches when set, tuples/lists otherwise
    row_map: _core.RowMap | None  # dataset row k is column row row_map[k] (Subsets)
    rows: int
    bare: bool = False  # a sample is its single column itself, not a 1-tuple

    @property
    def columns(self) -> tuple[Column, ...]:
        """One Column per output column (its first piece: all share dtype and shape)."""
        return tuple(pieces[0] for pieces in self.pieces)

    @property
    def arrays(self) -> list:
        """What the pipeline reads: per column its array (or RaggedSource), or the list
        of its pieces."""
        return [
            pieces[0].pipeline_source if len(pieces) == 1 else [piece.pipeline_source for piece in pieces]
            for pieces in self.pieces
        ]

    def read_sources(self, min_row_bytes: int = 0) -> list | None:
        """Per column, None or per piece where explicit reads find its rows (see
        Column.read_source), for records and for columns of at least `min_row_bytes`
        bytes a row (no file is opened for others); None when there is nothing to read
        explicitly."""
        sources: list = []
        for pieces in self.pieces:
            if not pieces[0].ragged and pieces[0].row_bytes < min_row_bytes:
                sources.append(None)
                continue
            per_piece = [getattr(piece, "read_source", None) for piece in pieces]
            sources.append(None if all(source is None for source in per_piece) else per_piece)
        return None if all(source is None for source in sources) else sources

    @functools.cached_property
    def small_row_extents(self) -> list[tuple[str, int, int]]:
        """(file, offset, bytes) of every memory-mapped piece of the fixed-width columns
        whose rows are under _core.EXPLICIT_READ_MIN_ROW_BYTES (those read through their
        mapping under io="auto"). Derived once: an Arrow column has a piece per record batch."""
        extents = []
        for pieces in self.pieces:
            if pieces[0].ragged or pieces[0].row_bytes >= _core.EXPLICIT_READ_MIN_ROW_BYTES:
                continue
            for piece in pieces:
                extent = piece.file_extent
                if extent is not None:
                    extents.append(extent)
        return extents

    @property
    def casts(self) -> list | None:
        """Per column the dtype the gather converts its integers to, or None."""
        casts = [column.cast for column in self.columns]
        return None if all(cast is None for cast in casts) else casts

    @property
    def ragged(self) -> list[bool]:
        """Per column, whether it holds variable-length records."""
        return [column.ragged for column in self.columns]

    @property
    def row_bytes(self) -> int:
        return sum(column.row_bytes for column in self.columns)

    @property
    def view_dtypes(self) -> list:
        """Per column, the torch dtype its carrier arrays must be viewed as, or None."""
        return [column.dtype if column.needs_view else None for column in self.columns]

    @functools.cached_property
    def mapped_files(self) -> list[tuple[str, int]]:
        """(file, bytes needed) of every memory-mapped file the columns read, each file
        once with the most any piece needs: the loader checks them every few batches,
        and an Arrow file holds a piece per record batch of every column."""
        needed: dict[str, int] = {}
        for pieces in self.pieces:
            for piece in pieces:
                for file, size in piece.mapped:
                    needed[file] = max(size, needed.get(file, 0))
        return list(needed.items())

    def __len__(self) -> int:
        return self.rows


def _changed_fetch(dataset, base, names: tuple[str, ...], own_names: tuple[str, ...] = ()) -> str | None:
    """What `dataset` (an instance of `base`) changes of the fetch path, if anything: a
    class below `base` defining one of `names`, or the instance holding its own
    `__getitems__` or one of `own_names` (attributes looked up on the instance)."""
    for cls in type(dataset).__mro__:
        if cls is base:
            break
        for name in names:
            if name in vars(cls):
                return f"{type(dataset).__name__} defines {name} (torch's path calls it)"
    instance = getattr(dataset, "__dict__", {})
    for name in ("__getitems__", *own_names):
        if name in instance:
            return f"this {type(dataset).__name__} has its own {name} (torch's path calls it)"
    return None


def _base_of(dataset):
    for base in _BASE_ATTRIBUTES:
        if isinstance(dataset, base):
            return base
    return None


def _structure(dataset, refs: list, values: list) -> None:
    """Appends what the columns of `dataset` are derived from: objects (compared by
    identity) to `refs`, plain values (compared by equality) to `values`."""
    refs.append(dataset)
    if is_hf_dataset(dataset):
        hf_structure(dataset, refs, values)
        return
    base = _base_of(dataset)
    if base is Subset:
        refs.append(dataset.indices)
        values.append(_length(dataset.indices))
        _structure(dataset.dataset, refs, values)
    elif base is ConcatDataset:
        refs.append(dataset.datasets)
        values.append(len(dataset.datasets))
        values.append(tuple(dataset.cumulative_sizes))
        for part in dataset.datasets:
            _structure(part, refs, values)
    elif base is TensorDataset:
        refs.append(dataset.tensors)
        for tensor in dataset.tensors:
            refs.append(tensor)
            values.append((tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.dtype, tensor.requires_grad))
    elif base is ArrayDataset:
        refs.append(dataset.columns)
        refs.append(dataset.row_map)
        values.append((dataset.names, dataset.bare))


def _length(sequence) -> int | None:
    try:
        return len(sequence)
    except TypeError:
        return None


class ColumnsCache:
    """The columns of a loader's dataset, derived once and again only on a change of
    its structure (see the module docstring)."""

    def __init__(self) -> None:
        self._refs: list = []
        self._values: list = []
        self._result: DatasetColumns | str | None = None

    def get(self, dataset) -> DatasetColumns | str:
        """The dataset's columns, or why it cannot be gathered natively."""
        refs: list = []
        values: list = []
        try:
            _structure(dataset, refs, values)
        except Exception as error:  # an attribute that misbehaves: torch's path decides
            return f"the dataset's structure cannot be read ({type(error).__name__}: {error})"
        if (
            self._result is not None
            and len(refs) == len(self._refs)
            and all(a is b for a, b in zip(refs, self._refs))
            and values == self._values
        ):
            return self._result
        result = columns_of(dataset)
        self._refs, self._values, self._result = refs, values, result
        return result


def columns_of(dataset) -> DatasetColumns | str:
    """The columns of an array-shaped plain dataset, or why it is not one."""
    found = _columns_of(dataset)
    if isinstance(found, str):
        return found
    pieces, names, row_map = found
    if not pieces:
        return "the dataset has no columns"
    bare = _bare(dataset)
    source_rows = _rows_of(pieces)
    if row_map is None:
        return DatasetColumns(pieces=pieces, names=names, row_map=None, rows=source_rows, bare=bare)
    row_map.setflags(write=False)  # ours alone: the RowMap keeps it without a copy
    return DatasetColumns(
        pieces=pieces, names=names, row_map=_core.RowMap(row_map, source_rows), rows=len(row_map), bare=bare
    )


def _bare(dataset) -> bool:
    """Whether samples are a lone column itself (a Subset/ConcatDataset inherits it)."""
    base = _base_of(dataset)
    if base is Subset:
        return _bare(dataset.dataset)
    if base is ConcatDataset:
        return _bare(dataset.datasets[0])
    return base is ArrayDataset and bool(dataset.bare)


def _rows_of(pieces) -> int:
    """Rows of a dataset given its columns' pieces (every column has the same count)."""
    return sum(len(piece) for piece in pieces[0])


def _concatenated(dataset):
    datasets = dataset.datasets
    if not datasets:
        return "the ConcatDataset is empty"
    if list(dataset.cumulative_sizes) != list(itertools.accumulate(len(part) for part in datasets)):
        return "the ConcatDataset's cumulative_sizes disagree with its parts (torch's path indexes by them)"
    parts = [_columns_of(part) for part in datasets]
    for part in parts:
        if isinstance(part, str):
            return f"a ConcatDataset part cannot be gathered natively: {part}"
    first_pieces, names, _ = parts[0]
    if len({_bare(part) for part in datasets}) > 1:
        return "ConcatDataset parts differ in their sample structure"
    for pieces, part_names, _ in parts:
        if part_names != names or len(pieces) != len(first_pieces):
            return "ConcatDataset parts differ in their columns"
        for column, first in zip(pieces, first_pieces):
            if (
                column[0].dtype != first[0].dtype
                or column[0].array.dtype != first[0].array.dtype
                or column[0].array.shape[1:] != first[0].array.shape[1:]
                or column[0].ragged != first[0].ragged
                or column[0].cast != first[0].cast
            ):
                return "ConcatDataset parts differ in dtype or shape (torch's collate decides)"
    merged = tuple(tuple(piece for pieces, _, _ in parts for piece in pieces[c]) for c in range(len(first_pieces)))
    if all(row_map is None for _, _, row_map in parts):
        return merged, names, None
    # Some parts are Subsets: one map over all parts' pieces, each part's rows offset by
    # where its pieces start. Parts without a map contribute their rows in order.
    maps, start = [], 0
    for pieces, _, row_map in parts:
        part_rows = _rows_of(pieces)
        maps.append(start + (np.arange(part_rows, dtype=np.int64) if row_map is None else row_map))
        start += part_rows
    return merged, names, np.ascontiguousarray(np.concatenate(maps), dtype=np.int64)


def _subset(dataset):
    found = _columns_of(dataset.dataset)
    if isinstance(found, str):
        return found
    columns, names, base_map = found
    base_rows = len(dataset.dataset)
    try:
        indices = np.asarray(dataset.indices)
    except (TypeError, ValueError):
        return "the Subset's indices are not an array of integers"
    if indices.size == 0:
        indices = indices.astype(np.int64).reshape(0)
    if indices.ndim != 1 or indices.dtype.kind not in "iu":
        return "the Subset's indices are not a flat sequence of integers (torch's path decides)"
    if indices.dtype.kind == "u" and indices.size and indices.max() > np.iinfo(np.int64).max:
        return "the Subset has indices out of range (torch's path raises when they are read)"
    indices = indices.astype(np.int64)
    if indices.size and (indices.min() < -base_rows or indices.max() >= base_rows):
        return "the Subset has indices out of range (torch's path raises when they are read)"
    indices = np.where(indices < 0, indices + base_rows, indices)
    row_map = indices if base_map is None else base_map[indices]
    return columns, names, np.ascontiguousarray(row_map, dtype=np.int64)


def _tensors(dataset):
    if any(tensor.requires_grad for tensor in dataset.tensors):
        return "a TensorDataset tensor requires grad (torch's batches carry its autograd graph)"
    try:
        columns = tuple(column_from(tensor, f"tensor #{k}") for k, tensor in enumerate(dataset.tensors))
    except (TypeError, ValueError) as error:
        return f"a TensorDataset tensor cannot be gathered natively ({error})"
    if len({len(column) for column in columns}) > 1:
        return "the TensorDataset's tensors differ in length"
    return tuple((column,) for column in columns), None, None


def _columns_of(dataset):
    """(pieces per column, names, row_map array) of a plain array-shaped dataset, or why not."""
    if is_hf_dataset(dataset):
        changed = _changed_fetch(dataset, dataset_class(), _FETCH_METHODS + ROW_ACCESS, ROW_ACCESS)
        return hf_columns(dataset) if changed is None else changed
    base = _base_of(dataset)
    if base is None:
        return (
            f"{type(dataset).__name__} is not an ArrayDataset, TensorDataset, datasets.Dataset, "
            "or a Subset or ConcatDataset of them"
        )
    changed = _changed_fetch(dataset, base, _FETCH_METHODS + _BASE_ATTRIBUTES[base])
    if changed is not None:
        return changed
    if base is ConcatDataset:
        return _concatenated(dataset)
    if base is Subset:
        return _subset(dataset)
    if base is TensorDataset:
        return _tensors(dataset)
    row_map = _row_map_of(dataset)
    if isinstance(row_map, str):
        return row_map
    return tuple(column.pieces for column in dataset.columns), dataset.names, row_map


def _row_map_of(dataset: ArrayDataset):
    row_map = dataset.row_map
    if row_map is None:
        return None
    return checked_row_map(row_map, len(dataset.columns[0]), f"the row_map of this {type(dataset).__name__}")
