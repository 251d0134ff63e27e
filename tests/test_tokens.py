"""TokenWindows: the same (x, y) batches as a plain torch Dataset over the same tokens."""

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import pyloader

from conftest import assert_batches_equal, assert_loaders_equal, assert_shrinking_file_raises_oserror


class ReferenceWindows(tud.Dataset):
    """What a nanoGPT-style script writes: windows of one shard after another."""

    def __init__(self, shards, block_size, stride, dtype=np.int64):
        self.items = []
        for shard in shards:
            for start in range(0, len(shard) - block_size, stride):
                self.items.append((shard, start))
        self.block_size, self.dtype = block_size, dtype

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        shard, start = self.items[index]
        x = torch.from_numpy(np.array(shard[start : start + self.block_size], dtype=self.dtype))
        y = torch.from_numpy(np.array(shard[start + 1 : start + 1 + self.block_size], dtype=self.dtype))
        return x, y


def tokens(rng, n, dtype=np.uint16):
    return rng.integers(0, np.iinfo(dtype).max if np.dtype(dtype).kind in "iu" else 100, n).astype(dtype)


@pytest.mark.parametrize("token_dtype", [np.uint8, np.uint16, np.uint32, np.int32, np.int64])
@pytest.mark.parametrize("block_size,stride", [(8, None), (8, 3), (5, 1), (16, 40)])
def test_windows_match_reference(rng, token_dtype, block_size, stride):
    stream = tokens(rng, 203, token_dtype)
    ours = pyloader.TokenWindows(stream, block_size, stride=stride)
    reference = ReferenceWindows([stream], block_size, stride or block_size)
    assert len(ours) == len(reference)
    loader = pyloader.DataLoader(ours, batch_size=7)
    assert loader.uses_native_path
    assert_loaders_equal(loader, tud.DataLoader(reference, batch_size=7))
    assert_batches_equal(ours[len(ours) - 1], reference[len(reference) - 1])
    assert_batches_equal(ours[-1], reference[len(reference) - 1])


def test_last_window_uses_the_last_token(rng):
    stream = np.arange(17, dtype=np.uint16)  # block 8: windows at 0 and 8; y of the last ends at 16
    ds = pyloader.TokenWindows(stream, 8)
    assert len(ds) == 2
    x, y = next(iter(pyloader.DataLoader(ds, batch_size=2)))
    assert y[1, -1].item() == 16 and x[1, 0].item() == 8


@pytest.mark.parametrize(
    "dtype,expected", [(torch.int64, torch.int64), (torch.int32, torch.int32), (None, torch.uint16)]
)
def test_output_dtype(rng, dtype, expected):
    stream = tokens(rng, 100)
    ds = pyloader.TokenWindows(stream, 10, dtype=dtype)
    x, y = next(iter(pyloader.DataLoader(ds, batch_size=4)))
    assert x.dtype == expected and y.dtype == expected
    assert torch.equal(x[0].to(torch.int64), torch.from_numpy(stream[:10].astype(np.int64)))


def test_shards_never_cross_a_boundary_and_match_reference(rng, tmp_path):
    shards = [tokens(rng, n) for n in (50, 9, 77, 33)]  # the 9-token shard holds no window of 10
    paths = []
    for k, shard in enumerate(shards):
        paths.append(str(tmp_path / f"part-{k}.npy"))
        np.save(paths[-1], shard)
    ours = pyloader.TokenWindows(paths, 10, stride=4)
    reference = ReferenceWindows(shards, 10, 4)
    assert len(ours) == len(reference)
    make = lambda: tud.RandomSampler(range(len(reference)), generator=torch.Generator().manual_seed(3))
    assert_loaders_equal(
        pyloader.DataLoader(ours, batch_size=6, sampler=make()), tud.DataLoader(reference, batch_size=6, sampler=make())
    )
    globbed = pyloader.TokenWindows(str(tmp_path / "part-*.npy"), 10, stride=4)
    assert_loaders_equal(pyloader.DataLoader(globbed, batch_size=6), tud.DataLoader(reference, batch_size=6))


def test_raw_token_file(rng, tmp_path):
    stream = tokens(rng, 1000)
    path = tmp_path / "train.bin"
    stream.tofile(path)
    ds = pyloader.TokenWindows(str(path), 32, token_dtype=np.uint16)
    assert_loaders_equal(
        pyloader.DataLoader(ds, batch_size=5), tud.DataLoader(ReferenceWindows([stream], 32, 32), batch_size=5)
    )
    with pytest.raises(ValueError, match="token_dtype"):
        pyloader.TokenWindows(str(path), 32)
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\0" * 7)
    with pytest.raises(ValueError, match="odd.bin.*whole number"):
        pyloader.TokenWindows(str(odd), 2, token_dtype=np.uint16)


def test_shuffle_sees_every_window_once_per_epoch(rng):
    stream = tokens(rng, 10_001)
    ds = pyloader.TokenWindows(stream, 10)
    loader = pyloader.DataLoader(ds, batch_size=64, shuffle=True)
    expected = sorted(tuple(stream[s : s + 10].astype(np.int64).tolist()) for s in range(0, 10_000, 10))
    epochs = []
    for _ in range(2):
        windows = [tuple(x.tolist()) for batch, _ in loader for x in batch]
        assert sorted(windows) == expected  # every window exactly once
        epochs.append(windows)
    assert epochs[0] != epochs[1]


def test_random_offsets_sampler_is_native_and_matches_torch(rng):
    stream = tokens(rng, 500)
    ds = pyloader.TokenWindows(stream, 16, stride=1)
    reference = ReferenceWindows([stream], 16, 1)
    make = lambda: tud.RandomSampler(ds, num_samples=40, generator=torch.Generator().manual_seed(9))
    ours = pyloader.DataLoader(ds, batch_size=8, sampler=make())
    assert ours.uses_native_path
    assert_loaders_equal(ours, tud.DataLoader(reference, batch_size=8, sampler=make()))


def test_distributed_ranks_partition_the_windows(rng):
    stream = tokens(rng, 3000)
    ds = pyloader.TokenWindows(stream, 10)
    seen = []
    for rank in range(3):
        sampler = pyloader.DistributedSampler(ds, num_replicas=3, rank=rank, shuffle=True, seed=4)
        loader = pyloader.DataLoader(ds, batch_size=16, sampler=sampler)
        assert loader.uses_native_path
        seen += [tuple(x.tolist()) for batch, _ in loader for x in batch]
    assert len(seen) == len(ds) - len(ds) % 3 + (3 if len(ds) % 3 else 0)
    assert len(set(seen)) == len(ds)


def test_exact_resume(rng):
    stream = tokens(rng, 5000)
    ds = pyloader.TokenWindows(stream, 20)
    torch.manual_seed(0)
    loader = pyloader.DataLoader(ds, batch_size=9, shuffle=True)
    iterator = iter(loader)
    for _ in range(5):
        next(iterator)
    state = loader.state_dict()
    rest = list(iterator)
    resumed = pyloader.DataLoader(ds, batch_size=9, shuffle=True)
    resumed.load_state_dict(state)
    for a, b in zip(list(resumed), rest, strict=True):
        assert_batches_equal(a, b)


def test_torch_dataloader_accepts_token_windows(rng):
    stream = tokens(rng, 300)
    ds = pyloader.TokenWindows(stream, 12)
    assert_loaders_equal(
        tud.DataLoader(ds, batch_size=4, num_workers=0),
        tud.DataLoader(ReferenceWindows([stream], 12, 12), batch_size=4),
    )


def test_bad_input(rng, tmp_path):
    stream = tokens(rng, 100)
    with pytest.raises(ValueError, match="block_size 100 needs at least 101 tokens"):
        pyloader.TokenWindows(stream, 100)
    with pytest.raises(ValueError, match="block_size"):
        pyloader.TokenWindows(stream, 0)
    with pytest.raises(ValueError, match="stride"):
        pyloader.TokenWindows(stream, 4, stride=0)
    with pytest.raises(ValueError, match="stride 4611686018427387904 is too large"):
        pyloader.TokenWindows(stream, 4, stride=2**62)  # numpy's byte strides would overflow
    with pytest.raises(ValueError, match="block_size .* is too large"):
        pyloader.TokenWindows(stream, 2**61)
    with pytest.raises(TypeError, match="float32"):
        pyloader.TokenWindows(stream.astype(np.float32), 4)
    with pytest.raises(ValueError, match="1-D"):
        pyloader.TokenWindows(stream.reshape(10, 10), 4)
    with pytest.raises(TypeError, match="dtype"):
        pyloader.TokenWindows(stream, 4, dtype=torch.float32)
    np.save(tmp_path / "a.npy", stream)
    np.save(tmp_path / "b.npy", stream.astype(np.int32))
    with pytest.raises(ValueError, match="differ in dtype"):
        pyloader.TokenWindows([str(tmp_path / "a.npy"), str(tmp_path / "b.npy")], 4)
    with pytest.raises(FileNotFoundError):
        pyloader.TokenWindows(str(tmp_path / "missing-*.npy"), 4)


def test_truncated_token_file_raises_oserror(rng, tmp_path):
    path = tmp_path / "tokens.npy"
    np.save(path, tokens(rng, 100_000))
    loader = pyloader.DataLoader(pyloader.TokenWindows(str(path), 64), batch_size=32, shuffle=True)
    assert_shrinking_file_raises_oserror(loader, path, 4096, "tokens.npy")


def test_random_offsets_by_native_shuffle_of_every_offset(rng):
    stream = tokens(rng, 2000)
    ds = pyloader.TokenWindows(stream, 32, stride=1)
    assert len(ds) == 2000 - 32
    loader = pyloader.DataLoader(ds, batch_size=16, shuffle=True)
    assert loader.uses_native_path and loader._plan().native_order == "shuffled"
    iterator = iter(loader)
    starts = []
    for _ in range(20):
        x, y = next(iterator)
        assert torch.equal(x[:, 1:], y[:, :-1])
        starts += [
            int(np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(stream, 32) == row.numpy(), axis=1))[0])
            for row in x
        ]
    assert len(set(starts)) == len(starts) == 320  # distinct offsets within the epoch
    assert max(starts) - min(starts) > 1000  # spread over the stream, not a run


def test_pickles_by_its_sources_for_spawned_workers(rng, tmp_path):
    import pickle

    path = tmp_path / "tokens.npy"
    np.save(path, tokens(rng, 50_000))
    ds = pyloader.TokenWindows(str(path), 64, stride=1)
    payload = pickle.dumps(ds)
    assert len(payload) < 10_000  # the path, not 64 copies of the tokens
    clone = pickle.loads(payload)
    assert len(clone) == len(ds) and all(torch.equal(a, b) for a, b in zip(clone[123], ds[123]))
    loader = tud.DataLoader(ds, batch_size=4, num_workers=1, multiprocessing_context="spawn")
    x, y = next(iter(loader))
    assert torch.equal(x[1], ds[1][0])
