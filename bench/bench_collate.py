"""A padding collate_fn (the classic variable-length pattern) with pyloader vs torch.

Records of 16-512 int64 tokens are stored padded to 512 in one array, with their
lengths in another; the collate_fn trims each sample to its length and pads the batch
to its longest record with ``pad_sequence``, as torch tutorials do. Every contender
uses the same collate_fn and the same shuffled sampler (batch 64):

  pyloader w0   rows gathered natively, the collate on the training thread
  pyloader w2   rows gathered natively, the collate on 2 worker threads
  torch w0/w2   torch DataLoader over the same dataset: per-sample __getitem__,
                0 and 2 worker processes

A simulated training step (a fixed matmul loop that releases the GIL, as torch ops do)
runs on every batch, so the figure shows what overlapping collate with the step buys.
Best of 3 interleaved rounds; prints samples/s and ratio lines.

    python bench/bench_collate.py [--seconds 1.5] [--rounds 3] [--step-ms 1.0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.utils.data as tud
from torch.nn.utils.rnn import pad_sequence

import pyloader

BATCH = 64
MAX_LENGTH = 512
ROWS = 200_000


def pad_collate(samples):
    sequences = [tokens[:length] for tokens, length in samples]
    return pad_sequence(sequences, batch_first=True), torch.stack([length for _, length in samples])


def make_dataset():
    rng = np.random.default_rng(0)
    lengths = rng.integers(16, MAX_LENGTH + 1, ROWS)
    tokens = rng.integers(1, 50_000, (ROWS, MAX_LENGTH), dtype=np.int64)
    tokens[np.arange(MAX_LENGTH)[None, :] >= lengths[:, None]] = 0
    return pyloader.ArrayDataset(tokens, lengths)


def training_step(milliseconds: float):
    """A GPU-less stand-in for a step: torch work of a fixed length that releases the GIL."""
    if milliseconds <= 0:
        return lambda batch: None
    a = torch.randn(256, 256)
    start = time.perf_counter()
    repeats = 0
    while time.perf_counter() - start < milliseconds / 1000 * 20:
        a @ a
        repeats += 1
    per_step = max(1, repeats // 20)

    def step(batch):
        for _ in range(per_step):
            a @ a

    return step


def rate(loader, seconds: float, step) -> float:
    iterator = iter(loader)
    next(iterator)
    samples, start = 0, time.perf_counter()
    for padded, lengths in iterator:
        step(padded)
        samples += len(lengths)
        if time.perf_counter() - start > seconds:
            break
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--step-ms", type=float, default=1.0, help="simulated training step per batch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = make_dataset()
    step = training_step(args.step_ms)

    def sampler():
        return tud.RandomSampler(dataset, generator=torch.Generator().manual_seed(0))

    contenders = {
        "pyloader w0": lambda: pyloader.DataLoader(
            dataset, batch_size=BATCH, sampler=sampler(), collate_fn=pad_collate
        ),
        "pyloader w2": lambda: pyloader.DataLoader(
            dataset, batch_size=BATCH, sampler=sampler(), collate_fn=pad_collate, num_workers=2
        ),
        "torch w0": lambda: tud.DataLoader(dataset, batch_size=BATCH, sampler=sampler(), collate_fn=pad_collate),
        "torch w2": lambda: tud.DataLoader(
            dataset, batch_size=BATCH, sampler=sampler(), collate_fn=pad_collate, num_workers=2
        ),
    }
    loaders = {name: make() for name, make in contenders.items()}
    assert loaders["pyloader w0"].uses_native_path and loaders["pyloader w2"].uses_native_path
    best = dict.fromkeys(loaders, 0.0)
    for _ in range(args.rounds):
        for name, loader in loaders.items():
            best[name] = max(best[name], rate(loader, args.seconds, step))
    print(
        f"padding collate, lengths 16-{MAX_LENGTH}, batch {BATCH}, {args.step_ms:g} ms simulated step, "
        f"best of {args.rounds} interleaved rounds: samples/s"
    )
    for name, value in best.items():
        print(f"  {name:<12} {value:>12,.0f}")
    print("\nratios (same run)")
    print(f"ratio padding collate w0: pyloader / torch = {best['pyloader w0'] / best['torch w0']:.1f}x")
    print(f"ratio padding collate w2: pyloader / torch = {best['pyloader w2'] / best['torch w2']:.1f}x")
    best_torch = max(best["torch w0"], best["torch w2"])
    best_ours = max(best["pyloader w0"], best["pyloader w2"])
    print(f"ratio padding collate: best pyloader / best torch = {best_ours / best_torch:.1f}x")


if __name__ == "__main__":
    main()
