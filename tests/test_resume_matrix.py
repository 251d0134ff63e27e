"""Checkpoints at every kind of point (after iter() before the first batch, mid-epoch,
after the last batch, between epochs), in the first and in a later epoch, for every
sampler kind, worker mode and delivery order: the batches after resuming in a fresh
loader, through a JSON round trip, equal the uninterrupted run's, later epochs too."""

import warnings

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import pyloader

from checkpoints import checkpointed_run, epochs

ROWS, BATCH, EPOCHS = 23, 4, 3  # 6 batches an epoch, the last one short
BATCHES = -(-ROWS // BATCH)
POINTS = [(0, 0), (0, 2), (0, BATCHES), (0, "between"), (1, 0), (1, 3), (1, "between")]


class Plain(tud.Dataset):
    def __len__(self):
        return ROWS

    def __getitem__(self, index):
        return index


class NumpyShuffle(tud.Sampler):
    """A Stateful sampler drawing from numpy: only its own state can resume it."""

    def __init__(self):
        self.rng, self.position, self.order = np.random.default_rng(3), 0, None

    def __len__(self):
        return ROWS

    def __iter__(self):
        if self.order is None or self.position >= ROWS:
            self.order, self.position = self.rng.permutation(ROWS).tolist(), 0
        while self.position < ROWS:
            self.position += 1
            yield self.order[self.position - 1]
        self.order = None

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state, "position": self.position, "order": self.order}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]
        self.position, self.order = state["position"], state["order"]


def _torchdata_batches(dataset):
    samplers = pytest.importorskip("torchdata.stateful_dataloader.sampler")
    return dict(
        batch_sampler=samplers.BatchSampler(
            samplers.RandomSampler(dataset, generator=torch.Generator().manual_seed(7)), BATCH, False
        )
    )


SAMPLERS = {
    "shuffle": lambda dataset: dict(shuffle=True, batch_size=BATCH),
    "shuffle_generator": lambda dataset: dict(
        shuffle=True, batch_size=BATCH, generator=torch.Generator().manual_seed(9)
    ),
    "random_global_rng": lambda dataset: dict(sampler=tud.RandomSampler(dataset), batch_size=BATCH),
    "weighted": lambda dataset: dict(sampler=tud.WeightedRandomSampler([1.0] * ROWS, ROWS), batch_size=BATCH),
    "torchdata_batch_sampler": _torchdata_batches,
    "stateful_numpy_sampler": lambda dataset: dict(sampler=NumpyShuffle(), batch_size=BATCH),
}
WORKERS = {
    "w0": dict(num_workers=0),
    "processes": dict(num_workers=2),
    "threads": dict(num_workers=2, worker_mode="thread"),
    "persistent_processes": dict(num_workers=2, persistent_workers=True),
    "persistent_threads": dict(num_workers=2, worker_mode="thread", persistent_workers=True),
    "processes_out_of_order": dict(num_workers=2, in_order=False),
    "threads_out_of_order": dict(num_workers=2, worker_mode="thread", in_order=False),
}
DATASETS = {"torch_path": Plain, "native": lambda: pyloader.ArrayDataset(np.arange(ROWS))}


def cases():
    for dataset in DATASETS:
        for sampler in SAMPLERS:
            for workers in WORKERS:
                if dataset == "native" and "threads" in workers:
                    continue  # thread workers are a torch-path mode
                yield pytest.param(dataset, sampler, workers, id=f"{dataset}-{sampler}-{workers}")


@pytest.mark.parametrize("dataset, sampler, workers", list(cases()))
def test_resume_equals_the_uninterrupted_run(dataset, sampler, workers):
    def make():
        data = DATASETS[dataset]()
        return pyloader.DataLoader(data, **SAMPLERS[sampler](data), **WORKERS[workers])

    torch.manual_seed(1)
    uninterrupted = epochs(make(), EPOCHS)
    ordered = "out_of_order" not in workers
    for epoch, point in POINTS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's warning about few cores
            resumed = checkpointed_run(make, epoch, point, EPOCHS)
        if ordered:
            assert resumed == uninterrupted, (epoch, point)
        else:  # every sample of each epoch exactly once
            assert [sorted(e) for e in resumed] == [sorted(e) for e in uninterrupted], (epoch, point)
