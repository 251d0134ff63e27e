"""Variable-length records misused: changed offsets, huge padding, odd dtypes, empty values."""

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import pyloader

from conftest import assert_loaders_equal


def test_offsets_changed_after_construction_cannot_reach_the_loader():
    values = np.arange(100, dtype=np.int64)
    offsets = np.array([0, 10, 20, 100])
    ds = pyloader.RaggedDataset(values, offsets)
    offsets[1] = 5000  # the dataset keeps its own copy of a writeable array
    batch = next(iter(pyloader.DataLoader(ds, batch_size=3, collate_fn=pyloader.PadCollate(return_mask=True))))
    assert batch.lengths.tolist() == [10, 10, 80]


def test_rewritten_offsets_file_fails_the_batch_cleanly(tmp_path):
    values = np.arange(100, dtype=np.int64)
    np.save(tmp_path / "offsets.npy", np.array([0, 10, 20, 100]))
    ds = pyloader.RaggedDataset(values, str(tmp_path / "offsets.npy"))
    writer = np.load(tmp_path / "offsets.npy", mmap_mode="r+")
    writer[1] = 5000  # the file changes under the read-only mapping the dataset uses
    writer.flush()
    with pytest.raises(OSError, match="offsets"):
        list(pyloader.DataLoader(ds, batch_size=3, collate_fn=pyloader.PadCollate()))


def test_padding_beyond_memory_raises_instead_of_crashing():
    ds = pyloader.RaggedDataset(np.arange(9, dtype=np.int8), np.array([0, 2, 5, 9, 9]))
    with pytest.raises((RuntimeError, ValueError, MemoryError)):
        list(pyloader.DataLoader(ds, batch_size=4, collate_fn=pyloader.PadCollate(pad_to_multiple_of=2**62)))
    # Natively padded: 4096 copies of a 1 MiB row padded to 2**32 rows overflow 64 bits.
    wide = pyloader.RaggedDataset(np.zeros((1, 1 << 17), np.int64), np.array([0, 1]))
    loader = pyloader.DataLoader(
        wide, batch_size=4096, sampler=[0] * 4096, collate_fn=pyloader.PadCollate(pad_to_multiple_of=2**32)
    )
    assert loader._plan().paddings is not None
    with pytest.raises(ValueError, match="address space"):
        list(loader)


def test_torch_only_dtype_beside_records_keeps_its_dtype():
    offsets = np.array([0, 2, 5, 9, 9])
    weights = torch.randn(4, dtype=torch.bfloat16)
    ds = pyloader.ArrayDataset(tok=pyloader.Records(np.arange(9), offsets), w=weights)
    batch = next(iter(pyloader.DataLoader(ds, batch_size=2, collate_fn=pyloader.PadCollate())))
    assert batch["w"].dtype == torch.bfloat16 and torch.equal(batch["w"], weights[:2])
    samples = next(iter(pyloader.DataLoader(ds, batch_size=2, collate_fn=list)))
    assert samples[1]["w"].dtype == torch.bfloat16


def test_wide_elements_load_when_nothing_is_padded():
    values = np.arange(9, dtype=np.complex128)
    offsets = np.array([0, 2, 5, 9, 9])
    ds = pyloader.RaggedDataset(values, offsets)
    reference = [torch.from_numpy(values[offsets[i] : offsets[i + 1]]) for i in range(4)]
    got = [b for batch in pyloader.DataLoader(ds, batch_size=2, collate_fn=list) for b in batch]
    assert all(torch.equal(a, b) for a, b in zip(got, reference, strict=True))
    padded = list(pyloader.DataLoader(ds, batch_size=2, collate_fn=pyloader.PadCollate()))
    assert padded[0].padded.dtype == torch.complex128


def test_concatenated_parts_with_different_file_dtypes_match_torch():
    a = pyloader.TokenWindows(np.arange(100, dtype=np.uint16), 8)
    b = pyloader.TokenWindows(np.arange(100, dtype=np.uint32), 8)
    concat = tud.ConcatDataset([a, b])
    assert_loaders_equal(pyloader.DataLoader(concat, batch_size=4), tud.DataLoader(concat, batch_size=4))


@pytest.mark.parametrize("records", [0, 3])
def test_empty_values_are_records_of_length_zero(records):
    ds = pyloader.RaggedDataset(np.zeros(0, np.int32), np.zeros(records + 1, np.int64))
    assert len(ds) == records
    batches = list(pyloader.DataLoader(ds, batch_size=2, collate_fn=pyloader.PadCollate(return_mask=True)))
    assert sum(len(b.lengths) for b in batches) == records
    assert all(b.padded.shape[1] == 0 for b in batches)
