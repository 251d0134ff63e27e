"""Resuming an IterableDataset mid-epoch.

An iterable dataset's position lives in the dataset and its iterator, so the loader
saves what they can tell it, following the Stateful protocol (an object with
``state_dict()`` and ``load_state_dict(state)``), as torchdata's StatefulDataLoader
does:

* ``iterator_state``: the state of the iterator ``iter(dataset)`` returned, when that
  iterator is Stateful (``num_workers=0``). Resuming creates a new iterator and loads it.
* ``dataset_state``: the dataset's own state, when the dataset is Stateful
  (``num_workers=0``). It is loaded before ``iter(dataset)`` is called again, so the
  dataset continues from it.
* ``worker_states``: with worker processes and a Stateful dataset, each worker's copy of
  the dataset reports its state with every batch it produces (the loader's collate_fn
  is wrapped in the worker), and the state keeps the latest one per worker and which
  worker's batch is due next. Resuming loads each worker's state in that worker before
  it iterates (worker_init_fn is wrapped), and hands the workers' batches out starting
  with the one that was due, so the batches equal the uninterrupted run's.
* Otherwise (neither is Stateful): the epoch is replayed from the RNG states it started
  with and the batches already delivered are skipped. That is exact when the dataset's
  stream depends only on torch's RNG and its worker seeds, and costs the work of the
  skipped batches; a warning says so.

A state taken between epochs restores nothing of the dataset: the next epoch calls
``iter(dataset)`` afresh, as an uninterrupted run would.
"""

from __future__ import annotations

import warnings
from collections import deque

from torch.utils.data import get_worker_info

from ._resume import WorkerBatch, sampler_generators


class ReportingCollate:
    """The loader's collate_fn, run in a worker, returning the worker's dataset state too."""

    def __init__(self, collate_fn) -> None:
        self.collate_fn = collate_fn

    def __call__(self, samples):
        batch = self.collate_fn(samples)
        info = get_worker_info()
        if info is None:
            return batch
        return WorkerBatch(batch, info.id, info.dataset.state_dict())


class LoadingInit:
    """The loader's worker_init_fn, then the worker's saved dataset state loaded."""

    def __init__(self, worker_init_fn, states: dict) -> None:
        self.worker_init_fn, self.states = worker_init_fn, states

    def __call__(self, worker_id: int) -> None:
        if self.worker_init_fn is not None:
            self.worker_init_fn(worker_id)
        state = self.states.get(str(worker_id))
        if state is not None:
            get_worker_info().dataset.load_state_dict(state)


class RotatedWorkers:
    """torch's worker iterator, handing batches out from `first` worker on, as the saved
    run would have: torch's new iterator starts its round robin at worker 0."""

    def __init__(self, iterator, first: int, workers: int) -> None:
        self._iterator = iterator
        self._due = first
        self._workers = workers
        self._held = {w: deque() for w in range(workers)}
        self._ended = False

    def __iter__(self):
        return self

    def __len__(self):
        return len(self._iterator)

    def _alive(self, worker: int) -> bool:
        """Whether `worker` may still deliver: torch clears its status as soon as its end
        marker arrives, while a batch it made may still wait in the task table."""
        if self._ended:
            return False
        status = getattr(self._iterator, "_workers_status", None)
        if status is None or bool(status[worker]):
            return True
        tasks = getattr(self._iterator, "_task_info", {})
        return any(info[0] == worker for info in tasks.values())

    def __next__(self):
        while True:
            for _ in range(self._workers):
                held = self._held[self._due]
                if held:
                    batch = held.popleft()
                    self._due = (self._due + 1) % self._workers
                    return batch
                if self._alive(self._due):
                    break
                self._due = (self._due + 1) % self._workers  # that worker's stream has ended
            else:
                raise StopIteration
            try:
                batch = next(self._iterator)
            except StopIteration:
                self._ended = True
                continue
            worker = batch.worker_id if isinstance(batch, WorkerBatch) else self._due
            self._held[worker].append(batch)

    def __getattr__(self, name):
        return getattr(self._iterator, name)


def reports_worker_states(loader) -> bool:
    return loader.num_workers > 0 and loader.worker_mode == "process" and is_stateful(loader.dataset)


def start_reporting_iterator(loader, states: dict | None = None):
    """torch's worker iterator with each worker reporting its dataset state (and, when
    `states` is given, loading its saved one first)."""
    collate_fn, worker_init_fn = loader.collate_fn, loader.worker_init_fn
    loader.collate_fn = ReportingCollate(collate_fn)
    if states is not None:
        loader.worker_init_fn = LoadingInit(worker_init_fn, states)
    try:
        return loader._torch_path_iterator()
    finally:
        loader.collate_fn, loader.worker_init_fn = collate_fn, worker_init_fn


def is_stateful(obj) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


def _dataset_iterator(torch_iterator):
    fetcher = getattr(torch_iterator, "_dataset_fetcher", None)
    return getattr(fetcher, "dataset_iter", None)


def iterable_state(loader) -> dict:
    """The dataset's and its iterator's states, where they are Stateful."""
    if loader._resume_state is not None:  # loaded, not started: what was loaded stands
        keys = ("dataset_state", "iterator_state", "worker_states", "next_worker")
        return {key: loader._resume_state.get(key) for key in keys}
    progress = loader._progress
    dataset_state = iterator_state = None
    if progress is not None and not progress.finished and progress.worker_states is not None:
        last = progress.last_worker
        return {"dataset_state": None, "iterator_state": None, "worker_states": dict(progress.worker_states),
                "next_worker": 0 if last is None else (last + 1) % loader.num_workers}
    if progress is not None and not progress.finished and loader.num_workers == 0:
        if is_stateful(loader.dataset):
            dataset_state = loader.dataset.state_dict()
        source = progress.source() if progress.source is not None else None
        dataset_iterator = _dataset_iterator(source)
        if is_stateful(dataset_iterator):
            iterator_state = dataset_iterator.state_dict()
    return {"dataset_state": dataset_state, "iterator_state": iterator_state}


def resume_iterable(loader, resume: dict, progress):
    """torch's iterator for the rest of a saved epoch of an IterableDataset."""
    skip = resume["batches_yielded"]
    progress.batches_yielded = skip
    if resume.get("worker_states") is not None:
        # Every worker continues from its own state: nothing is replayed.
        progress.worker_states = dict(resume["worker_states"])
        with progress.snapshot.replaying(sampler_generators(loader)):
            iterator = start_reporting_iterator(loader, progress.worker_states)
        return RotatedWorkers(iterator, resume["next_worker"], loader.num_workers)
    dataset_state, iterator_state = resume.get("dataset_state"), resume.get("iterator_state")
    if dataset_state is not None:
        if not is_stateful(loader.dataset):
            raise ValueError("cannot resume: the state holds a dataset state, but this dataset has no "
                             "load_state_dict()")
        loader.dataset.load_state_dict(dataset_state)
    # The iterator's creation draws its base seed (and a dataset may draw in __iter__)
    # as the saved epoch's did; replayed batches are drawn as they were the first time.
    with progress.snapshot.replaying(sampler_generators(loader)):
        iterator = loader._torch_path_iterator()
        if iterator_state is not None:
            dataset_iterator = _dataset_iterator(iterator)
            if not is_stateful(dataset_iterator):
                raise ValueError("cannot resume: the state holds an iterator state, but iter(dataset) "
                                 "now returns an iterator without load_state_dict()")
            dataset_iterator.load_state_dict(iterator_state)
            return iterator
        if dataset_state is not None or skip == 0:
            return iterator
        warnings.warn(
            f"resuming an IterableDataset by replaying {skip} batch(es) of its epoch: exact only if its "
            "stream depends on nothing but torch's RNG and worker seeds; give the dataset (num_workers=0) "
            "or its iterator state_dict()/load_state_dict() to resume without replaying",
            UserWarning, stacklevel=4)
        for _ in range(skip):
            try:
                next(iterator)
            except StopIteration:
                break
    return iterator
