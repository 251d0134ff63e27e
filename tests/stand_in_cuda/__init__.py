"""Device staging against a stand-in CUDA driver (stand_in_cuda.cpp), for machines
without a GPU: "device" memory is host memory, copies run late on stream threads."""

from __future__ import annotations

import ctypes
import os
import subprocess

import torch

from pyloader import _core
from pyloader._native import staging as _staging

SOURCE = os.path.join(os.path.dirname(__file__), "stand_in_cuda.cpp")


def build(directory: str) -> str:
    """Compiles the stand-in driver into `directory`; returns the library's path."""
    library = os.path.join(directory, "libstand_in_cuda.so")
    subprocess.run(
        [os.environ.get("CXX", "c++"), "-std=c++17", "-O1", "-shared", "-fPIC", "-pthread", "-o", library, SOURCE],
        check=True,
    )
    return library


class StandInDriver:
    """The loaded stand-in: its knobs and counters."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._library = ctypes.CDLL(path)  # the same instance the copier loads
        self._library.stand_in_bytes_copied.restype = ctypes.c_longlong
        self._library.stand_in_copies.restype = ctypes.c_long
        self._library.stand_in_configure.argtypes = [ctypes.c_int, ctypes.c_long]
        self._library.stand_in_allocations.restype = ctypes.c_long
        self._library.stand_in_live_allocations.restype = ctypes.c_long
        for name in ("streams_created", "pending_copies", "spinning_events", "stream_syncs"):
            getattr(self._library, f"stand_in_{name}").restype = ctypes.c_long
        self._library.stand_in_fail_record.argtypes = [ctypes.c_long]

    def configure(self, delay_us: int = 300, fail_after: int = 0) -> None:
        self._library.stand_in_configure(delay_us, fail_after)

    def copies(self) -> int:
        return self._library.stand_in_copies()

    def retained_contexts(self) -> int:
        return self._library.stand_in_retained_contexts()

    def live_events(self) -> int:
        return self._library.stand_in_live_events()

    def calls_without_context(self) -> int:
        return self._library.stand_in_calls_without_context()

    def allocations(self) -> int:
        """Device and pinned blocks allocated so far."""
        return self._library.stand_in_allocations()

    def live_allocations(self) -> int:
        return self._library.stand_in_live_allocations()

    def fail_pinning(self, fail: bool) -> None:
        self._library.stand_in_fail_pinning(int(fail))

    def host_waits(self, waits: bool) -> None:
        """Whether the caller's (legacy) stream is the host: its waits block the caller."""
        self._library.stand_in_host_waits(int(waits))

    def streams_created(self) -> int:
        return self._library.stand_in_streams_created()

    def pending_copies(self) -> int:
        """Copies queued on a stream and not yet run."""
        return self._library.stand_in_pending_copies()

    def stream_syncs(self) -> int:
        """cuStreamSynchronize calls so far."""
        return self._library.stand_in_stream_syncs()

    def spinning_events(self) -> int:
        """Events created without CU_EVENT_BLOCKING_SYNC (a host wait on them spins)."""
        return self._library.stand_in_spinning_events()

    def fail_record(self, after: int) -> None:
        """The after-th cuEventRecord from now fails (0: none)."""
        self._library.stand_in_fail_record(after)

    def synchronize(self) -> None:
        """Waits for the work queued on the caller's (legacy) stream."""
        self._library.stand_in_synchronize()


class StandInBackend(_staging.CudaBackend):
    """CudaBackend over the stand-in driver: device delivery runs the production core
    (DeviceStaging, pooled blocks, the stream wait and the release fences), with
    "device" memory on the host, so device batches are CPU tensors; the caller's stream
    is the legacy stream. Pinned blocks for pin_memory=True are plain host tensors."""

    fail_pinning = False
    device_memory_on_host = True

    def __init__(self, driver: StandInDriver, device: torch.device, copies: bool) -> None:
        self.device = device
        self.device_staging = _core.DeviceStaging(driver.path, device.index or 0) if copies else None
        self.stream = None
        self._raw_stream = lambda index: 0  # the legacy stream
        self._pinning_failed = False
        self.host_addresses: set[int] = set()  # of every host block handed out (not kept alive here)

    def _pinned_empty(self, nbytes: int) -> torch.Tensor:
        if self.fail_pinning:
            raise RuntimeError("CUDA error: out of memory (stand-in: pinning refused)")
        block = torch.empty(nbytes, dtype=torch.uint8)
        self.host_addresses.add(block.data_ptr())
        return block

    def move(self, batch):
        return _staging._map_tensors(batch, torch.clone)
