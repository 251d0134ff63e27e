"""The native index order: a bijection, a pure function of (size, seed, position)."""

import numpy as np
import pytest
import torch

import pyloader
from pyloader import _core

SIZES = [0, 1, 2, 3, 4, 5, 7, 8, 9, 31, 64, 100, 257, 1000, 4096, 65537, 1_000_003]


@pytest.mark.parametrize("size", SIZES)
def test_shuffle_is_a_permutation(size):
    order = _core.IndexOrder.shuffled(size, 42)
    taken = order.take(0, size)
    assert taken.dtype == np.int64
    assert np.array_equal(np.sort(taken), np.arange(size))


@pytest.mark.parametrize("size", [0, 1, 10, 1000])
def test_sequential_is_identity(size):
    assert np.array_equal(_core.IndexOrder.sequential(size).take(0, size), np.arange(size))


def test_same_seed_same_order_and_positions_are_independent():
    a = _core.IndexOrder.shuffled(10_000, 7)
    b = _core.IndexOrder.shuffled(10_000, 7)
    assert np.array_equal(a.take(0, 10_000), b.take(0, 10_000))
    # Random access agrees with sequential evaluation: resume needs no replay.
    assert np.array_equal(a.take(5_000, 100), a.take(0, 10_000)[5_000:5_100])
    assert [a[p] for p in (0, 17, 9_999, -1)] == [int(x) for x in a.take(0, 10_000)[[0, 17, 9_999, -1]]]


def test_different_seeds_and_epochs_differ():
    orders = {tuple(_core.IndexOrder.shuffled(1000, seed).take(0, 1000)) for seed in range(20)}
    assert len(orders) == 20
    epoch_seeds = {_core.mix_seed(5, epoch) for epoch in range(100)}
    assert len(epoch_seeds) == 100


def test_shuffle_is_not_trivially_structured():
    taken = _core.IndexOrder.shuffled(100_000, 3).take(0, 100_000)
    assert not np.array_equal(taken, np.arange(100_000))
    # Positions far apart are uncorrelated: about half of neighbours ascend.
    ascending = np.mean(np.diff(taken) > 0)
    assert 0.45 < ascending < 0.55
    # Each block of the output draws from the whole range.
    assert taken[:1000].min() < 2_000 and taken[:1000].max() > 98_000


def test_out_of_range_positions_raise():
    order = _core.IndexOrder.shuffled(10, 1)
    with pytest.raises(IndexError):
        order[10]
    with pytest.raises(IndexError):
        order.take(5, 6)


def _epoch(loader):
    return torch.cat([y for _, y in loader]).tolist()


@pytest.mark.parametrize(
    "size,batch_size,drop_last", [(1000, 32, False), (1000, 32, True), (7, 3, False), (1, 4, False)]
)
def test_loader_shuffle_visits_every_index_once_per_epoch(size, batch_size, drop_last):
    x = np.arange(size, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    loader = pyloader.DataLoader(
        pyloader.ArrayDataset(x, np.arange(size)), batch_size=batch_size, shuffle=True, drop_last=drop_last
    )
    assert loader.uses_native_path
    for _ in range(3):
        seen = _epoch(loader)
        expected_count = size // batch_size * batch_size if drop_last else size
        assert len(seen) == expected_count == len(set(seen))
        if not drop_last:
            assert sorted(seen) == list(range(size))


def test_loader_shuffle_is_repeatable_and_changes_each_epoch():
    ds = pyloader.ArrayDataset(np.arange(500))
    make = lambda: pyloader.DataLoader(ds, batch_size=50, shuffle=True)
    torch.manual_seed(0)
    loader = make()
    first, second = _flat(loader), _flat(loader)
    assert first != second
    torch.manual_seed(0)
    again = make()
    assert _flat(again) == first and _flat(again) == second
    gen_a, gen_b = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert _flat(pyloader.DataLoader(ds, batch_size=50, shuffle=True, generator=gen_a)) == _flat(
        pyloader.DataLoader(ds, batch_size=50, shuffle=True, generator=gen_b)
    )


def _flat(loader):
    return torch.cat([batch[0] for batch in loader]).tolist()


def test_order_does_not_depend_on_thread_count():
    ds = pyloader.ArrayDataset(np.arange(100_000, dtype=np.int64), np.random.default_rng(0).random((100_000, 8)))
    results = []
    for threads in (1, 2, 4):
        loader = pyloader.DataLoader(
            ds, batch_size=1000, shuffle=True, num_threads=threads, generator=torch.Generator().manual_seed(3)
        )
        results.append([(y.clone(), x.clone()) for y, x in loader])
    for other in results[1:]:
        assert len(other) == len(results[0])
        for (y0, x0), (y1, x1) in zip(results[0], other):
            assert torch.equal(y0, y1) and torch.equal(x0, x1)


def test_shuffle_consumes_torch_rng_like_torch():
    ds = pyloader.ArrayDataset(np.arange(100))
    torch.manual_seed(1)
    list(pyloader.DataLoader(ds, batch_size=10, shuffle=True))
    ours = torch.rand(3)
    torch.manual_seed(1)
    list(torch.utils.data.DataLoader(ds, batch_size=10, shuffle=True))
    assert torch.equal(ours, torch.rand(3))


@pytest.mark.parametrize("size", [3, 4, 5, 10, 16, 64])
def test_small_shuffles_are_uniform(size):
    draws = 6000
    counts = np.zeros((size, size))
    for seed in range(draws):
        counts[np.arange(size), _core.IndexOrder.shuffled(size, seed).take(0, size)] += 1
    expected = draws / size
    # Every row lands at every position about equally often (5 sigma bounds).
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    if size == 4:  # all 24 permutations, odd ones included
        seen = {tuple(_core.IndexOrder.shuffled(4, seed).take(0, 4)) for seed in range(2000)}
        assert len(seen) == 24


def _parity(permutation) -> int:
    """0 for an even permutation, 1 for an odd one: (n - number of cycles) mod 2."""
    perm = permutation.tolist()
    seen = bytearray(len(perm))
    cycles = 0
    for start in range(len(perm)):
        if not seen[start]:
            cycles += 1
            k = start
            while not seen[k]:
                seen[k] = 1
                k = perm[k]
    return (len(perm) - cycles) % 2


@pytest.mark.parametrize("size", [(1 << 16) + 1, 1 << 18, (1 << 18) - 3, 300_007])
def test_shuffles_reach_both_parities(size):
    # A keyed family that only reaches even (or only odd) permutations is visibly
    # structured; fair seeds give each parity about half the time.
    parities = [_parity(_core.IndexOrder.shuffled(size, seed).take(0, size)) for seed in range(16)]
    assert 3 <= sum(parities) <= 13, parities
