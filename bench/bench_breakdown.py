"""Where a shuffled 256-row batch of 256-byte rows spends its time, per component.

  shuffled indices   IndexOrder.shuffled(...).take: computing one batch's rows
  order by offset    1-thread reference gather of shuffled batches minus the same
                     batches pre-sorted: the per-batch sort into ascending offset
  copy               1-thread reference gather of pre-sorted batches
  hand-off           pyloader.DataLoader's time per batch minus the bare pipeline's
                     (pipeline.next() alone): the Python side of delivering a batch,
                     over a 4096-batch epoch of a 256 MiB array
  epoch start-up     iter(loader) and its first batch, once per epoch; also for a
                     random_split part of 10M rows, first and second epoch
  batch orders       1-thread reference gather of one 16384-row batch from 1e8
                     (cache-resident, stride-0) rows in orders that defeat a bucket
                     pass over the whole index range: the per-batch ordering must
                     stay O(b log b) for any of them

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

    loader = pyloader.DataLoader(
        pyloader.ArrayDataset(array), batch_size=BATCH, shuffle=True, drop_last=True, num_threads=2
    )

    def full():
        for _ in loader:
            pass

    # Interleaved, so both see the same stretch of a noisy machine.
    full_best = bare_best = float("inf")
    for _ in range(5):
        bare_best = min(bare_best, best_seconds(bare, runs=1))
        full_best = min(full_best, best_seconds(full, runs=1))
    return (full_best - bare_best) / batches


def batch_order_costs() -> dict:
    rows, batch = 10**8, 16384
    # Every row aliases one cache-resident row: the copy is negligible, the ordering is not.
    array = np.broadcast_to(np.zeros((1, 64), np.uint8), (rows, 64))
    pool = _core.ThreadPool(1)
    rng = np.random.default_rng(0)
    orders = {
        "spread over all rows": rng.choice(rows, batch, replace=False).astype(np.int64),
        "shuffled narrow window": (rows // 2 + rng.permutation(batch)).astype(np.int64),
        "descending run": np.arange(rows * 3 // 5, rows * 3 // 5 - batch, -1, dtype=np.int64),
        "few distinct, shuffled": rng.integers(0, 8, batch).astype(np.int64) * 1000,
    }
    return {
        name: best_seconds(lambda idx=idx: _core.reference_gather(pool, [array], idx, batch), runs=20)
        for name, idx in orders.items()
    }


def split_epoch_starts() -> tuple[float, float]:
    import torch
    import torch.utils.data as tud

    base = pyloader.ArrayDataset(np.zeros(10_000_000, dtype=np.uint8))
    part, _ = tud.random_split(base, [0.9, 0.1], generator=torch.Generator().manual_seed(0))
    loader = pyloader.DataLoader(part, batch_size=BATCH, shuffle=True)
    starts = []
    for _ in range(2):
        start = time.perf_counter()
        next(iter(loader))
        starts.append(time.perf_counter() - start)
    return starts[0], starts[1]


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
    first, second = split_epoch_starts()
    print(
        f"epoch start-up, random_split part of 10M rows: first {first * 1e3:.1f} ms, "
        f"second {second * 1e6:.0f} microseconds"
    )
    print("milliseconds to order and copy one batch of 16384 rows drawn from 1e8")
    for name, seconds in batch_order_costs().items():
        print(f"  {name:<26}{seconds * 1e3:6.2f}")


if __name__ == "__main__":
    main()
