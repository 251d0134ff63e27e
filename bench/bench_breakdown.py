"""Where a shuffled 256-row batch of 256-byte rows spends its time, per component.

  shuffled indices   IndexOrder.shuffled(...).take: computing one batch's rows
  order by offset    1-thread reference gather of shuffled batches minus the same
                     batches pre-sorted: the per-batch sort into ascending offset
  copy               1-thread reference gather of pre-sorted batches
  hand-off           pyloader.DataLoader's time per batch minus the bare pipeline's
                     (pipeline.next() alone): the Python side of delivering a batch,
                     over a 4096-batch epoch of a 256 MiB array
  epoch start-up     iter(loader) and its first batch, once per epoch

Copies are measured on an in-cache array (16 MiB) and on the benchmark's 1 GiB memmap
if it exists (run bench_loader.py first). Best of 5 runs each; microseconds per batch.

    python bench/bench_breakdown.py [--dir /tmp]
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time

import numpy as np

import pyloader
from pyloader import _core

BATCH = 256


def best_seconds(function, runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def copy_costs(array) -> tuple[float, float]:
    pool = _core.ThreadPool(1)
    rows = len(array) // BATCH * BATCH
    shuffled = _core.IndexOrder.shuffled(len(array), 3).take(0, rows)
    presorted = np.sort(shuffled.reshape(-1, BATCH), axis=1).ravel()
    batches = rows // BATCH
    with_sort = best_seconds(lambda: _core.reference_gather(pool, [array], shuffled, BATCH)) / batches
    without = best_seconds(lambda: _core.reference_gather(pool, [array], presorted, BATCH)) / batches
    return with_sort - without, without


def handoff_cost(array) -> float:
    pool = _core.ThreadPool(2)
    batches = len(array) // BATCH

    def bare():
        pipeline = _core.BatchPipeline([array], pool, 8)
        pipeline.schedule_positions(_core.IndexOrder.shuffled(len(array), 1), 0, batches * BATCH, BATCH)
        for _ in range(batches):
            pipeline.next(0.0)

    loader = pyloader.DataLoader(pyloader.ArrayDataset(array), batch_size=BATCH, shuffle=True,
                                 drop_last=True, num_threads=2)

    def full():
        for _ in loader:
            pass

    # Interleaved, so both see the same stretch of a noisy machine.
    full_best = bare_best = float("inf")
    for _ in range(5):
        bare_best = min(bare_best, best_seconds(bare, runs=1))
        full_best = min(full_best, best_seconds(full, runs=1))
    return (full_best - bare_best) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where bench_loader.py put its datasets")
    args = parser.parse_args()
    in_cache = np.random.default_rng(0).random((1 << 16, 64), dtype=np.float32)
    order = _core.IndexOrder.shuffled(1 << 22, 5)
    index_cost = best_seconds(lambda: order.take(0, 1 << 22)) / (1 << 22) * BATCH
    print(f"microseconds per batch of {BATCH} rows of 256 bytes")
    print(f"  shuffled indices          {index_cost * 1e6:6.2f}")
    sort_cost, copy_cost = copy_costs(in_cache)
    print(f"  order by offset (16 MiB)  {sort_cost * 1e6:6.2f}")
    print(f"  copy (16 MiB, in cache)   {copy_cost * 1e6:6.2f}")
    mapped = sorted(glob.glob(os.path.join(args.dir, "pyloader_bench_256B_*.npy")))
    if mapped:
        sort_cost, copy_cost = copy_costs(np.load(mapped[0], mmap_mode="r"))
        print(f"  order by offset (1 GiB)   {sort_cost * 1e6:6.2f}")
        print(f"  copy (1 GiB memmap)       {copy_cost * 1e6:6.2f}")
    long_epoch = np.random.default_rng(1).random((BATCH * 4096, 64), dtype=np.float32)
    print(f"  hand-off to Python        {handoff_cost(long_epoch) * 1e6:6.2f}")
    loader = pyloader.DataLoader(pyloader.ArrayDataset(in_cache), batch_size=BATCH, shuffle=True, num_threads=2)
    startup = best_seconds(lambda: next(iter(loader)), runs=50)
    print(f"epoch start-up: {startup * 1e6:.0f} microseconds")


if __name__ == "__main__":
    main()
