"""Native throughput vs gather-thread count, interleaved so all counts see the same noise.

Shuffled batches of 256 rows of 256 bytes from the 1 GiB memmap bench_loader.py makes
(run it first); samples/s, best of interleaved rounds per thread count. The consumer
thread gathers too while it waits, so on N CPUs more than N - 1 or N threads
oversubscribe the machine.

    python bench/bench_threads.py [--threads 1 2 3] [--rounds 4] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time

import numpy as np

import pyloader


def rate(array, threads: int, seconds: float) -> float:
    loader = pyloader.DataLoader(
        pyloader.ArrayDataset(array), batch_size=256, shuffle=True, drop_last=True, num_threads=threads
    )
    iterator = iter(loader)
    next(iterator)
    samples, start = 0, time.perf_counter()
    for _ in iterator:
        samples += 256
        if time.perf_counter() - start > seconds:
            break
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    paths = sorted(glob.glob(os.path.join(args.dir, "pyloader_bench_256B_*.npy")))
    if not paths:
        raise SystemExit("run bench/bench_loader.py first: it generates the dataset")
    array = np.load(paths[0], mmap_mode="r")
    best = dict.fromkeys(args.threads, 0.0)
    for _ in range(args.rounds):
        for threads in args.threads:
            best[threads] = max(best[threads], rate(array, threads, args.seconds))
    print(f"{os.cpu_count()} CPUs; samples/s, best of {args.rounds} interleaved rounds")
    for threads, value in best.items():
        print(f"  num_threads={threads}: {value:>14,.0f}")


if __name__ == "__main__":
    main()
