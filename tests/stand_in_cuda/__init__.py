"""Device staging against a stand-in CUDA driver (stand_in_cuda.cpp), for machines
without a GPU: "device" memory is host memory, copies run late on stream threads."""

from __future__ import annotations

import ctypes
import os
import subprocess

import torch

from pyloader import _core, _staging

SOURCE = os.path.join(os.path.dirname(__file__), "stand_in_cuda.cpp")


def build(directory: str) -> str:
    """Compiles the stand-in driver into `directory`; returns the library's path."""
    library = os.path.join(directory, "libstand_in_cuda.so")
    subprocess.run([os.environ.get("CXX", "c++"), "-std=c++17", "-O1", "-shared", "-fPIC", "-pthread",
                    "-o", library, SOURCE], check=True)
    return library


class StandInDriver:
    """The loaded stand-in: its knobs and counters."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._library = ctypes.CDLL(path)  # the same instance the copier loads
        self._library.stand_in_bytes_copied.restype = ctypes.c_longlong
        self._library.stand_in_copies.restype = ctypes.c_long
        self._library.stand_in_configure.argtypes = [ctypes.c_int, ctypes.c_long]

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


class StandInBackend(_staging.CudaBackend):
    """CudaBackend with host tensors for device blocks and the stand-in driver for
    copies. The consumer, on the host, waits for each copy as it is handed over; or,
    `asynchronous`, as a GPU stream would, later: the test waits for `pending` before
    reading, as a CUDA program synchronises before reading results on the host."""

    fail_pinning = False
    asynchronous = False

    def __init__(self, driver: StandInDriver, device: torch.device, copies: bool) -> None:
        self.device = device
        self.stream = None
        self.copier = _core.DeviceCopier(driver.path, device.index or 0, 0) if copies else None
        self._pinning_failed = False
        self.pending: list = []  # fences handed over, not waited for (asynchronous)
        self.host_addresses: set[int] = set()  # of every host block handed out (not kept alive here)

    def _pinned_empty(self, nbytes: int) -> torch.Tensor:
        if self.fail_pinning:
            raise RuntimeError("CUDA error: out of memory (stand-in: pinning refused)")
        block = torch.empty(nbytes, dtype=torch.uint8)
        self.host_addresses.add(block.data_ptr())
        return block

    def device_block(self, nbytes: int) -> torch.Tensor:
        return torch.full((nbytes,), 0xAB, dtype=torch.uint8)  # garbage until the copy lands

    def hand_over(self, fence, block) -> None:
        if self.asynchronous:
            self.pending.append(fence)
        else:
            fence.wait()

    def move(self, batch):
        return _staging._map_tensors(batch, torch.clone)
