"""Arrow columns as native column pieces, without copying their data.

An Arrow array is a values buffer, plus an offsets buffer for the list types: the
layouts the core already gathers. Fixed-width columns (numbers, bools, fixed-size
lists of them) become one Column piece per record batch, a view of that batch's buffer.
List columns become records. Those whose record batches lie in a memory-mapped file
become one piece per file, in the pointer layout over a read-only map of the whole
file: a table of a million rows is a thousand record batches, and one piece per file
keeps the per-batch work and the descriptors for explicit reads to one per file. Lists
held in memory become one piece per record batch.

What a batch carries depends on who defines the samples (`Delivery`): an
``ArrowDataset`` delivers each column's own dtype; a Hugging Face dataset delivers
what its format (``"torch"``, ``"numpy"`` or none) would give. A column that cannot be
delivered identically raises `NotNative` with the reason; data that is wrong (corrupt
list offsets) raises ValueError. Nulls are `NotNative` unless a fill value is given;
a filled column is copied into memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import _core
from .columns import Column, PiecedColumn, RecordsColumn, column_from, records_column
from .mapped_regions import FileRegion, MappedRegions


class NotNative(Exception):
    """A column the native path cannot deliver as the dataset's own path would."""


@dataclass(frozen=True)
class Delivery:
    """What a sample holds for a column of a given numpy dtype.

    ``"arrow"``: the column's own dtype. ``"torch"``: as ``datasets``' torch format
    (integers as int64, floats as float32, bools as bool). ``"numpy"``: as its numpy
    format, which converts alike, fixed-width columns only (torch's default collate
    cannot stack numpy records of different lengths). ``"python"``: as ``datasets``
    without a format, Python scalars collated by torch (int64, float64, bool), scalar
    columns only.
    """

    format: str

    def dtypes(
        self, dtype: np.dtype, ragged: bool, row_shape: tuple[int, ...], what: str
    ) -> tuple[torch.dtype, np.dtype | None]:
        """(torch dtype of the delivered values, integer dtype the gather converts to or
        None); raises NotNative."""
        own = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
        if self.format == "arrow":
            return own, None
        if self.format == "numpy" and ragged:
            raise NotNative(f"{what} holds lists, which the numpy format gives as arrays torch cannot collate")
        if self.format == "numpy" and dtype.kind == "b" and not row_shape:
            # numpy bool scalars: torch's default collate takes them from torch 2.7 on only.
            raise NotNative(f"{what} holds bools, which the numpy format gives as numpy scalars (torch's path decides)")
        if self.format == "python" and (ragged or row_shape):
            raise NotNative(f"{what} holds lists, which datasets without a format gives as Python lists")
        if dtype.kind in "iu":
            if dtype == np.uint64:
                raise NotNative(f"{what} holds uint64, which datasets converts to int64 with wrap-around")
            return torch.int64, (None if dtype == np.int64 else np.dtype(np.int64))
        if dtype.kind == "b":
            return torch.bool, None
        wanted = np.dtype(np.float64 if self.format == "python" else np.float32)
        if dtype == wanted:
            return own, None
        if dtype.itemsize < 4:  # the gather converts float32 and float64 only
            raise NotNative(f"{what} holds {dtype}, which datasets delivers as {wanted}")
        return torch.from_numpy(np.empty(0, dtype=wanted)).dtype, wanted


def _layout(arrow_type: Any) -> tuple[bool, np.dtype, tuple[int, ...]] | None:
    """(is a list, element dtype, row shape) of a natively readable Arrow type, or None."""
    import pyarrow as pa

    ragged = pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)
    element = arrow_type.value_type if ragged else arrow_type
    shape = []
    while pa.types.is_fixed_size_list(element):
        shape.append(element.list_size)
        element = element.value_type
    if not (pa.types.is_integer(element) or pa.types.is_floating(element) or pa.types.is_boolean(element)):
        return None
    return ragged, np.dtype(element.to_pandas_dtype()), tuple(shape)


def _flattened(array: Any, levels: int, fill: Any, what: str) -> Any:
    """The leaf values of `levels` nested fixed-size lists (each level's slicing
    honoured), their nulls replaced by `fill`; NotNative for nulls without a fill."""
    for _ in range(levels):
        if array.null_count:
            raise NotNative(f"{what} has nulls inside its fixed-size lists")
        array = array.flatten()
    if array.null_count:
        if fill is None:
            raise NotNative(f"{what} holds nulls (ArrowDataset's fill_values= can replace them)")
        array = _filled(array, fill, what)
    return array


def _numpy(array: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A read-only numpy view of a null-free primitive array (bools, bit-packed in Arrow,
    are unpacked into a copy)."""
    import pyarrow as pa

    zero_copy = not pa.types.is_boolean(array.type)
    values = array.to_numpy(zero_copy_only=zero_copy)
    if not zero_copy:
        values.setflags(write=False)
    return values.reshape((-1, *shape))


def _filled(chunk: Any, fill: Any, what: str) -> Any:
    import pyarrow.compute as pc

    try:
        return pc.fill_null(chunk, fill)
    except Exception as error:  # pyarrow's own errors: an unusable fill value
        raise ValueError(f"{what}: cannot fill its nulls with {fill!r}: {error}") from None


class _ColumnBuilder:
    """Builds the pieces of one Arrow column (a ChunkedArray)."""

    def __init__(self, delivery: Delivery, fill: Any, regions: MappedRegions, what: str) -> None:
        self.delivery = delivery
        self.fill = fill
        self.regions = regions
        self.what = what

    def build(self, chunked: Any) -> PiecedColumn:
        import pyarrow as pa

        try:
            return self._build(chunked)
        except pa.ArrowException as error:  # anything pyarrow cannot hand over as buffers
            raise NotNative(f"{self.what} cannot be read natively: {error}") from None

    def _build(self, chunked: Any) -> PiecedColumn:
        layout = _layout(chunked.type)
        if layout is None:
            raise NotNative(f"{self.what} is of Arrow type {chunked.type}, which the native path does not read")
        ragged, dtype, shape = layout
        out_dtype, cast = self.delivery.dtypes(dtype, ragged, shape, self.what)
        chunks = [chunk for chunk in chunked.chunks if len(chunk)]
        if not chunks:  # no rows: one empty piece, which still carries the column's dtype
            empty = np.empty((0, *shape), dtype=dtype)
            if ragged:
                return PiecedColumn([self._records_piece(empty, np.zeros(1, np.int64), out_dtype, cast)])
            return PiecedColumn([self._fixed_piece(empty, out_dtype, cast, None)])
        if ragged:
            return PiecedColumn(self._records_pieces(chunks, dtype, shape, out_dtype, cast))
        return PiecedColumn([self._fixed_chunk(chunk, shape, out_dtype, cast) for chunk in chunks])

    # Fixed-width columns: one view per record batch.

    def _fixed_chunk(self, chunk: Any, shape: tuple[int, ...], out_dtype: torch.dtype, cast: np.dtype | None) -> Column:
        if chunk.null_count:
            chunk = self._without_nulls(chunk)
        values = _numpy(_flattened(chunk, len(shape), self.fill, self.what), shape)
        return self._fixed_piece(values, out_dtype, cast, self._region(values))

    def _fixed_piece(
        self, values: np.ndarray, out_dtype: torch.dtype, cast: np.dtype | None, region: FileRegion | None
    ) -> Column:
        try:
            _core.check_column(values)
        except ValueError as error:
            raise ValueError(f"{self.what}: {error}") from None
        return Column(
            array=values,
            dtype=out_dtype,
            needs_view=False,
            # Read through the reader's mapping (no descriptor is kept per record batch);
            # the file is named for truncation checks and read-ahead.
            file=None if region is None else region.path,
            file_bytes=0 if region is None else region.offset + values.nbytes,
            cast=cast,
            file_offset=None if region is None else region.offset,
        )

    # Lists: one piece per file in the pointer layout, or per record batch in memory.

    def _records_pieces(
        self, chunks: list, dtype: np.dtype, shape: tuple[int, ...], out_dtype: torch.dtype, cast: np.dtype | None
    ) -> list[RecordsColumn]:
        row_bytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        pieces: list[RecordsColumn] = []
        run: list[tuple[np.ndarray, FileRegion]] = []  # (offsets, where its values lie), all in one file

        def end_run() -> None:
            if run:
                pieces.append(self._file_piece(run, dtype, shape, out_dtype, cast))
                run.clear()

        for index, chunk in enumerate(chunks):
            offsets, values = self._list_parts(chunk, shape, index)
            if values.nbytes == 0 and run:  # empty records only: they lie anywhere
                run.append((np.zeros_like(offsets), run[-1][1]))
                continue
            region = self._region(values)
            if region is None or region.offset % row_bytes:
                end_run()
                pieces.append(self._records_piece(values, offsets.astype(np.int64), out_dtype, cast))
                continue
            if run and (run[0][1].path, run[0][1].identity) != (region.path, region.identity):
                end_run()
            run.append((offsets, region))
        end_run()
        return pieces

    def _list_parts(self, chunk: Any, shape: tuple[int, ...], index: int) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, values) of one list array; offsets checked against the values."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if chunk.null_count or chunk.values.null_count:
            if self.fill is None:
                self._without_nulls(chunk)  # raises
            # Null records become empty ones; null values take the fill value. In memory.
            lengths = pc.fill_null(pc.list_value_length(chunk), 0).to_numpy(zero_copy_only=False)
            child = pc.list_flatten(chunk)
            if child.null_count:
                child = _filled(child, self.fill, self.what)
            offsets = np.zeros(len(chunk) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
        else:
            offsets = np.asarray(chunk.offsets)
            child = chunk.values
            if isinstance(child, pa.ChunkedArray):  # pragma: no cover - pyarrow gives arrays
                child = child.combine_chunks()
        values = _numpy(_flattened(child, len(shape), self.fill, self.what), shape)
        if offsets.size and (
            offsets[0] < 0 or offsets[-1] > len(values) or (offsets.size > 1 and np.any(offsets[1:] < offsets[:-1]))
        ):
            raise ValueError(
                f"{self.what}: the list offsets of record batch #{index} are corrupt "
                f"(they must rise from 0 or more to at most {len(values)}, the values it holds)"
            )
        return offsets, values

    def _records_piece(
        self, values: np.ndarray, offsets: np.ndarray, out_dtype: torch.dtype, cast: np.dtype | None
    ) -> RecordsColumn:
        column = column_from(values, f"{self.what} values")
        return records_column(column, dtype=out_dtype, cast=cast, what=self.what, offsets=offsets)

    def _file_piece(
        self,
        run: list[tuple[np.ndarray, FileRegion]],
        dtype: np.dtype,
        shape: tuple[int, ...],
        out_dtype: torch.dtype,
        cast: np.dtype | None,
    ) -> RecordsColumn:
        """Records of consecutive record batches of one file, over a map of the file."""
        path, identity = run[0][1].path, run[0][1].identity
        row_bytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        size = os.stat(path).st_size
        file_values = np.memmap(path, dtype=dtype, mode="r", shape=(size // row_bytes, *shape))
        pointers = np.concatenate(
            [region.offset + offsets[:-1].astype(np.int64) * row_bytes for offsets, region in run]
        )
        lengths = np.concatenate([np.diff(offsets.astype(np.int64)) for offsets, _ in run])
        if lengths.size and int(lengths.max()) > np.iinfo(np.int32).max:
            raise ValueError(f"{self.what} has a record of more than 2**31 - 1 values, which pyloader cannot read")
        lengths = lengths.astype(np.int32)
        column = column_from(file_values, f"{self.what} values")
        if column.file_identity != identity:
            raise NotNative(f"{self.what}: {path!r} was replaced while being opened")
        return records_column(
            column,
            dtype=out_dtype,
            cast=cast,
            what=self.what,
            pointers=pointers,
            lengths=lengths,
            context=f" (in {path!r})",
        )

    def _without_nulls(self, chunk: Any) -> Any:
        if self.fill is None:
            raise NotNative(f"{self.what} holds nulls (ArrowDataset's fill_values= can replace them)")
        return _filled(chunk, self.fill, self.what)

    def _region(self, values: np.ndarray) -> FileRegion | None:
        if values.nbytes == 0 or not values.flags.c_contiguous:
            return None
        return self.regions.locate(values.__array_interface__["data"][0], values.nbytes)


def pieced_columns(
    table: Any, names: list[str], delivery: Delivery, fill_values: dict[str, Any] | None, label: str
) -> list[PiecedColumn]:
    """One PiecedColumn per name of `table` (a pyarrow Table); raises NotNative,
    KeyError for a name the table lacks, ValueError for corrupt data."""
    regions = MappedRegions()
    fill_values = fill_values or {}
    columns = []
    for name in names:
        if name not in table.column_names:
            raise KeyError(f"{label} has no column {name!r}; its columns are {table.column_names}")
        what = f"column {name!r} of {label}"
        builder = _ColumnBuilder(delivery, fill_values.get(name), regions, what)
        columns.append(builder.build(table.column(name)))
    return columns
