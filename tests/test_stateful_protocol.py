"""Stateful samplers and datasets (state_dict/load_state_dict) are saved and restored,
also side by side with torchdata's StatefulDataLoader where it is installed."""

import json

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import pyloader


class NumpyShuffleSampler(tud.Sampler):
    """Draws from numpy's RNG, which replay cannot reproduce: only its own state can."""

    def __init__(self, n, seed):
        self.n, self.rng, self.yielded, self.order = n, np.random.default_rng(seed), 0, None

    def __len__(self):
        return self.n

    def __iter__(self):
        if self.order is None or self.yielded >= self.n:
            self.order, self.yielded = self.rng.permutation(self.n).tolist(), 0
        while self.yielded < self.n:
            self.yielded += 1
            yield self.order[self.yielded - 1]
        self.order = None

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state, "yielded": self.yielded, "order": self.order}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]
        self.yielded, self.order = state["yielded"], state["order"]


class Plain(tud.Dataset):
    def __len__(self):
        return 45

    def __getitem__(self, index):
        return torch.tensor(index)


DATASETS = {"native": lambda: pyloader.ArrayDataset(np.arange(45)), "torch": Plain}
OPTIONS = {"w0": dict(), "w2": dict(num_workers=2), "threads": dict(num_workers=2, worker_mode="thread")}


def values(batch):
    return (batch[0] if isinstance(batch, (list, tuple)) else batch).tolist()


@pytest.mark.parametrize("kind", list(DATASETS))
@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("stop_after", [0, 1, 6, 8])
def test_stateful_sampler_resumes_exactly(kind, options, stop_after):
    if kind == "native" and options == "threads":
        pytest.skip("thread workers are a torch-path mode")
    # The resumed loader's sampler starts from another seed: only its restored state
    # can give the saved run's order.
    make = lambda seed=3: pyloader.DataLoader(
        DATASETS[kind](), batch_size=5, sampler=NumpyShuffleSampler(45, seed), **OPTIONS[options]
    )
    reference = make()
    uninterrupted = [values(b) for b in reference] + [values(b) for b in reference]
    loader = make()
    iterator = iter(loader)
    seen = [values(next(iterator)) for _ in range(stop_after)]
    state = json.loads(json.dumps(loader.state_dict()))
    del iterator
    resumed = make(seed=99)
    resumed.load_state_dict(state)
    rest = [values(b) for b in resumed] + [values(b) for b in resumed]
    assert seen + rest == uninterrupted


def test_matches_torchdata_for_a_stateful_sampler():
    # Inside the epoch only: after its last batch torchdata lets a restored custom
    # sampler begin a new epoch at once, where an uninterrupted loop (and torchdata with
    # its own samplers) ends the epoch; pyloader ends it (test_resume_matrix.py).
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    for stop_after in (0, 3, 8):
        theirs = stateful.StatefulDataLoader(Plain(), batch_size=5, sampler=NumpyShuffleSampler(45, 8))
        iterator = iter(theirs)
        for _ in range(stop_after):
            next(iterator)
        resumed = stateful.StatefulDataLoader(Plain(), batch_size=5, sampler=NumpyShuffleSampler(45, 77))
        resumed.load_state_dict(theirs.state_dict())
        expected = [b.tolist() for b in resumed]

        ours = pyloader.DataLoader(
            pyloader.ArrayDataset(np.arange(45)), batch_size=5, sampler=NumpyShuffleSampler(45, 8)
        )
        iterator = iter(ours)
        for _ in range(stop_after):
            next(iterator)
        again = pyloader.DataLoader(
            pyloader.ArrayDataset(np.arange(45)), batch_size=5, sampler=NumpyShuffleSampler(45, 77)
        )
        again.load_state_dict(json.loads(json.dumps(ours.state_dict())))
        assert [values(b) for b in again] == expected


@pytest.mark.parametrize("stop_after", [0, 2, 5])
def test_matches_torchdata_for_torch_samplers(stop_after):
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    make_sampler = lambda: tud.RandomSampler(range(45), generator=torch.Generator().manual_seed(4))
    theirs = stateful.StatefulDataLoader(Plain(), batch_size=4, sampler=make_sampler())
    iterator = iter(theirs)
    before = [next(iterator).tolist() for _ in range(stop_after)]
    resumed = stateful.StatefulDataLoader(Plain(), batch_size=4, sampler=make_sampler())
    resumed.load_state_dict(theirs.state_dict())
    expected = before + [b.tolist() for b in resumed]
    for dataset in (Plain(), pyloader.ArrayDataset(np.arange(45))):
        ours = pyloader.DataLoader(dataset, batch_size=4, sampler=make_sampler())
        iterator = iter(ours)
        mine = [values(next(iterator)) for _ in range(stop_after)]
        again = pyloader.DataLoader(dataset, batch_size=4, sampler=make_sampler())
        again.load_state_dict(json.loads(json.dumps(ours.state_dict())))
        assert mine + [values(b) for b in again] == expected


class Curriculum(tud.Dataset):
    """A map-style dataset with a state of its own."""

    def __init__(self):
        self.stage = 0

    def __len__(self):
        return 10

    def __getitem__(self, index):
        return torch.tensor(index + 100 * self.stage)

    def state_dict(self):
        return {"stage": self.stage}

    def load_state_dict(self, state):
        self.stage = state["stage"]


@pytest.mark.parametrize("workers", [0, 2])
def test_stateful_map_dataset_is_restored(workers):
    ds = Curriculum()
    loader = pyloader.DataLoader(ds, batch_size=3, num_workers=workers)
    iterator = iter(loader)
    next(iterator)
    ds.stage = 2
    state = json.loads(json.dumps(loader.state_dict()))
    del iterator
    fresh = Curriculum()
    resumed = pyloader.DataLoader(fresh, batch_size=3, num_workers=workers)
    resumed.load_state_dict(state)
    assert fresh.stage == 2
    assert [b.tolist() for b in resumed] == [[203, 204, 205], [206, 207, 208], [209]]
    with pytest.raises(ValueError, match="dataset state"):
        # Of the same length, so that the missing load_state_dict() is what is refused.
        pyloader.DataLoader(tud.Subset(Plain(), range(len(fresh))), batch_size=3).load_state_dict(state)
