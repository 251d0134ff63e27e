"""The native path: deciding whether a loader can take it, and iterating it.

A loader goes native when its dataset is array-shaped (ArrayDataset, or a plain
TensorDataset of CPU tensors) and batches are built by torch's default collate. Rows
are then gathered by the C++ pipeline and handed out as tensors that view the
gathered buffers, so the batches equal what torch's collate would have stacked.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import deque
from dataclasses import dataclass

import torch
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler, TensorDataset
from torch.utils.data._utils.collate import default_collate
from torch.utils.data.dataloader import _DatasetKind

from . import _core, _fork
from ._columns import Column, check_files_intact, column_from
from .dataset import ArrayDataset

_INT64_SPAN = 1 << 64
# How often mapped files are checked for truncation (a stat per file): often enough to
# catch a file replaced under a running job, rarely enough to cost nothing per batch.
_FILE_CHECK_INTERVAL_S = 0.05


@dataclass(frozen=True)
class NativePlan:
    columns: tuple[Column, ...]
    names: tuple[str, ...] | None  # dict batches when set, list batches otherwise
    native_order: str | None  # "sequential" / "shuffled": positions computed in C++;
    # None: index lists come from the loader's batch_sampler


def _columns_of(dataset) -> tuple[tuple[Column, ...], tuple[str, ...] | None] | str:
    if isinstance(dataset, ArrayDataset):
        if type(dataset).__getitem__ is not ArrayDataset.__getitem__:
            return "the ArrayDataset subclass overrides __getitem__"
        return dataset.columns, dataset.names
    if isinstance(dataset, TensorDataset):
        if type(dataset).__getitem__ is not TensorDataset.__getitem__:
            return "the TensorDataset subclass overrides __getitem__"
        try:
            columns = tuple(column_from(tensor, f"tensor #{k}") for k, tensor in enumerate(dataset.tensors))
        except (TypeError, ValueError) as error:
            return f"a TensorDataset tensor cannot be gathered natively ({error})"
        return columns, None
    return f"{type(dataset).__name__} is not an ArrayDataset or TensorDataset"


def plan_native(loader) -> NativePlan | str:
    """The native plan for `loader`, or the reason it must use torch's path."""
    if loader._dataset_kind != _DatasetKind.Map:
        return "the dataset is iterable-style"
    if not loader._auto_collation:
        return "batch_size=None disables batching"
    if loader.collate_fn is not default_collate:
        return "a custom collate_fn is set"
    if loader.worker_init_fn is not None:
        return "worker_init_fn expects worker processes"
    found = _columns_of(loader.dataset)
    if isinstance(found, str):
        return found
    columns, names = found
    if not columns:
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
    return NativePlan(columns=columns, names=names, native_order=native_order)


class _DeferredError:
    """An error that belongs to a batch position: raised when that batch is due."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class NativeIterator:
    """Iterator over one epoch of a native loader. Delivers batches in sampler order."""

    def __init__(self, loader, plan: NativePlan) -> None:
        self._loader = loader
        self._columns = plan.columns
        self._names = plan.names
        self._views = [column.dtype if column.needs_view else None for column in plan.columns]
        self._any_view = any(view is not None for view in self._views)
        self._files_to_check = [column for column in plan.columns if column.file is not None]
        self._next_file_check = 0.0
        self._timeout = float(loader.timeout)
        self._depth = loader._native_depth()
        self._length = len(loader)
        self._num_yielded = 0

        if loader.pin_memory and loader.pin_memory_device:
            warnings.warn("pin_memory_device is deprecated, the current accelerator will be used as "
                          f"the device,ignore pin_memory_device='{loader.pin_memory_device}'.", stacklevel=3)
        accelerator = torch.accelerator.is_available()
        if loader.pin_memory and not accelerator:
            warnings.warn("'pin_memory' argument is set as true but no accelerator is found, "
                          "then device pinned memory won't be used.", stacklevel=3)
        self._pin = bool(loader.pin_memory and accelerator)

        # The same draws from the same generator as torch's iterator and RandomSampler,
        # so code that seeds torch sees identical RNG state after each epoch.
        torch.empty((), dtype=torch.int64).random_(generator=loader.generator)
        rows = len(self._columns[0])
        if plan.native_order is None:
            self._order = None
            self._index_batches = iter(loader.batch_sampler)
        else:
            if plan.native_order == "shuffled":
                seed = int(torch.empty((), dtype=torch.int64).random_(generator=loader.generator).item())
                self._order = _core.IndexOrder.shuffled(rows, seed % _INT64_SPAN)
            else:
                self._order = _core.IndexOrder.sequential(rows)
            self._batch_size = loader.batch_size
            self._positions_end = (rows // self._batch_size * self._batch_size if loader.drop_last else rows)
            self._next_position = 0
        self._pending: deque = deque()  # requests in flight, oldest first (or _DeferredError)
        self._sampler_done = False
        self._pipeline = self._new_pipeline()

    def _new_pipeline(self):
        self._generation = _fork.generation()
        arrays = [column.array for column in self._columns]
        return _fork.track(_core.BatchPipeline(arrays, self._loader._native_thread_pool(), self._depth))

    def _enqueue(self, request) -> None:
        if self._order is None:
            self._pipeline.enqueue_indices(request)
        else:
            self._pipeline.enqueue_positions(self._order, request[0], request[1])

    def _next_request(self):
        if self._order is None:
            return next(self._index_batches)
        first = self._next_position
        if first >= self._positions_end:
            raise StopIteration
        count = min(self._batch_size, self._positions_end - first)
        self._next_position = first + count
        return (first, count)

    def _fill(self) -> None:
        pending = self._pending
        while len(pending) < self._depth and not self._sampler_done:
            try:
                request = self._next_request()
            except StopIteration:
                self._sampler_done = True
                return
            except Exception as error:  # the sampler's own failure, due at this batch
                pending.append(_DeferredError(error))
                return
            try:
                if self._order is None and len(request) == 0:
                    # torch's default_collate indexes batch[0] and fails the same way.
                    raise IndexError("list index out of range (the batch sampler yielded an empty batch)")
                if self._files_to_check and time.monotonic() >= self._next_file_check:
                    check_files_intact(self._files_to_check)
                    self._next_file_check = time.monotonic() + _FILE_CHECK_INTERVAL_S
                self._enqueue(request)
            except Exception as error:  # e.g. an index out of range, due at this batch
                pending.append(_DeferredError(error))
                return
            pending.append(request)

    def _rebuild_after_fork(self) -> None:
        # The inherited pipeline is pinned by _fork; gather the same requests again.
        self._pipeline = self._new_pipeline()
        for request in self._pending:
            if not isinstance(request, _DeferredError):
                self._enqueue(request)

    def __iter__(self):
        return self

    def __len__(self) -> int:
        return self._length

    def __next__(self):
        if self._generation != _fork.generation():
            self._rebuild_after_fork()
        pending = self._pending
        if not pending:
            self._fill()
            if not pending:
                self._pipeline.close()
                raise StopIteration
        head = pending[0]
        if isinstance(head, _DeferredError):
            pending.popleft()
            raise head.error
        arrays = self._pipeline.next(self._timeout)
        if arrays is None:
            raise RuntimeError(f"DataLoader timed out after {self._timeout} seconds")
        pending.popleft()
        self._fill()  # keep the threads busy while the caller works on this batch
        self._num_yielded += 1
        return self._assemble(arrays)

    def _assemble(self, arrays):
        tensors = [torch.from_numpy(array) for array in arrays]
        if self._any_view:
            tensors = [t if view is None else t.view(view) for t, view in zip(tensors, self._views)]
        if self._pin:
            tensors = [t.pin_memory() for t in tensors]
        if self._names is not None:
            return dict(zip(self._names, tensors))
        return tensors

    def close(self) -> None:
        """Stops background gathering now; also happens on exhaustion and deletion."""
        if self._generation == _fork.generation():
            self._pipeline.close()
        self._pending.clear()
        self._sampler_done = True

    def __del__(self) -> None:
        pipeline = getattr(self, "_pipeline", None)
        if pipeline is not None and self._generation == _fork.generation():
            pipeline.close()


def default_num_threads() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count() or 1
    return max(1, min(4, available))
