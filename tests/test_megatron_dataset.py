"""MegatronDataset and TokenWindows.from_megatron against the sequences written to the files."""

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import pyloader

from conftest import assert_batches_equal, assert_loaders_equal
from megatron_files import write_megatron


def corpus(rng, documents=30, dtype=np.uint16):
    return [
        [rng.integers(0, 30000, rng.integers(0, 60)).astype(dtype) for _ in range(rng.integers(1, 4))]
        for _ in range(documents)
    ]


class Reference(tud.Dataset):
    def __init__(self, records):
        self.records = [torch.from_numpy(r.astype(np.int64)) for r in records]

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        return self.records[index]


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.uint8, np.int64])
@pytest.mark.parametrize("unit", ["sequence", "document"])
def test_records_match_what_was_written(rng, tmp_path, dtype, unit):
    documents = corpus(rng, dtype=dtype)
    prefix = write_megatron(str(tmp_path / "corpus"), documents, dtype=dtype)
    ds = pyloader.MegatronDataset(prefix, unit=unit)
    if unit == "sequence":
        records = [sequence for document in documents for sequence in document]
    else:
        records = [np.concatenate(document) for document in documents]
    reference = Reference(records)
    assert len(ds) == len(reference)
    collate = pyloader.PadCollate(return_mask=True)
    sampler = lambda: tud.RandomSampler(reference, generator=torch.Generator().manual_seed(0))
    ours = pyloader.DataLoader(ds, batch_size=5, sampler=sampler(), collate_fn=collate)
    assert ours.uses_native_path and ours._plan().paddings is not None
    assert_loaders_equal(ours, tud.DataLoader(reference, batch_size=5, sampler=sampler(), collate_fn=collate))
    assert_batches_equal(ds[3], reference[3])


def test_token_windows_over_the_stream(rng, tmp_path):
    documents = corpus(rng, documents=50)
    prefix = write_megatron(str(tmp_path / "corpus"), documents)
    stream = np.concatenate([s for d in documents for s in d]).astype(np.int64)
    ds = pyloader.TokenWindows.from_megatron(prefix + ".bin", 16)
    assert len(ds) == (len(stream) - 17) // 16 + 1
    x, y = next(iter(pyloader.DataLoader(ds, batch_size=len(ds))))
    for k in (0, len(ds) - 1):
        assert torch.equal(x[k], torch.from_numpy(stream[16 * k : 16 * k + 16]))
        assert torch.equal(y[k], torch.from_numpy(stream[16 * k + 1 : 16 * k + 17]))


def test_bad_input(rng, tmp_path):
    prefix = write_megatron(str(tmp_path / "corpus"), corpus(rng))
    with pytest.raises(ValueError, match="unit"):
        pyloader.MegatronDataset(prefix, unit="token")
    with pytest.raises(FileNotFoundError):
        pyloader.MegatronDataset(str(tmp_path / "missing"))
    idx = tmp_path / "corpus.idx"
    data = bytearray(idx.read_bytes())
    data[0] = ord("X")
    idx.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corpus.idx"):
        pyloader.MegatronDataset(prefix)
    floats = write_megatron(str(tmp_path / "floats"), [[np.ones(4, np.float32)]], dtype=np.float32)
    with pytest.raises(TypeError, match="dtype=None"):
        pyloader.MegatronDataset(floats)
    assert pyloader.MegatronDataset(floats, dtype=None)[0].dtype == torch.float32
