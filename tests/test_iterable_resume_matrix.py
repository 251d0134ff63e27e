"""IterableDataset checkpoints at every kind of point (before the first batch, mid-epoch,
at the last batch, after it, between epochs), in the first and a later epoch, batched,
unbatched and with drop_last, with and without (persistent) worker processes: the run
resumed in a fresh loader, through a JSON round trip, equals the uninterrupted one."""

import json
import warnings

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import pyloader

from checkpoints import checkpointed_run, epochs, sample_ids

ITEMS, EPOCHS = 23, 3


def _share():
    info = tud.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class CountingStream(tud.IterableDataset):
    """Counts its epochs itself: the state changes once more after the last sample."""

    def __init__(self):
        self.position, self.epoch = 0, 0

    def __iter__(self):
        worker, workers = _share()
        mine = list(range(ITEMS))[worker::workers]
        while self.position < len(mine):
            self.position += 1
            yield mine[self.position - 1] + 100 * self.epoch
        self.position, self.epoch = 0, self.epoch + 1

    def state_dict(self):
        return {"position": self.position, "epoch": self.epoch}

    def load_state_dict(self, state):
        self.position, self.epoch = state["position"], state["epoch"]


class ReshufflingStream(tud.IterableDataset):
    """Reshuffles when iter() finds it at its end: its state after the last sample also
    means "start over", so only the loader can tell where the stream stands."""

    def __init__(self):
        self.rng, self.position, self.order = np.random.default_rng(5), 0, None

    def __iter__(self):
        worker, workers = _share()
        if self.order is None or self.position >= len(self.order):
            self.order, self.position = self.rng.permutation(ITEMS)[worker::workers].tolist(), 0
        while self.position < len(self.order):
            self.position += 1
            yield self.order[self.position - 1]

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state, "position": self.position, "order": self.order}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]
        self.position, self.order = state["position"], state["order"]


DATASETS = {"counting": CountingStream, "reshuffling": ReshufflingStream}
BATCHING = {
    "batch4": dict(batch_size=4),
    "batch4_drop_last": dict(batch_size=4, drop_last=True),
    "unbatched": dict(batch_size=None),
    "batch3": dict(batch_size=3),
}
WORKERS = {
    "w0": dict(num_workers=0),
    "processes2": dict(num_workers=2),
    "processes3": dict(num_workers=3),
    "persistent2": dict(num_workers=2, persistent_workers=True),
}


def cases():
    for dataset in DATASETS:
        for batching in BATCHING:
            for workers in WORKERS:
                yield pytest.param(dataset, batching, workers, id=f"{dataset}-{batching}-{workers}")


@pytest.mark.parametrize("dataset, batching, workers", list(cases()))
def test_iterable_resume_equals_the_uninterrupted_run(dataset, batching, workers):
    def make():
        return pyloader.DataLoader(DATASETS[dataset](), **BATCHING[batching], **WORKERS[workers])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's warning about few cores
        torch.manual_seed(1)
        uninterrupted = epochs(make(), EPOCHS)
        batches = len(list(make()))
        for epoch in (0, 1):
            for point in (0, 2, batches - 1, batches, "between"):
                assert checkpointed_run(make, epoch, point, EPOCHS) == uninterrupted, (epoch, point)


def test_two_checkpoints_in_one_epoch_without_workers():
    """A state taken in the main process draws the next sample ahead to see whether the
    stream has ended; the next state, after that sample was delivered, is its own."""
    for batching in ({"batch_size": None}, {"batch_size": 4}):
        uninterrupted = [sample_ids(b) for b in pyloader.DataLoader(ReshufflingStream(), **batching)]
        loader = pyloader.DataLoader(ReshufflingStream(), **batching)
        iterator = iter(loader)
        seen = [sample_ids(next(iterator)) for _ in range(2)]
        loader.state_dict()
        seen += [sample_ids(next(iterator)) for _ in range(2)]
        resumed = pyloader.DataLoader(ReshufflingStream(), **batching)
        resumed.load_state_dict(json.loads(json.dumps(loader.state_dict())))
        assert seen + [sample_ids(b) for b in resumed] == uninterrupted, batching
