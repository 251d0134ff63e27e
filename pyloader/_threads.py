"""Thread workers: torch's map-style fetching, in threads instead of processes.

For datasets whose ``__getitem__`` releases the GIL (numpy slicing and arithmetic,
PIL/OpenCV decoding, file reads) threads give process-level parallelism without
pickling the dataset, forking, or copying samples between processes. Batches are
fetched as torch's fetcher does (``__getitems__`` when the dataset has it, else one
``__getitem__`` per index, then ``collate_fn``), at most ``prefetch_factor`` per thread
in flight, and delivered in sampler order (or as they finish with ``in_order=False``).
``worker_init_fn(worker_id)`` runs once in each thread. ``get_worker_info()`` is a
per-process facility and returns None in threads.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
from collections import deque

import torch
from torch.utils.data._utils.pin_memory import pin_memory

from ._resume import draw_base_seed


def fetch(dataset, indices, collate_fn):
    getitems = getattr(dataset, "__getitems__", None)
    samples = getitems(indices) if getitems is not None else [dataset[index] for index in indices]
    return collate_fn(samples)


def make_executor(loader) -> concurrent.futures.ThreadPoolExecutor:
    worker_ids = itertools.count()
    lock = threading.Lock()

    def initialize() -> None:
        with lock:
            worker_id = next(worker_ids)
        if loader.worker_init_fn is not None:
            loader.worker_init_fn(worker_id)

    return concurrent.futures.ThreadPoolExecutor(max_workers=loader.num_workers, initializer=initialize,
                                                 thread_name_prefix="pyloader-worker")


class ThreadWorkerIterator:
    def __init__(self, loader) -> None:
        self._loader = loader
        self._dataset = loader.dataset
        self._collate_fn = loader.collate_fn
        self._executor = loader._thread_worker_executor()
        self._timeout = loader.timeout if loader.timeout > 0 else None
        self._in_order = loader.in_order
        self._depth = (loader.prefetch_factor or 2) * loader.num_workers
        accelerator = loader.pin_memory and torch.accelerator.is_available()
        self._pin_device = torch.accelerator.current_accelerator().type if accelerator else None
        draw_base_seed(loader)  # as torch's iterator does, for identical RNG consumption
        self._index_batches = iter(loader._index_sampler)
        self._futures: deque = deque()
        self._sampler_done = False
        self._num_yielded = 0

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
            self._futures.append(self._executor.submit(fetch, self._dataset, indices, self._collate_fn))

    def __next__(self):
        self._fill()
        if not self._futures:
            raise StopIteration
        if self._in_order:
            future = self._futures.popleft()
        else:
            done, _ = concurrent.futures.wait(self._futures, timeout=self._timeout,
                                              return_when=concurrent.futures.FIRST_COMPLETED)
            future = next(iter(done)) if done else self._futures[0]
            self._futures.remove(future)
        try:
            batch = future.result(timeout=self._timeout)
        except concurrent.futures.TimeoutError:
            raise RuntimeError(f"DataLoader timed out after {self._loader.timeout} seconds") from None
        self._fill()
        self._num_yielded += 1
        if self._pin_device is not None:
            batch = pin_memory(batch, self._pin_device)
        return batch

    def close(self) -> None:
        for future in self._futures:
            future.cancel()
        self._futures.clear()
        self._sampler_done = True

    def __del__(self) -> None:
        futures = getattr(self, "_futures", None)
        if futures:
            self.close()
