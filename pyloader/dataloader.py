"""DataLoader: torch's DataLoader, with a native path for array-shaped datasets."""

from __future__ import annotations

import torch.utils.data

from . import _core, _fork
from ._native import NativeIterator, NativePlan, default_num_threads, plan_native

# Budget for gathered-but-unconsumed batches when sizing the prefetch depth.
_IN_FLIGHT_BYTES = 12 << 20


class DataLoader(torch.utils.data.DataLoader):
    """A drop-in ``torch.utils.data.DataLoader``.

    Takes exactly torch's arguments, with the same defaults and the same argument
    errors, and yields the same batches. When the dataset is an :class:`ArrayDataset`
    or a ``TensorDataset`` of CPU tensors and ``collate_fn`` is the default, rows are
    gathered by native threads instead of per-sample ``__getitem__`` calls;
    ``shuffle=True`` then uses a native O(1)-memory shuffle seeded from ``generator``
    (or torch's global RNG), new each epoch. Everything else runs on torch's own
    machinery.

    pyloader keyword-only extras:
        num_threads: native gather threads (default: min(4, usable CPUs)).
        native: ``None`` picks the native path when possible; ``False`` never uses it;
            ``True`` requires it and raises ValueError explaining why it is impossible.
    """

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None,
                 num_workers=0, collate_fn=None, pin_memory=False, drop_last=False, timeout=0,
                 worker_init_fn=None, multiprocessing_context=None, generator=None, *,
                 prefetch_factor=None, persistent_workers=False, pin_memory_device="",
                 in_order=True, num_threads: int | None = None, native: bool | None = None):
        super().__init__(dataset, batch_size, shuffle, sampler, batch_sampler, num_workers,
                         collate_fn, pin_memory, drop_last, timeout, worker_init_fn,
                         multiprocessing_context, generator, prefetch_factor=prefetch_factor,
                         persistent_workers=persistent_workers,
                         pin_memory_device=pin_memory_device, in_order=in_order)
        if num_threads is None:
            num_threads = default_num_threads()
        if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")
        if native not in (None, True, False):
            raise ValueError(f"native must be None, True or False, got {native!r}")
        self.num_threads = num_threads
        self.native = native
        # shuffle=True with no sampler is the one case where torch leaves the order to
        # us; an explicitly passed sampler is always honoured as given.
        self._native_shuffle = bool(shuffle) and sampler is None and batch_sampler is None
        self._thread_pool = None
        self._thread_pool_generation = -1
        if native:
            self._plan()

    def _plan(self) -> NativePlan | None:
        if self.native is False:
            return None
        plan = plan_native(self)
        if isinstance(plan, str):
            if self.native:
                raise ValueError(f"native=True, but this loader cannot take the native path: {plan}")
            return None
        return plan

    @property
    def uses_native_path(self) -> bool:
        """Whether iterating this loader gathers natively."""
        return self._plan() is not None

    def _native_thread_pool(self):
        if self._thread_pool is None or self._thread_pool_generation != _fork.generation():
            self._thread_pool = _core.ThreadPool(self.num_threads)
            self._thread_pool_generation = _fork.generation()
        return self._thread_pool

    def _native_depth(self, row_bytes: int) -> int:
        """Batches gathered ahead: `prefetch_factor` per thread when given."""
        if self.prefetch_factor is not None:
            return max(2, self.prefetch_factor * self.num_threads)
        # Small batches: a gather takes microseconds, so several per thread keep the
        # threads busy through a slow consumer step. Large batches: few enough that
        # the buffers in flight stay cache-resident (measured in bench/: 3-4 batches
        # of 3 MiB beat 8 by ~15% on a 32 MiB L3).
        depth = 4 * self.num_threads
        batch_size = getattr(self.batch_sampler, "batch_size", None)
        if isinstance(batch_size, int) and batch_size > 0 and row_bytes > 0:
            depth = min(depth, _IN_FLIGHT_BYTES // (batch_size * row_bytes))
        return max(self.num_threads + 1, depth)

    def __iter__(self):
        plan = self._plan()
        if plan is not None:
            return NativeIterator(self, plan)
        return super().__iter__()
