"""Variable-length records padded into batches: pyloader vs torch's DataLoader.

Generates (np.random, in RAM, no download) --records records of uint16 token ids with
lengths uniform in 16..512, stored CSR-style: one values array and int64 offsets.
Measures samples/s for shuffled, right-padded int64 batches of 64 with their lengths:

  torch w0/w2     torch DataLoader(shuffle=True) over a plain torch Dataset whose
                  __getitem__ returns torch.from_numpy(values[o[i]:o[i+1]].astype(np.int64)),
                  collate_fn = pad_sequence(batch_first=True) + lengths; 0 and 2 worker
                  processes
  pyloader w0/w2  pyloader.DataLoader(RaggedDataset(values, offsets, dtype=torch.int64),
                  shuffle=True, collate_fn=PadCollate()): padded natively;
                  num_workers 0 and 2

Before timing, the padded batches and lengths of pyloader and torch are checked to be
equal for one fixed sampler. Every contender yields --batches batches per round; the
first batch of each round (iterator and worker start-up) is not timed, and each batch
is consumed by reading padded[0, 0] and lengths[-1]. One warm-up round, then --rounds
interleaved rounds; each contender's median round counts. Prints samples/s and ratio
lines.

    python bench/bench_records.py [--records 200000] [--batches 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
import torch.utils.data as tud
from torch.nn.utils.rnn import pad_sequence

import pyloader

BATCH = 64
MIN_LENGTH, MAX_LENGTH = 16, 512
VOCAB = 50_257


def make_records(records: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    lengths = rng.integers(MIN_LENGTH, MAX_LENGTH + 1, records)
    offsets = np.zeros(records + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = rng.integers(1, VOCAB, int(offsets[-1]), dtype=np.uint16)
    return values, offsets


class PlainRecords(tud.Dataset):
    """What a torch user writes over CSR records."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        self.values = values
        self.offsets = offsets

    def __len__(self):
        return len(self.offsets) - 1

    def __getitem__(self, index):
        return torch.from_numpy(self.values[self.offsets[index]:self.offsets[index + 1]].astype(np.int64))


def pad_collate(samples):
    lengths = torch.tensor([len(sample) for sample in samples], dtype=torch.int64)
    return pad_sequence(samples, batch_first=True), lengths


def round_rate(make_iterator, batches: int) -> float:
    """Samples/s over `batches` batches after an untimed first one; a finished epoch
    starts the next (its start-up is timed: a training loop pays it too)."""
    iterator = make_iterator()
    next(iterator)
    samples, touched = 0, 0
    start = time.perf_counter()
    while samples < batches * BATCH:
        try:
            padded, lengths = next(iterator)[:2]
        except StopIteration:
            iterator = make_iterator()
            continue
        touched += int(padded[0, 0]) + int(lengths[-1])
        samples += len(lengths)
    return samples / (time.perf_counter() - start)


def check_same_batches(ours_dataset, theirs_dataset, batches: int = 5) -> None:
    sampler = lambda: tud.RandomSampler(theirs_dataset, generator=torch.Generator().manual_seed(1))
    ours = pyloader.DataLoader(ours_dataset, batch_size=BATCH, sampler=sampler(), collate_fn=pyloader.PadCollate())
    theirs = tud.DataLoader(theirs_dataset, batch_size=BATCH, sampler=sampler(), collate_fn=pad_collate)
    assert ours.uses_native_path
    for _, (a, b) in zip(range(batches), zip(ours, theirs)):
        assert a.padded.dtype == b[0].dtype == torch.int64
        assert torch.equal(a.padded, b[0]) and torch.equal(a.lengths, b[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batches", type=int, default=200, help="timed batches per contender and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each contender's median counts")
    parser.add_argument("--threads", type=int, default=None, help="pyloader num_threads (default: its own)")
    args = parser.parse_args()

    values, offsets = make_records(args.records)
    ragged = pyloader.RaggedDataset(values, offsets, dtype=torch.int64)
    plain = PlainRecords(values, offsets)
    check_same_batches(ragged, plain)

    def ours(workers):
        loader = pyloader.DataLoader(ragged, batch_size=BATCH, shuffle=True, collate_fn=pyloader.PadCollate(),
                                     num_workers=workers, num_threads=args.threads)
        assert loader.uses_native_path
        return loader

    loaders = {
        "torch w0": tud.DataLoader(plain, batch_size=BATCH, shuffle=True, collate_fn=pad_collate),
        "torch w2": tud.DataLoader(plain, batch_size=BATCH, shuffle=True, collate_fn=pad_collate, num_workers=2),
        "pyloader w0": ours(0),
        "pyloader w2": ours(2),
    }
    torch.manual_seed(0)
    for loader in loaders.values():  # warm-up round
        round_rate(lambda: iter(loader), max(1, args.batches // 10))
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(args.rounds):
        for name, loader in loaders.items():
            rates[name].append(round_rate(lambda: iter(loader), args.batches))
    median = {name: statistics.median(values) for name, values in rates.items()}

    print(f"pyloader {pyloader.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs, pyloader num_threads {loaders['pyloader w0'].num_threads}")
    print(f"records: {args.records:,} uint16 records of {MIN_LENGTH}-{MAX_LENGTH} tokens ({values.nbytes / 2**20:.0f} "
          f"MiB, in RAM), int64 padded batches of {BATCH}, {args.batches} batches per round, median of "
          f"{args.rounds} interleaved rounds: samples/s")
    for name, value in median.items():
        spread = f"{min(rates[name]):,.0f}-{max(rates[name]):,.0f}"
        print(f"  {name:<12} {value:>10,.0f}   (rounds {spread})")
    best_torch = max(median["torch w0"], median["torch w2"])
    best_ours = max(median["pyloader w0"], median["pyloader w2"])
    print("\nratios (same run)")
    print(f"ratio records w0: pyloader / torch DataLoader w0 = {median['pyloader w0'] / median['torch w0']:.1f}x")
    print(f"ratio records w2: pyloader / torch DataLoader w2 = {median['pyloader w2'] / median['torch w2']:.1f}x")
    print(f"ratio records: pyloader best / torch best = {best_ours / best_torch:.1f}x")


if __name__ == "__main__":
    main()
