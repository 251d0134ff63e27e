"""The native path: deciding whether a loader can take it, and iterating it.

A loader goes native when its dataset is array-shaped: an ArrayDataset, a plain
TensorDataset of CPU tensors, and any Subsets and ConcatDatasets built from them, none
of which overrides anything torch's fetcher would call. Rows are gathered by the C++
pipeline and handed out as tensors that view the gathered buffers, so batches equal
what torch's default collate would have stacked; a custom collate_fn receives the
per-sample list torch would build, made of views of the rows, and runs on a collate
thread (see collate.py) so the training thread only receives finished batches.

Where batch order comes from is an order source: `PositionOrder` (sequential,
shuffled, distributed: positions computed in C++, the pipeline schedules itself) or
`SamplerOrder` (index lists from the loader's batch_sampler, queued here). The
iterator itself only moves batches from its source to the caller.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler, default_collate

from .. import _core
from .._checkpoint.elastic import elastic_batches
from .._checkpoint.replay import (
    CapturingBatches,
    EpochProgress,
    RngSnapshot,
    draw_base_seed,
    epoch_complete,
    restore_sampler,
    sampler_generators,
    sampler_iterator,
    skip_batches,
    stateful_sampler,
)
from .._checkpoint.state import LoaderState, Order
from .._checkpoint.torch_internals import auto_collation, is_map_style
from ..block_shuffle import BlockShuffleSampler
from ..distributed import DistributedSampler, epoch_seed
from ..records import PadCollate
from ..stats import LoaderStats, native_stats
from . import fork as _fork
from .collate import CollateStage, FailedBatch, finish_batch, is_identity
from .columns import check_files_intact
from .eligibility import ColumnsCache, DatasetColumns
from .hf_datasets import non_tensor_samples
from .pinning import pin_device
from .read_ahead import read_ahead

_INT64_SPAN = 1 << 64
# How often mapped files are checked for truncation (a stat per file): often enough to
# catch a file replaced under a running job, rarely enough to cost nothing per batch.
_FILE_CHECK_INTERVAL_S = 0.05
# Budget for gathered-but-unconsumed batches when sizing the prefetch depth.
_IN_FLIGHT_BYTES = 12 << 20
# Batches per gather thread in flight at most (small batches).
_SMALL_BATCH_DEPTH = 16


@dataclass(frozen=True)
class NativePlan:
    columns: DatasetColumns
    collate_fn: object | None  # None: default collate (stacked batches as they come)
    native_order: str | None  # "sequential" / "shuffled" / "distributed" / "block": positions computed in C++;
    # None: index lists come from the loader's batch_sampler
    paddings: list | None = None  # per column the core's padding options (a native PadCollate)


def plan_native(loader, columns_cache: ColumnsCache) -> NativePlan | str:
    """The native plan for `loader`, or the reason it must use torch's path."""
    if not is_map_style(loader):
        return "the dataset is iterable-style"
    if not auto_collation(loader):
        return "batch_size=None disables batching"
    if loader.worker_init_fn is not None:
        return "worker_init_fn expects worker processes"
    columns = columns_cache.get(loader.dataset)
    if isinstance(columns, str):
        return columns

    batch_sampler = loader.batch_sampler
    native_order = None
    if type(batch_sampler) is BatchSampler:
        sampler = batch_sampler.sampler
        if type(sampler) is SequentialSampler and sampler.data_source is loader.dataset:
            native_order = "sequential"
        elif (
            type(sampler) is RandomSampler
            and loader._native_shuffle
            and not sampler.replacement
            and sampler._num_samples is None
        ):
            native_order = "shuffled"
        elif type(sampler) is DistributedSampler and sampler.dataset is loader.dataset:
            native_order = "distributed"
        elif type(sampler) is BlockShuffleSampler and sampler.dataset is loader.dataset:
            native_order = "block"
    collate_fn = None if loader.collate_fn is default_collate else loader.collate_fn
    if collate_fn is not None:
        samples_differ = non_tensor_samples(loader.dataset)
        if samples_differ is not None:
            return samples_differ
    paddings = None
    if any(columns.ragged):
        paddings = _native_paddings(columns, collate_fn)
        if paddings is None and collate_fn is None:
            collate_fn = default_collate  # torch stacks equal-length records, refuses others
    return NativePlan(columns=columns, collate_fn=collate_fn, native_order=native_order, paddings=paddings)


def _native_paddings(columns: DatasetColumns, collate_fn) -> list | None:
    """Padding options per column when the core can do the PadCollate itself: its
    ragged columns padded, its other columns scalars (which PadCollate stacks)."""
    if type(collate_fn) is not PadCollate:
        return None
    paddings: list[dict | None] = []
    for position, column in enumerate(columns.columns):
        if not column.ragged:
            if column.array.ndim != 1:
                return None  # PadCollate pads multi-dimensional fields too: its own code decides
            paddings.append(None)
            continue
        field = None if columns.bare else (columns.names[position] if columns.names else position)
        padding = collate_fn.native_padding(column.cast if column.cast is not None else column.array.dtype, field)
        if padding is None:
            return None
        paddings.append(padding)
    return paddings


def collate_depth(loader) -> int:
    """Batches collated ahead on worker threads: prefetch_factor per worker, as torch."""
    return (loader.prefetch_factor or 2) * loader.num_workers


def prefetch_depth(loader, row_bytes: int) -> int:
    """Batches gathered ahead: `prefetch_factor` per thread when given."""
    if loader.prefetch_factor is not None and getattr(loader, "_prefetch_factor_given", True):
        return max(2, loader.prefetch_factor * loader.num_threads)
    # Small batches: a gather takes microseconds, so many in flight keep the threads
    # busy through a slow consumer step and let a gather thread be woken once per
    # several batches, not per batch. Large batches: few enough that the buffers in
    # flight stay cache-resident (on the 2-core development box, 3-4 batches of 3 MiB
    # in flight gathered ~15% faster than 8, with a 32 MiB L3).
    depth = _SMALL_BATCH_DEPTH * loader.num_threads
    batch_size = getattr(loader.batch_sampler, "batch_size", None)
    if isinstance(batch_size, int) and batch_size > 0 and row_bytes > 0:
        depth = min(depth, _IN_FLIGHT_BYTES // (batch_size * row_bytes))
    return max(loader.num_threads + 1, depth)


def _take_from(pipeline, timeout: float, stream: int = 0):
    """The pipeline's oldest batch: its tensors (or arrays), a FailedBatch when its
    gather failed (that batch is consumed), or None on timeout. An error that consumed
    nothing (an interrupt, a failed top-up) propagates. `stream`: the caller's CUDA
    stream, for device batches."""
    try:
        return pipeline.next(timeout, stream)
    except StopIteration:
        raise
    except Exception as error:
        if pipeline.last_error_consumed_batch:
            return FailedBatch(error)
        raise


class PositionOrder:
    """Batches of consecutive positions of a native IndexOrder; the C++ pipeline
    schedules them itself, so a batch costs one call."""

    def __init__(self, loader, plan: NativePlan, progress: EpochProgress, resume: LoaderState | None) -> None:
        if resume is None:
            # As many draws from torch's global RNG as torch's iterator and RandomSampler
            # make, so code seeded with torch.manual_seed sees the same global RNG state
            # after each epoch. (An explicit `generator` is consumed differently: torch's
            # randperm draws from it per element, we draw one seed.) A resumed epoch made
            # its draws before it was saved.
            draw_base_seed(loader.generator)
        rows = len(plan.columns)
        if plan.native_order == "shuffled":
            # A resumed shuffled epoch has its seed: the state's parser requires it.
            seed = draw_base_seed(loader.generator) % _INT64_SPAN if resume is None else resume.native_seed
            progress.native_seed = seed
            self._order = _core.IndexOrder.shuffled(rows, cast(int, seed))
        elif plan.native_order == "sequential":
            self._order = _core.IndexOrder.sequential(rows)
        else:
            self._order = loader.batch_sampler.sampler.native_order()
        if resume is not None:
            progress.batches_yielded = resume.batches_yielded
        self._batch_size = loader.batch_size
        positions = len(self._order)
        self._end = positions // self._batch_size * self._batch_size if loader.drop_last else positions
        self._progress = progress

    def start(self, pipeline) -> None:
        """Requests every batch not yet delivered from a new pipeline."""
        first = min(self._progress.batches_yielded * self._batch_size, self._end)
        pipeline.schedule_positions(self._order, first, self._end, self._batch_size)

    def ready(self, pipeline) -> bool:
        return pipeline.front_ready

    consumed = 0  # batches delivered or failed, counted by delivered()

    # The next batch's arrays, a FailedBatch, or None on timeout; StopIteration at the end.
    take = staticmethod(_take_from)

    def delivered(self) -> None:
        self.consumed += 1

    def close(self) -> None:
        pass


class SamplerOrder:
    """Index lists pulled from the loader's batch_sampler and queued in the pipeline.

    Requests stay here until their batch is delivered (not merely taken from the
    pipeline), so a pipeline rebuilt after fork asks for exactly what is still owed.
    """

    def __init__(
        self, loader, progress: EpochProgress, resume: LoaderState | None, depth: int, index_batches=None
    ) -> None:
        self._requests: deque = deque()  # index lists not yet delivered, oldest first (or FailedBatch)
        self._taken = 0  # how many of the oldest requests have left the pipeline
        self._depth = depth
        self._sampler_done = False
        self._check_files = None
        if index_batches is not None:  # computed by the caller, the delivered ones skipped
            self._index_batches = index_batches
            return
        progress.sampler = stateful_sampler(loader)
        if progress.sampler is not None:
            progress.sampler_states = deque()
            progress.sampler_state = {"sampler": progress.sampler.state_dict()}  # as of no batch passed
        if resume is None:
            progress.snapshot = RngSnapshot.capture(loader)
            draw_base_seed(loader.generator)
            self._index_batches = self._captured(iter(loader.batch_sampler), progress)
            return
        progress.snapshot = RngSnapshot.from_dict(cast(dict, resume.epoch_start_rng))  # a sampler order has it
        skip = resume.batches_yielded
        restored = restore_sampler(loader, resume)
        if restored is not None:
            progress.sampler_state, skip_now = resume.sampler_state, 0  # it resumed itself
        else:
            skip_now = skip
        if restored is not None and epoch_complete(loader.batch_sampler, skip):
            self._index_batches = iter(())  # the saved epoch had delivered its last batch
            progress.batches_yielded = skip
            return
        with progress.snapshot.replaying(sampler_generators(loader)):
            draw_base_seed(loader.generator)
            batches = skip_batches(sampler_iterator(loader.batch_sampler, restored), skip_now)
            batches = self._captured(batches, progress)
            try:
                first = [next(batches)]  # the sampler's lazy draws happen in here
            except StopIteration:
                first = []
        self._index_batches = itertools.chain(first, batches)
        progress.batches_yielded = skip

    @staticmethod
    def _captured(batches, progress: EpochProgress):
        if progress.sampler is None:
            return batches
        return CapturingBatches(batches, progress.sampler, progress.sampler_states)

    def start(self, pipeline) -> None:
        self._taken = 0
        for request in self._requests:
            if not isinstance(request, FailedBatch):
                pipeline.enqueue_indices(request)
        self._fill(pipeline)

    def _fill(self, pipeline) -> None:
        requests = self._requests
        while len(requests) - self._taken < self._depth and not self._sampler_done:
            try:
                request = next(self._index_batches)
            except StopIteration:
                self._sampler_done = True
                return
            except Exception as error:  # the sampler's own failure, due at this batch
                requests.append(FailedBatch(error))
                return
            try:
                if not isinstance(request, (list, tuple, np.ndarray)):
                    # torch accepts any iterable of indices per batch: tensors (e.g.
                    # randperm(n).split(bs)), generators, sets.
                    request = request.numpy() if isinstance(request, torch.Tensor) else list(request)
                if len(request) == 0:
                    # torch's default_collate indexes batch[0] and fails the same way.
                    raise IndexError("list index out of range (the batch sampler yielded an empty batch)")
                pipeline.enqueue_indices(request)
            except Exception as error:  # e.g. an index out of range, due at this batch
                requests.append(FailedBatch(error))
                return
            requests.append(request)

    def ready(self, pipeline) -> bool:
        if self._taken == len(self._requests):
            self._fill(pipeline)
        if self._taken == len(self._requests):
            return False
        return isinstance(self._requests[self._taken], FailedBatch) or pipeline.front_ready

    def take(self, pipeline, timeout: float, stream: int = 0):
        if self._taken == len(self._requests):
            self._fill(pipeline)
            if self._taken == len(self._requests):
                raise StopIteration
        head = self._requests[self._taken]
        if isinstance(head, FailedBatch):
            self._taken += 1
            return head
        result = _take_from(pipeline, timeout, stream)
        if result is not None:
            self._taken += 1
            self._fill(pipeline)  # keep the threads busy while the caller works on this batch
        return result

    consumed = 0  # batches delivered or failed, counted by delivered()

    def delivered(self) -> None:
        """The oldest taken batch reached the caller (or raised there)."""
        self._requests.popleft()
        self._taken -= 1
        self.consumed += 1

    def close(self) -> None:
        self._requests.clear()
        self._taken = 0
        self._sampler_done = True


class NativeIterator:
    """One epoch of a native loader; batches come out in sampler order.

    Calls to ``next()`` from several threads are served one at a time, each batch to
    exactly one caller.
    """

    def __init__(self, loader, plan: NativePlan, resume: LoaderState | None = None) -> None:
        self._loader = loader
        self._plan = plan
        columns = plan.columns
        self._files_to_check = columns.mapped_files
        self._next_file_check = 0.0
        self._timeout = float(loader.timeout)
        self._depth = prefetch_depth(loader, columns.row_bytes)
        self._progress = EpochProgress(order=Order(plan.native_order or "sampler"))
        self._lock = threading.Lock()  # held by one next() at a time
        self._started = time.monotonic()
        self._closed = False  # close() asked for: no batch is handed out after it
        self._torn_down = False
        self._pipeline: Any = None  # the _core.BatchPipeline, from _start_pipeline on
        self._source: SamplerOrder | PositionOrder

        pinned_for = pin_device(loader, stacklevel=4)  # __init__ < _start_epoch < __iter__ < user
        staging = loader._staging_for(pinned_for)
        python_collate = plan.collate_fn is not None and plan.paddings is None
        # Natively collated batches are staged by the pipeline; a custom collate_fn's
        # output is built by Python, then pinned or moved with torch.
        self._staging = staging if staging is not None and not python_collate else None
        delivers = staging is not None and staging.device is not None
        self._move = staging.move if delivers and python_collate else None  # collated on the host, then moved
        # The caller's current stream, which device batches are handed to.
        self._consumer_stream = staging.consumer_stream if delivers and not python_collate else None
        if staging is not None and staging.device is not None:
            pinned_for = None  # staged in pinned memory internally; batches leave on the device
        self._finish = finish_batch(
            columns,
            None if plan.paddings else plan.collate_fn,
            pinned_for,
            padded=plan.paddings is not None,
            staged=self._staging is not None and self._staging.device is None,
        )
        if resume is not None and resume.order != self._progress.order:
            raise ValueError(
                f"cannot resume: the state was saved for a {resume.order.value!r} order, "
                f"this loader now uses {self._progress.order.value!r}"
            )
        if plan.native_order == "distributed":
            self._describe_rank(loader.batch_sampler.sampler, resume)
        if plan.native_order is None:
            self._source = SamplerOrder(loader, self._progress, resume, self._depth)
        elif self._progress.elastic is not None:  # taken from `resume` (see _describe_rank)
            self._source = SamplerOrder(
                loader,
                self._progress,
                resume,
                self._depth,
                index_batches=self._elastic_batches(loader, cast(LoaderState, resume)),
            )
        else:
            self._source = PositionOrder(loader, plan, self._progress, resume)
        # With workers, batches that need Python work (a custom collate_fn, pinning) are
        # finished on worker threads; plain stacked batches come straight from the pipeline.
        self._stage = None
        if loader.num_workers > 0 and (python_collate or pinned_for is not None):
            self._stage = CollateStage(loader._native_collate_executor(), self._finish, collate_depth(loader))
        # The common case takes one call into the pipeline per batch (see __next__).
        self._direct = self._stage is None and self._move is None and isinstance(self._source, PositionOrder)
        self._finish_direct = None if is_identity(self._finish) else self._finish
        self._start_pipeline()

    def _describe_rank(self, sampler, resume: LoaderState | None) -> None:
        progress = self._progress
        progress.rank, progress.world_size = sampler.rank, sampler.num_replicas
        progress.batch_size, progress.num_samples = self._loader.batch_size, sampler.num_samples
        progress.rows = len(self._plan.columns)
        if resume is not None and resume.elastic is not None:
            if resume.rows != progress.rows or resume.batch_size != progress.batch_size:
                raise ValueError("cannot resume: the elastic state was saved for another dataset size or batch size")
            progress.elastic = resume.elastic

    def _elastic_batches(self, loader, resume: LoaderState):
        sampler = loader.batch_sampler.sampler
        rows = len(self._plan.columns)
        if sampler.shuffle:
            base = _core.IndexOrder.shuffled(rows, epoch_seed(sampler.seed, sampler.epoch))
        else:
            base = _core.IndexOrder.sequential(rows)
        self._progress.batches_yielded = resume.batches_yielded
        return elastic_batches(
            base,
            cast(dict, resume.elastic),
            sampler.rank,
            sampler.num_replicas,
            sampler.drop_last,
            loader.batch_size,
            loader.drop_last,
            resume.batches_yielded,
        )

    def stats(self) -> LoaderStats:
        """How this epoch's loading went so far (see pyloader.LoaderStats)."""
        return native_stats(self._pipeline.stats(), self._started)

    @property
    def progress(self) -> EpochProgress:
        """Where this epoch stands. Until StopIteration the caller is inside the epoch,
        even after its last batch: a resumed run must finish it (with nothing) first."""
        return self._progress

    def _start_pipeline(self) -> None:
        """(Re)builds the pipeline and requests every batch not yet delivered."""
        self._generation = _fork.generation()
        columns = self._plan.columns
        io = self._loader.io
        # Files are opened only for columns the mode may read explicitly.
        smallest = 0 if io == "read" else _core.EXPLICIT_READ_MIN_ROW_BYTES
        files = None if io == "mmap" else columns.read_sources(smallest)
        if io == "auto":
            read_ahead(columns.small_row_extents)
        self._pipeline = _core.BatchPipeline(
            columns.arrays,
            self._loader._native_thread_pool(),
            self._depth,
            columns.row_map,
            columns.casts,
            self._plan.paddings,
            files=files,
            io=io,
            read_threads=READS_IN_FLIGHT,
            stats=self._loader._keeps_stats,
        )
        if self._staging is not None:
            self._staging.attach(self._pipeline)
        self._check_files()
        if self._stage is not None:
            self._stage.restart(self._loader._native_collate_executor())
        self._source.start(self._pipeline)

    def _check_files(self) -> None:
        if self._files_to_check and time.monotonic() >= self._next_file_check:
            check_files_intact(self._files_to_check)
            self._next_file_check = time.monotonic() + _FILE_CHECK_INTERVAL_S

    def __iter__(self):
        return self

    def __len__(self) -> int:
        return len(self._loader)

    def __next__(self):
        with self._lock:
            if self._closed:
                raise StopIteration
            if self._generation != _fork._generation:  # a plain read: this runs once per batch
                self._start_pipeline()  # the inherited one can never finish: start over here
            if self._direct:
                # Batches the pipeline schedules itself, finished as they come: one call.
                if self._files_to_check:
                    self._check_files()
                try:
                    if self._consumer_stream is None:
                        result = self._pipeline.next(self._timeout)
                    else:
                        result = self._pipeline.next(self._timeout, self._consumer_stream())
                except StopIteration:
                    self._progress.finished = True
                    self._close()
                    raise
                except Exception as error:
                    if self._pipeline.last_error_consumed_batch:
                        return self._next_slowly(FailedBatch(error))  # that batch's own failure
                    self._close_if_closed()
                    raise
                except BaseException:
                    self._close_if_closed()
                    raise
                if result is None:
                    self._close_if_closed()
                    raise RuntimeError(f"DataLoader timed out after {self._timeout} seconds")
                if self._closed:
                    return self._next_slowly(result)
                self._source.consumed += 1
                self._progress.batches_yielded += 1  # passed_batch(): no sampler states here
                finish = self._finish_direct
                return result if finish is None else finish(result)
            return self._next_slowly()

    def _stream(self) -> int:
        return 0 if self._consumer_stream is None else self._consumer_stream()

    def _close_if_closed(self) -> None:
        if self._closed and not self._torn_down:
            self._close()  # closed while this call ran

    def _next_slowly(self, taken=None):
        """__next__ for every case but a plain delivered batch, under the lock; `taken`:
        what the direct path already took from the pipeline (a batch or a FailedBatch)."""
        if self._files_to_check:
            self._check_files()
        consumed_before = self._source.consumed
        try:
            if self._stage is None:
                if taken is not None:
                    result = taken
                else:
                    result = self._source.take(self._pipeline, self._timeout, self._stream())
                if result is None:
                    raise RuntimeError(f"DataLoader timed out after {self._timeout} seconds")
                self._source.delivered()
                if result.__class__ is FailedBatch:
                    raise result.error
                batch = self._finish(result)
            else:
                batch = self._stage.next(self._source, self._pipeline, self._timeout)
            if self._move is not None:
                batch = self._move(batch)
        except StopIteration:
            self._progress.finished = True
            self._close()
            raise
        except _core.SourceReadError as error:
            if self._source.consumed != consumed_before:
                self._progress.passed_batch()  # that batch's own failure, as below
            try:
                check_files_intact(self._files_to_check)
            except OSError as named:  # the file that changed, when one did
                raise _core.SourceReadError(named.errno, f"{error} ({named.strerror})", named.filename) from None
            raise
        except Exception:
            if self._source.consumed != consumed_before:
                # That batch's own failure: the epoch has moved past it, as torch's
                # iterator does, so a state taken now resumes after it.
                self._progress.passed_batch()
            raise
        finally:
            self._close_if_closed()
        self._progress.passed_batch()  # only once the batch exists, as torch counts
        return batch

    def close(self) -> None:
        """Stops background gathering now; also happens on exhaustion and deletion.

        Never waits for a next() in progress (which may be this thread's own, when a
        signal handler closes the iterator): the pipeline stops at once, and the
        next() in progress tears the rest down as it leaves."""
        self._closed = True
        self._pipeline.close()  # safe from any thread: a waiting next() keeps its own reference
        if self._lock.acquire(blocking=False):
            try:
                self._close()
            finally:
                self._lock.release()

    def _close(self) -> None:
        """Tears down; called holding the lock."""
        self._closed = True
        if self._torn_down:
            return
        self._torn_down = True
        if self._stage is not None:
            self._stage.close()
        self._source.close()
        self._pipeline.close()

    def __del__(self) -> None:
        pipeline = getattr(self, "_pipeline", None)
        if pipeline is not None:
            pipeline.close()
        stage = getattr(self, "_stage", None)
        if stage is not None:
            stage.close()


# Explicit reads kept in flight per pipeline (io="read"/"auto"): local SSDs and network
# block devices serve several times more random reads per second at depth 64 than at
# depth 1, and blocked reader threads cost no CPU.
READS_IN_FLIGHT = 64


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
