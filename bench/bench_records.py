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

With --cold the records live in files larger than what the rounds read: int32 values
of lengths 16..512 (--cold-gib GiB, default 4, raw, so the same file is also a Megatron
``.bin``), int64 offsets (``.npy``) and a Megatron ``.idx`` over the same sequences; the
values' pages are evicted from the page cache before every contender's round, so every
record comes from storage. Contenders: torch w0/w2 over the memory-mapped values as
above; pyloader RaggedDataset with io="auto" (what a user gets) and io="mmap" (page
faults only), each w0; pyloader MegatronDataset over the .bin/.idx pair, io="auto".

    python bench/bench_records.py [--records 200000] [--batches 200] [--rounds 5]
    python bench/bench_records.py --cold [--cold-gib 4] [--batches 100] [--rounds 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import struct
import tempfile
import time

import _rounds as rounds
import numpy as np
import torch
import torch.utils.data as tud
from torch.nn.utils.rnn import pad_sequence

import pyloader

from _cold import evict

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
        return torch.from_numpy(self.values[self.offsets[index] : self.offsets[index + 1]].astype(np.int64))


def pad_collate(samples):
    lengths = torch.tensor([len(sample) for sample in samples], dtype=torch.int64)
    return pad_sequence(samples, batch_first=True), lengths


def consume(batch) -> tuple[int, int]:
    padded, lengths = batch[:2]
    return len(lengths), int(padded[0, 0]) + int(lengths[-1])


def round_rate(make_iterator, batches: int) -> float:
    return rounds.round_rate(make_iterator, batches, BATCH, consume)


def check_same_batches(ours_dataset, theirs_dataset, batches: int = 5) -> None:
    sampler = lambda: tud.RandomSampler(theirs_dataset, generator=torch.Generator().manual_seed(1))
    ours = pyloader.DataLoader(ours_dataset, batch_size=BATCH, sampler=sampler(), collate_fn=pyloader.PadCollate())
    theirs = tud.DataLoader(theirs_dataset, batch_size=BATCH, sampler=sampler(), collate_fn=pad_collate)
    assert ours.uses_native_path
    for _, (a, b) in zip(range(batches), zip(ours, theirs)):
        assert a.padded.dtype == b[0].dtype == torch.int64
        assert torch.equal(a.padded, b[0]) and torch.equal(a.lengths, b[1])


def interleaved_rounds(loaders: dict, count: int, batches: int, before_each=lambda: None) -> tuple[dict, dict]:
    return rounds.interleaved_rounds(loaders, count, lambda make: round_rate(make, batches), before_each)


def padded_loader(dataset, threads, **options) -> pyloader.DataLoader:
    """pyloader's contender: shuffled, natively padded batches."""
    loader = pyloader.DataLoader(
        dataset, batch_size=BATCH, shuffle=True, collate_fn=pyloader.PadCollate(), num_threads=threads, **options
    )
    assert loader.uses_native_path
    return loader


def torch_loaders(plain) -> dict:
    """torch's contenders: the tutorial's pad_sequence collate, 0 and 2 worker processes."""
    return {
        f"torch w{workers}": tud.DataLoader(
            plain, batch_size=BATCH, shuffle=True, collate_fn=pad_collate, num_workers=workers
        )
        for workers in (0, 2)
    }


def make_record_files(directory: str, gib: float) -> tuple[str, str, str]:
    """Raw int32 values (also a Megatron .bin), their .npy offsets and a Megatron .idx,
    generated once: (values path, offsets path, Megatron prefix)."""
    os.makedirs(directory, exist_ok=True)
    prefix = os.path.join(directory, f"records_{gib:g}gib")
    values_path, offsets_path, idx_path = prefix + ".bin", prefix + "-offsets.npy", prefix + ".idx"
    if all(os.path.exists(path) for path in (values_path, offsets_path, idx_path)):
        return values_path, offsets_path, prefix
    rng = np.random.default_rng(0)
    mean_bytes = 4 * (MIN_LENGTH + MAX_LENGTH) / 2
    lengths = rng.integers(MIN_LENGTH, MAX_LENGTH + 1, int(gib * (1 << 30) / mean_bytes))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    step = 1 << 24
    with open(values_path + ".part", "wb") as out:
        for first in range(0, int(offsets[-1]), step):
            rng.integers(1, VOCAB, min(step, int(offsets[-1]) - first), dtype=np.int32).tofile(out)
    np.save(offsets_path, offsets)
    with open(idx_path + ".part", "wb") as out:  # Megatron's MMIDIDX layout, version 1, int32 tokens (code 4)
        out.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 4, len(lengths), len(lengths) + 1))
        lengths.astype(np.int32).tofile(out)
        (offsets[:-1] * 4).tofile(out)
        np.arange(len(lengths) + 1, dtype=np.int64).tofile(out)
    os.replace(idx_path + ".part", idx_path)
    os.replace(values_path + ".part", values_path)
    return values_path, offsets_path, prefix


def cold(args) -> None:
    start = time.perf_counter()
    values_path, offsets_path, prefix = make_record_files(args.dir, args.cold_gib)
    prepared = time.perf_counter() - start
    values = np.memmap(values_path, dtype=np.int32, mode="r")
    offsets = np.load(offsets_path, mmap_mode="r")
    ragged = pyloader.RaggedDataset(values, offsets, dtype=torch.int64)
    megatron = pyloader.MegatronDataset(prefix)
    plain = PlainRecords(values, offsets)
    check_same_batches(ragged, plain)
    maps = [values, megatron.index.tokens]

    loaders = {
        **torch_loaders(plain),
        "pyloader": padded_loader(ragged, args.threads, io="auto"),
        "pyloader mmap": padded_loader(ragged, args.threads, io="mmap"),
        "pyloader megatron": padded_loader(megatron, args.threads, io="auto"),
    }
    torch.manual_seed(0)
    rates, median = interleaved_rounds(loaders, args.rounds, args.batches, before_each=lambda: evict(values_path, maps))
    print(
        f"pyloader {pyloader.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, pyloader num_threads {loaders['pyloader'].num_threads}"
    )
    print(
        f"records, cold: {len(offsets) - 1:,} int32 records of {MIN_LENGTH}-{MAX_LENGTH} values "
        f"({os.path.getsize(values_path) / 2**30:.2f} GiB, prepared in {prepared:.1f} s), evicted before every "
        f"round, int64 padded batches of {BATCH}, {args.batches} batches per round, median of {args.rounds} "
        "interleaved rounds: samples/s"
    )
    for name, values_ in rates.items():
        print(f"  {name:<18} {median[name]:>10,.0f}   (rounds {min(values_):,.0f}-{max(values_):,.0f})")
    best_torch = max(median["torch w0"], median["torch w2"])
    print("\nratios (same run)")
    print(f"ratio cold records: pyloader / torch best = {median['pyloader'] / best_torch:.1f}x")
    print(f"ratio cold records: pyloader megatron / torch best = {median['pyloader megatron'] / best_torch:.1f}x")
    print(f"ratio cold records: io=auto / io=mmap = {median['pyloader'] / median['pyloader mmap']:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batches", type=int, default=200, help="timed batches per contender and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each contender's median counts")
    parser.add_argument("--threads", type=int, default=None, help="pyloader num_threads (default: its own)")
    parser.add_argument("--cold", action="store_true", help="records read from storage (see above)")
    parser.add_argument("--cold-gib", type=float, default=4.0, help="size of the --cold values file")
    parser.add_argument(
        "--dir",
        default=os.path.join(tempfile.gettempdir(), "pyloader-bench-records"),
        help="where the --cold files are generated (kept for later runs)",
    )
    args = parser.parse_args()
    if args.cold:
        cold(args)
        return

    values, offsets = make_records(args.records)
    ragged = pyloader.RaggedDataset(values, offsets, dtype=torch.int64)
    plain = PlainRecords(values, offsets)
    check_same_batches(ragged, plain)

    loaders = {
        **torch_loaders(plain),
        "pyloader w0": padded_loader(ragged, args.threads, num_workers=0),
        "pyloader w2": padded_loader(ragged, args.threads, num_workers=2),
    }
    torch.manual_seed(0)
    for loader in loaders.values():  # warm-up round
        round_rate(loader.__iter__, max(1, args.batches // 10))
    rates, median = interleaved_rounds(loaders, args.rounds, args.batches)

    print(
        f"pyloader {pyloader.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, pyloader num_threads {loaders['pyloader w0'].num_threads}"
    )
    print(
        f"records: {args.records:,} uint16 records of {MIN_LENGTH}-{MAX_LENGTH} tokens ({values.nbytes / 2**20:.0f} "
        f"MiB, in RAM), int64 padded batches of {BATCH}, {args.batches} batches per round, median of "
        f"{args.rounds} interleaved rounds: samples/s"
    )
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
