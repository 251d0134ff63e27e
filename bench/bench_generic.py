"""Generic Python datasets: pyloader (torch's machinery, or thread workers) vs torch.

Two map-style datasets with no array fast path:

  python-bound   __getitem__ does Python-level work (holds the GIL)
  gil-releasing  __getitem__ does numpy work on a 64 KiB row (releases the GIL), like
                 decoding or augmenting a sample

Each is loaded in batches of 32 by torch's DataLoader and by pyloader's at
num_workers 0 and 2 (process workers), and by pyloader with worker_mode="thread" and 2
threads; samples/s, best of interleaved rounds, and ratios against torch at the same
num_workers.

    python bench/bench_generic.py [--seconds 1.5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.utils.data as tud

import pyloader

BATCH = 32


class PythonBound(tud.Dataset):
    def __len__(self):
        return 1 << 20

    def __getitem__(self, index):
        features = [float((index * k) % 97) for k in range(64)]
        return torch.tensor(features), index % 10


class GilReleasing(tud.Dataset):
    def __init__(self):
        self.rows = np.random.default_rng(0).random((256, 16384), dtype=np.float32)

    def __len__(self):
        return 1 << 20

    def __getitem__(self, index):
        row = self.rows[index % len(self.rows)]
        features = np.sort(row)[::256] * np.float32(index % 7)  # numpy releases the GIL
        return torch.from_numpy(features.copy()), index % 10


def rate(loader, seconds: float) -> float:
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    samples, start = 0, time.perf_counter()
    for batch in iterator:
        samples += len(batch[1])
        if time.perf_counter() - start > seconds:
            break
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, batch {BATCH}, best of {args.rounds} interleaved rounds of {args.seconds:g} s")
    for dataset in (PythonBound(), GilReleasing()):
        contenders = {
            "torch w0": lambda dataset=dataset: tud.DataLoader(dataset, batch_size=BATCH, shuffle=True),
            "pyloader w0": lambda dataset=dataset: pyloader.DataLoader(dataset, batch_size=BATCH, shuffle=True),
            "torch w2": lambda dataset=dataset: tud.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=2),
            "pyloader w2 process": lambda dataset=dataset: pyloader.DataLoader(
                dataset, batch_size=BATCH, shuffle=True, num_workers=2
            ),
            "pyloader w2 thread": lambda dataset=dataset: pyloader.DataLoader(
                dataset, batch_size=BATCH, shuffle=True, num_workers=2, worker_mode="thread"
            ),
        }
        best = dict.fromkeys(contenders, 0.0)
        for _ in range(args.rounds):
            for name, make in contenders.items():
                best[name] = max(best[name], rate(make(), args.seconds))
        label = type(dataset).__name__
        print(f"\n{label}: samples/s")
        for name, value in best.items():
            print(f"  {name:<20} {value:>12,.0f}")
        print(f"ratio {label}: pyloader w0 / torch w0 = {best['pyloader w0'] / best['torch w0']:.2f}x")
        print(f"ratio {label}: pyloader w2 process / torch w2 = {best['pyloader w2 process'] / best['torch w2']:.2f}x")
        print(f"ratio {label}: pyloader w2 thread / torch w2 = {best['pyloader w2 thread'] / best['torch w2']:.2f}x")


if __name__ == "__main__":
    main()
