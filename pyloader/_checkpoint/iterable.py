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

Where a stream ends matters as much as where it stands: a dataset whose state after its
last sample also means "start over" would, restored, begin its next epoch inside the
saved one. So the loader looks one sample ahead where it must to know: in a worker at
each batch's last sample (the batch then reports the state after the stream's end and
that its worker is done), and without workers when a state is taken (the sample drawn
ahead is put back). A worker whose stream had ended yields nothing more in the resumed
epoch.

Between epochs, a Stateful dataset's state is what the next epoch starts from, and with
persistent workers each worker's state is (the new workers load it, as the saved run's
workers would have carried on). A non-Stateful dataset with persistent workers cannot be
restored exactly after its first epoch (the workers' RNG and copies carried over); a
warning says so.
"""

from __future__ import annotations

import warnings
from collections import deque
from typing import Any

from torch.utils.data import get_worker_info

from .replay import WorkerBatch, sampler_generators
from .torch_internals import dataset_fetcher, dataset_iterator_of, worker_may_deliver

PERSISTENT_ITERABLE_WARNING = (
    "this IterableDataset was iterated by persistent workers, whose RNG and dataset copies carry over from "
    "epoch to epoch; the restored loader starts new ones, so its stream may differ from the saved run's: "
    "give the dataset state_dict()/load_state_dict() to restore each worker's position"
)


class EndOfStream:
    """The last item of a reporting worker's stream: the dataset's state after its
    iteration ended, which no batch would otherwise carry."""

    __slots__ = ("state",)

    def __init__(self, state) -> None:
        self.state = state


class _WorkerFlags:
    """Per worker process: how its stream is batched and what its last batch reports."""

    skip_next_epoch = False  # its saved stream had ended in this epoch
    # A saved state for a dataset that is its own iterator, loaded once iter() has set up
    # what loading needs; `deferred_at_end`: the state after its stream ended.
    deferred_state = None
    deferred_at_end = False
    self_iterating = False  # whether iter(dataset) returned the dataset itself
    batch_size = None  # samples per fetch (None: one sample, unbatched)
    batch_state = None  # (state after the batch's last sample, whether the stream ended there)


def _reporting_iter(dataset):
    base_iter = dataset._pyloader_base_class.__iter__
    # A dataset that is its own iterator may set up in __iter__ what its load_state_dict
    # needs: its saved state is loaded after iter(), as torchdata loads iterator states.
    deferred, _WorkerFlags.deferred_state = _WorkerFlags.deferred_state, None
    at_end = _WorkerFlags.deferred_at_end or _WorkerFlags.skip_next_epoch
    if deferred is not None and at_end:
        # The state after a stream that ended: the saved worker had iterated (set up)
        # and reached the end, and its next iter() starts from there (rewinding, or not,
        # as the dataset does).
        base_iter(dataset)
        dataset.load_state_dict(deferred)
    if _WorkerFlags.skip_next_epoch:
        _WorkerFlags.skip_next_epoch = False
        return
    per_batch = _WorkerFlags.batch_size or 1
    iterator = base_iter(dataset)
    if deferred is not None and not at_end:
        dataset.load_state_dict(deferred)  # a position inside the stream
    _WorkerFlags.self_iterating = iterator is dataset
    end = object()
    item, count = next(iterator, end), 0
    while item is not end:  # not `yield from`: a dataset that is its own iterator would be iterated anew
        count += 1
        if count % per_batch:
            following = next(iterator, end)
        else:
            # A batch's last sample: drawing the next one first tells whether the stream
            # ends with this batch, so the batch reports the state after the end (what
            # the next epoch starts from) and that its worker is done. Without that, a
            # dataset whose state at its end means "start over" (a reshuffle on the next
            # iter()) would, restored, start its next epoch inside this one.
            state = dataset.state_dict()
            following = next(iterator, end)
            if following is end:
                _WorkerFlags.batch_state = (dataset.state_dict(), True)
                yield item
                return
            _WorkerFlags.batch_state = (state, False)
        yield item
        item = following
    yield EndOfStream(dataset.state_dict())


_reporting_classes: dict = {}


def report_stream_end(dataset) -> bool:
    """Makes `dataset` (a worker's copy) end its streams with an EndOfStream, by giving
    it a subclass of its class that adds nothing but that (and no instance layout).
    False when its class cannot be swapped (an extension type)."""
    base = type(dataset)
    if getattr(base, "_pyloader_base_class", None) is not None:
        return True
    cls = _reporting_classes.get(base)
    if cls is None:
        cls = type(
            base.__name__,
            (base,),
            {"__slots__": (), "__iter__": _reporting_iter, "_pyloader_base_class": base, "__module__": base.__module__},
        )
        _reporting_classes[base] = cls
    try:
        dataset.__class__ = cls
    except TypeError:
        return False
    return True


class ReportingCollate:
    """The loader's collate_fn, run in a worker, returning the worker's dataset state too."""

    def __init__(self, collate_fn, batch_size, drop_last: bool) -> None:
        self.collate_fn, self.batch_size, self.drop_last = collate_fn, batch_size, drop_last

    def __call__(self, samples):
        info = get_worker_info()
        if info is None:
            return self.collate_fn(samples)
        itself = _WorkerFlags.self_iterating
        if isinstance(samples, EndOfStream):  # no batching: one sample at a time
            return WorkerBatch(None, info.id, samples.state, ended=True, empty=True, self_iterating=itself)
        if self.batch_size is not None and samples and isinstance(samples[-1], EndOfStream):
            end = samples.pop()
            if not samples or (self.drop_last and len(samples) < self.batch_size):
                return WorkerBatch(None, info.id, end.state, ended=True, empty=True, self_iterating=itself)
            return WorkerBatch(self.collate_fn(samples), info.id, end.state, ended=True, self_iterating=itself)
        measured, _WorkerFlags.batch_state = _WorkerFlags.batch_state, None
        if measured is None:  # a dataset whose class could not report (an extension type)
            return WorkerBatch(self.collate_fn(samples), info.id, info.dataset.state_dict())
        state, ended = measured
        return WorkerBatch(self.collate_fn(samples), info.id, state, ended=ended, self_iterating=itself)


class LoadingInit:
    """The loader's worker_init_fn, then the worker's saved dataset state loaded, and
    its dataset set up to report where its stream ends."""

    def __init__(
        self, worker_init_fn, states: dict, ended: set, batch_size, self_iterating=(), between_epochs: bool = False
    ) -> None:
        self.worker_init_fn, self.states, self.ended = worker_init_fn, states, ended
        self.batch_size = batch_size
        self.self_iterating = set(self_iterating)  # workers whose state is loaded after iter()
        self.between_epochs = between_epochs  # `states` are where ended streams left off

    def __call__(self, worker_id: int) -> None:
        if self.worker_init_fn is not None:
            self.worker_init_fn(worker_id)
        info = get_worker_info()
        assert info is not None  # worker_init_fn runs in a worker process
        dataset: Any = info.dataset  # Stateful when a state is loaded into it
        state = self.states.get(str(worker_id))
        _WorkerFlags.deferred_state, _WorkerFlags.deferred_at_end = None, self.between_epochs
        if state is not None:
            if str(worker_id) in self.self_iterating:
                _WorkerFlags.deferred_state = state
            else:
                dataset.load_state_dict(state)
        if not report_stream_end(dataset):
            warnings.warn(
                f"{type(dataset).__name__} is an extension type: a resumed worker cannot report "
                "the end of its stream, so a state taken just after it may repeat it",
                UserWarning,
                stacklevel=2,
            )
        # A stream that had ended in the saved epoch yields nothing more in it.
        _WorkerFlags.skip_next_epoch = str(worker_id) in self.ended
        _WorkerFlags.batch_size = self.batch_size


class RotatedWorkers:
    """torch's worker iterator, handing batches out from `first` worker on, as the saved
    run would have: torch's new iterator starts its round robin at worker 0."""

    def __init__(self, iterator, first: int, workers: int) -> None:
        self._iterator = iterator
        self._due = first
        self._workers = workers
        self._held: dict[int, deque] = {w: deque() for w in range(workers)}
        self._ended = False

    def __iter__(self):
        return self

    def __len__(self):
        return len(self._iterator)

    def _alive(self, worker: int) -> bool:
        """Whether `worker` may still deliver (see `worker_may_deliver`)."""
        return not self._ended and worker_may_deliver(self._iterator, worker)

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


class EndedEpoch:
    """The rest of an epoch whose stream had ended when its state was taken."""

    def __iter__(self):
        return self

    def __next__(self):
        raise StopIteration


def reports_worker_states(loader) -> bool:
    return loader.num_workers > 0 and loader.worker_mode == "process" and is_stateful(loader.dataset)


def start_reporting_iterator(
    loader, states: dict | None = None, ended=(), self_iterating=(), between_epochs: bool = False
):
    """torch's worker iterator with each worker reporting its dataset state, having
    loaded its state in `states` first (those in `ended` then yield nothing this epoch;
    those in `self_iterating` load theirs once iter() has run). `between_epochs`: the
    states are where the workers' previous streams ended."""
    collate_fn, worker_init_fn = loader.collate_fn, loader.worker_init_fn
    loader.collate_fn = ReportingCollate(collate_fn, loader.batch_size, loader.drop_last)
    loader.worker_init_fn = LoadingInit(
        worker_init_fn, dict(states or {}), set(ended), loader.batch_size, self_iterating, between_epochs
    )
    try:
        return loader._torch_path_iterator()
    finally:
        loader.collate_fn, loader.worker_init_fn = collate_fn, worker_init_fn


def is_stateful(obj) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


def load_dataset_state(dataset, state) -> None:
    """Loads a saved dataset state into `dataset`, refusing a dataset that cannot take it."""
    if not is_stateful(dataset):
        raise ValueError("cannot resume: the state holds a dataset state, but this dataset has no load_state_dict()")
    dataset.load_state_dict(state)


def iterable_state(loader) -> dict:
    """The dataset's and its iterator's states, where they are Stateful."""
    progress = loader._progress
    if progress is not None and progress.worker_states is not None:
        itself = sorted(progress.self_iterating)
        if not progress.finished:
            last = progress.last_worker
            return {
                "dataset_state": None,
                "iterator_state": None,
                "worker_states": dict(progress.worker_states),
                "next_worker": 0 if last is None else (last + 1) % loader.num_workers,
                "workers_ended": sorted(progress.workers_ended),
                "self_iterating_workers": itself,
            }
        if loader.persistent_workers:
            # The next epoch's workers carry on from where their streams ended.
            return {
                "dataset_state": None,
                "iterator_state": None,
                "worker_states": dict(progress.worker_states),
                "self_iterating_workers": itself,
            }
    dataset_state = iterator_state = None
    if is_stateful(loader.dataset):
        # Between epochs this is what the next epoch's iteration (or its workers' copies)
        # starts from; inside one without workers, where the dataset stands.
        dataset_state = loader.dataset.state_dict()
    if progress is not None and not progress.finished and loader.num_workers == 0:
        source = progress.source() if progress.source is not None else None
        fetcher = dataset_fetcher(source)
        if getattr(fetcher, "ended", False):
            # The stream has ended and only the epoch's end is left to see: the rest of
            # the epoch is empty, and the dataset's state is already the next epoch's.
            return {"dataset_state": dataset_state, "iterator_state": None, "stream_ended": True}
        dataset_iterator = dataset_iterator_of(source)
        if isinstance(dataset_iterator, _PushedBack):  # looked ahead by an earlier state_dict()
            if dataset_iterator.pending:
                return {"dataset_state": dataset_iterator.state, "iterator_state": None}
            fetcher.dataset_iter = dataset_iterator = dataset_iterator.iterator
        if is_stateful(dataset_iterator):
            iterator_state = dataset_iterator.state_dict()
        elif dataset_state is not None and dataset_iterator is not None:
            return _look_ahead(loader.dataset, fetcher, dataset_state)
    return {"dataset_state": dataset_state, "iterator_state": iterator_state}


class _PushedBack:
    """A dataset iterator with the sample drawn ahead of it put back in front."""

    def __init__(self, item, iterator, state) -> None:
        self.item, self.iterator, self.state = item, iterator, state
        self.pending = True

    def __iter__(self):
        return self

    def __next__(self):
        if self.pending:
            self.pending, item = False, self.item
            self.item = None
            return item
        return next(self.iterator)


def _look_ahead(dataset, fetcher, state: dict) -> dict:
    """The state of a Stateful dataset iterated in the main process, telling whether
    its stream has ended: that needs the next sample drawn (and put back), since a
    dataset's state at its last sample may also mean "start over" (a reshuffle on the
    next iter()), which restored would start a new epoch inside this one."""
    end = object()
    following = next(fetcher.dataset_iter, end)
    if following is end:
        fetcher.ended = True
        return {"dataset_state": dataset.state_dict(), "iterator_state": None, "stream_ended": True}
    fetcher.dataset_iter = _PushedBack(following, fetcher.dataset_iter, state)
    return {"dataset_state": state, "iterator_state": None}


def resume_iterable(loader, resume, progress):
    """torch's iterator for the rest of a saved epoch (a `LoaderState`) of an IterableDataset."""
    skip = resume.batches_yielded
    progress.batches_yielded = skip
    if resume.worker_states is not None:
        # Every worker continues from its own state: nothing is replayed.
        progress.worker_states = dict(resume.worker_states)
        progress.workers_ended = set(resume.workers_ended)
        progress.self_iterating = set(resume.self_iterating_workers)
        with progress.snapshot.replaying(sampler_generators(loader)):
            iterator = start_reporting_iterator(
                loader, progress.worker_states, progress.workers_ended, progress.self_iterating
            )
        if not loader.in_order:
            return iterator  # batches come as workers make them; each worker's own stay in order
        return RotatedWorkers(iterator, resume.next_worker or 0, loader.num_workers)
    dataset_state, iterator_state = resume.dataset_state, resume.iterator_state
    if dataset_state is not None:
        load_dataset_state(loader.dataset, dataset_state)
    if resume.stream_ended:
        return EndedEpoch()
    # The iterator's creation draws its base seed (and a dataset may draw in __iter__)
    # as the saved epoch's did; replayed batches are drawn as they were the first time.
    with progress.snapshot.replaying(sampler_generators(loader)):
        iterator = loader._torch_path_iterator()
        if iterator_state is not None:
            dataset_iterator = dataset_iterator_of(iterator)
            if not is_stateful(dataset_iterator):
                raise ValueError(
                    "cannot resume: the state holds an iterator state, but iter(dataset) "
                    "now returns an iterator without load_state_dict()"
                )
            dataset_iterator.load_state_dict(iterator_state)
            return iterator
        if not progress.drew_base_seed:
            warnings.warn(PERSISTENT_ITERABLE_WARNING, UserWarning, stacklevel=4)
        if dataset_state is not None or skip == 0:
            return iterator
        warnings.warn(
            f"resuming an IterableDataset by replaying {skip} batch(es) of its epoch: exact only if its "
            "stream depends on nothing but torch's RNG and worker seeds; give the dataset (num_workers=0) "
            "or its iterator state_dict()/load_state_dict() to resume without replaying",
            UserWarning,
            stacklevel=4,
        )
        for _ in range(skip):
            try:
                next(iterator)
            except StopIteration:
                break
    return iterator
