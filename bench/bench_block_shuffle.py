"""Block shuffle on a cold file: read speed against the file's sequential bandwidth, and
how random the batches still are, for several block sizes.

Generates (or reuses) a float32 memmap of 4-KiB rows (>= 4 GiB by default), evicts it
from the page cache before every round, and reads a fixed share of its rows with
pyloader.DataLoader(..., sampler=BlockShuffleSampler(block_rows=B, window_blocks=W)),
batch 256, for each B; then the same share with shuffle=True (full random) and a plain
sequential read of the file in 8 MiB chunks (its sequential bandwidth). The randomness
figure is computed on the order alone: the mean number of distinct labels in a batch of
256 when the file is sorted by label (100 classes of equal size; a full shuffle gives
about 92.4, a sequential read 1 or 2).

    python bench/bench_block_shuffle.py [--gib 4] [--fraction 0.05] [--rounds 2] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from bench_loader import BATCH, evict, make_memmap

import pyloader

ROW_BYTES = 4096
CLASSES = 100


def labels_per_batch(order: np.ndarray, rows: int) -> float:
    labels = order * CLASSES // rows
    usable = len(labels) // BATCH * BATCH
    batches = np.sort(labels[:usable].reshape(-1, BATCH), axis=1)
    return float(np.mean(1 + np.count_nonzero(np.diff(batches, axis=1), axis=1)))


def loader_rate(array, sampler, shuffle: bool, samples: int) -> float:
    dataset = pyloader.ArrayDataset(array)
    if sampler is not None:
        sampler.dataset = dataset  # the native path takes a sampler over the loader's own dataset
    loader = pyloader.DataLoader(
        dataset, batch_size=BATCH, sampler=sampler, shuffle=shuffle if sampler is None else None, drop_last=True
    )
    assert loader.uses_native_path
    evict(array)
    start, seen = time.perf_counter(), 0
    for (batch,) in loader:
        seen += len(batch)
        if seen >= samples:
            break
    return seen / (time.perf_counter() - start)


def sequential_bandwidth(array, samples: int) -> float:
    """Bytes/s of reading `samples` rows' bytes of the file in order, 8 MiB at a time."""
    evict(array)
    path = array.filename
    chunk, total = 8 << 20, samples * ROW_BYTES
    descriptor = os.open(path, os.O_RDONLY)
    try:
        start, done = time.perf_counter(), 0
        while done < total:
            got = os.pread(descriptor, chunk, done)
            if not got:
                break
            done += len(got)
        return done / (time.perf_counter() - start)
    finally:
        os.close(descriptor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=4.0)
    parser.add_argument("--fraction", type=float, default=0.05, help="share of the rows each round reads")
    parser.add_argument("--rounds", type=int, default=2, help="each contender's best round counts")
    parser.add_argument("--window-blocks", type=int, default=16)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()

    array = make_memmap(args.dir, ROW_BYTES, args.gib, warm=False)
    rows = len(array)
    samples = max(BATCH, int(rows * args.fraction))
    dataset_rows = range(rows)
    contenders = {}
    for block_rows in (16, 64, 256, 1024):
        sampler = pyloader.BlockShuffleSampler(dataset_rows, block_rows, args.window_blocks, seed=0)
        contenders[f"block {block_rows} rows"] = (sampler, False)
    contenders["full shuffle"] = (None, True)
    best = dict.fromkeys(contenders, 0.0)
    sequential = 0.0
    for _ in range(args.rounds):
        for name, (sampler, shuffle) in contenders.items():
            best[name] = max(best[name], loader_rate(array, sampler, shuffle, samples))
        sequential = max(sequential, sequential_bandwidth(array, samples))

    print(
        f"{rows:,} rows of {ROW_BYTES} bytes ({array.nbytes / 2**30:.2f} GiB, cold), {samples:,} rows a round, "
        f"batch {BATCH}, window {args.window_blocks} blocks, best of {args.rounds} rounds"
    )
    print(f"sequential read: {sequential / 2**20:,.0f} MiB/s")
    print(f"  {'order':<18} {'samples/s':>12} {'MiB/s':>9} {'labels/batch':>13}")
    full_order = np.array(pyloader.DistributedSampler(dataset_rows, 1, 0, seed=0).native_order().take(0, samples))
    for name, (sampler, _) in contenders.items():
        order = full_order if sampler is None else sampler.native_order().take(0, samples)
        rate = best[name]
        print(f"  {name:<18} {rate:>12,.0f} {rate * ROW_BYTES / 2**20:>9,.0f} {labels_per_batch(order, rows):>13.1f}")
    print("\nratios (same run)")
    for name in contenders:
        print(f"ratio {name}: share of sequential bandwidth = {100 * best[name] * ROW_BYTES / sequential:.0f}%")


if __name__ == "__main__":
    main()
