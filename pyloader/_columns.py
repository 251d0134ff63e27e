"""Turning user arrays (numpy, memmap, CPU tensors, .npy paths) into native columns.

A column is kept as a numpy array that views the user's memory (never a copy) plus
the torch dtype its batches must carry. dtypes numpy lacks (bfloat16, float8) are
viewed as a same-width integer dtype for the copy and reinterpreted on the way out.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import _core

_TORCH_ONLY_CARRIERS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@dataclass(frozen=True)
class Column:
    """One gatherable array: `array` is what the core reads; batches get `dtype`."""

    array: np.ndarray
    dtype: torch.dtype
    needs_view: bool  # the carrier array's dtype differs from `dtype`
    file: str | None  # backing file of a memory map, for size checks
    file_bytes: int  # bytes of `file` the mapping needs

    def __len__(self) -> int:
        return self.array.shape[0]

    @property
    def row_bytes(self) -> int:
        return self.array.itemsize * int(np.prod(self.array.shape[1:], dtype=np.int64))


def open_npy(path: str | os.PathLike) -> np.memmap:
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
        raise TypeError(f"{what} has dtype {np_dtype}, which holds Python objects; "
                        "only fixed-size numeric dtypes can be loaded")
    if not np_dtype.isnative:
        raise TypeError(f"{what} has non-native byte order ({np_dtype}); "
                        "convert it with a.astype(a.dtype.newbyteorder('='))")
    try:
        return torch.from_numpy(np.empty(0, dtype=np_dtype)).dtype
    except TypeError:
        raise TypeError(f"{what} has dtype {np_dtype}, which torch tensors cannot hold") from None


def _file_backing(array: np.ndarray) -> tuple[str | None, int]:
    mapped = array
    while mapped is not None and not isinstance(mapped, np.memmap):
        mapped = mapped.base if isinstance(mapped.base, np.ndarray) else None
    if mapped is None or getattr(mapped, "filename", None) is None:
        return None, 0
    return mapped.filename, int(mapped.offset) + mapped.nbytes


def column_from(value: Any, what: str) -> Column:
    """Validates one user input and describes it as a Column; raises TypeError/ValueError."""
    if isinstance(value, (str, os.PathLike)):
        value = open_npy(value)
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            raise ValueError(f"{what} is a tensor on {value.device}; ArrayDataset gathers "
                             "on the CPU (move it with .cpu(), or keep TensorDataset)")
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
        raise TypeError(f"{what} must be a numpy array, a memmap, a CPU tensor or a path to "
                        f"a .npy file, not {type(value).__name__}")
    try:
        _core.check_column(array)
    except ValueError as error:
        raise ValueError(f"{what}: {error}") from None
    file, file_bytes = _file_backing(array)
    return Column(array=array, dtype=dtype, needs_view=needs_view, file=file, file_bytes=file_bytes)


def check_files_intact(columns: list[Column]) -> None:
    """Raises OSError if a mapped file is gone or shorter than its mapping (reading it
    would SIGBUS)."""
    for column in columns:
        if column.file is None:
            continue
        try:
            size = os.stat(column.file).st_size
        except OSError as error:
            raise OSError(error.errno, f"memory-mapped file {column.file!r} is no longer accessible: "
                          f"{error.strerror}", column.file) from None
        if size < column.file_bytes:
            raise OSError(errno.EIO, f"memory-mapped file {column.file!r} shrank to {size} bytes while "
                          f"mapped ({column.file_bytes} needed); refusing to read past its end", column.file)
