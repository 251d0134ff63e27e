"""Cost of resuming mid-epoch vs the position resumed at, on a 10M-row dataset.

For each position (fraction of the epoch already delivered) a loader is saved there,
restored into a fresh loader, and the time from load_state_dict() to the first batch
is measured:

  native shuffle      shuffle=True: the state is (seed, position), O(1) to resume
  replayed sampler    a RandomSampler with a generator: its index stream is replayed
                      up to the position (no data read), O(position)

    python bench/bench_resume.py [--rows 10000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.utils.data as tud

import pyloader

BATCH = 256


def resume_seconds(make, batches_done: int) -> float:
    loader = make()
    iterator = iter(loader)
    # Reaching the position the ordinary way is not what is measured; the state is.
    if batches_done:
        state = loader.state_dict()
        state["batches_yielded"] = batches_done
    else:
        state = loader.state_dict()
    del iterator
    fresh = make()
    start = time.perf_counter()
    fresh.load_state_dict(state)
    next(iter(fresh))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    data = pyloader.ArrayDataset(np.zeros((args.rows, 4), dtype=np.float32))
    batches = args.rows // BATCH
    makers = {
        "native shuffle": lambda: pyloader.DataLoader(data, batch_size=BATCH, shuffle=True),
        "replayed sampler": lambda: pyloader.DataLoader(
            data, batch_size=BATCH, sampler=tud.RandomSampler(data, generator=torch.Generator().manual_seed(0))
        ),
    }
    print(f"{args.rows:,} rows, batch {BATCH}: seconds from load_state_dict() to the first batch")
    print(f"  {'position':<10}" + "".join(f"{name:>20}" for name in makers))
    results = {}
    for fraction in (0.0, 0.5, 0.99):
        done = int(batches * fraction)
        times = {name: min(resume_seconds(make, done) for _ in range(2)) for name, make in makers.items()}
        results[fraction] = times
        print(f"  {fraction:<10.0%}" + "".join(f"{times[name]:>20.4f}" for name in makers))
    for name in makers:
        print(f"ratio {name}: resume at 99% / resume at 0% = {results[0.99][name] / results[0.0][name]:.1f}x")


if __name__ == "__main__":
    main()
