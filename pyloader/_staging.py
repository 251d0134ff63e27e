"""Delivery of batches in pinned memory or on a CUDA device.

Native batches (default collate, or a native PadCollate) are staged by the C++ pipeline:
its threads gather rows straight into pinned host blocks and, with ``device=``, copy
each batch to a device block on a dedicated stream as soon as it is gathered
(``cuMemcpyHtoDAsync`` through the driver, loaded at run time). Both kinds of block
come from torch's own caching allocators, allocated here ahead of need, because those
allocators are what make reuse safe: torch's host allocator reuses a pinned block only
after the copies torch recorded on it have finished (so ``batch.to("cuda",
non_blocking=True)`` by the user is safe), and its device allocator, told with
``record_stream`` that the consumer's stream uses a block, reuses it only after that
stream's work is done. Copies made by the pipeline are not known to torch: the host
block of such a copy is kept here until the copy's fence is done.

Everything else (a custom collate_fn, torch's path) is collated on the host and moved
here with torch, on the same stream.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Mapping

import numpy as np
import torch

from . import _core

# The driver library loaded for device copies: the one torch's runtime talks to.
DRIVER_ENV = "PYLOADER_CUDA_DRIVER"
DEFAULT_DRIVER = "libcuda.so.1"

_TORCH_DTYPES: dict = {}


def tensor_of(array: np.ndarray) -> torch.Tensor:
    """The tensor for one array of a pipeline batch: a view of the torch block the array
    lives in (pinned host, or the device block it was copied to) for staged batches, so
    that torch knows the memory as its own; else the array itself, zero-copy."""
    base = array.base
    if base.__class__ is not _core.StagedBuffer:
        return torch.from_numpy(array)
    block = base.device if base.device is not None else base.host
    if block is None:
        return torch.from_numpy(array)
    dtype = _TORCH_DTYPES.get(array.dtype)
    if dtype is None:
        dtype = _TORCH_DTYPES[array.dtype] = torch.from_numpy(np.empty(0, array.dtype)).dtype
    start = array.ctypes.data - base.address
    return block[start:start + array.nbytes].view(dtype).view(array.shape)


def staged_buffer_of(arrays) -> _core.StagedBuffer | None:
    """The StagedBuffer behind a pipeline batch (a tuple of arrays, ragged columns as
    (values, lengths, mask) tuples), or None when it was not staged."""
    first = arrays[0]
    if isinstance(first, tuple):
        first = first[0]
    base = first.base
    return base if base.__class__ is _core.StagedBuffer else None


def resolve_device(device) -> torch.device | None:
    """The CUDA device batches are delivered to, from DataLoader's ``device=``."""
    if device is None:
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must name a CUDA device ('cuda', 'cuda:1' or a torch.device), "
                         f"got {device!r}") from error
    if device.type != "cuda":
        raise ValueError(f"device must be a CUDA device ('cuda', 'cuda:1' or a torch.device), got {device}; "
                         "for CPU batches leave device unset")
    if not cuda_available():
        raise RuntimeError(f"device={str(device)!r} was asked for, but CUDA is not available "
                           f"(torch {torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA)")
    if device.index is None:
        device = torch.device("cuda", _default_index())
    return device


def _default_index() -> int:
    """torchrun's LOCAL_RANK (each rank drives its own GPU, as DistributedDataParallel
    expects) when that device exists; else the current device (launchers that show each
    rank one GPU, or no launcher)."""
    local_rank = os.environ.get("LOCAL_RANK", "")
    if local_rank.isdigit() and int(local_rank) < torch.cuda.device_count():
        return int(local_rank)
    return torch.cuda.current_device()


def cuda_available() -> bool:
    return torch.cuda.is_available()


class CudaBackend:
    """torch's CUDA: blocks from torch's caching allocators, copies through the driver
    on a stream of torch's, shared with the user through torch's stream API."""

    def __init__(self, device: torch.device, copies: bool = True) -> None:
        torch.cuda.init()  # the primary context exists before the driver is asked for it
        self.device = device
        self.stream = torch.cuda.Stream(device) if copies else None
        self.copier = None if not copies else _core.DeviceCopier(
            os.environ.get(DRIVER_ENV, DEFAULT_DRIVER), device.index, self.stream.cuda_stream)
        self._pinning_failed = False

    def host_block(self, nbytes: int):
        """A pinned block from torch's host allocator, or None after pinning failed once
        (container limits, ``ulimit -l``): pageable memory then, with one warning."""
        if self._pinning_failed:
            return None
        try:
            return self._pinned_empty(nbytes)
        except RuntimeError as error:
            self._pinning_failed = True
            warnings.warn(f"pinned memory could not be allocated ({error}); batches are staged in pageable "
                          "memory, and copies to the device are not asynchronous", RuntimeWarning, stacklevel=2)
            return None

    @staticmethod
    def _pinned_empty(nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)

    def device_block(self, nbytes: int):
        with torch.cuda.stream(self.stream):  # stream-ordered with the copies into it
            return torch.empty(nbytes, dtype=torch.uint8, device=self.device)

    def hand_over(self, fence, block) -> None:
        """Makes the consumer's current stream wait for the copy, on the device, and tells
        the allocator that stream uses `block`."""
        consumer = torch.cuda.current_stream(self.device)
        fence.wait_on(consumer.cuda_stream)
        block.record_stream(consumer)

    def move(self, batch):
        """A host batch moved to the device with torch (a custom collate_fn's output)."""
        consumer = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(consumer)  # the batch may come from work on the consumer's stream
        with torch.cuda.stream(self.stream):
            moved = _map_tensors(batch, lambda t: t.to(self.device, non_blocking=True))
        consumer.wait_stream(self.stream)
        _map_tensors(moved, lambda t: t.record_stream(consumer) if t.is_cuda else None)
        return moved


def _map_tensors(batch, function):
    """`batch` with `function` applied to each tensor, in the containers default_collate
    builds (dicts and other mappings, namedtuples such as PaddedBatch, tuples, lists)."""
    if isinstance(batch, torch.Tensor):
        return function(batch)
    if isinstance(batch, Mapping):
        mapped = {key: _map_tensors(value, function) for key, value in batch.items()}
        try:
            return type(batch)(mapped)
        except TypeError:  # a mapping that cannot be built from a dict
            return mapped
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(_map_tensors(value, function) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_map_tensors(value, function) for value in batch)
    return batch


def open_backend(device: torch.device, copies: bool):
    return CudaBackend(device, copies)


class Staging:
    """One loader's staging, kept across epochs: with `device`, batches are delivered
    there; without, in pinned memory (pin_memory=True)."""

    def __init__(self, device: torch.device | None) -> None:
        self.device = device
        self.backend = open_backend(device if device is not None else torch.device("cuda"), copies=device is not None)

    def attach(self, pipeline) -> None:
        """Makes a native pipeline gather into pinned blocks and, with a device, copy there."""
        backend = self.backend
        if self.device is None:
            pipeline.set_staging(host_allocator=backend.host_block)
        else:
            pipeline.set_staging(host_allocator=backend.host_block, device_allocator=backend.device_block,
                                 copier=backend.copier)

    def delivery(self) -> Delivery:
        # Copies still reading host blocks, at most; a copy takes microseconds to
        # milliseconds, so more than this many outstanding means the device is stalled.
        return Delivery(self.backend, bound=64)


class Delivery:
    """Hands staged batches to the consumer, on its thread: the consumer's stream waits
    for each batch's copy, and the batch's host block is kept until that copy is done
    (torch's host allocator does not know of the pipeline's copies)."""

    def __init__(self, backend, bound: int) -> None:
        self._backend = backend
        self._bound = bound
        self._copying: deque = deque()  # StagedBuffers whose copies may still read their host block

    def hand_over(self, arrays) -> None:
        staged = staged_buffer_of(arrays)
        if staged is None or staged.fence is None:
            return
        self._backend.hand_over(staged.fence, staged.device)
        copying = self._copying
        copying.append(staged)
        while copying and copying[0].fence.done():
            copying.popleft()
        while len(copying) > self._bound:
            self._wait_oldest()

    def move(self, batch):
        return self._backend.move(batch)

    def close(self) -> None:
        """Waits for the copies still reading host blocks, then lets the blocks go."""
        while self._copying:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        oldest = self._copying[0]
        oldest.fence.wait()
        self._copying.popleft()  # its host block may go now, not before the wait
