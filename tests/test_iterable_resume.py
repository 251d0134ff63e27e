"""Resuming IterableDatasets: the Stateful protocol, and replay where it is missing."""

import json
import warnings

import pytest
import torch
import torch.utils.data as tud

import pyloader


class Counting(tud.IterableDataset):
    """A stream that depends only on torch's RNG (noise drawn per item) and worker sharding."""

    def __init__(self, n=50):
        self.n = n

    def __iter__(self):
        info = tud.get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        for i in range(start, self.n, step):
            yield torch.tensor([i, int(torch.randint(0, 1000, ()))])


class StatefulStream:
    def __init__(self, owner):
        self.owner, self.position = owner, 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.position >= self.owner.n:
            raise StopIteration
        self.position += 1
        self.owner.produced += 1
        return torch.tensor(self.position - 1)

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


class StatefulIteratorDataset(tud.IterableDataset):
    def __init__(self, n=40):
        self.n, self.produced = n, 0

    def __iter__(self):
        return StatefulStream(self)


class StatefulDataset(tud.IterableDataset):
    """Keeps its own position: iter() continues from it."""

    def __init__(self, n=30):
        self.n, self.next_item = n, 0

    def __iter__(self):
        while self.next_item < self.n:
            self.next_item += 1
            yield torch.tensor(self.next_item - 1)
        self.next_item = 0

    def state_dict(self):
        return {"next_item": self.next_item}

    def load_state_dict(self, state):
        self.next_item = state["next_item"]


def run_and_checkpoint(make_loader, stop_after):
    torch.manual_seed(11)
    loader = make_loader()
    iterator = iter(loader)
    for _ in range(stop_after):
        next(iterator)
    state = json.loads(json.dumps(loader.state_dict()))
    rng = torch.get_rng_state()
    rest = [batch.tolist() for batch in iterator]
    return state, rng, rest


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("stop_after", [0, 1, 4])
def test_replay_resumes_a_plain_iterable_exactly_with_a_warning(workers, stop_after):
    make = lambda: pyloader.DataLoader(Counting(), batch_size=4, num_workers=workers)
    state, rng, rest = run_and_checkpoint(make, stop_after)
    resumed = make()
    resumed.load_state_dict(state)
    torch.set_rng_state(rng)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = [batch.tolist() for batch in resumed]
    assert batches == rest
    assert any("replaying" in str(w.message) for w in caught) == (stop_after > 0)


def test_stateful_iterator_is_restored_not_replayed():
    make = lambda: pyloader.DataLoader(StatefulIteratorDataset(), batch_size=3)
    state, _, rest = run_and_checkpoint(make, 5)
    assert state["iterator_state"] == {"position": 15}
    resumed = make()
    resumed.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batches = [batch.tolist() for batch in resumed]
    assert batches == rest
    assert resumed.dataset.produced == 40 - 15  # nothing was replayed


def test_stateful_dataset_is_restored():
    make = lambda: pyloader.DataLoader(StatefulDataset(), batch_size=4)
    state, _, rest = run_and_checkpoint(make, 3)
    assert state["dataset_state"] == {"next_item": 12}
    resumed = make()
    resumed.load_state_dict(state)
    assert [batch.tolist() for batch in resumed] == rest


def test_state_at_the_end_of_an_epoch_starts_the_next_one_fresh():
    loader = pyloader.DataLoader(StatefulIteratorDataset(10), batch_size=4)
    first = [batch.tolist() for batch in loader]
    state = loader.state_dict()
    assert state["in_epoch"] is False
    resumed = pyloader.DataLoader(StatefulIteratorDataset(10), batch_size=4)
    resumed.load_state_dict(state)
    assert [batch.tolist() for batch in resumed] == first


def test_state_of_a_loaded_but_unstarted_loader_is_what_was_loaded():
    make = lambda: pyloader.DataLoader(StatefulIteratorDataset(), batch_size=3)
    state, _, rest = run_and_checkpoint(make, 2)
    middle = make()
    middle.load_state_dict(state)
    again = make()
    again.load_state_dict(middle.state_dict())
    assert [batch.tolist() for batch in again] == rest


def test_matches_torchdata_stateful_dataloader():
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    for stop_after in (0, 2, 7):
        theirs = stateful.StatefulDataLoader(StatefulIteratorDataset(), batch_size=3)
        iterator = iter(theirs)
        for _ in range(stop_after):
            next(iterator)
        their_state = theirs.state_dict()
        theirs_resumed = stateful.StatefulDataLoader(StatefulIteratorDataset(), batch_size=3)
        theirs_resumed.load_state_dict(their_state)
        expected = [batch.tolist() for batch in theirs_resumed]

        ours = pyloader.DataLoader(StatefulIteratorDataset(), batch_size=3)
        iterator = iter(ours)
        for _ in range(stop_after):
            next(iterator)
        ours_resumed = pyloader.DataLoader(StatefulIteratorDataset(), batch_size=3)
        ours_resumed.load_state_dict(json.loads(json.dumps(ours.state_dict())))
        assert [batch.tolist() for batch in ours_resumed] == expected


def test_a_different_number_of_workers_is_refused_for_an_iterable():
    loader = pyloader.StatefulDataLoader(Counting(), batch_size=4, num_workers=2, snapshot_every_n_steps=5)
    iterator = iter(loader)
    next(iterator)
    state = loader.state_dict()
    del iterator
    with pytest.raises(ValueError, match="num_workers=2.*num_workers=0"):
        pyloader.DataLoader(Counting(), batch_size=4).load_state_dict(state)
    with pytest.raises(ValueError, match="snapshot_every_n_steps"):
        pyloader.DataLoader(Counting(), snapshot_every_n_steps=-1)
    # Map-style states do not depend on the workers: they load anywhere.
    ds = pyloader.TensorDataset(torch.arange(20))
    mapped = pyloader.DataLoader(ds, batch_size=3, num_workers=2, native=False)
    iterator = iter(mapped)
    next(iterator)
    state = mapped.state_dict()
    del iterator
    resumed = pyloader.DataLoader(ds, batch_size=3, native=False)
    resumed.load_state_dict(state)
    assert [b[0].tolist() for b in resumed] == [list(range(k, min(k + 3, 20))) for k in range(3, 20, 3)]


class ShardedStateful(tud.IterableDataset):
    """Each worker reads its own shard and keeps its position as its state; the items
    draw from numpy's RNG, so replaying could not reproduce them."""

    def __init__(self, n=43):
        self.n, self.position = n, 0

    def __iter__(self):
        import numpy as np

        info = tud.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        mine = list(range(worker, self.n, workers))
        while self.position < len(mine):
            self.position += 1
            noise = int(np.random.default_rng(mine[self.position - 1]).integers(1000))
            yield torch.tensor([mine[self.position - 1], noise])

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("stop_after", [0, 1, 4, 5])
def test_worker_states_resume_each_worker_exactly(workers, stop_after):
    make = lambda: pyloader.DataLoader(ShardedStateful(), batch_size=2, num_workers=workers)
    uninterrupted = [batch.tolist() for batch in make()]
    loader = make()
    iterator = iter(loader)
    seen = [next(iterator).tolist() for _ in range(stop_after)]
    state = json.loads(json.dumps(loader.state_dict()))
    del iterator
    assert state["worker_states"] is not None
    resumed = make()
    resumed.load_state_dict(state)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rest = [batch.tolist() for batch in resumed]
    assert not any("replaying" in str(w.message) for w in caught)  # each worker restored itself
    assert seen + rest == uninterrupted
