"""The native path: deciding whether a loader can take it, and iterating it.

A loader goes native when its dataset is array-shaped: an ArrayDataset, a plain
TensorDataset of CPU tensors, and any Subsets and ConcatDatasets built from them.
Rows are gathered by the C++ pipeline and handed out as tensors that view the gathered
buffers, so batches equal what torch's default collate would have stacked; a custom
collate_fn receives the per-sample list torch would build, made of views of the rows.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import BatchSampler, ConcatDataset, RandomSampler, SequentialSampler, Subset, TensorDataset
from torch.utils.data._utils.pin_memory import pin_memory
from torch.utils.data._utils.collate import default_collate
from torch.utils.data.dataloader import _DatasetKind

from . import _core, _fork
from ._columns import Column, check_files_intact, column_from
from ._pinning import pin_device
from ._resume import EpochProgress, RngSnapshot, draw_base_seed, sampler_generators, skip_batches
from .dataset import ArrayDataset
from .distributed import DistributedSampler

_INT64_SPAN = 1 << 64
# How often mapped files are checked for truncation (a stat per file): often enough to
# catch a file replaced under a running job, rarely enough to cost nothing per batch.
_FILE_CHECK_INTERVAL_S = 0.05


@dataclass(frozen=True)
class NativePlan:
    pieces: tuple[tuple[Column, ...], ...]  # per column, its arrays in order (ConcatDataset)
    names: tuple[str, ...] | None  # dict samples/batches when set, tuples/lists otherwise
    row_map: np.ndarray | None  # dataset row k is column row row_map[k] (Subsets)
    collate_fn: object | None  # None: default collate (stacked batches as they come)
    native_order: str | None  # "sequential" / "shuffled" / "distributed": positions computed in C++;
    # None: index lists come from the loader's batch_sampler

    @property
    def columns(self) -> tuple[Column, ...]:
        """One Column per output column (its first piece: all share dtype and shape)."""
        return tuple(pieces[0] for pieces in self.pieces)

    @property
    def rows(self) -> int:
        return len(self.row_map) if self.row_map is not None else _rows_of(self.pieces)


def _rows_of(pieces) -> int:
    """Rows of a dataset given its columns' pieces (every column has the same count)."""
    return sum(len(piece) for piece in pieces[0])


def _concatenated(datasets):
    parts = [_columns_of(dataset) for dataset in datasets]
    for part in parts:
        if isinstance(part, str):
            return f"a ConcatDataset part cannot be gathered natively: {part}"
    first_pieces, names, _ = parts[0]
    for pieces, part_names, _ in parts:
        if part_names != names or len(pieces) != len(first_pieces):
            return "ConcatDataset parts differ in their columns"
        for column, first in zip(pieces, first_pieces):
            if (column[0].dtype != first[0].dtype or column[0].array.shape[1:] != first[0].array.shape[1:]):
                return "ConcatDataset parts differ in dtype or shape (torch's collate decides)"
    merged = tuple(tuple(piece for pieces, _, _ in parts for piece in pieces[c]) for c in range(len(first_pieces)))
    if all(row_map is None for _, _, row_map in parts):
        return merged, names, None
    # Some parts are Subsets: one map over all parts' pieces, each part's rows offset by
    # where its pieces start. Parts without a map contribute their rows in order.
    maps, start = [], 0
    for pieces, _, row_map in parts:
        part_rows = _rows_of(pieces)
        maps.append(start + (np.arange(part_rows, dtype=np.int64) if row_map is None else row_map))
        start += part_rows
    return merged, names, np.ascontiguousarray(np.concatenate(maps), dtype=np.int64)


def _columns_of(dataset):
    """(pieces per column, names, row_map) of an array-shaped dataset, or why it is not one."""
    if isinstance(dataset, ConcatDataset):
        if type(dataset).__getitem__ is not ConcatDataset.__getitem__ or not dataset.datasets:
            return "the ConcatDataset subclass overrides __getitem__, or is empty"
        return _concatenated(dataset.datasets)
    if isinstance(dataset, Subset):
        found = _columns_of(dataset.dataset)
        if isinstance(found, str):
            return found
        columns, names, base_map = found
        base_rows = len(dataset.dataset)
        try:
            indices = np.asarray(dataset.indices)
        except (TypeError, ValueError):
            return "the Subset's indices are not an array of integers"
        if indices.size == 0:
            indices = indices.astype(np.int64).reshape(0)
        if indices.ndim != 1 or indices.dtype.kind not in "iu":
            return "the Subset's indices are not a flat sequence of integers (torch's path decides)"
        if indices.dtype.kind == "u" and indices.size and indices.max() > np.iinfo(np.int64).max:
            return "the Subset has indices out of range (torch's path raises when they are read)"
        indices = indices.astype(np.int64)
        if indices.size and (indices.min() < -base_rows or indices.max() >= base_rows):
            return "the Subset has indices out of range (torch's path raises when they are read)"
        indices = np.where(indices < 0, indices + base_rows, indices)
        row_map = indices if base_map is None else base_map[indices]
        return columns, names, np.ascontiguousarray(row_map, dtype=np.int64)
    if isinstance(dataset, ArrayDataset):
        if type(dataset).__getitem__ is not ArrayDataset.__getitem__:
            return "the ArrayDataset subclass overrides __getitem__"
        return tuple((column,) for column in dataset.columns), dataset.names, None
    if isinstance(dataset, TensorDataset):
        if type(dataset).__getitem__ is not TensorDataset.__getitem__:
            return "the TensorDataset subclass overrides __getitem__"
        if any(tensor.requires_grad for tensor in dataset.tensors):
            return "a TensorDataset tensor requires grad (torch's batches carry its autograd graph)"
        try:
            columns = tuple(column_from(tensor, f"tensor #{k}") for k, tensor in enumerate(dataset.tensors))
        except (TypeError, ValueError) as error:
            return f"a TensorDataset tensor cannot be gathered natively ({error})"
        return tuple((column,) for column in columns), None, None
    return f"{type(dataset).__name__} is not an ArrayDataset, TensorDataset, or a Subset or ConcatDataset of them"


def plan_native(loader) -> NativePlan | str:
    """The native plan for `loader`, or the reason it must use torch's path."""
    if loader._dataset_kind != _DatasetKind.Map:
        return "the dataset is iterable-style"
    if not loader._auto_collation:
        return "batch_size=None disables batching"
    if loader.worker_init_fn is not None:
        return "worker_init_fn expects worker processes"
    found = _columns_of(loader.dataset)
    if isinstance(found, str):
        return found
    pieces, names, row_map = found
    if not pieces:
        return "the dataset has no columns"

    batch_sampler = loader.batch_sampler
    native_order = None
    if type(batch_sampler) is BatchSampler:
        sampler = batch_sampler.sampler
        if type(sampler) is SequentialSampler and sampler.data_source is loader.dataset:
            native_order = "sequential"
        elif (type(sampler) is RandomSampler and loader._native_shuffle
              and not sampler.replacement and sampler._num_samples is None):
            native_order = "shuffled"
        elif type(sampler) is DistributedSampler and sampler.dataset is loader.dataset:
            native_order = "distributed"
    collate_fn = None if loader.collate_fn is default_collate else loader.collate_fn
    return NativePlan(pieces=pieces, names=names, row_map=row_map, collate_fn=collate_fn,
                      native_order=native_order)


class _DeferredError:
    """An error that belongs to a batch position: raised when that batch is due."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class NativeIterator:
    """One epoch of a native loader; batches come out in sampler order.

    With a native order the C++ pipeline schedules and refills itself, so a batch
    costs one call; with a user sampler, index lists are pulled here and queued.
    """

    def __init__(self, loader, plan: NativePlan, resume: dict | None = None) -> None:
        self._loader = loader
        self._plan = plan
        self._names = plan.names
        self._views = [column.dtype if column.needs_view else None for column in plan.columns]
        self._any_view = any(view is not None for view in self._views)
        self._files_to_check = [piece for pieces in plan.pieces for piece in pieces if piece.file is not None]
        self._next_file_check = 0.0
        self._timeout = float(loader.timeout)
        self._depth = loader._native_depth(sum(column.row_bytes for column in plan.columns))
        self._progress = EpochProgress(order=plan.native_order or "sampler")

        self._pin_device = pin_device(loader, stacklevel=4)  # __init__ < _start_epoch < __iter__ < user
        self._pin = self._pin_device is not None

        rows = plan.rows
        self._order = None
        if resume is not None and resume["order"] != self._progress.order:
            raise ValueError(f"cannot resume: the state was saved for a {resume['order']!r} order, "
                             f"this loader now uses {self._progress.order!r}")
        if plan.native_order is None:
            self._start_sampler(loader, resume)
        else:
            if resume is None:
                # As many draws from torch's global RNG as torch's iterator and
                # RandomSampler make, so code seeded with torch.manual_seed sees the same
                # global RNG state after each epoch. (An explicit `generator` is consumed
                # differently: torch's randperm draws from it per element, we draw one
                # seed.) A resumed epoch made its draws before it was saved.
                draw_base_seed(loader.generator)
            if plan.native_order == "shuffled":
                if resume is None:
                    self._progress.native_seed = draw_base_seed(loader.generator) % _INT64_SPAN
                else:
                    self._progress.native_seed = resume["native_seed"]
                self._order = _core.IndexOrder.shuffled(rows, self._progress.native_seed)
            elif plan.native_order == "sequential":
                self._order = _core.IndexOrder.sequential(rows)
            else:
                self._order = loader.batch_sampler.sampler.native_order()
            self._batch_size = loader.batch_size
            positions = len(self._order)
            self._end = positions // self._batch_size * self._batch_size if loader.drop_last else positions
            if resume is not None:
                self._progress.batches_yielded = resume["batches_yielded"]
        self._pipeline = None
        self._closed = False
        self._start_pipeline()

    def _start_sampler(self, loader, resume: dict | None) -> None:
        self._pending: deque = deque()  # index lists in flight, oldest first (or _DeferredError)
        self._sampler_done = False
        if resume is None:
            self._progress.snapshot = RngSnapshot.capture(loader)
            draw_base_seed(loader.generator)
            self._index_batches = iter(loader.batch_sampler)
            return
        self._progress.snapshot = RngSnapshot.from_dict(resume["epoch_start_rng"])
        skip = resume["batches_yielded"]
        with self._progress.snapshot.replaying(sampler_generators(loader)):
            draw_base_seed(loader.generator)
            batches = skip_batches(iter(loader.batch_sampler), skip)
            try:
                first = [next(batches)]  # the sampler's lazy draws happen in here
            except StopIteration:
                first = []
        self._index_batches = itertools.chain(first, batches)
        self._progress.batches_yielded = skip

    @property
    def progress(self) -> EpochProgress:
        """Where this epoch stands. Until StopIteration the caller is inside the epoch,
        even after its last batch: a resumed run must finish it (with nothing) first."""
        return self._progress

    def _start_pipeline(self) -> None:
        """(Re)builds the pipeline and requests every batch not yet delivered."""
        self._generation = _fork.generation()
        arrays = [pieces[0].array if len(pieces) == 1 else [piece.array for piece in pieces]
                  for pieces in self._plan.pieces]
        self._pipeline = _core.BatchPipeline(arrays, self._loader._native_thread_pool(), self._depth,
                                             self._plan.row_map)
        self._check_files()
        if self._order is not None:
            first = min(self._progress.batches_yielded * self._batch_size, self._end)
            self._pipeline.schedule_positions(self._order, first, self._end, self._batch_size)
        else:
            for request in self._pending:
                if not isinstance(request, _DeferredError):
                    self._pipeline.enqueue_indices(request)

    def _check_files(self) -> None:
        if self._files_to_check and time.monotonic() >= self._next_file_check:
            check_files_intact(self._files_to_check)
            self._next_file_check = time.monotonic() + _FILE_CHECK_INTERVAL_S

    def _fill(self) -> None:
        pending = self._pending
        while len(pending) < self._depth and not self._sampler_done:
            try:
                request = next(self._index_batches)
            except StopIteration:
                self._sampler_done = True
                return
            except Exception as error:  # the sampler's own failure, due at this batch
                pending.append(_DeferredError(error))
                return
            try:
                if not isinstance(request, (list, tuple, np.ndarray)):
                    # torch accepts any iterable of indices per batch: tensors (e.g.
                    # randperm(n).split(bs)), generators, sets.
                    request = request.numpy() if isinstance(request, torch.Tensor) else list(request)
                if len(request) == 0:
                    # torch's default_collate indexes batch[0] and fails the same way.
                    raise IndexError("list index out of range (the batch sampler yielded an empty batch)")
                self._check_files()
                self._pipeline.enqueue_indices(request)
            except Exception as error:  # e.g. an index out of range, due at this batch
                pending.append(_DeferredError(error))
                return
            pending.append(request)

    def __iter__(self):
        return self

    def __len__(self) -> int:
        return len(self._loader)

    def __next__(self):
        if self._closed:
            raise StopIteration
        if self._generation != _fork._generation:  # a plain read: this runs once per batch
            self._start_pipeline()  # the inherited one can never finish: start over here
        if self._order is not None:
            if self._files_to_check:
                self._check_files()
            try:
                arrays = self._pipeline.next(self._timeout)
            except StopIteration:
                self._progress.finished = True
                self.close()
                raise
        else:
            arrays = self._next_from_sampler()
        if arrays is None:
            raise RuntimeError(f"DataLoader timed out after {self._timeout} seconds")
        tensors = list(map(torch.from_numpy, arrays))
        if self._any_view:
            tensors = [t if view is None else t.view(view) for t, view in zip(tensors, self._views)]
        if self._plan.collate_fn is not None:
            batch = self._collate(tensors)
        else:
            if self._pin:
                tensors = [t.pin_memory() for t in tensors]
            batch = tensors if self._names is None else dict(zip(self._names, tensors))
        self._progress.batches_yielded += 1  # only once the batch exists, as torch counts
        return batch

    def _collate(self, tensors):
        # The sample list torch's fetcher would pass: one tuple (or dict) per row,
        # whose tensors here view the gathered batch instead of the dataset.
        rows = zip(*(t.unbind(0) for t in tensors))
        if self._names is None:
            samples = list(rows)
        else:
            samples = [dict(zip(self._names, row)) for row in rows]
        batch = self._plan.collate_fn(samples)
        if self._pin:
            batch = pin_memory(batch, self._pin_device)
        return batch

    def _next_from_sampler(self):
        pending = self._pending
        if not pending:
            self._fill()
            if not pending:
                self._progress.finished = True
                self.close()
                raise StopIteration
        head = pending[0]
        if isinstance(head, _DeferredError):
            pending.popleft()
            raise head.error
        try:
            arrays = self._pipeline.next(self._timeout)
        except RuntimeError:
            pending.popleft()  # the pipeline dropped this batch too; stay in step with it
            raise
        if arrays is not None:
            pending.popleft()
            self._fill()  # keep the threads busy while the caller works on this batch
        return arrays

    def close(self) -> None:
        """Stops background gathering now; also happens on exhaustion and deletion."""
        self._closed = True
        self._pipeline.close()
        if self._order is None:
            self._pending.clear()
            self._sampler_done = True

    def __del__(self) -> None:
        pipeline = getattr(self, "_pipeline", None)
        if pipeline is not None:
            pipeline.close()


def default_num_threads() -> int:
    """One gather thread per usable CPU but one (at most 4): the consumer thread gathers
    too while it waits, and a thread per CPU on top of it oversubscribes the machine
    (`python bench/bench_threads.py`: on 2 CPUs, 3 threads ran 35-55% slower than
    1 or 2, which tied)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count() or 1
    return max(1, min(4, available - 1))
