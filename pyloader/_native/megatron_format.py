"""Read Megatron-LM indexed datasets: a ``.bin`` of tokens and the ``.idx`` that indexes it.

A dataset is a pair of files sharing a prefix. ``PREFIX.bin`` is the raw concatenation of
every sequence's tokens, all of one dtype, with no header. ``PREFIX.idx`` is, little-endian
and without padding or alignment:

=======  ==================  ===================================================
offset   type                meaning
=======  ==================  ===================================================
0        9 bytes             magic ``b"MMIDIDX\\x00\\x00"``
9        uint64              version, always 1
17       uint8               token dtype code: 1 uint8, 2 int8, 3 int16, 4 int32,
                             5 int64, 6 float64, 7 float32, 8 uint16
18       uint64              S, the number of sequences
26       uint64              D, the number of entries of document_indices
34       int32[S]            sequence_lengths, in tokens
34+4S    int64[S]            sequence_pointers, byte offsets into the ``.bin``
34+12S   int64[D]            document_indices: document ``k`` is sequences
                             ``[document_indices[k], document_indices[k+1])``,
                             so the first entry is 0, the last is S and there
                             are D - 1 documents
=======  ==================  ===================================================

Megatron's multimodal variant appends int8 ``sequence_modes[S]`` to the ``.idx``. Nothing in
the header marks it (Megatron's reader must be told), so an ``.idx`` exactly S bytes longer
than its counts say is refused with a message that names that variant, as any other size
mismatch is.

Contract of :func:`read_megatron_index`: it maps both files read-only and copies nothing, so
opening costs O(1) memory whatever the size. It checks everything a reader could trip on (the
header, the file sizes, every sequence's span inside the ``.bin``, the document boundaries)
in O(S + D) vectorised passes over bounded chunks, and reports the first problem as a
``ValueError`` that names the file and what is wrong; a missing file is a
``FileNotFoundError``. A :class:`MegatronIndex` that comes back can therefore be sliced by
its pointers and lengths without further bounds checks.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MegatronIndex", "read_megatron_index"]

_MAGIC = b"MMIDIDX\x00\x00"
_VERSION = 1
_HEADER = struct.Struct("<9sQBQQ")  # "<": packed, so 34 bytes, as Megatron writes it
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("u1"),
    2: np.dtype("i1"),
    3: np.dtype("<i2"),
    4: np.dtype("<i4"),
    5: np.dtype("<i8"),
    6: np.dtype("<f8"),
    7: np.dtype("<f4"),
    8: np.dtype("<u2"),
}
_LENGTH = np.dtype("<i4")
_OFFSET = np.dtype("<i8")

# Entries per vectorised step: large enough that the Python loop is noise, small enough that
# the temporaries (a few arrays of this many int64s) stay at tens of MiB for any file size.
_CHUNK = 1 << 20


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarray fields has no single truth value
class MegatronIndex:
    """An opened, validated Megatron indexed dataset; the arrays are read-only file views.

    Sequence ``i`` is ``tokens[sequence_pointers[i] // dtype.itemsize:][:sequence_lengths[i]]``.
    """

    prefix: str
    bin_path: str
    idx_path: str
    dtype: np.dtype
    sequence_lengths: np.ndarray = field(repr=False)
    sequence_pointers: np.ndarray = field(repr=False)
    document_indices: np.ndarray = field(repr=False)
    tokens: np.ndarray = field(repr=False)

    @property
    def sequences(self) -> int:
        return len(self.sequence_lengths)

    @property
    def documents(self) -> int:
        return len(self.document_indices) - 1

    def contiguous(self) -> bool:
        """Whether the sequences lie back to back from byte 0 of the ``.bin``, in index order.

        Megatron's builder always writes them so; a merged or hand-made index need not. When
        true, the first ``sum(sequence_lengths)`` tokens are exactly the sequences in order.
        Bytes after the last sequence do not matter.
        """
        count = self.sequences
        if count == 0:
            return True
        if int(self.sequence_pointers[0]) != 0:
            return False
        itemsize = self.dtype.itemsize
        # Each step compares pointers[start+1 : stop+1] with the ends of [start, stop): the
        # one-entry overlap carries the comparison across chunk boundaries.
        for start in range(0, count - 1, _CHUNK):
            stop = min(start + _CHUNK, count - 1)
            pointers = self.sequence_pointers[start : stop + 1]
            ends = pointers[:-1] + self.sequence_lengths[start:stop].astype(np.int64) * itemsize
            if not np.array_equal(pointers[1:], ends):
                return False
        return True


def read_megatron_index(path_prefix: str | os.PathLike) -> MegatronIndex:
    """Open and validate ``PREFIX.idx`` and ``PREFIX.bin``.

    ``path_prefix`` may name either file (a trailing ``.bin`` or ``.idx`` is dropped) or the
    prefix itself.
    """
    prefix = os.fsdecode(os.fspath(path_prefix))
    if prefix.endswith((".bin", ".idx")):
        prefix = prefix[: -len(".bin")]
    idx_path, bin_path = prefix + ".idx", prefix + ".bin"
    for path in (idx_path, bin_path):
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "Megatron indexed dataset file not found", path)
        if not os.path.isfile(path):
            raise ValueError(f"{path}: not a regular file")

    with open(idx_path, "rb") as stream:
        head = stream.read(_HEADER.size)
        idx_size = os.fstat(stream.fileno()).st_size
    if head[: len(_MAGIC)] != _MAGIC:
        raise ValueError(
            f"{idx_path}: not a Megatron index: it starts with {head[: len(_MAGIC)]!r}, expected the magic {_MAGIC!r}"
        )
    if len(head) < _HEADER.size:
        raise ValueError(f"{idx_path}: truncated header: {len(head)} bytes, the header alone is {_HEADER.size}")
    _, version, code, sequence_count, document_count = _HEADER.unpack(head)
    if version != _VERSION:
        raise ValueError(f"{idx_path}: unsupported index version {version} (only {_VERSION} exists)")
    if code not in _DTYPES:
        known = ", ".join(f"{c} {d.name}" for c, d in _DTYPES.items())
        raise ValueError(f"{idx_path}: unknown token dtype code {code} (known: {known})")
    dtype = _DTYPES[code]

    # Python ints: a corrupt count near 2**64 must not wrap before it is compared.
    expected = _HEADER.size + sequence_count * (_LENGTH.itemsize + _OFFSET.itemsize)
    expected += document_count * _OFFSET.itemsize
    if idx_size != expected:
        what = f"{sequence_count} sequences and {document_count} document indices"
        if sequence_count and idx_size == expected + sequence_count:
            raise ValueError(
                f"{idx_path}: {sequence_count} bytes longer than {what} need, one per sequence: "
                f"a multimodal index (int8 sequence_modes), which is not supported"
            )
        relation = "shorter" if idx_size < expected else "longer"
        raise ValueError(f"{idx_path}: {idx_size} bytes, {relation} than the {expected} that {what} need")
    if document_count == 0:
        raise ValueError(f"{idx_path}: document_indices is empty; it must start with 0 and end at S")

    bin_size = os.path.getsize(bin_path)
    if bin_size % dtype.itemsize:
        raise ValueError(
            f"{bin_path}: {bin_size} bytes is not a whole number of {dtype.name} tokens "
            f"({dtype.itemsize} bytes each, per {idx_path})"
        )

    # One map of the whole .idx; the arrays are views into it (unaligned, which numpy allows).
    idx_map = np.memmap(idx_path, dtype=np.uint8, mode="r")
    lengths = np.frombuffer(idx_map, _LENGTH, sequence_count, _HEADER.size)
    pointers = np.frombuffer(idx_map, _OFFSET, sequence_count, _HEADER.size + lengths.nbytes)
    documents = np.frombuffer(idx_map, _OFFSET, document_count, _HEADER.size + lengths.nbytes + pointers.nbytes)
    _check_sequences(lengths, pointers, dtype.itemsize, bin_size, idx_path, bin_path)
    _check_documents(documents, sequence_count, idx_path)

    tokens: np.ndarray
    if bin_size:
        tokens = np.memmap(bin_path, dtype=dtype, mode="r")
    else:
        # mmap cannot map an empty file; an empty read-only array stands in for it.
        tokens = np.empty(0, dtype)
        tokens.flags.writeable = False
    return MegatronIndex(prefix, bin_path, idx_path, dtype, lengths, pointers, documents, tokens)


def _check_sequences(lengths, pointers, itemsize, bin_size, idx_path, bin_path):
    for start in range(0, len(lengths), _CHUNK):
        chunk_lengths = lengths[start : start + _CHUNK].astype(np.int64)
        chunk_pointers = pointers[start : start + _CHUNK]
        # An end can wrap for a pointer near 2**63, but such a pointer is already past the end
        # of the file, so the combined test still flags that entry.
        ends = chunk_pointers + chunk_lengths * itemsize
        bad = (chunk_lengths < 0) | (chunk_pointers < 0) | (chunk_pointers % itemsize != 0)
        bad |= (chunk_pointers > bin_size) | (ends > bin_size)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                _sequence_problem(
                    start + i,
                    int(chunk_lengths[i]),
                    int(chunk_pointers[i]),
                    itemsize,
                    bin_size,
                    idx_path,
                    bin_path,
                )
            )


def _sequence_problem(i, length, pointer, itemsize, bin_size, idx_path, bin_path):
    where = f"{idx_path}: sequence {i}"
    if length < 0:
        return f"{where} has a negative length, {length}"
    if pointer < 0:
        return f"{where} has a negative byte offset, {pointer}"
    if pointer % itemsize:
        return f"{where} starts at byte {pointer}, not a multiple of the token size {itemsize}"
    end = pointer + length * itemsize
    return f"{where} spans bytes [{pointer}, {end}), past the end of {bin_path} ({bin_size} bytes)"


def _check_documents(documents, sequence_count, idx_path):
    first, last = int(documents[0]), int(documents[-1])
    if first != 0:
        raise ValueError(f"{idx_path}: document_indices starts at {first}, not 0")
    if last != sequence_count:
        raise ValueError(f"{idx_path}: document_indices ends at {last}, not at the sequence count {sequence_count}")
    # Chunks overlap by one entry so that a decrease across a boundary is seen.
    for start in range(0, len(documents), _CHUNK):
        chunk = documents[start : start + _CHUNK + 1]
        outside = (chunk < 0) | (chunk > sequence_count)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise ValueError(
                f"{idx_path}: document_indices[{start + i}] is {int(chunk[i])}, outside [0, {sequence_count}]"
            )
        falls = chunk[1:] < chunk[:-1]
        if falls.any():
            i = int(np.flatnonzero(falls)[0])
            raise ValueError(
                f"{idx_path}: document_indices decreases at entry {start + i + 1}: "
                f"{int(chunk[i])} then {int(chunk[i + 1])}"
            )
