"""Write Megatron-LM indexed datasets (``PREFIX.bin`` + ``PREFIX.idx``) for tests.

:func:`write_megatron` produces the bytes Megatron-LM's ``IndexedDatasetBuilder`` would for
the same documents: the ``.bin`` is the sequences' tokens back to back; the ``.idx`` is the
packed little-endian header (magic, version 1, dtype code, sequence count, count of
document_indices) followed by int32 lengths, int64 byte pointers and int64 document_indices
(a leading 0, then the running sequence count after each document).

:func:`write_corrupted` writes the same pair with chosen fields or bytes replaced, for the
reader's error paths. The format tables are kept apart from the reader's on purpose, so that
a mistake in one shows up as a failing test rather than agreeing with itself.
"""

from __future__ import annotations

import os
import struct

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
DTYPE_CODES = {
    np.dtype(np.uint8): 1,
    np.dtype(np.int8): 2,
    np.dtype(np.int16): 3,
    np.dtype(np.int32): 4,
    np.dtype(np.int64): 5,
    np.dtype(np.float64): 6,
    np.dtype(np.float32): 7,
    np.dtype(np.uint16): 8,
}


def _layout(documents, dtype):
    """The sequences cast to ``dtype``, their lengths, byte pointers and document_indices."""
    dtype = np.dtype(dtype)
    if dtype not in DTYPE_CODES:
        raise ValueError(f"Megatron has no code for dtype {dtype}")
    sequences, document_indices = [], [0]
    for document in documents:
        for sequence in document:
            values = np.asarray(sequence)
            if values.ndim != 1:
                raise ValueError(f"a sequence must be 1-D, got shape {values.shape}")
            cast = values.astype(dtype)
            # The builder casts silently; a test that meant other values should hear about it.
            if not np.array_equal(cast, values):
                raise ValueError(f"sequence values do not fit {dtype}: {values!r}")
            sequences.append(cast)
        document_indices.append(len(sequences))
    lengths = [len(s) for s in sequences]
    pointers, offset = [], 0
    for length in lengths:
        pointers.append(offset)
        offset += length * dtype.itemsize
    return dtype, sequences, lengths, pointers, document_indices


def idx_bytes(
    *,
    dtype_code,
    sequence_lengths,
    sequence_pointers,
    document_indices,
    magic=MAGIC,
    version=1,
    sequence_count=None,
    document_count=None,
):
    """An ``.idx`` file's bytes; the counts default to the arrays' lengths."""
    if sequence_count is None:
        sequence_count = len(sequence_lengths)
    if document_count is None:
        document_count = len(document_indices)
    return b"".join(
        [
            magic,
            struct.pack("<Q", version),
            struct.pack("<B", dtype_code),
            struct.pack("<Q", sequence_count),
            struct.pack("<Q", document_count),
            np.asarray(sequence_lengths, dtype="<i4").tobytes(),
            np.asarray(sequence_pointers, dtype="<i8").tobytes(),
            np.asarray(document_indices, dtype="<i8").tobytes(),
        ]
    )


def write_megatron(prefix, documents, dtype=np.uint16):
    """Write ``PREFIX.bin`` and ``PREFIX.idx`` holding ``documents`` (lists of 1-D arrays).

    Returns the prefix as a string.
    """
    return write_corrupted(prefix, documents, dtype)


def write_corrupted(
    prefix,
    documents,
    dtype=np.uint16,
    *,
    idx_cut=0,
    idx_extra=b"",
    bin_cut=0,
    bin_extra=b"",
    **fields,
):
    """Like :func:`write_megatron`, with ``fields`` overriding :func:`idx_bytes` arguments.

    ``idx_cut``/``bin_cut`` drop that many bytes from the end of a file and
    ``idx_extra``/``bin_extra`` append bytes to it. With no overrides the pair is valid.
    """
    prefix = os.fspath(prefix)
    dtype, sequences, lengths, pointers, document_indices = _layout(documents, dtype)
    arguments = dict(
        dtype_code=DTYPE_CODES[dtype],
        sequence_lengths=lengths,
        sequence_pointers=pointers,
        document_indices=document_indices,
    )
    unknown = set(fields) - {
        "dtype_code",
        "sequence_lengths",
        "sequence_pointers",
        "document_indices",
        "magic",
        "version",
        "sequence_count",
        "document_count",
    }
    if unknown:
        raise TypeError(f"unknown .idx fields: {sorted(unknown)}")
    arguments.update(fields)
    index = idx_bytes(**arguments)
    data = b"".join(s.astype(dtype.newbyteorder("<")).tobytes() for s in sequences)
    with open(prefix + ".idx", "wb") as stream:
        stream.write(index[: len(index) - idx_cut] + idx_extra)
    with open(prefix + ".bin", "wb") as stream:
        stream.write(data[: len(data) - bin_cut] + bin_extra)
    return prefix
