"""ArrayDataset: equal-length arrays (numpy, memmap, CPU tensor, .npy path) as a Dataset."""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ._native.columns import PiecedColumn, pieced_column_from

if TYPE_CHECKING:
    from .records import Records

# A column: an array, a tensor, a .npy path or glob pattern, a list of shards, records,
# or a column already built.
ArrayLike = Union[np.ndarray, torch.Tensor, str, os.PathLike, Sequence[Any], PiecedColumn, "Records"]


class ArrayDataset(Dataset):
    """Rows of one or more equal-length arrays.

    ``ArrayDataset(x, y)`` yields ``(x[i], y[i])`` as tensors, exactly as
    ``torch.utils.data.TensorDataset`` would; ``ArrayDataset(x=..., y=...)`` yields
    ``{"x": x[i], "y": y[i]}`` as ``StackDataset`` would. Arrays may be numpy arrays,
    ``np.memmap``s, CPU tensors, or paths to ``.npy`` files (opened memory-mapped, so
    datasets larger than RAM work). Nothing is copied at construction.

    A column may also be several shards read as one array: a list of arrays or
    ``.npy`` paths, or a glob pattern such as ``"features/part-*.npy"`` (sorted by
    name). Shards must share dtype and trailing shape. A :class:`pyloader.Records`
    column holds variable-length records.

    In a :class:`pyloader.DataLoader` with the default ``collate_fn`` the rows of a batch
    are gathered by native threads; anywhere else (including torch's own DataLoader)
    it behaves as a plain map-style dataset.
    """

    def __init__(self, *arrays: ArrayLike, **named_arrays: ArrayLike) -> None:
        if arrays and named_arrays:
            raise ValueError("pass arrays either positionally or by name, not both")
        if not arrays and not named_arrays:
            raise ValueError("ArrayDataset needs at least one array")
        self.names: tuple[str, ...] | None = tuple(named_arrays) if named_arrays else None
        sources = list(named_arrays.values()) if named_arrays else list(arrays)
        labels = [f"array {name!r}" for name in named_arrays] or [
            f"array #{position}" for position in range(len(arrays))
        ]
        self.columns: tuple[PiecedColumn, ...] = tuple(
            pieced_column_from(source, label) for source, label in zip(sources, labels)
        )
        self.bare = False
        # Sample k is column row row_map[k] (an index mapping over the rows, e.g. a Hugging
        # Face dataset's `select`/`shuffle`), or row k without one.
        self.row_map: np.ndarray | None = None
        lengths = {label: len(column) for label, column in zip(labels, self.columns)}
        if len(set(lengths.values())) > 1:
            described = ", ".join(f"{label}: {length}" for label, length in lengths.items())
            raise ValueError(f"arrays must have the same length (first dimension); got {described}")

    def __len__(self) -> int:
        return len(self.columns[0]) if self.row_map is None else len(self.row_map)

    def _row(self, column: PiecedColumn, index: int) -> torch.Tensor:
        return column.sample(index)

    def __getitem__(self, index: Any):
        try:
            index = operator.index(index)
        except TypeError:
            # IndexError, as numpy and torch raise for a float or other non-integer index.
            raise IndexError(f"ArrayDataset indices must be integers, not {type(index).__name__}") from None
        if self.row_map is not None:
            index = int(self.row_map[index])  # IndexError out of range, as a list
        rows = [self._row(column, index) for column in self.columns]
        if self.bare:
            return rows[0]
        if self.names is None:
            return tuple(rows)
        return dict(zip(self.names, rows))

    def __repr__(self) -> str:
        names = self.names or [f"#{k}" for k in range(len(self.columns))]
        described = ", ".join(
            f"{name}: {len(column)} rows of {column.dtype}" for name, column in zip(names, self.columns)
        )
        return f"{type(self).__name__}({described})"
