"""ArrowDataset: Arrow IPC / Feather files, ``datasets`` folders and tables as a Dataset.

Tokenized text is usually kept as Arrow: a ``list<int32>`` column of token ids is a
values buffer cut into records by offsets, the layout pyloader's records gather and
pad natively. ``ArrowDataset`` reads such data where it lies (memory-mapped files, or
a table's buffers), without converting rows to Python. ``pyarrow`` is needed only
when this module is used (``pip install pyloader-native[arrow]``; ``[datasets]`` for
Hugging Face datasets).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ._native.arrow_columns import Delivery, NotNative, pieced_columns
from ._native.columns import _is_pattern, checked_row_map, shard_paths
from ._native.hf_datasets import indices_of, is_hf_dataset
from .dataset import ArrayDataset


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.ipc  # noqa: F401
    except ImportError:  # pragma: no cover - the extra is installed wherever this is tested
        raise ImportError("ArrowDataset needs pyarrow: pip install 'pyloader-native[arrow]'") from None
    return pyarrow


def read_arrow_file(path: str | os.PathLike) -> Any:
    """The table of an Arrow IPC file (Feather v2) or stream (``datasets``' ``.arrow``
    files), memory-mapped: its buffers point into the file, nothing is read yet."""
    pa = _pyarrow()
    path = os.fspath(path)
    source = pa.memory_map(path)  # FileNotFoundError for a missing file, as open()
    failure = ""
    for opener in (pa.ipc.open_file, pa.ipc.open_stream):
        try:
            return opener(source).read_all()
        except (pa.ArrowInvalid, OSError) as error:
            failure = str(error)
            source.seek(0)
    source.close()
    raise ValueError(f"{path!r} is not a readable Arrow IPC file or stream: {failure}")


def _saved_dataset_files(folder: str) -> list[str]:
    """The data files of a ``datasets`` ``save_to_disk`` folder, in order."""
    state_path = os.path.join(folder, "state.json")
    if not os.path.exists(state_path):
        if os.path.exists(os.path.join(folder, "dataset_dict.json")):
            raise ValueError(f"{folder!r} holds several splits (a DatasetDict); give one split's folder")
        raise ValueError(f"{folder!r} is a folder without a state.json: not a datasets save_to_disk folder")
    try:
        with open(state_path, encoding="utf-8") as file:
            files = [entry["filename"] for entry in json.load(file)["_data_files"]]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{state_path!r} does not list the dataset's files: {error!r}") from None
    return [os.path.join(folder, name) for name in files]


def _table_of(source: Any) -> tuple[Any, Any, list[str] | None, str]:
    """(pyarrow Table, row map or None, columns the source selects or None, label)."""
    pa = _pyarrow()
    if isinstance(source, pa.Table):
        return source, None, None, "the Arrow table"
    if isinstance(source, pa.RecordBatch):
        return pa.Table.from_batches([source]), None, None, "the Arrow record batch"
    if is_hf_dataset(source):
        return source.data.table, indices_of(source), source.format.get("columns"), "the datasets.Dataset"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            paths = _saved_dataset_files(path)
        elif _is_pattern(path):
            paths = shard_paths(path)
        else:
            return read_arrow_file(path), None, None, repr(path)
    elif isinstance(source, Sequence) and all(isinstance(p, (str, os.PathLike)) for p in source):
        if not source:
            raise ValueError("ArrowDataset was given an empty list of files")
        paths = [os.fspath(p) for p in source]
    else:
        raise TypeError(
            "ArrowDataset reads an Arrow file path, a glob pattern or list of them, a datasets "
            f"save_to_disk folder, a pyarrow Table or a datasets.Dataset, not {type(source).__name__}"
        )
    tables = [read_arrow_file(path) for path in paths]
    for path, table in zip(paths[1:], tables[1:]):
        if table.schema.remove_metadata() != tables[0].schema.remove_metadata():
            raise ValueError(f"{path!r} has another schema than {paths[0]!r}; shards must share one")
    label = repr(paths[0]) if len(paths) == 1 else f"{len(paths)} Arrow files ({paths[0]!r}, ...)"
    return pa.concat_tables(tables), None, None, label


class ArrowDataset(ArrayDataset):
    """Columns of Arrow data as a map-style dataset: ``ds[i]`` is ``{column: tensor}``.

    ``source``: the path of an Arrow IPC file (Feather v2) or stream (``datasets``'
    ``.arrow`` files), a ``save_to_disk`` folder, a glob pattern or a list of such
    files (shards, read in order as one dataset), a ``pyarrow.Table``, or a
    ``datasets.Dataset`` (its files, indices mapping and format's columns; samples keep
    the columns' own dtypes whatever its format). Files are memory-mapped and nothing is
    copied: datasets larger than RAM work.

    ``columns``: the columns to read (all by default), in the order samples list them.
    Each must be numbers or bools (a scalar per row, stacked by the loader), fixed-size
    lists of them (a row of fixed shape), or lists of either (variable-length records,
    1-D tensors that :class:`pyloader.PadCollate` pads natively). ``fill_values``:
    ``{column: value}`` replacing nulls; a column with nulls and no fill value is refused.
    """

    def __init__(
        self, source: Any, columns: Sequence[str] | None = None, *, fill_values: Mapping[str, Any] | None = None
    ) -> None:
        self._arguments = (source, None if columns is None else list(columns), dict(fill_values or {}))
        table, row_map, selected, label = _table_of(source)
        if isinstance(columns, str):
            raise TypeError("columns must be a list of column names, not a string")
        names = list(columns) if columns is not None else list(selected or table.column_names)
        if not names:
            raise ValueError(f"{label} has no columns to read")
        if len(set(names)) != len(names):
            raise ValueError(f"columns names a column twice: {names}")
        for name in fill_values or {}:
            if name not in names:
                raise ValueError(f"fill_values names {name!r}, which is not among the columns read {names}")
        try:
            self.columns = tuple(pieced_columns(table, names, Delivery("arrow"), dict(fill_values or {}), label))
        except KeyError as error:
            raise KeyError(error.args[0]) from None
        except NotNative as reason:
            raise ValueError(str(reason)) from None
        self.names = tuple(names)
        self.bare = False
        self.row_map = None
        if row_map is not None:
            checked = checked_row_map(row_map, len(self.columns[0]), f"the indices mapping of {label}")
            if isinstance(checked, str):
                raise ValueError(checked)
            checked.setflags(write=False)
            self.row_map = checked
        self.table = table  # the buffers the columns view stay alive with it

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Rebuilt from what it was made of: paths are opened (mapped) again rather than
        # their contents pickled, as a process started by spawn needs.
        return _rebuilt, self._arguments

    @property
    def column_names(self) -> list[str]:
        return list(self.names or ())


def _rebuilt(source: Any, columns: list[str] | None, fill_values: dict[str, Any]) -> ArrowDataset:
    return ArrowDataset(source, columns, fill_values=fill_values)


__all__ = ["ArrowDataset", "read_arrow_file"]
