"""Every DataLoader option behaves as torch's, side by side, on torch's path and ours."""

import collections
import multiprocessing

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import pyloader

from conftest import WaitsForRelease, assert_batches_equal

Point = collections.namedtuple("Point", "x y")


class Rich(tud.Dataset):
    """Samples of every shape default_collate handles."""

    def __len__(self):
        return 23

    def __getitem__(self, index):
        return {
            "number": index,
            "float": index / 2,
            "text": f"item-{index}",
            "array": np.full((2,), index, dtype=np.int16),
            "tensor": torch.full((3,), float(index)),
            "point": Point(index, -index),
            "nested": [{"deep": torch.tensor([index])}, (index, str(index))],
        }


class Batched(tud.Dataset):
    def __len__(self):
        return 20

    def __getitem__(self, index):
        return index

    def __getitems__(self, indices):
        return [index * 10 for index in indices]


class Shards(tud.IterableDataset):
    def __init__(self, count):
        self.count = count

    def __iter__(self):
        info = tud.get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(start, self.count, step))


def seeded_init(worker_id):
    np.random.seed(1000 + worker_id)


def both(**kwargs):
    dataset = kwargs.pop("dataset")
    make_sampler = kwargs.pop("make_sampler", None)
    if make_sampler is not None:
        ours = pyloader.DataLoader(dataset, sampler=make_sampler(), **kwargs)
        theirs = tud.DataLoader(dataset, sampler=make_sampler(), **kwargs)
    else:
        ours, theirs = pyloader.DataLoader(dataset, **kwargs), tud.DataLoader(dataset, **kwargs)
    return ours, theirs


def assert_same(ours, theirs, epochs=1):
    for _ in range(epochs):
        a, b = list(ours), list(theirs)
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_batches_equal(x, y)


@pytest.mark.parametrize("workers", [0, 2])
def test_default_collate_on_rich_samples(workers):
    assert_same(*both(dataset=Rich(), batch_size=5, num_workers=workers))


@pytest.mark.parametrize("workers", [0, 2])
def test_getitems_batched_fetching(workers):
    assert_same(*both(dataset=Batched(), batch_size=6, num_workers=workers, collate_fn=list))


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_size_none_and_default_convert(workers):
    assert_same(*both(dataset=Rich(), batch_size=None, num_workers=workers))


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_iterable_dataset_sharded_by_worker_info(workers):
    ours, theirs = both(dataset=Shards(37), batch_size=4, num_workers=workers)
    a = sorted(int(v) for batch in ours for v in batch)
    b = sorted(int(v) for batch in theirs for v in batch)
    assert a == b == list(range(37))


def test_chain_dataset_and_len_of_iterable():
    chained = tud.ChainDataset([Shards(5), Shards(3)])
    assert [b.tolist() for b in pyloader.DataLoader(chained, batch_size=4)] == [
        b.tolist() for b in tud.DataLoader(chained, batch_size=4)
    ]


def test_worker_init_fn_seeds_and_persistent_workers_across_epochs():
    class Noisy(tud.Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, index):
            return np.random.randint(0, 1 << 30)

    kwargs = dict(
        dataset=Noisy(),
        batch_size=3,
        num_workers=2,
        worker_init_fn=seeded_init,
        persistent_workers=True,
        prefetch_factor=3,
    )
    assert_same(*both(**kwargs), epochs=2)


def test_multiprocessing_context_spawn_and_generator():
    kwargs = dict(
        dataset=Rich(),
        batch_size=4,
        num_workers=1,
        multiprocessing_context="spawn",
        make_sampler=lambda: tud.RandomSampler(range(23), generator=torch.Generator().manual_seed(5)),
    )
    assert_same(*both(**kwargs))


def test_samplers_on_torchs_path():
    weights = torch.linspace(0.1, 1, 23)
    for make_sampler in (
        lambda: tud.WeightedRandomSampler(weights, 30, generator=torch.Generator().manual_seed(1)),
        lambda: tud.SubsetRandomSampler(range(0, 23, 2), generator=torch.Generator().manual_seed(2)),
    ):
        assert_same(*both(dataset=Rich(), batch_size=4, make_sampler=make_sampler, drop_last=True))


def test_timeout_on_torchs_path_raises_like_torch():
    release = multiprocessing.get_context("fork").Event()
    for loader in both(dataset=WaitsForRelease(release), batch_size=1, num_workers=1, timeout=0.2):
        iterator = iter(loader)
        with pytest.raises(RuntimeError, match="timed out after 0.2 seconds"):
            next(iterator)
        release.set()  # the worker may finish: shutting it down then takes no grace period
        iterator._shutdown_workers()
        release.clear()


def test_len_for_iterable_with_len_and_batch_size():
    class Sized(Shards):
        def __len__(self):
            return self.count

    for batch_size, drop_last in ((4, False), (4, True), (None, False)):
        ours, theirs = both(dataset=Sized(10), batch_size=batch_size, drop_last=drop_last)
        assert len(ours) == len(theirs)


def test_random_split_subsets_gather_natively():
    data = pyloader.ArrayDataset(np.arange(100), np.arange(100) * 3)
    train, test = pyloader.random_split(data, [0.8, 0.2], generator=torch.Generator().manual_seed(0))
    loader = pyloader.DataLoader(train, batch_size=16)
    assert loader.uses_native_path
    ids = torch.cat([b[0] for b in loader]).tolist()
    assert ids == [train[i][0].item() for i in range(len(train))]
