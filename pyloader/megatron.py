"""Megatron-LM indexed datasets (``PREFIX.bin`` + ``PREFIX.idx``) as pyloader datasets.

``MegatronDataset(prefix)`` serves the sequences (or, with ``unit="document"``, the
documents) as variable-length token records, natively gathered and padded by
:class:`pyloader.PadCollate`; ``TokenWindows.from_megatron(prefix, block_size)`` cuts
fixed windows from the token stream. Both read the files memory-mapped; the format
and its checks are described in ``_native/megatron_format.py``.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ._native.columns import PiecedColumn
from ._native.megatron_format import MegatronIndex, read_megatron_index
from .dataset import ArrayDataset
from .records import _records_piece, pointer_records


class MegatronDataset(ArrayDataset):
    """The records of a Megatron-LM indexed dataset: ``ds[i]`` is sequence ``i`` (or
    document ``i`` with ``unit="document"``) as a 1-D tensor of ``dtype`` (``torch.int64``
    by default; ``None`` keeps the file's token dtype)."""

    def __init__(
        self, path_prefix: str | os.PathLike, *, unit: str = "sequence", dtype: torch.dtype | None = torch.int64
    ) -> None:
        if unit not in ("sequence", "document"):
            raise ValueError(f"unit must be 'sequence' or 'document', not {unit!r}")
        index = read_megatron_index(path_prefix)
        if dtype is not None and index.dtype.kind not in "iu":
            raise TypeError(f"{index.bin_path!r} holds {index.dtype} tokens; pass dtype=None to keep them")
        self.index: MegatronIndex = index
        self.unit = unit
        mapped = [(index.idx_path, os.path.getsize(index.idx_path))]
        what = f"Megatron dataset {index.prefix!r}"
        if unit == "sequence":
            piece = pointer_records(
                index.tokens,
                np.asarray(index.sequence_pointers),
                np.asarray(index.sequence_lengths),
                dtype,
                what,
                mapped,
            )
        else:
            if not index.contiguous():
                raise ValueError(
                    f"{index.idx_path!r}: its sequences are not laid out back to back, so its "
                    "documents are not runs of tokens; use unit='sequence'"
                )
            piece = _records_piece(index.tokens, _document_offsets(index), dtype, what)
        # ArrayDataset gathers native columns too; its annotation names the public kinds.
        super().__init__(PiecedColumn([piece]))
        self.bare = True

    def __repr__(self) -> str:
        return (
            f"MegatronDataset({self.index.prefix!r}: {len(self)} {self.unit}s of {self.index.dtype} tokens, "
            f"{len(self.index.tokens)} tokens)"
        )


def _document_offsets(index: MegatronIndex) -> np.ndarray:
    """CSR offsets (in tokens) of the documents of a contiguous index: O(documents)."""
    itemsize = index.dtype.itemsize
    end = 0
    if index.sequences:
        end = int(index.sequence_pointers[-1]) + int(index.sequence_lengths[-1]) * itemsize
    starts = np.append(np.asarray(index.sequence_pointers, dtype=np.int64), np.int64(end))
    return np.ascontiguousarray(starts[np.asarray(index.document_indices)] // itemsize, dtype=np.int64)
