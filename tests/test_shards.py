"""Sharded .npy columns: a list or glob of files read as one array, as torch would see their concatenation."""

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import pyloader

from conftest import assert_loaders_equal, assert_shrinking_file_raises_oserror


def write_shards(tmp_path, rng, sizes, trailing=(4,), dtype=np.float32, name="part"):
    arrays, paths = [], []
    for k, size in enumerate(sizes):
        arrays.append(rng.random((size, *trailing)).astype(dtype))
        paths.append(str(tmp_path / f"{name}-{k:03d}.npy"))
        np.save(paths[-1], arrays[-1])
    return arrays, paths


@pytest.mark.parametrize("sizes", [[10], [10, 0, 7, 1], [1] * 9])
def test_shards_equal_their_concatenation(rng, tmp_path, sizes):
    arrays, paths = write_shards(tmp_path, rng, sizes)
    labels = np.arange(sum(sizes))
    whole = tud.TensorDataset(torch.from_numpy(np.concatenate(arrays)), torch.from_numpy(labels))
    ds = pyloader.ArrayDataset(paths, labels)
    assert len(ds) == sum(sizes)
    sampler = lambda: tud.RandomSampler(whole, generator=torch.Generator().manual_seed(1))
    ours = pyloader.DataLoader(ds, batch_size=3, sampler=sampler())
    assert ours.uses_native_path
    assert_loaders_equal(ours, tud.DataLoader(whole, batch_size=3, sampler=sampler()))
    for index in (0, -1, len(ds) // 2):
        assert torch.equal(ds[index][0], whole[index][0])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_glob_pattern_sorted_by_name(rng, tmp_path):
    arrays, _ = write_shards(tmp_path, rng, [3, 5, 2])
    ds = pyloader.ArrayDataset(x=str(tmp_path / "part-*.npy"))
    expected = torch.from_numpy(np.concatenate(arrays))
    batch = next(iter(pyloader.DataLoader(ds, batch_size=10)))
    assert torch.equal(batch["x"], expected)
    with pytest.raises(FileNotFoundError, match="nothing-"):
        pyloader.ArrayDataset(str(tmp_path / "nothing-*.npy"))


def test_shards_of_in_memory_arrays_and_workers(rng):
    parts = [rng.integers(0, 9, (n, 2, 3)) for n in (4, 6, 5)]
    ds = pyloader.ArrayDataset(parts)
    whole = tud.TensorDataset(torch.from_numpy(np.concatenate(parts)))
    assert_loaders_equal(
        pyloader.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=lambda b: b),
        tud.DataLoader(whole, batch_size=4, collate_fn=lambda b: b),
    )


def test_mismatched_shards_are_refused_naming_the_file(rng, tmp_path):
    _, paths = write_shards(tmp_path, rng, [3, 3])
    _, odd = write_shards(tmp_path, rng, [3], trailing=(5,), name="odd")
    with pytest.raises(ValueError, match="odd-000.npy.*share dtype and trailing shape"):
        pyloader.ArrayDataset(paths + odd)
    _, other = write_shards(tmp_path, rng, [3], dtype=np.float64, name="wide")
    with pytest.raises(ValueError, match="wide-000.npy"):
        pyloader.ArrayDataset(paths + other)
    with pytest.raises(ValueError, match="empty list"):
        pyloader.ArrayDataset([])
    corrupt = tmp_path / "corrupt.npy"
    corrupt.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="corrupt.npy"):
        pyloader.ArrayDataset(paths + [str(corrupt)])


def test_truncated_shard_raises_oserror_naming_it(rng, tmp_path):
    _, paths = write_shards(tmp_path, rng, [20_000, 20_000], trailing=(64,))
    loader = pyloader.DataLoader(pyloader.ArrayDataset(paths), batch_size=256, shuffle=True)
    assert_shrinking_file_raises_oserror(loader, paths[1], 4096, "part-001.npy")
