"""Variable-length records: a values array cut into records by offsets.

``Records(values, offsets)`` is the CSR layout that text, audio and detection data
use: record ``i`` is ``values[offsets[i]:offsets[i + 1]]`` (rows of the values array,
so a record of audio frames with 80 features is ``(length, 80)``). ``RaggedDataset``
serves such records as samples; :class:`PadCollate` pads a batch of them, and in a
:class:`pyloader.DataLoader` it runs in the native core (the records are copied
straight into the padded batch). Any other ``collate_fn`` receives exactly the list of
sample tensors torch's fetcher would build.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import default_collate

from ._native.columns import PiecedColumn, RecordsColumn, column_from, file_backing, open_npy, records_column
from .dataset import ArrayDataset


def _values_cast(column, dtype, what: str) -> np.dtype | None:
    """The dtype the gather converts `column`'s values to for `dtype=`, or None."""
    cast = _integer_target(dtype, what)
    if cast is not None and column.array.dtype.kind not in "iu":
        raise TypeError(f"{what}: dtype= converts integer values; these are {column.array.dtype}")
    return cast


def _integer_target(dtype, what: str) -> np.dtype | None:
    """The numpy dtype the gather converts integers to for `dtype=`, or None."""
    if dtype is None:
        return None
    targets: dict[torch.dtype, np.dtype] = {torch.int64: np.dtype(np.int64), torch.int32: np.dtype(np.int32)}
    target = targets.get(dtype)
    if target is None:
        raise TypeError(f"{what}: dtype= converts integer records to torch.int64 or torch.int32, not {dtype}")
    return target


def _offsets_array(value, what: str) -> np.ndarray:
    if isinstance(value, (str, os.PathLike)):
        value = open_npy(value)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except (TypeError, ValueError):
            raise TypeError(f"{what} must be an integer array, not {type(value).__name__}") from None
    if value.dtype.kind not in "iu" or value.dtype == np.bool_:
        raise TypeError(f"{what} must hold integers, not {value.dtype}")
    if value.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional (records + 1 entries), not of shape {value.shape}")
    if value.size == 0:
        raise ValueError(f"{what} is empty; it needs records + 1 entries, starting with 0 for no records")
    if value.dtype.kind == "u" and value.dtype.itemsize == 8 and value.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{what} holds offsets beyond int64")
    if value.dtype != np.int64 or not value.dtype.isnative or not value.flags.c_contiguous:
        value = np.ascontiguousarray(value, dtype=np.int64)  # once, at construction
    return value


def _describe(value, fallback: str) -> str:
    return repr(os.fspath(value)) if isinstance(value, (str, os.PathLike)) else fallback


class Records:
    """A column of variable-length records for :class:`pyloader.ArrayDataset`.

    ``values``: array, memmap, CPU tensor or ``.npy`` path; ``offsets``: integer array
    or ``.npy`` path with one entry per record plus one, non-decreasing, within the
    values. Or lists of both, one pair per shard, read as one column of records.
    ``dtype=torch.int64`` (or ``torch.int32``) converts integer values on the way out,
    e.g. uint16 tokens to the int64 an embedding takes. Offsets are checked once here.
    Read-only int64 offsets (a memory-mapped ``.npy``) are used in place and each span
    is checked again as it is read; writeable or other integer offsets are copied once,
    so a later change to the caller's array cannot reach the loader.
    """

    def __init__(self, values, offsets, *, dtype: torch.dtype | None = None) -> None:
        sharded = isinstance(values, (list, tuple))
        if sharded != isinstance(offsets, (list, tuple)):
            raise TypeError("give values and offsets both as lists (one pair per shard) or both as arrays")
        self._values = list(values) if sharded else [values]
        self._offsets = list(offsets) if sharded else [offsets]
        if len(self._values) != len(self._offsets):
            raise ValueError(f"{len(self._values)} values shards but {len(self._offsets)} offsets shards")
        if not self._values:
            raise ValueError("Records needs at least one shard")
        self._dtype = dtype
        self._built: dict[str, PiecedColumn] = {}
        # Built now, so that bad input fails at construction, naming the file.
        self._records_column("records")

    def _records_column(self, what: str) -> PiecedColumn:
        if "column" not in self._built:
            pieces = []
            for k, (values, offsets) in enumerate(zip(self._values, self._offsets)):
                label = f"{what}, shard #{k}" if len(self._values) > 1 else what
                pieces.append(_records_piece(values, offsets, self._dtype, label))
            first = pieces[0]
            for k, piece in enumerate(pieces[1:], start=1):
                if piece.array.dtype != first.array.dtype or piece.array.shape[1:] != first.array.shape[1:]:
                    raise ValueError(
                        f"{what}: shard {_describe(self._values[k], f'#{k}')} holds "
                        f"{piece.array.dtype} values of row shape {piece.array.shape[1:]}, shard "
                        f"{_describe(self._values[0], '#0')} {first.array.dtype} of "
                        f"{first.array.shape[1:]}; shards must share dtype and row shape"
                    )
            self._built["column"] = PiecedColumn(pieces)
        return self._built["column"]


def _records_piece(values, offsets, dtype, what: str) -> RecordsColumn:
    label = f"{what} ({_describe(values, 'values')})"
    column = column_from(values, f"{label} values")
    if column.needs_view:
        raise TypeError(f"{label}: values of dtype {column.dtype} cannot be records")
    cast = _values_cast(column, dtype, label)
    offsets_array = _offsets_array(offsets, f"{what} offsets ({_describe(offsets, 'array')})")
    offsets_file, offsets_bytes = file_backing(offsets_array)
    return records_column(
        column,
        dtype=column.dtype if cast is None else dtype,
        cast=cast,
        what=what,
        offsets=offsets_array,
        mapped=[] if offsets_file is None else [(offsets_file, offsets_bytes)],
        context=f" (values {_describe(values, 'array')}, offsets {_describe(offsets, 'array')})",
    )


def pointer_records(
    values: np.ndarray, pointers: np.ndarray, lengths: np.ndarray, dtype, what: str, mapped: list
) -> RecordsColumn:
    """Records given by byte pointers into `values` and lengths in rows (the Megatron
    layout), checked once by the core."""
    column = column_from(values, f"{what} values")
    cast = _values_cast(column, dtype, what)
    return records_column(
        column,
        dtype=column.dtype if cast is None else dtype,
        cast=cast,
        what=what,
        pointers=pointers,
        lengths=lengths,
        mapped=mapped,
    )


class RaggedDataset(ArrayDataset):
    """Variable-length records as samples: ``ds[i]`` is the tensor
    ``values[offsets[i]:offsets[i + 1]]`` (converted to ``dtype`` when given).

    ``RaggedDataset(values, offsets)`` for one pair, or lists of pairs (shards). For
    records with other columns (labels, ids) use ``ArrayDataset(tokens=Records(...),
    label=labels)``.
    """

    def __init__(self, values, offsets, *, dtype: torch.dtype | None = None) -> None:
        super().__init__(Records(values, offsets, dtype=dtype))
        self.bare = True


class PaddedBatch(NamedTuple):
    """A padded batch of variable-length records."""

    padded: torch.Tensor  # (batch, width, *row shape)
    lengths: torch.Tensor  # int64 (batch,): real rows of each record (after truncation)
    mask: torch.Tensor | None  # bool (batch, width): True at real rows; None unless asked


class PadCollate:
    """A ``collate_fn`` that pads variable-length tensors into a :class:`PaddedBatch`.

    Each sample may be a tensor, or a tuple/list/dict of fields: fields whose tensors
    have at least one dimension are padded along it, the rest are collated as torch's
    ``default_collate`` does. ``padding_value`` is one value for every field, or a
    mapping from field (a dict key, or a position in tuple samples) to its value, e.g.
    ``{"input_ids": pad_id, "labels": -100}`` (fields it does not name are padded with
    0). ``max_length`` truncates longer records to their first ``max_length`` rows; the
    width is rounded up to ``pad_to_multiple_of``; ``padding_side`` is ``"right"`` or
    ``"left"``; ``return_mask`` adds a bool mask.

    Works as a ``collate_fn`` of any loader; in a :class:`pyloader.DataLoader` over a
    ``RaggedDataset`` (or an ``ArrayDataset`` whose multi-dimensional columns are all
    ``Records``) the padding is done by the native gather.
    """

    def __init__(
        self,
        padding_value: float | Mapping[Any, float] = 0,
        *,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str = "right",
        return_mask: bool = False,
    ) -> None:
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', not {padding_side!r}")
        for name, value in (("max_length", max_length), ("pad_to_multiple_of", pad_to_multiple_of)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
        if isinstance(padding_value, Mapping):
            padding_value = dict(padding_value)
        self.padding_value = padding_value
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padding_side = padding_side
        self.return_mask = return_mask

    def __repr__(self) -> str:
        return (
            f"PadCollate(padding_value={self.padding_value!r}, max_length={self.max_length!r}, "
            f"pad_to_multiple_of={self.pad_to_multiple_of!r}, padding_side={self.padding_side!r}, "
            f"return_mask={self.return_mask!r})"
        )

    def __call__(self, batch: Sequence[Any]):
        elem = batch[0]
        if isinstance(elem, torch.Tensor):
            return self._field(list(batch), None)
        if isinstance(elem, Mapping):
            return {key: self._field([sample[key] for sample in batch], key) for key in elem}
        if isinstance(elem, (tuple, list)):
            return [self._field(list(field), position) for position, field in enumerate(zip(*batch))]
        return default_collate(list(batch))

    def value_for(self, field) -> float:
        """The padding value of `field` (a dict key or tuple position; None for bare samples)."""
        if isinstance(self.padding_value, dict):
            return self.padding_value.get(field, 0)
        return self.padding_value

    def _field(self, values: list, field):
        if all(isinstance(value, torch.Tensor) and value.dim() >= 1 for value in values):
            return self.pad(values, field)
        return default_collate(values)

    def pad(self, tensors: list[torch.Tensor], field=None) -> PaddedBatch:
        """Pads a list of tensors of shape (length_i, *row shape), with the padding
        value of `field`."""
        padding_value = self.value_for(field)
        if self.max_length is not None:
            tensors = [tensor[: self.max_length] for tensor in tensors]
        lengths = torch.tensor([len(tensor) for tensor in tensors], dtype=torch.int64)
        padded = pad_sequence(tensors, batch_first=True, padding_value=padding_value, padding_side=self.padding_side)
        width = padded.shape[1]
        if self.pad_to_multiple_of is not None and width % self.pad_to_multiple_of:
            extra = self.pad_to_multiple_of - width % self.pad_to_multiple_of
            filler = padded.new_full((padded.shape[0], extra, *padded.shape[2:]), padding_value)
            parts = (filler, padded) if self.padding_side == "left" else (padded, filler)
            padded = torch.cat(parts, dim=1)
            width += extra
        mask = None
        if self.return_mask:
            positions = torch.arange(width)
            if self.padding_side == "left":
                mask = positions[None, :] >= (width - lengths)[:, None]
            else:
                mask = positions[None, :] < lengths[:, None]
        return PaddedBatch(padded, lengths, mask)

    def native_padding(self, dtype: np.dtype, field=None) -> dict | None:
        """The core's padding options for records of `dtype` in `field`, or None when
        its value does not fit that dtype exactly (then the Python implementation decides)."""
        padding_value = self.value_for(field)
        try:
            value = np.array(padding_value, dtype=dtype)
        except (OverflowError, ValueError, TypeError):
            return None
        if value.item() != padding_value or dtype.itemsize > 8:
            return None
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of > 1 << 32:
            return None  # beyond any batch the core builds: torch's code reports the overflow
        return {
            "max_length": self.max_length or 0,
            "multiple": self.pad_to_multiple_of or 1,
            "left": self.padding_side == "left",
            "mask": self.return_mask,
            "value": value.tobytes(),
        }
