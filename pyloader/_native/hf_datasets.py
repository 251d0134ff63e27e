"""Hugging Face ``datasets.Dataset`` objects as native columns.

A ``datasets.Dataset`` is an Arrow table (memory-mapped from its cache files), an
optional indices mapping (what ``select``, ``shuffle``, ``filter`` and
``train_test_split`` produce, over the same table) and a format that decides what a
row becomes. The loader reads the table's buffers through `arrow_columns`, takes the
mapping as its row map, and delivers what the format gives (see `Delivery`): the
``"torch"`` format, ``"numpy"`` for fixed-width columns, or no format for scalar
columns. Anything else (another format, a transform, format options, a subclass that
changes how rows are fetched, a column type or null the native path cannot deliver
identically) stays on torch's path, which calls the dataset itself.

``datasets`` is never imported here: a dataset can only be one if the module is loaded.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from .arrow_columns import Delivery, NotNative, pieced_columns
from .columns import checked_row_map

# What datasets' own row access goes through besides torch's fetch methods: a subclass
# or an instance that defines it changes the rows.
ROW_ACCESS = ("_getitem",)
_DELIVERIES = {None: "python", "torch": "torch", "pt": "torch", "numpy": "numpy", "np": "numpy"}


def is_hf_dataset(dataset: Any) -> bool:
    module = sys.modules.get("datasets")
    cls = getattr(module, "Dataset", None)
    return isinstance(cls, type) and isinstance(dataset, cls)


def _format_state(dataset: Any) -> tuple[Any, tuple[str, ...] | None, bool, str]:
    fmt = dataset.format
    columns = fmt.get("columns")
    return (
        fmt.get("type"),
        None if columns is None else tuple(columns),
        bool(fmt.get("output_all_columns")),
        repr(fmt.get("format_kwargs")),
    )


def hf_structure(dataset: Any, refs: list, values: list) -> None:
    """What the columns of `dataset` are derived from (see eligibility.ColumnsCache):
    its table and indices objects, and its format."""
    refs.append(dataset.data)
    refs.append(dataset._indices)
    values.append(_format_state(dataset))


def dataset_class() -> type:
    """datasets.Dataset (the module is loaded: a dataset was recognised as one)."""
    return sys.modules["datasets"].Dataset


def non_tensor_samples(dataset: Any) -> str | None:
    """Why a collate_fn of the user's cannot be given native samples of `dataset`: a
    datasets.Dataset without the torch format hands its collate Python or numpy values,
    where the native path builds tensors. None when its samples are tensors."""
    from torch.utils.data import ConcatDataset, Subset

    if is_hf_dataset(dataset):
        format_type = dataset.format.get("type")
        if _DELIVERIES.get(format_type) in ("python", "numpy"):
            kind = "Python" if format_type is None else "numpy"
            return (
                f"the datasets.Dataset hands a collate_fn {kind} values, not tensors "
                "(with_format('torch') lets the native path build its samples)"
            )
        return None
    if isinstance(dataset, Subset):
        return non_tensor_samples(dataset.dataset)
    if isinstance(dataset, ConcatDataset):
        for part in dataset.datasets:
            reason = non_tensor_samples(part)
            if reason is not None:
                return reason
    return None


def hf_columns(dataset: Any) -> tuple[tuple, tuple[str, ...], np.ndarray | None] | str:
    """(pieces per column, names, row map) of a datasets.Dataset whose row access is
    datasets' own (see ROW_ACCESS), or why it must take torch's path."""
    format_type, columns, output_all, format_kwargs = _format_state(dataset)
    if format_type not in _DELIVERIES:
        return (
            f"the datasets.Dataset has the {format_type!r} format (the native path delivers 'torch', 'numpy' or none)"
        )
    if format_kwargs not in ("{}", "None"):
        return f"the datasets.Dataset's format has options ({format_kwargs}); torch's path applies them"
    table = dataset.data.table
    # In the table's order whatever order the format named them in, as datasets does.
    names = [name for name in table.column_names if columns is None or name in columns]
    if columns is not None and len(names) != len(set(columns)):
        return f"the datasets.Dataset's format names columns its table lacks ({sorted(set(columns) - set(names))})"
    if output_all and len(names) != len(table.column_names):
        return "the datasets.Dataset outputs its unformatted columns too (output_all_columns=True)"
    if not names:
        return "the datasets.Dataset has no columns"
    try:
        pieced = pieced_columns(table, names, Delivery(_DELIVERIES[format_type]), None, "the datasets.Dataset")
    except (NotNative, KeyError) as reason:
        return str(reason.args[0])
    pieces = tuple(column.pieces for column in pieced)
    indices = indices_of(dataset)
    if indices is None:
        return pieces, tuple(names), None
    row_map = checked_row_map(indices, len(pieced[0]), "the datasets.Dataset's indices mapping")
    if isinstance(row_map, str):
        return row_map  # torch's path decides
    return pieces, tuple(names), row_map


def indices_of(dataset: Any) -> np.ndarray | None:
    """The rows of a datasets.Dataset's indices mapping (select, shuffle, filter, ...),
    or None without one."""
    return None if dataset._indices is None else dataset._indices.column(0).to_numpy()
