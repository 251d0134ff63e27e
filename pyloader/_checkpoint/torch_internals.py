"""Every use pyloader makes of torch's private DataLoader machinery, in one place.

pyloader's DataLoader is torch's, with hooks where torch has no public ones: which
iterator a persistent loader keeps, what a worker iterator has sent and received (for
exact checkpoints with ``in_order=False``), which workers are still alive, the fetcher
of a single-process iterator over an IterableDataset, and the index sampler an iterator
reads when it is created. torch may rename any of these in a release; each is pinned
by ``tests/test_torch_internals.py``, which names the attribute that went missing, and
``.ci/run`` runs the suite on the oldest torch the package declares as well as the
newest tested.
"""

from __future__ import annotations

import torch
from torch._utils import ExceptionWrapper  # how worker errors cross processes
from torch.utils.data._utils.pin_memory import pin_memory  # torch's recursive pinning
from torch.utils.data.dataloader import _DatasetKind

__all__ = ["ExceptionWrapper", "pin_memory"]  # re-exported for the modules that use them

TIMEOUT_MESSAGE_PREFIX = "DataLoader timed out"  # how torch's iterators report `timeout`


def is_map_style(loader) -> bool:
    return loader._dataset_kind == _DatasetKind.Map


def auto_collation(loader) -> bool:
    """Whether the loader batches samples (torch's `_auto_collation`)."""
    return loader._auto_collation


def torch_index_sampler(loader):
    """The index sampler torch's iterators would read: the batch sampler, or the
    sampler when batching is off."""
    return torch.utils.data.DataLoader._index_sampler.fget(loader)


class IndexSamplerHook:
    """Mixed into pyloader's DataLoader: torch's iterators read ``_index_sampler`` once,
    when created; while `_resumed_index_sampler` is set they read that one instead."""

    _resumed_index_sampler = None

    @property
    def _index_sampler(self):
        if self._resumed_index_sampler is not None:
            return self._resumed_index_sampler
        return torch_index_sampler(self)


def persistent_iterator(loader):
    """The iterator a loader with persistent workers keeps between epochs (or None)."""
    return loader._iterator


def forget_persistent_iterator(loader) -> None:
    loader._iterator = None


def shut_down_workers(iterator) -> None:
    """Ends a worker iterator's processes now (torch otherwise waits for its GC)."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def shut_down_persistent_workers(loader) -> None:
    iterator = persistent_iterator(loader)
    if iterator is not None:
        shut_down_workers(iterator)
        forget_persistent_iterator(loader)


def worker_processes(iterator) -> list:
    return list(getattr(iterator, "_workers", ()))


def sent_and_received(iterator):
    """(next batch number to deliver, next to send, numbers sent and not yet received)
    of torch's worker iterator, or None for another iterator."""
    if not (hasattr(iterator, "_task_info") and hasattr(iterator, "_rcvd_idx")):
        return None
    return iterator._rcvd_idx, iterator._send_idx, set(iterator._task_info)


def worker_may_deliver(iterator, worker: int) -> bool:
    """Whether `worker` may still deliver a batch: torch clears its status as soon as
    its end marker arrives, while a batch it made may still wait in the task table."""
    status = getattr(iterator, "_workers_status", None)
    if status is None or bool(status[worker]):
        return True
    tasks = getattr(iterator, "_task_info", {})
    return any(info[0] == worker for info in tasks.values())


def dataset_fetcher(iterator):
    """The fetcher of torch's single-process iterator (None for another iterator): its
    ``dataset_iter`` is the dataset's iterator, ``ended`` whether it has ended."""
    return getattr(iterator, "_dataset_fetcher", None)


def dataset_iterator_of(iterator):
    return getattr(dataset_fetcher(iterator), "dataset_iter", None)


def is_timeout(error: BaseException) -> bool:
    """Whether `error` is torch's iterator reporting its `timeout` (no batch was consumed)."""
    return isinstance(error, RuntimeError) and str(error).startswith(TIMEOUT_MESSAGE_PREFIX)


def current_raw_cuda_stream():
    """torch's function giving the current CUDA stream's handle for a device index."""
    return torch._C._cuda_getCurrentRawStream
