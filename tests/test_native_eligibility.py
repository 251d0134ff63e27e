"""When a loader may take the native path: only when torch's fetch would give the same data.

Every dataset below changes something torch's fetcher calls (or that the base class's
``__getitem__`` reads); each must give torch's batches, which here differ from what a
plain gather would produce. Subclasses that change nothing of the kind stay native.
"""

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import pyloader
from pyloader._native import eligibility as _plain

from conftest import assert_loaders_equal

X = np.arange(40, dtype=np.float32).reshape(20, 2)
Y = np.arange(20)


class DoublingGetitems(pyloader.ArrayDataset):
    def __getitems__(self, indices):
        return [(torch.from_numpy(X[i] * 2), torch.tensor(Y[i])) for i in indices]


class TensorGetitems(tud.TensorDataset):
    def __getitems__(self, indices):
        return [tuple(t[i] + 1 for t in self.tensors) for i in indices]


class ShortLen(tud.TensorDataset):
    def __len__(self):
        return 10


class SubsetGetitems(tud.Subset):
    def __getitem__(self, index):
        return tuple(t * 3 for t in super().__getitem__(index))

    def __getitems__(self, indices):
        return [self[i] for i in indices]


class ReversedIndices(tud.Subset):
    @property
    def indices(self):
        return self._indices[::-1]

    @indices.setter
    def indices(self, value):
        self._indices = value


class ConcatGetitem(tud.ConcatDataset):
    def __getitem__(self, index):
        return tuple(t - 1 for t in super().__getitem__(index))


class RowChanging(pyloader.ArrayDataset):
    def _row(self, column, index):
        return super()._row(column, index) + 5


def tensors():
    return torch.from_numpy(X), torch.from_numpy(Y)


CHANGED = {
    "ArrayDataset.__getitems__": lambda: DoublingGetitems(X, Y),
    "TensorDataset.__getitems__": lambda: TensorGetitems(*tensors()),
    "TensorDataset.__len__": lambda: ShortLen(*tensors()),
    "Subset.__getitem__/__getitems__": lambda: SubsetGetitems(tud.TensorDataset(*tensors()), list(range(0, 20, 2))),
    "Subset.indices property": lambda: ReversedIndices(tud.TensorDataset(*tensors()), list(range(12))),
    "ConcatDataset.__getitem__": lambda: ConcatGetitem([tud.TensorDataset(*tensors())] * 2),
    "ArrayDataset._row": lambda: RowChanging(X, Y),
    "Subset of a changed dataset": lambda: tud.Subset(DoublingGetitems(X, Y), [3, 1, 2]),
    "ConcatDataset of a changed dataset": lambda: tud.ConcatDataset(
        [pyloader.ArrayDataset(X, Y), ShortLen(*tensors())]
    ),
}


@pytest.mark.parametrize("name", CHANGED)
@pytest.mark.parametrize("shuffle", [False, True])
def test_datasets_that_change_the_fetch_take_torchs_path(name, shuffle):
    dataset = CHANGED[name]()
    ours = pyloader.DataLoader(
        dataset,
        batch_size=4,
        sampler=tud.RandomSampler(dataset, generator=torch.Generator().manual_seed(1)) if shuffle else None,
    )
    theirs = tud.DataLoader(
        dataset,
        batch_size=4,
        sampler=tud.RandomSampler(dataset, generator=torch.Generator().manual_seed(1)) if shuffle else None,
    )
    assert not ours.uses_native_path
    with pytest.raises(ValueError, match="native=True"):
        pyloader.DataLoader(dataset, batch_size=4, native=True)
    assert_loaders_equal(ours, theirs)


def test_an_instance_level_getitems_is_honoured():
    dataset = pyloader.ArrayDataset(X, Y)
    dataset.__getitems__ = lambda indices: [(torch.zeros(2), torch.tensor(-1)) for _ in indices]
    ours = pyloader.DataLoader(dataset, batch_size=5)
    assert not ours.uses_native_path
    assert_loaders_equal(ours, tud.DataLoader(dataset, batch_size=5))


class OnlyInit(tud.TensorDataset):
    def __init__(self, x, y):
        super().__init__(torch.from_numpy(x), torch.from_numpy(y))
        self.description = "features and labels"


class HelperMethods(pyloader.ArrayDataset):
    def describe(self):
        return repr(self)


@pytest.mark.parametrize(
    "make", [lambda: OnlyInit(X, Y), lambda: HelperMethods(X, Y), lambda: tud.Subset(OnlyInit(X, Y), [5, 4, 3])]
)
def test_subclasses_that_change_no_fetch_stay_native(make):
    dataset = make()
    ours = pyloader.DataLoader(dataset, batch_size=4)
    assert ours.uses_native_path
    assert_loaders_equal(ours, tud.DataLoader(dataset, batch_size=4))


def test_concat_with_stale_cumulative_sizes_takes_torchs_path():
    concat = tud.ConcatDataset([pyloader.ArrayDataset(X, Y)])
    concat.datasets.append(pyloader.ArrayDataset(X, Y))  # torch still indexes by the old sizes
    ours = pyloader.DataLoader(concat, batch_size=7)
    assert not ours.uses_native_path
    assert_loaders_equal(ours, tud.DataLoader(concat, batch_size=7))


@pytest.fixture
def counted_planning(monkeypatch):
    calls = []
    real = _plain.columns_of

    def counting(dataset):
        calls.append(dataset)
        return real(dataset)

    monkeypatch.setattr(_plain, "columns_of", counting)
    return calls


def test_subset_columns_are_derived_once_per_loader(counted_planning):
    base = pyloader.ArrayDataset(np.arange(1000))
    train, _ = tud.random_split(base, [800, 200], generator=torch.Generator().manual_seed(0))
    loader = pyloader.DataLoader(train, batch_size=100, shuffle=True)
    for _ in range(3):
        assert loader.uses_native_path
        assert sorted(torch.cat([b[0] for b in loader]).tolist()) == sorted(train.indices)
    assert len(counted_planning) == 1


@pytest.mark.parametrize("change", ["replace indices", "shorten indices", "replace dataset", "replace tensors"])
def test_a_changed_structure_is_noticed(counted_planning, change):
    tensors_ = (torch.arange(50), torch.arange(50) * 10)
    subset = tud.Subset(tud.TensorDataset(*tensors_), list(range(0, 50, 2)))
    loader = pyloader.DataLoader(subset, batch_size=6)
    assert_loaders_equal(loader, tud.DataLoader(subset, batch_size=6))
    if change == "replace indices":
        subset.indices = list(range(49, 0, -3))
    elif change == "shorten indices":
        del subset.indices[5:]
    elif change == "replace dataset":
        subset.dataset = tud.TensorDataset(torch.arange(100, 150), torch.arange(50))
    else:
        subset.dataset.tensors = (torch.arange(50) + 7, torch.arange(50))
    assert_loaders_equal(loader, tud.DataLoader(subset, batch_size=6))
    assert len(counted_planning) == 2


def test_loader_is_generic_like_torchs():
    alias = pyloader.DataLoader[list[torch.Tensor]]
    assert alias.__origin__ is pyloader.DataLoader
    loader: pyloader.DataLoader[tuple[torch.Tensor, ...]] = pyloader.DataLoader(pyloader.ArrayDataset(X), batch_size=4)
    assert len(loader) == 5


def test_gather_depth_follows_prefetch_factor_only_when_given():
    from pyloader._native.iterator import prefetch_depth

    ds = pyloader.ArrayDataset(np.zeros((100, 4), np.float32))
    plain = pyloader.DataLoader(ds, batch_size=4, num_threads=2)
    workers = pyloader.DataLoader(ds, batch_size=4, num_threads=2, num_workers=2)  # torch sets prefetch_factor=2
    chosen = pyloader.DataLoader(ds, batch_size=4, num_threads=2, num_workers=2, prefetch_factor=5)
    assert prefetch_depth(workers, 16) == prefetch_depth(plain, 16)
    assert prefetch_depth(chosen, 16) == 10
