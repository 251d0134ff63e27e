"""Turning gathered arrays into the batches a loader yields, on or off the caller's thread.

`finish_batch` builds the function that makes one batch from a pipeline's arrays:
tensors viewing the gathered buffers (default collate), or the per-sample list torch's
fetcher would pass to a custom collate_fn, then pinning when asked.

`CollateStage` runs that function on worker threads for loaders with
``num_workers > 0``: the caller's thread only takes finished batches, in order, while
the next ones are collated. With ``num_workers=0`` a custom collate_fn runs on the
caller's thread when the batch is due, exactly where torch runs it, so a collate_fn
that draws from torch's global RNG stays reproducible.
"""

from __future__ import annotations

import concurrent.futures
from collections import deque

from .._checkpoint.torch_internals import pin_memory
from .staging import staged_buffer_of, tensor_of


class FailedBatch:
    """A batch whose outcome is an error: raised when that batch is due."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def is_identity(finish) -> bool:
    """Whether `finish` (from finish_batch) returns the pipeline's batch as it is."""
    return finish is _as_delivered


def _as_delivered(tensors):
    return tensors


def finish_batch(columns, collate_fn, pin_device: str | None, padded: bool = False, staged: bool = False):
    """The function from one batch's gathered arrays to the batch the loader yields.

    `staged`: the pipeline stages batches (numpy arrays over supplied blocks);
    otherwise it delivers a list of tensors, which plain batches are as they come.

    `padded`: the pipeline pads the ragged columns itself (a native PadCollate); its
    (values, lengths, mask) arrays become PaddedBatch tuples. Otherwise ragged columns
    arrive packed and are cut into the per-sample tensors a collate_fn receives.
    """
    names = columns.names
    views = columns.view_dtypes
    any_view = any(view is not None for view in views)
    bare = columns.bare
    ragged = columns.ragged
    if any(ragged):
        return _finish_ragged(names, bare, ragged, views, collate_fn, pin_device, padded)

    def tensors_of(arrays):
        tensors = list(map(tensor_of, arrays))
        if any_view:
            tensors = [t if view is None else t.view(view) for t, view in zip(tensors, views)]
        return tensors

    if collate_fn is None:
        if pin_device is None and not any_view and names is None and not bare:
            return (lambda arrays: list(map(tensor_of, arrays))) if staged else _as_delivered

        def stacked(arrays):
            tensors = tensors_of(arrays)
            if pin_device is not None and not _gathered_pinned(arrays):
                tensors = [t.pin_memory() for t in tensors]
            if bare:
                return tensors[0]
            return tensors if names is None else dict(zip(names, tensors))

        return stacked

    def collated(arrays):
        # The sample list torch's fetcher would pass: one tuple (or dict) per row, whose
        # tensors view the gathered batch instead of the dataset.
        rows = zip(*(t.unbind(0) for t in tensors_of(arrays)))
        batch = collate_fn(_samples(rows, names, bare))
        if pin_device is not None:
            batch = pin_memory(batch, pin_device)
        return batch

    return collated


def _gathered_pinned(arrays) -> bool:
    """Whether the pipeline gathered this batch into a pinned block (staging), which
    the batch's tensors view: then nothing is left to pin."""
    staged = staged_buffer_of(arrays)
    return staged is not None and staged.host is not None


def _samples(rows, names, bare) -> list:
    if bare:
        return [row[0] for row in rows]
    return list(rows) if names is None else [dict(zip(names, row)) for row in rows]


def _finish_ragged(names, bare, ragged, views, collate_fn, pin_device, padded):
    from ..records import PaddedBatch

    def fixed(array, view):
        tensor = tensor_of(array)
        return tensor if view is None else tensor.view(view)

    if padded:

        def padded_batch(arrays):
            fields = [
                PaddedBatch(
                    tensor_of(column[0]), tensor_of(column[1]), None if column[2] is None else tensor_of(column[2])
                )
                if is_ragged
                else fixed(column, view)
                for column, is_ragged, view in zip(arrays, ragged, views)
            ]
            batch = fields[0] if bare else (fields if names is None else dict(zip(names, fields)))
            return batch if pin_device is None or _gathered_pinned(arrays) else pin_memory(batch, pin_device)

        return padded_batch

    def collated(arrays):
        per_column = [
            tensor_of(column[0]).split(column[1].tolist()) if is_ragged else fixed(column, view).unbind(0)
            for column, is_ragged, view in zip(arrays, ragged, views)
        ]
        batch = collate_fn(_samples(zip(*per_column), names, bare))
        return batch if pin_device is None else pin_memory(batch, pin_device)

    return collated


def _failed(error: BaseException) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_exception(error)
    return future


class CollateStage:
    """Batches finished on an executor's threads, handed out in order.

    At most `depth` batches are taken from the order source ahead of the caller. Only
    the first of them is waited for; the rest are taken when already gathered, so the
    caller never waits for a batch it has not asked for yet. Used by one thread at a
    time (the iterator's lock).
    """

    def __init__(self, executor: concurrent.futures.Executor, finish, depth: int) -> None:
        self._executor = executor
        self._finish = finish
        self._depth = max(1, depth)
        self._queue: deque[concurrent.futures.Future] = deque()

    def restart(self, executor: concurrent.futures.Executor) -> None:
        """Forgets every batch in flight (after fork their threads are gone): the order
        source asks the new pipeline for them again."""
        self._executor = executor
        self._queue.clear()

    def _fill(self, source, pipeline, timeout: float) -> None:
        queue = self._queue
        while len(queue) < self._depth:
            if queue and not source.ready(pipeline):
                return
            try:
                result = source.take(pipeline, timeout)
            except StopIteration:
                if queue:
                    return
                raise
            if result is None:
                raise RuntimeError(f"DataLoader timed out after {timeout} seconds")
            if isinstance(result, FailedBatch):
                queue.append(_failed(result.error))
            else:
                queue.append(self._executor.submit(self._finish, result))

    def next(self, source, pipeline, timeout: float):
        """The next batch; raises that batch's error, or StopIteration at the end."""
        self._fill(source, pipeline, timeout)
        head = self._queue[0]
        try:
            batch = head.result(timeout=timeout if timeout > 0 else None)
        except concurrent.futures.TimeoutError:
            raise RuntimeError(f"DataLoader timed out after {timeout} seconds") from None
        except BaseException as error:
            if head.done() and not head.cancelled() and head.exception() is error:
                self._queue.popleft()  # the batch's own error, not an interrupted wait
                source.delivered()
            raise
        self._queue.popleft()
        source.delivered()
        return batch

    def close(self) -> None:
        for future in self._queue:
            future.cancel()
        self._queue.clear()
