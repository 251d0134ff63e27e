"""BlockShuffleSampler: every sample once per epoch, batches drawn from few blocks, the
same batches on the native path as on torch's, sharded by rank, and exact resume."""

import json

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import pyloader

from conftest import evict


@pytest.mark.parametrize(
    "rows,block_rows,window_blocks",
    [(1, 1, 1), (10, 3, 2), (1000, 7, 3), (64, 8, 8), (5, 8, 2), (100_003, 64, 16), (70_000, 1, 1)],
)
def test_every_row_once_per_epoch_and_epochs_differ(rows, block_rows, window_blocks):
    sampler = pyloader.BlockShuffleSampler(range(rows), block_rows, window_blocks, seed=11)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(rows))
        orders.append(order)
    if rows > 10:
        assert orders[0] != orders[1] != orders[2]


def test_each_window_draws_from_its_own_few_blocks():
    rows, block_rows, window_blocks = 10_000, 50, 4  # no short tail block
    order = np.array(list(pyloader.BlockShuffleSampler(range(rows), block_rows, window_blocks, seed=2)))
    window = block_rows * window_blocks
    seen = set()
    for first in range(0, rows, window):
        blocks = set((order[first : first + window] // block_rows).tolist())
        assert len(blocks) == window_blocks  # whole blocks, window_blocks of them
        assert not blocks & seen
        seen |= blocks
    # ... and the blocks themselves come in a shuffled order, not in file order.
    assert (order[::window] // block_rows).tolist() != sorted((order[::window] // block_rows).tolist())


def test_a_short_last_block_is_visited_once_as_its_own_window():
    rows, block_rows = 1037, 100  # 37 rows in a short last block
    order = np.array(list(pyloader.BlockShuffleSampler(range(rows), block_rows, 2, seed=5)))
    tail = np.flatnonzero(order >= 1000)
    assert len(tail) == 37 and tail.max() - tail.min() == 36  # consecutive positions


def test_native_batches_equal_torchs_for_the_same_sampler():
    data = np.random.default_rng(0).random((5000, 3), dtype=np.float32)
    labels = np.arange(5000)
    sampler = pyloader.BlockShuffleSampler(range(5000), 64, 4, seed=9)
    dataset = pyloader.ArrayDataset(data, labels)
    sampler.dataset = dataset
    ours = pyloader.DataLoader(dataset, batch_size=100, sampler=sampler, drop_last=True)
    assert ours.uses_native_path
    theirs = tud.DataLoader(
        tud.TensorDataset(torch.from_numpy(data), torch.from_numpy(labels)),
        batch_size=100,
        sampler=sampler,
        drop_last=True,
    )
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_take_contiguous_shares_of_one_order(drop_last):
    rows, world = 1000, 3
    whole = list(pyloader.BlockShuffleSampler(range(rows), 16, 4, num_replicas=1, rank=0, seed=4))
    shares = [
        list(
            pyloader.BlockShuffleSampler(range(rows), 16, 4, num_replicas=world, rank=rank, seed=4, drop_last=drop_last)
        )
        for rank in range(world)
    ]
    per_rank = rows // world if drop_last else -(-rows // world)
    assert all(len(share) == per_rank for share in shares)
    padded = (whole + whole)[: per_rank * world]
    assert [x for share in shares for x in share] == padded
    if not drop_last:
        assert set(padded) == set(range(rows))


@pytest.mark.parametrize("stop", [0, 3, 9])
def test_resume_is_exact_and_keeps_the_position_only(stop):
    dataset = pyloader.ArrayDataset(np.arange(2000))

    def make():
        return pyloader.DataLoader(dataset, batch_size=64, sampler=pyloader.BlockShuffleSampler(dataset, 32, 4, seed=1))

    full = [b[0].tolist() for b in make()]
    loader = make()
    iterator = iter(loader)
    head = [next(iterator)[0].tolist() for _ in range(stop)]
    state = json.loads(json.dumps(loader.state_dict()))
    assert state["order"] == "block" and state["batches_yielded"] == stop
    resumed = make()
    resumed.load_state_dict(state)
    assert head + [b[0].tolist() for b in resumed] == full


def test_bad_arguments_and_elastic_merge_are_refused():
    with pytest.raises(ValueError, match="block_rows"):
        pyloader.BlockShuffleSampler(range(10), 0)
    with pytest.raises(ValueError, match="window_blocks"):
        pyloader.BlockShuffleSampler(range(10), 4, window_blocks=True)
    dataset = pyloader.ArrayDataset(np.arange(100))
    states = []
    for rank in range(2):
        loader = pyloader.DataLoader(
            dataset, batch_size=8, sampler=pyloader.BlockShuffleSampler(dataset, 8, num_replicas=2, rank=rank)
        )
        iterator = iter(loader)
        next(iterator)
        states.append(loader.state_dict())
    with pytest.raises(ValueError, match="DistributedSampler"):
        pyloader.DistributedSampler.merge_states(states)


def _epoch_and_windows_read_ahead(loader, explicit_reads=None):
    """The epoch's batches and how many windows the pipeline read ahead (and, given a
    list, appends how many batches it read explicitly)."""
    iterator = iter(loader)
    batches = [next(iterator) for _ in range(len(loader) - 1)]
    windows = iterator._pipeline.windows_read_ahead
    if explicit_reads is not None:
        explicit_reads.append(iterator._pipeline.explicitly_read_batches)
    return batches + list(iterator), windows


@pytest.mark.parametrize("io", ["auto", "mmap", "read"])
@pytest.mark.parametrize("world,rank", [(1, 0), (3, 1)])
def test_block_batches_over_a_file_are_unchanged_by_window_read_ahead(tmp_path, io, world, rank):
    rows = 4000
    data = np.random.default_rng(3).random((rows, 700), dtype=np.float32)  # 2800-byte rows: explicit-read size
    path = str(tmp_path / "features.npy")
    np.save(path, data)
    labels = np.arange(rows)
    dataset = pyloader.ArrayDataset(np.load(path, mmap_mode="r"), labels)
    sampler = pyloader.BlockShuffleSampler(dataset, 32, 4, num_replicas=world, rank=rank, seed=6)
    loader = pyloader.DataLoader(dataset, batch_size=50, sampler=sampler, io=io)
    assert loader.uses_native_path
    for epoch in range(2):
        sampler.set_epoch(epoch)
        order = np.array(list(sampler))
        evict(path)  # cold: "auto" would read these rows explicitly, were they not read ahead
        explicit = []
        batches, windows = _epoch_and_windows_read_ahead(loader, explicit)
        assert len(batches) == -(-len(order) // 50)
        for k, (features, batch_labels) in enumerate(batches):
            assert torch.equal(batch_labels, torch.from_numpy(labels[order[k * 50 : (k + 1) * 50]]))
            assert torch.equal(features, torch.from_numpy(data[order[k * 50 : (k + 1) * 50]]))
        # Only io="auto" reads windows ahead: "read" reads every batch explicitly, and
        # "mmap" has no file descriptors to advise.
        assert (windows > 0) == (io == "auto")
        if io == "auto":
            assert explicit == [0]  # copied from the mapping


def test_block_batches_of_in_memory_arrays_read_nothing_ahead():
    data = np.random.default_rng(4).random((3000, 700), dtype=np.float32)
    dataset = pyloader.ArrayDataset(data)
    sampler = pyloader.BlockShuffleSampler(dataset, 32, 4, seed=1)
    loader = pyloader.DataLoader(dataset, batch_size=64, sampler=sampler)
    batches, windows = _epoch_and_windows_read_ahead(loader)
    order = np.array(list(sampler))
    assert windows == 0
    for k, (features,) in enumerate(batches):
        assert torch.equal(features, torch.from_numpy(data[order[k * 64 : (k + 1) * 64]]))


def test_shuffled_batches_over_a_file_read_nothing_ahead(tmp_path):
    path = str(tmp_path / "features.npy")
    np.save(path, np.random.default_rng(5).random((3000, 700), dtype=np.float32))
    loader = pyloader.DataLoader(pyloader.ArrayDataset(np.load(path, mmap_mode="r")), batch_size=64, shuffle=True)
    assert _epoch_and_windows_read_ahead(loader)[1] == 0
