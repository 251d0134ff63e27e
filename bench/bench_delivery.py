"""The training thread's cost of delivering a batch, measured without a GPU.

Device delivery (``device=``) and pinned gathering (``pin_memory=True``) run against the
stand-in CUDA driver of the tests (tests/stand_in_cuda: "device" memory is host memory,
copies run on stream threads), so the core's real delivery path (pooled blocks, the
consumer stream's wait, release fences) runs on the CPU. Reported: microseconds per
batch that the caller spends inside ``next()`` not waiting for a batch to be gathered
(the loader's own counters say how long it waited), for 256 shuffled rows of 256 bytes.

    python bench/bench_delivery.py [--batches 20000] [--rounds 3]

Needs a C++ compiler (the stand-in driver is built on the fly).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

import pyloader
from pyloader._native import iterator as _native
from pyloader._native import staging as _staging

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from stand_in_cuda import StandInBackend, StandInDriver, build  # noqa: E402

BATCH = 256


def host_cost(loader, batches: int) -> float:
    """Seconds per batch inside next() that were not spent waiting for a batch."""
    iterator = iter(loader)
    next(iterator)
    waited_before = iterator.stats().waited_s
    inside, clock = 0.0, time.perf_counter
    for _ in range(batches):
        before = clock()
        batch = next(iterator)
        del batch  # the batch dies here, as a training step's does: its release is counted
        inside += clock() - before
    waited = iterator.stats().waited_s - waited_before
    return (inside - waited) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    driver = StandInDriver(build(tempfile.mkdtemp(prefix="pyloader_stand_in_")))
    driver.configure(delay_us=0)
    driver.host_waits(False)  # the caller's stream is asynchronous, as a GPU stream is
    _staging.cuda_available = lambda: True
    _staging.open_backend = lambda device, copies: StandInBackend(driver, device, copies)
    pin = _native.pin_device
    rows = (args.batches + 10) * BATCH
    data = np.random.default_rng(0).integers(0, 255, (rows, 256), dtype=np.uint8)

    def make(**options):
        return pyloader.DataLoader(
            pyloader.ArrayDataset(data), batch_size=BATCH, shuffle=True, drop_last=True, **options
        )

    def pinned(batches):
        _native.pin_device = lambda loader, stacklevel: "cuda"
        try:
            return host_cost(make(pin_memory=True), batches)
        finally:
            _native.pin_device = pin

    contenders = {
        "CPU batches": lambda: host_cost(make(), args.batches),
        "device=": lambda: host_cost(make(device="cuda:0"), args.batches),
        "pin_memory=True": lambda: pinned(args.batches),
    }
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(args.rounds):
        for name, measure in contenders.items():
            best[name] = min(best[name], measure())
    print(
        f"pyloader {pyloader.__version__}, torch {torch.__version__}, stand-in CUDA driver, "
        f"{BATCH} shuffled rows of 256 B, best of {args.rounds} rounds of {args.batches} batches"
    )
    for name, seconds in best.items():
        print(f"  {name:<16} {1e6 * seconds:7.2f} us a batch on the training thread")
    for name in ("device=", "pin_memory=True"):
        print(f"ratio host cost of {name} (stand-in driver): {1e6 * best[name]:.1f} us a batch")


if __name__ == "__main__":
    main()
