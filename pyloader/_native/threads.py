"""Thread workers: torch's map-style fetching, in threads instead of processes.

For datasets whose ``__getitem__`` releases the GIL (numpy slicing and arithmetic,
PIL/OpenCV decoding, file reads) threads give process-level parallelism without
pickling the dataset, forking, or copying samples between processes. Batches are
fetched as torch's fetcher does (``__getitems__`` when the dataset has it, else one
``__getitem__`` per index, then ``collate_fn``; one sample at a time without
batching), at most ``prefetch_factor`` per thread in flight, and delivered in sampler
order (or as they finish with ``in_order=False``). ``worker_init_fn(worker_id)`` runs in
each thread before its first fetch; if it raises, that fetch raises the same error and
the thread tries again next time. ``get_worker_info()`` is a per-process facility and
returns None in threads, and the threads share torch's global RNG, so random
augmentations are not reproducible run to run as they are with process workers.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import weakref
from collections import deque

from .._checkpoint.replay import draw_base_seed
from .._checkpoint.torch_internals import auto_collation, pin_memory
from .pinning import pin_device


class _WorkerThreads:
    """An executor plus the per-thread worker_init_fn bookkeeping. Holds no reference to
    the loader, so a loader that is dropped is collected and its threads end."""

    def __init__(self, num_workers: int, worker_init_fn) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=num_workers, thread_name_prefix="pyloader-worker"
        )
        self._worker_init_fn = worker_init_fn
        self._worker_ids = itertools.count()
        self._lock = threading.Lock()
        self._local = threading.local()

    def fetch(self, dataset, indices, collate_fn, auto_collation: bool):
        if self._worker_init_fn is not None and not getattr(self._local, "initialised", False):
            if not hasattr(self._local, "worker_id"):
                with self._lock:
                    self._local.worker_id = next(self._worker_ids)
            self._worker_init_fn(self._local.worker_id)
            self._local.initialised = True
        if not auto_collation:
            return collate_fn(dataset[indices])
        getitems = getattr(dataset, "__getitems__", None)
        samples = getitems(indices) if getitems is not None else [dataset[index] for index in indices]
        return collate_fn(samples)


def start_worker_threads(loader) -> _WorkerThreads:
    threads = _WorkerThreads(loader.num_workers, loader.worker_init_fn)
    weakref.finalize(loader, threads.executor.shutdown, wait=False, cancel_futures=True)
    return threads


class ThreadWorkerIterator:
    def __init__(self, loader) -> None:
        self._loader = loader
        self._dataset = loader.dataset
        self._collate_fn = loader.collate_fn
        self._auto_collation = auto_collation(loader)
        self._threads = loader._thread_workers_for_epoch()
        self._timeout = loader.timeout if loader.timeout > 0 else None
        self._in_order = loader.in_order
        self._depth = (loader.prefetch_factor or 2) * loader.num_workers
        # < _torch_path_iterator < _torch_path_iterator_around < _start_epoch < __iter__ < user
        self._pin_device = pin_device(loader, stacklevel=6)
        if not loader._thread_workers_reused():
            # As torch's iterator does when it starts workers (persistent ones start once).
            draw_base_seed(loader.generator)
        self._index_batches = iter(loader._index_sampler)
        self._futures: deque = deque()
        self._numbers: dict = {}  # future -> its batch's number in sampler order
        self._sent = 0
        self._sampler_done = False

    def __iter__(self):
        return self

    def __len__(self) -> int:
        return len(self._loader._index_sampler)

    def _fill(self) -> None:
        while len(self._futures) < self._depth and not self._sampler_done:
            try:
                indices = next(self._index_batches)
            except StopIteration:
                self._sampler_done = True
                return
            future = self._threads.executor.submit(
                self._threads.fetch, self._dataset, indices, self._collate_fn, self._auto_collation
            )
            self._futures.append(future)
            self._numbers[future] = self._sent
            self._sent += 1

    def _timed_out(self):
        return RuntimeError(f"DataLoader timed out after {self._loader.timeout} seconds")

    def __next__(self):
        self._fill()
        if not self._futures:
            raise StopIteration
        if self._in_order:
            future = self._futures.popleft()
        else:
            done, _ = concurrent.futures.wait(
                self._futures, timeout=self._timeout, return_when=concurrent.futures.FIRST_COMPLETED
            )
            if not done:
                raise self._timed_out()
            future = next(iter(done))
            self._futures.remove(future)
        self._numbers.pop(future, None)
        try:
            batch = future.result(timeout=self._timeout)
        except concurrent.futures.TimeoutError:
            raise self._timed_out() from None
        self._fill()
        if self._pin_device is not None:
            batch = pin_memory(batch, self._pin_device)
        return batch

    def delivered_batches(self) -> tuple[int, tuple]:
        """(watermark, delivered above it): every batch numbered below the watermark
        (sampler order) was delivered, and so were those listed."""
        outstanding = set(self._numbers.values())
        watermark = min(outstanding, default=self._sent)
        return watermark, tuple(n for n in range(watermark, self._sent) if n not in outstanding)

    def close(self) -> None:
        for future in self._futures:
            future.cancel()
        self._futures.clear()
        self._sampler_done = True

    def __del__(self) -> None:
        if getattr(self, "_futures", None):
            self.close()
