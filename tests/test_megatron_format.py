"""Megatron-LM indexed datasets (.bin + .idx): byte layout, round trips and every bad input."""

import os
import pathlib
import re

import numpy as np
import pytest

from pyloader._native import megatron_format as _megatron
from pyloader._native.megatron_format import MegatronIndex, read_megatron_index

from megatron_files import idx_bytes, write_corrupted, write_megatron

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.int64, np.uint16, np.float32, np.float64]


def sequences_of(index):
    itemsize = index.dtype.itemsize
    return [
        index.tokens[int(p) // itemsize :][: int(n)] for p, n in zip(index.sequence_pointers, index.sequence_lengths)
    ]


def random_documents(rng, dtype, count=7):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    documents = []
    for _ in range(count):
        document = []
        for _ in range(rng.integers(0, 4)):  # empty documents included
            n = int(rng.integers(0, 9))  # and empty sequences
            if info is None:
                values = rng.standard_normal(n).astype(dtype)
            else:
                values = rng.integers(info.min, info.max, n, endpoint=True, dtype=dtype)
            document.append(values)
        documents.append(document)
    extreme = [np.array([0, 1]).astype(dtype)]
    if info is not None:
        extreme.append(np.array([info.min, info.max], dtype=dtype))
    documents.append(extreme)
    return documents


# -- the writer against the layout, byte by byte ------------------------------------------


def test_writer_bytes_one_document_uint16(tmp_path):
    prefix = write_megatron(tmp_path / "d", [[np.array([1, 2, 3])]], np.uint16)
    assert pathlib.Path(prefix + ".bin").read_bytes() == bytes.fromhex("0100 0200 0300")
    assert pathlib.Path(prefix + ".idx").read_bytes() == bytes.fromhex(
        "4d4d4944494458 0000"  # MMIDIDX\0\0
        "0100000000000000"  # version 1
        "08"  # uint16
        "0100000000000000"  # 1 sequence
        "0200000000000000"  # 2 document indices
        "03000000"  # lengths
        "0000000000000000"  # pointers
        "0000000000000000 0100000000000000"  # document_indices
    )


def test_writer_bytes_three_documents_int32(tmp_path):
    documents = [[np.array([5, 6]), np.array([7])], [], [np.array([-1])]]
    prefix = write_megatron(tmp_path / "d", documents, np.int32)
    assert pathlib.Path(prefix + ".bin").read_bytes() == bytes.fromhex("05000000 06000000 07000000 ffffffff")
    idx = pathlib.Path(prefix + ".idx").read_bytes()
    assert len(idx) == 34 + 3 * 4 + 3 * 8 + 4 * 8
    assert idx == bytes.fromhex(
        "4d4d4944494458 0000 0100000000000000 04 0300000000000000 0400000000000000"
        "02000000 01000000 01000000"
        "0000000000000000 0800000000000000 0c00000000000000"
        "0000000000000000 0200000000000000 0200000000000000 0300000000000000"
    )
    index = read_megatron_index(prefix)
    assert index.dtype == np.int32
    assert index.sequences == 3 and index.documents == 3
    assert index.document_indices.tolist() == [0, 2, 2, 3]
    assert [s.tolist() for s in sequences_of(index)] == [[5, 6], [7], [-1]]


def test_writer_refuses_values_that_do_not_fit(tmp_path):
    with pytest.raises(ValueError, match="do not fit"):
        write_megatron(tmp_path / "d", [[np.array([70000])]], np.uint16)


# -- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip(tmp_path, rng, dtype):
    documents = random_documents(rng, dtype)
    prefix = write_megatron(tmp_path / "data", documents, dtype)
    index = read_megatron_index(prefix)

    assert isinstance(index, MegatronIndex)
    assert index.prefix == prefix
    assert index.idx_path == prefix + ".idx" and index.bin_path == prefix + ".bin"
    assert index.dtype == np.dtype(dtype)
    expected = [s for document in documents for s in document]
    assert index.sequences == len(expected)
    assert index.documents == len(documents)
    boundaries = np.cumsum([0] + [len(d) for d in documents])
    np.testing.assert_array_equal(index.document_indices, boundaries)
    got = sequences_of(index)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(g, e)
    assert index.contiguous()
    assert index.tokens.size == sum(len(s) for s in expected)


def test_arrays_are_read_only_file_views(tmp_path, rng):
    index = read_megatron_index(write_megatron(tmp_path / "d", random_documents(rng, np.uint16)))
    assert isinstance(index.tokens, np.memmap)
    for array, dtype in [
        (index.sequence_lengths, np.int32),
        (index.sequence_pointers, np.int64),
        (index.document_indices, np.int64),
        (index.tokens, np.uint16),
    ]:
        assert array.dtype == dtype and array.ndim == 1
        assert not array.flags.writeable
        assert not array.flags.owndata
        base = array
        while not isinstance(base, np.memmap) and getattr(base, "base", None) is not None:
            base = base.base
        assert isinstance(base, np.memmap), "not a view of a file mapping"
    with pytest.raises(ValueError):
        index.sequence_lengths[0] = 1
    with pytest.raises(AttributeError):
        index.prefix = "elsewhere"


def test_empty_dataset(tmp_path):
    index = read_megatron_index(write_megatron(tmp_path / "d", []))
    assert os.path.getsize(index.bin_path) == 0
    assert index.sequences == 0 and index.documents == 0
    assert index.tokens.shape == (0,) and index.tokens.dtype == np.uint16
    assert not index.tokens.flags.writeable
    assert index.document_indices.tolist() == [0]
    assert index.contiguous()


def test_only_empty_sequences(tmp_path):
    index = read_megatron_index(write_megatron(tmp_path / "d", [[np.array([]), np.array([])]]))
    assert index.sequences == 2 and index.documents == 1
    assert index.sequence_pointers.tolist() == [0, 0]
    assert index.tokens.size == 0
    assert index.contiguous()


@pytest.mark.parametrize("suffix", ["", ".bin", ".idx"])
@pytest.mark.parametrize("as_path", [False, True])
def test_prefix_with_or_without_suffix(tmp_path, suffix, as_path):
    prefix = write_megatron(tmp_path / "corpus.v1_text_document", [[np.arange(4)]])
    given = prefix + suffix
    index = read_megatron_index(pathlib.Path(given) if as_path else given)
    assert index.prefix == prefix
    assert index.bin_path == prefix + ".bin" and index.idx_path == prefix + ".idx"
    assert sequences_of(index)[0].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("missing", [".idx", ".bin"])
def test_missing_file(tmp_path, missing):
    prefix = write_megatron(tmp_path / "d", [[np.arange(3)]])
    os.remove(prefix + missing)
    with pytest.raises(FileNotFoundError) as raised:
        read_megatron_index(prefix)
    assert prefix + missing in str(raised.value)


def test_directory_in_place_of_a_file(tmp_path):
    prefix = write_megatron(tmp_path / "d", [[np.arange(3)]])
    os.remove(prefix + ".bin")
    os.mkdir(prefix + ".bin")
    with pytest.raises(ValueError, match="not a regular file") as raised:
        read_megatron_index(prefix)
    assert prefix + ".bin" in str(raised.value)


# -- contiguous() ------------------------------------------------------------------------

# Three sequences of two uint16 tokens: 12 bytes of .bin.
PAIRS = [[np.array([1, 2]), np.array([3, 4])], [np.array([5, 6])]]


@pytest.mark.parametrize(
    "pointers, bin_extra, expected",
    [
        ([0, 4, 8], b"", True),
        ([0, 4, 8], b"\0\0", True),  # unreferenced bytes after the last sequence
        ([4, 0, 8], b"", False),  # reordered
        ([0, 0, 8], b"", False),  # shared
        ([0, 6, 10], b"\0\0", False),  # a gap after the first
        ([2, 6, 10], b"\0\0", False),  # not from byte 0
    ],
)
def test_contiguous(tmp_path, pointers, bin_extra, expected):
    prefix = write_corrupted(tmp_path / "d", PAIRS, sequence_pointers=pointers, bin_extra=bin_extra)
    assert read_megatron_index(prefix).contiguous() is expected


def test_contiguous_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(_megatron, "_CHUNK", 4)
    documents = [[np.arange(i % 3 + 1)] for i in range(13)]
    prefix = write_megatron(tmp_path / "d", documents)
    assert read_megatron_index(prefix).contiguous()
    good = read_megatron_index(prefix).sequence_pointers.tolist()
    for i in range(1, len(good)):
        pointers = good[:i] + [p + 2 for p in good[i:]]  # a one-token gap before sequence i
        prefix = write_corrupted(tmp_path / "d", documents, sequence_pointers=pointers, bin_extra=b"\0\0")
        assert not read_megatron_index(prefix).contiguous(), i


# -- bad input ---------------------------------------------------------------------------

# Three uint16 sequences of 3, 2 and 4 tokens in two documents: pointers [0, 6, 10], 18 bytes.
DOCS = [[np.arange(3), np.arange(2)], [np.arange(4)]]

BAD = {
    "wrong magic": (dict(magic=b"MMIDIDY\0\0"), ".idx", "magic"),
    "unknown version": (dict(version=2), ".idx", "version 2"),
    "dtype code 0": (dict(dtype_code=0), ".idx", "dtype code 0"),
    "dtype code 9": (dict(dtype_code=9), ".idx", "dtype code 9"),
    "idx cut short": (dict(idx_cut=1), ".idx", "shorter"),
    "idx too long": (dict(idx_extra=b"\0"), ".idx", "longer"),
    "sequence count too big": (dict(sequence_count=4), ".idx", "shorter"),
    "sequence count near 2**64": (dict(sequence_count=2**64 - 1), ".idx", "shorter"),
    "document count too small": (dict(document_count=2), ".idx", "longer"),
    "multimodal modes": (dict(idx_extra=b"\0\0\0"), ".idx", "multimodal"),
    "bin not whole tokens": (dict(bin_extra=b"\0"), ".bin", "whole number"),
    "bin cut short": (dict(bin_cut=2), ".idx", "past the end"),
    "pointer past the end": (dict(sequence_pointers=[0, 6, 12]), ".idx", "sequence 2 spans"),
    "pointer beyond the file": (dict(sequence_pointers=[0, 6, 100]), ".idx", "past the end"),
    "pointer wraps": (dict(sequence_pointers=[0, 2**63 - 2, 10]), ".idx", "sequence 1 spans"),
    "pointer misaligned": (dict(sequence_pointers=[0, 7, 10]), ".idx", "not a multiple"),
    "pointer negative": (dict(sequence_pointers=[0, -2, 10]), ".idx", "negative byte offset"),
    "length negative": (dict(sequence_lengths=[3, -1, 4]), ".idx", "negative length"),
    "length huge": (dict(sequence_lengths=[3, 2**31 - 1, 4]), ".idx", "past the end"),
    "documents not from 0": (dict(document_indices=[1, 2, 3]), ".idx", "starts at 1"),
    "documents not to S": (dict(document_indices=[0, 2, 2]), ".idx", "ends at 2"),
    "documents past S": (dict(document_indices=[0, 2, 3, 3]), ".idx", "shorter|longer"),
    "documents decrease": (dict(document_indices=[0, 2, 1, 3]), ".idx", "decreases"),
    "documents above S": (dict(document_indices=[0, 5, 3]), ".idx", r"outside \[0, 3\]"),
    "documents below 0": (dict(document_indices=[0, -1, 3]), ".idx", r"outside \[0, 3\]"),
    "documents empty": (dict(document_indices=[]), ".idx", "empty"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(tmp_path, case):
    changes, named, problem = BAD[case]
    if case == "documents past S":
        # One more entry than the header's count: a size mismatch, not a document error.
        changes = dict(changes, document_count=3)
    prefix = write_corrupted(tmp_path / "data", DOCS, **changes)
    with pytest.raises(ValueError) as raised:
        read_megatron_index(prefix)
    message = str(raised.value)
    assert prefix + named in message
    # tmp_path carries the test's id, so look for the problem only outside the paths.
    assert re.search(problem, message.replace(prefix, "PREFIX")), message


def test_writer_defaults_are_valid(tmp_path):
    # The base of every BAD case reads cleanly, so each failure above is the change alone.
    index = read_megatron_index(write_corrupted(tmp_path / "data", DOCS))
    assert index.sequence_pointers.tolist() == [0, 6, 10]
    assert os.path.getsize(index.bin_path) == 18


def test_every_truncation_of_the_idx(tmp_path):
    prefix = write_megatron(tmp_path / "d", DOCS)
    whole = pathlib.Path(prefix + ".idx").read_bytes()
    for size in range(len(whole)):
        pathlib.Path(prefix + ".idx").write_bytes(whole[:size])
        with pytest.raises(ValueError) as raised:
            read_megatron_index(prefix)
        assert prefix + ".idx" in str(raised.value), size


def test_header_only_magic(tmp_path):
    prefix = write_megatron(tmp_path / "d", DOCS)
    pathlib.Path(prefix + ".idx").write_bytes(b"MMIDIDX\0\0\1\0")
    with pytest.raises(ValueError, match="truncated header"):
        read_megatron_index(prefix)


def test_random_corruption_never_escapes_as_another_error(tmp_path, rng):
    prefix = write_megatron(tmp_path / "d", DOCS)
    whole = bytearray(pathlib.Path(prefix + ".idx").read_bytes())
    for _ in range(300):
        broken = bytearray(whole)
        for position in rng.integers(0, len(broken), int(rng.integers(1, 4))):
            broken[position] = int(rng.integers(0, 256))
        pathlib.Path(prefix + ".idx").write_bytes(bytes(broken))
        try:
            index = read_megatron_index(prefix)
        except ValueError as error:
            assert prefix in str(error)
            continue
        # Whatever loads must be safe to slice as validated.
        for sequence, n in zip(sequences_of(index), index.sequence_lengths):
            assert len(sequence) == n


def test_errors_past_the_first_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(_megatron, "_CHUNK", 4)
    documents = [[np.arange(2)] for _ in range(11)]
    pointers = [4 * i for i in range(11)]
    pointers[9] += 1
    prefix = write_corrupted(tmp_path / "d", documents, sequence_pointers=pointers)
    with pytest.raises(ValueError, match="sequence 9 starts at byte 37"):
        read_megatron_index(prefix)

    # A decrease at every position, on both sides of each chunk boundary.
    for i in range(1, 10):
        indices = list(range(12))
        indices[i], indices[i + 1] = i + 1, i
        prefix = write_corrupted(tmp_path / "d", documents, document_indices=indices)
        with pytest.raises(ValueError, match=f"decreases at entry {i + 1}:") as raised:
            read_megatron_index(prefix)
        assert prefix + ".idx" in str(raised.value)


def test_idx_bytes_counts_default_to_lengths():
    data = idx_bytes(dtype_code=8, sequence_lengths=[1, 2], sequence_pointers=[0, 2], document_indices=[0, 2])
    assert len(data) == 34 + 2 * 12 + 2 * 8
    assert data[18:34] == (2).to_bytes(8, "little") * 2
