"""Worker processes that report their start: a failing ``worker_init_fn`` comes out of
``iter(loader)``, as with torchdata's StatefulDataLoader (torch's own loader raises it
at the first ``next()``; ``list(iter(loader))`` sees both alike).

Each worker runs the loader's ``worker_init_fn`` wrapped so that it then sends one
message: its id and, if the function raised, the exception as torch carries worker
errors (``ExceptionWrapper``, re-raised with the worker's traceback). ``iter()`` waits
for every worker's message, for at most the loader's ``timeout`` when it has one.
Workers that die, or are still in ``worker_init_fn`` when that time is up, are left to
torch's iterator, which reports them at ``next()``.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import time

from . import torch_internals as _torch_internals
from .torch_internals import ExceptionWrapper

_POLL_SECONDS = 0.5  # how often a wait for worker messages looks for dead workers


class _ReportingInit:
    def __init__(self, worker_init_fn, messages) -> None:
        self.worker_init_fn, self.messages = worker_init_fn, messages

    def __call__(self, worker_id: int) -> None:
        try:
            self.worker_init_fn(worker_id)
        except BaseException:
            self.messages.put((worker_id, ExceptionWrapper(where=f"in DataLoader worker process {worker_id}")))
            raise
        self.messages.put((worker_id, None))


def start_reporting_workers(loader, start):
    """`start()` (torch's iterator creation) with the loader's worker_init_fn reporting,
    returning once every new worker has run it; raises the first failure."""
    previous = _torch_internals.persistent_iterator(loader)
    context = loader.multiprocessing_context or multiprocessing.get_context()
    messages = context.Queue()
    worker_init_fn = loader.worker_init_fn
    loader.worker_init_fn = _ReportingInit(worker_init_fn, messages)
    try:
        iterator = start()
    finally:
        loader.worker_init_fn = worker_init_fn
    if iterator is previous:  # persistent workers carried on: they ran worker_init_fn already
        return iterator
    try:
        _wait_for_workers(iterator, messages, loader.num_workers, loader.timeout)
    except BaseException:
        _torch_internals.shut_down_workers(iterator)
        if _torch_internals.persistent_iterator(loader) is iterator:
            _torch_internals.forget_persistent_iterator(loader)
        raise
    finally:
        messages.close()
    return iterator


def _wait_for_workers(iterator, messages, workers: int, timeout: float) -> None:
    waiting = set(range(workers))
    deadline = time.monotonic() + timeout if timeout > 0 else None
    while waiting:
        poll = _POLL_SECONDS if deadline is None else min(_POLL_SECONDS, max(0.0, deadline - time.monotonic()))
        try:
            worker_id, failure = messages.get(timeout=poll)
        except queue_module.Empty:
            if not all(process.is_alive() for process in _torch_internals.worker_processes(iterator)):
                return  # a worker died: torch's iterator reports it at next()
            if deadline is not None and time.monotonic() >= deadline:
                return  # torch's next() raises its own timeout
            continue
        waiting.discard(worker_id)
        if failure is not None:
            failure.reraise()
