"""Turning user arrays (numpy, memmap, CPU tensors, .npy paths) into native columns.

A column piece is kept as a numpy array that views the user's memory (never a copy)
plus the torch dtype its batches must carry. dtypes numpy lacks (bfloat16, float8) are
viewed as a same-width integer dtype for the copy and reinterpreted on the way out;
columns may instead be converted (``cast``) by the gather: integers to int32/int64,
floats between float32 and float64. A
column is one or more pieces (shard files) read as one array: `PiecedColumn`.
Variable-length records are `RecordsColumn` pieces.
"""

from __future__ import annotations

import bisect
import errno
import mmap
import os
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from .. import _core

_TORCH_ONLY_CARRIERS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@dataclass(frozen=True)
class Column:
    """One gatherable array: `array` is what the core reads; batches get `dtype`."""

    array: np.ndarray
    dtype: torch.dtype
    needs_view: bool  # the carrier array's dtype differs from `dtype`
    file: str | None  # backing file of a memory map, for size checks
    file_bytes: int  # bytes of `file` the mapping needs
    cast: np.dtype | None = None  # elements converted to this dtype by the gather
    # (st_dev, st_ino) of `file` when the column was made: explicit reads check that the
    # path still names the file that was mapped.
    file_identity: tuple[int, int] | None = None
    # Byte offset in `file` of row 0 for a view whose mapping numpy cannot trace (token
    # windows, made with as_strided): rows are array.strides[0] apart in the file.
    file_offset: int | None = None

    ragged = False

    def __len__(self) -> int:
        return self.array.shape[0]

    @property
    def row_bytes(self) -> int:
        """Bytes of one output row."""
        itemsize = self.array.itemsize if self.cast is None else self.cast.itemsize
        return itemsize * int(np.prod(self.array.shape[1:], dtype=np.int64))

    @property
    def mapped(self) -> list[tuple[str, int]]:
        return [] if self.file is None else [(self.file, self.file_bytes)]

    @property
    def pipeline_source(self):
        return self.array

    @property
    def read_source(self) -> tuple[str, int, int, int] | None:
        """Where explicit reads find this column's rows, if anywhere (see file_position):
        (path, offset, st_dev, st_ino)."""
        if self.file is None or self.file_identity is None:
            return None
        if self.file_offset is not None:
            return (self.file, self.file_offset, *self.file_identity)
        position = file_position(self.array)
        return None if position is None else (*position, *self.file_identity)

    @property
    def file_extent(self) -> tuple[str, int, int] | None:
        """(file, offset, bytes) of the rows in their file, when they lie there one after
        another; None otherwise."""
        if self.file is None or not self.array.flags.c_contiguous:
            return None
        if self.file_offset is not None:
            return self.file, self.file_offset, self.array.nbytes
        position = file_position(self.array)
        return None if position is None else (*position, self.array.nbytes)

    def sample(self, index: int) -> torch.Tensor:
        # A copy, so a sample neither pins the memory map nor aliases a read-only page.
        row = torch.from_numpy(np.array(self.array[index], dtype=self.cast))
        return row.view(self.dtype) if self.needs_view else row


@dataclass(frozen=True)
class RecordsColumn:
    """One piece of variable-length records: `source` is what the core reads."""

    source: Any  # _core.RaggedSource, spans validated
    array: np.ndarray  # the values; a record is a run of its rows
    dtype: torch.dtype  # of the delivered values
    cast: np.dtype | None
    starts: np.ndarray  # CSR offsets (records + 1, in value rows), or byte pointers with `lengths`
    lengths: np.ndarray | None  # value rows per record (pointer layout); None for CSR
    mapped: list = field(default_factory=list)  # (file, bytes needed) of every memory map involved
    # Where explicit reads find the values (see Column.read_source), or None.
    read_source: tuple[str, int, int, int] | None = None

    ragged = True
    needs_view = False

    def __len__(self) -> int:
        return len(self.source)

    @property
    def row_bytes(self) -> int:
        """Mean bytes of one output record (sizes the prefetch)."""
        itemsize = self.array.itemsize if self.cast is None else self.cast.itemsize
        rows = max(1, len(self))
        return itemsize * int(np.prod(self.array.shape[1:], dtype=np.int64)) * max(1, self.array.shape[0] // rows)

    @property
    def pipeline_source(self):
        return self.source

    def sample(self, index: int) -> torch.Tensor:
        if self.lengths is None:
            first = int(self.starts[index])
            length = int(self.starts[index + 1]) - first
        else:
            row_bytes = self.array.itemsize * int(np.prod(self.array.shape[1:], dtype=np.int64))
            first, length = int(self.starts[index]) // row_bytes, int(self.lengths[index])
        return torch.from_numpy(np.array(self.array[first : first + length], dtype=self.cast))


def records_column(
    column: Column,
    *,
    dtype: torch.dtype,
    cast: np.dtype | None,
    what: str,
    offsets: np.ndarray | None = None,
    pointers: np.ndarray | None = None,
    lengths: np.ndarray | None = None,
    mapped: list[tuple[str, int]] | None = None,
    context: str = "",
) -> RecordsColumn:
    """Records over the rows of `column`: CSR `offsets`, or byte `pointers` with
    `lengths` (the Megatron layout), every span checked once by the core (a ValueError
    ``"{what}: {why}{context}"`` otherwise). `mapped`: other files the spans live in."""
    starts = pointers if offsets is None else offsets
    if starts is None:
        raise TypeError("records need offsets, or pointers with lengths")
    try:
        source = _core.RaggedSource(column.array, offsets, pointers, lengths)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{what}: {error}{context}") from None
    return RecordsColumn(
        source=source,
        array=column.array,
        dtype=dtype,
        cast=cast,
        starts=starts,
        lengths=lengths,
        mapped=list(column.mapped) + list(mapped or []),
        read_source=column.read_source,
    )


class PiecedColumn:
    """A column made of consecutive pieces (shards), indexed as one array."""

    def __init__(self, pieces) -> None:
        self.pieces = tuple(pieces)
        self._ends = list(np.cumsum([len(piece) for piece in self.pieces]))

    def __len__(self) -> int:
        return int(self._ends[-1]) if self._ends else 0

    @property
    def array(self) -> np.ndarray:
        """The array of a single-piece column."""
        if len(self.pieces) != 1:
            raise AttributeError("a column of several pieces has no single array")
        return self.pieces[0].array

    @property
    def dtype(self) -> torch.dtype:
        return self.pieces[0].dtype

    def sample(self, index: int) -> torch.Tensor:
        rows = len(self)
        if index < 0:
            index += rows
        if not 0 <= index < rows:
            raise IndexError(f"index {index} is out of range for {rows} rows")
        piece = bisect.bisect_right(self._ends, index)
        start = int(self._ends[piece - 1]) if piece else 0
        return self.pieces[piece].sample(index - start)


def open_npy(path: str | os.PathLike) -> np.ndarray:
    """Opens a .npy file memory-mapped read-only, with errors that name the file."""
    path = os.fspath(path)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path!r} is not a readable .npy file: {error}") from error
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{path!r} holds {type(array).__name__}, not a single .npy array")
    return array


def _torch_dtype_of(np_dtype: np.dtype, what: str) -> torch.dtype:
    if np_dtype.hasobject:
        raise TypeError(
            f"{what} has dtype {np_dtype}, which holds Python objects; only fixed-size numeric dtypes can be loaded"
        )
    if not np_dtype.isnative:
        raise TypeError(
            f"{what} has non-native byte order ({np_dtype}); convert it with a.astype(a.dtype.newbyteorder('='))"
        )
    try:
        return torch.from_numpy(np.empty(0, dtype=np_dtype)).dtype
    except TypeError:
        raise TypeError(f"{what} has dtype {np_dtype}, which torch tensors cannot hold") from None


def _mapping_root(array: np.ndarray) -> np.memmap | None:
    """The np.memmap that owns the mapping `array` views, or None. Views of a memmap are
    memmaps too, but they keep their parent's `offset`: only the root's is its own."""
    root = None
    view: Any = array
    while isinstance(view, np.ndarray):
        if isinstance(view, np.memmap):
            root = view
        view = view.base
    # Only a memmap over the mmap itself knows its offset: a view rebuilt through the
    # array interface (np.lib.stride_tricks with subok=True) is a memmap too, with a
    # copied offset that is not its own.
    if root is None or getattr(root, "filename", None) is None or not isinstance(root.base, mmap.mmap):
        return None
    return root


def _filename(root: np.memmap) -> str:
    """The file of a mapping root (_mapping_root returns only roots that have one)."""
    return os.fspath(cast(str, root.filename))


def _start_in_file(array: np.ndarray, root: np.memmap) -> int:
    return int(root.offset) + array.__array_interface__["data"][0] - root.__array_interface__["data"][0]


def file_backing(array: np.ndarray) -> tuple[str | None, int]:
    """(backing file, bytes of it the array needs) of a memory-mapped array, or (None, 0)."""
    root = _mapping_root(array)
    if root is None:
        return None, 0
    if array.size == 0:
        return _filename(root), 0
    # The byte after the highest element (negative strides reach below the first one).
    highest = sum((extent - 1) * stride for extent, stride in zip(array.shape, array.strides) if stride > 0)
    return _filename(root), _start_in_file(array, root) + highest + array.itemsize


def file_position(array: np.ndarray) -> tuple[str, int] | None:
    """(backing file, byte offset of the array's first row in it) of a memory-mapped
    array whose rows lie in the file one after another, or None: what explicit reads
    need to fetch its rows from the file instead of through the mapping."""
    root = _mapping_root(array)
    if root is None or array.ndim == 0 or root.mode == "c":  # copy-on-write: its pages may differ from the file
        return None
    row_bytes = array.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
    if len(array) > 1 and array.strides[0] != row_bytes:
        return None
    return _filename(root), _start_in_file(array, root)


def column_from(value: Any, what: str) -> Column:
    """Validates one user input and describes it as a Column; raises TypeError/ValueError."""
    if isinstance(value, (str, os.PathLike)):
        value = open_npy(value)
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            raise ValueError(
                f"{what} is a tensor on {value.device}; ArrayDataset gathers "
                "on the CPU (move it with .cpu(), or keep TensorDataset)"
            )
        if value.is_sparse or value.layout != torch.strided:
            raise ValueError(f"{what} is a {value.layout} tensor; only dense tensors can be loaded")
        tensor = value.detach()
        if tensor.dim() == 0:
            raise ValueError(f"{what} is a 0-d tensor; a column needs a first (row) dimension")
        try:
            array = tensor.numpy()
            dtype, needs_view = tensor.dtype, False
        except TypeError:
            carrier = _TORCH_ONLY_CARRIERS.get(tensor.element_size())
            if carrier is None:
                raise TypeError(f"{what} has dtype {tensor.dtype}, which cannot be gathered") from None
            array = tensor.view(carrier).numpy()
            dtype, needs_view = tensor.dtype, True
        except RuntimeError as error:
            raise ValueError(f"{what}: {error}") from None
    elif isinstance(value, np.ndarray):
        array = value
        if array.ndim == 0:
            raise ValueError(f"{what} is a 0-d array; a column needs a first (row) dimension")
        dtype, needs_view = _torch_dtype_of(array.dtype, what), False
    else:
        raise TypeError(
            f"{what} must be a numpy array, a memmap, a CPU tensor or a path to a .npy file, not {type(value).__name__}"
        )
    try:
        _core.check_column(array)
    except ValueError as error:
        raise ValueError(f"{what}: {error}") from None
    file, file_bytes = file_backing(array)
    return Column(
        array=array,
        dtype=dtype,
        needs_view=needs_view,
        file=file,
        file_bytes=file_bytes,
        file_identity=file_identity(file),
    )


def file_identity(path: str | None) -> tuple[int, int] | None:
    """(st_dev, st_ino) of a mapped file, which explicit reads check the path still
    names; None without one."""
    if path is None:
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None  # the mapping outlives its path: it is read through the mapping only
    return status.st_dev, status.st_ino


def check_files_intact(mapped: list[tuple[str, int]]) -> None:
    """Raises OSError if a mapped file is gone or shorter than its mapping needs
    (reading it would SIGBUS); `mapped` holds (file, bytes needed) pairs."""
    for file, needed in mapped:
        try:
            size = os.stat(file).st_size
        except OSError as error:
            raise OSError(
                error.errno, f"memory-mapped file {file!r} is no longer accessible: {error.strerror}", file
            ) from None
        if size < needed:
            raise OSError(
                errno.EIO,
                f"memory-mapped file {file!r} shrank to {size} bytes while "
                f"mapped ({needed} needed); refusing to read past its end",
                file,
            )


def _is_pattern(value: str) -> bool:
    return any(char in value for char in "*?[") and not os.path.exists(value)


def _same_layout(pieces, what: str, describe) -> None:
    first = pieces[0]
    for k, piece in enumerate(pieces[1:], start=1):
        if piece.dtype != first.dtype or piece.array.shape[1:] != first.array.shape[1:] or piece.cast != first.cast:
            raise ValueError(
                f"{what}: shard {describe(k)} holds {piece.array.dtype} rows of shape {tuple(piece.array.shape[1:])}, "
                f"but shard {describe(0)} holds {first.array.dtype} rows of shape {tuple(first.array.shape[1:])}; "
                "the shards of one column must share dtype and trailing shape"
            )


def shard_paths(pattern: str) -> list[str]:
    """The files a glob pattern names, sorted; FileNotFoundError when there are none."""
    import glob

    paths = sorted(glob.glob(os.path.expanduser(pattern)))
    if not paths:
        raise FileNotFoundError(errno.ENOENT, f"no file matches {pattern!r}", pattern)
    return paths


def pieced_column_from(value: Any, what: str) -> PiecedColumn:
    """One ArrayDataset column: an array, a path, a glob pattern or a list of shards
    (arrays or paths read as one array), or a Records spec."""
    if isinstance(value, PiecedColumn):
        return value
    records = getattr(value, "_records_column", None)
    if callable(records):
        return records(what)
    if isinstance(value, (str, os.PathLike)) and _is_pattern(os.fspath(value)):
        value = shard_paths(os.fspath(value))
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{what} is an empty list of shards")
        pieces = [column_from(piece, f"{what}, shard #{k}") for k, piece in enumerate(value)]

        def describe(k: int) -> str:
            shard = value[k]
            return repr(os.fspath(shard)) if isinstance(shard, (str, os.PathLike)) else f"#{k}"

        _same_layout(pieces, what, describe)
        return PiecedColumn(pieces)
    return PiecedColumn([column_from(value, what)])


def checked_row_map(row_map: Any, rows: int, what: str) -> np.ndarray | str:
    """`row_map` as int64 rows of `rows`, or why it is not one."""
    try:
        row_map = np.asarray(row_map)
    except (TypeError, ValueError):
        return f"{what} is not an array of integers"
    if row_map.ndim != 1 or (row_map.size and row_map.dtype.kind not in "iu"):
        return f"{what} is not a flat array of integers"
    if row_map.size and (int(row_map.min()) < 0 or int(row_map.max()) >= rows):
        return f"{what} holds rows out of range (0 to {rows - 1})"
    return np.array(row_map, dtype=np.int64)  # a copy: the pipeline keeps it read-only
