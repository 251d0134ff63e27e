"""Delivery of batches in pinned memory or on a CUDA device.

With ``device=``, native batches (default collate, or a native PadCollate) are
delivered by the C++ core (``_core.DeviceStaging``): its threads gather rows into
pooled pinned blocks and copy each batch to a pooled device block on a stream of the
loader's own as soon as it is gathered (``cuMemcpyHtoDAsync`` through the driver,
loaded at run time). ``next()`` hands the batch to the caller's current stream, which
waits for the copy on the device, and a device block is reused only after the work
queued on that stream by the time the batch's last tensor dies. The training thread
makes one call per batch; nothing here runs per batch.

With ``pin_memory=True`` alone, batches are gathered into pinned blocks from torch's
own host allocator, supplied ahead of need: that allocator reuses a block only after
the copies torch recorded on it have finished, so ``batch.to("cuda",
non_blocking=True)`` by the user stays safe, which a pool of our own could not promise.

Everything else (a custom collate_fn, torch's path) is collated on the host and moved
here with torch, on the loader's stream.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

import numpy as np
import torch

from .. import _core
from .._checkpoint.torch_internals import current_raw_cuda_stream

# The driver library loaded for device copies: the one torch's runtime talks to.
DRIVER_ENV = "PYLOADER_CUDA_DRIVER"
DEFAULT_DRIVER = "libcuda.so.1"

_TORCH_DTYPES: dict = {}


def tensor_of(array) -> torch.Tensor:
    """The tensor for one array of a pipeline batch: for a batch gathered into a supplied
    pinned block, a view of that torch block, so that torch knows the memory as its own
    (its host allocator then tracks the user's copies from it); other batches arrive as
    tensors already."""
    if array.__class__ is torch.Tensor:
        return array
    base = array.base
    if base.__class__ is not _core.StagedBuffer:
        return torch.from_numpy(array)
    block = base.host
    if block is None:
        return torch.from_numpy(array)
    dtype = _TORCH_DTYPES.get(array.dtype)
    if dtype is None:
        dtype = _TORCH_DTYPES[array.dtype] = torch.from_numpy(np.empty(0, array.dtype)).dtype
    start = array.ctypes.data - base.address
    return block[start : start + array.nbytes].view(dtype).view(array.shape)


def staged_buffer_of(arrays) -> _core.StagedBuffer | None:
    """The StagedBuffer behind a pipeline batch (a tuple of arrays, ragged columns as
    (values, lengths, mask) tuples), or None when it was not staged."""
    first = arrays[0]
    if isinstance(first, tuple):
        first = first[0]
    base = getattr(first, "base", None)
    return base if base.__class__ is _core.StagedBuffer else None


def resolve_device(device) -> torch.device | None:
    """The CUDA device named by DataLoader's ``device=``, checked but not resolved: a
    device without an index is resolved by `device_index` when iteration starts (a
    launcher may call ``torch.cuda.set_device`` after the loader is built). Does not
    initialise CUDA."""
    if device is None:
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device must name a CUDA device ('cuda', 'cuda:1' or a torch.device), got {device!r}"
        ) from error
    if device.type != "cuda":
        raise ValueError(
            f"device must be a CUDA device ('cuda', 'cuda:1' or a torch.device), got {device}; "
            "for CPU batches leave device unset"
        )
    if not cuda_available():
        raise RuntimeError(
            f"device={str(device)!r} was asked for, but CUDA is not available "
            f"(torch {torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA)"
        )
    return device


def device_index(device: torch.device) -> torch.device:
    """`device` with its index: torchrun's LOCAL_RANK (each rank drives its own GPU, as
    DistributedDataParallel expects) when that device exists; else the current device
    (launchers that show each rank one GPU, or no launcher)."""
    if device.index is not None:
        return device
    local_rank = os.environ.get("LOCAL_RANK", "")
    if local_rank.isdigit() and int(local_rank) < torch.cuda.device_count():
        return torch.device("cuda", int(local_rank))
    return torch.device("cuda", torch.cuda.current_device())


def check_not_forked() -> None:
    """A clear error for CUDA in a process forked after CUDA was initialised, where
    every CUDA call would fail (torch's own message names no way out)."""
    if torch.cuda._is_in_bad_fork():
        raise RuntimeError(
            "CUDA cannot be used in a process forked after CUDA was initialised in its parent "
            "(pin_memory=True and device= need it): create the loader's process with the "
            "'spawn' or 'forkserver' start method, or move batches to the GPU in the parent"
        )


def cuda_available() -> bool:
    return torch.cuda.is_available()


class CudaBackend:
    """torch's CUDA: pinned blocks from torch's host allocator (pin_memory=True), or the
    core's DeviceStaging for device delivery, with the current stream of torch's."""

    device_memory_on_host = False  # the driver's device memory is on the device

    def __init__(self, device: torch.device, copies: bool = True) -> None:
        check_not_forked()
        torch.cuda.init()  # the primary context exists before the driver is asked for it
        self.device = device
        self.device_staging = None
        self.stream = None
        if copies:
            self.device_staging = _core.DeviceStaging(os.environ.get(DRIVER_ENV, DEFAULT_DRIVER), device.index)
            # The loader's own stream (torch.cuda.Stream() hands out streams of a shared
            # pool, which other components may queue work on), wrapped for torch's use.
            self.stream = torch.cuda.ExternalStream(self.device_staging.copier.stream, device=device)
        self._raw_stream = current_raw_cuda_stream()
        self._pinning_failed = False

    @property
    def copier(self):
        return None if self.device_staging is None else self.device_staging.copier

    def consumer_stream(self) -> int:
        """The caller's current stream on the device (a cudaStream_t as an int)."""
        return self._raw_stream(self.device.index)

    def host_block(self, nbytes: int):
        """A pinned block from torch's host allocator, or None after pinning failed once
        (container limits, ``ulimit -l``): pageable memory then, with one warning."""
        if self._pinning_failed:
            return None
        try:
            return self._pinned_empty(nbytes)
        except RuntimeError as error:
            self._pinning_failed = True
            warnings.warn(
                f"pinned memory could not be allocated ({error}); batches are staged in pageable "
                "memory, and copies to the device are not asynchronous",
                RuntimeWarning,
                stacklevel=2,
            )
            return None

    @staticmethod
    def _pinned_empty(nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)

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
    """One loader's staging in one process, kept across epochs: with `device`, batches
    are delivered there; without, in pinned memory (pin_memory=True). Created when
    iteration starts, which resolves a device given without an index."""

    def __init__(self, device: torch.device | None) -> None:
        self.device = None if device is None else device_index(device)
        self.backend = open_backend(
            self.device if self.device is not None else torch.device("cuda", 0), copies=device is not None
        )
        self.consumer_stream = self.backend.consumer_stream if device is not None else None

    def attach(self, pipeline) -> None:
        """Makes a native pipeline gather into pinned blocks and, with a device, copy there."""
        backend = self.backend
        if self.device is None:
            pipeline.set_staging(host_allocator=backend.host_block)
        else:
            pipeline.set_staging(device=backend.device_staging, device_memory_on_host=backend.device_memory_on_host)

    def move(self, batch):
        """A batch collated on the host (custom collate_fn, torch's path), on the device."""
        return self.backend.move(batch)
