"""Token windows for LLM pretraining: pyloader vs a nanoGPT loop vs torch's DataLoader.

Generates, once, a uint16 token stream of --tokens tokens (default 2**29: 1 GiB) split
over 4 raw shard files (np.random, no download; cached under
$TMPDIR/pyloader-bench-tokens), reads every file once so the page cache is warm, then
measures samples/s for random (x, y) windows of 1024 int64 tokens, batch 32:

  nanoGPT loop    nanoGPT's get_batch: per batch an np.memmap of one shard picked at
                  random, re-created every batch as nanoGPT does (it avoids a memory
                  leak), offsets from torch.randint, then
                  torch.stack([torch.from_numpy(data[i:i+1024].astype(np.int64)) ...])
                  for x and for y
  torch w0/w2     torch DataLoader(shuffle=True) over a plain torch Dataset whose
                  __getitem__ slices the memmaps (the same windows as TokenWindows:
                  non-overlapping, never across shards), 0 and 2 worker processes
  pyloader        pyloader.DataLoader(TokenWindows(shards, 1024), shuffle=True)

Every contender yields --batches batches per round; the first batch of each round
(iterator and worker start-up) is not timed, and each batch is consumed by reading
x[0, 0] and y[-1, -1]. One warm-up round, then --rounds interleaved rounds; each
contender's median round counts. Prints samples/s and ratio lines.

With --cold the file is larger than what the rounds read (one raw uint16 file of
--cold-gib GiB, default 4) and its pages are evicted from the page cache (madvise +
posix_fadvise DONTNEED, no root needed) before every contender's round, so every window
comes from storage. Contenders: the nanoGPT loop; pyloader's TokenWindows shuffled with
the default stride and with stride 1, each with io="auto" (what a user gets) and
io="mmap" (page faults only); and a raw reader keeping 64 pread()s in flight over the
same number of random 2-KiB windows into private buffers (no conversion, no batch): the
explicit-read ceiling.

    python bench/bench_tokens.py [--tokens 536870912] [--batches 200] [--rounds 5] [--dir DIR]
    python bench/bench_tokens.py --cold [--cold-gib 4] [--batches 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import bisect
import os
import statistics
import tempfile
import time

import _rounds as rounds
import numpy as np
import torch
import torch.utils.data as tud

import pyloader

from _cold import evict

BLOCK = 1024
BATCH = 32
SHARDS = 4
VOCAB = 50_257  # GPT-2's, as nanoGPT's uint16 .bin files hold


def make_shards(directory: str, tokens: int) -> list[str]:
    """Four raw uint16 token files of tokens // 4 tokens each, generated once."""
    os.makedirs(directory, exist_ok=True)
    per_shard = tokens // SHARDS
    paths = [os.path.join(directory, f"tokens_{per_shard}_{k}.bin") for k in range(SHARDS)]
    rng = np.random.default_rng(0)
    step = 1 << 24
    for path in paths:
        if os.path.exists(path) and os.path.getsize(path) == 2 * per_shard:
            continue
        with open(path + ".part", "wb") as out:
            for first in range(0, per_shard, step):
                rng.integers(0, VOCAB, min(step, per_shard - first), dtype=np.uint16).tofile(out)
        os.replace(path + ".part", path)
    return paths


def make_token_file(directory: str, gib: float) -> str:
    """One raw uint16 token file of `gib` GiB, generated once."""
    os.makedirs(directory, exist_ok=True)
    tokens = int(gib * (1 << 30)) // 2
    path = os.path.join(directory, f"tokens_{tokens}.bin")
    if not (os.path.exists(path) and os.path.getsize(path) == 2 * tokens):
        rng = np.random.default_rng(1)
        step = 1 << 24
        with open(path + ".part", "wb") as out:
            for first in range(0, tokens, step):
                rng.integers(0, VOCAB, min(step, tokens - first), dtype=np.uint16).tofile(out)
        os.replace(path + ".part", path)
    return path


def raw_window_reads(path: str, windows: int, depth: int = 64) -> float:
    """Windows/s of a reader keeping `depth` pread()s of random 2-KiB windows in flight."""
    rows = np.random.default_rng().integers(0, os.path.getsize(path) // (2 * BLOCK), windows).astype(np.int64)
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_RANDOM)
        start = time.perf_counter()
        pyloader._core.reference_read(descriptor, 0, 2 * BLOCK, rows, depth)
        return windows / (time.perf_counter() - start)
    finally:
        os.close(descriptor)


def cold(args) -> None:
    start = time.perf_counter()
    path = make_token_file(args.dir, args.cold_gib)
    prepared = time.perf_counter() - start
    datasets = {
        stride: pyloader.TokenWindows(path, BLOCK, stride=stride, token_dtype=np.uint16) for stride in (BLOCK, 1)
    }
    maps = [stream for dataset in datasets.values() for stream in dataset.tokens]

    def loader(stride, io):
        made = pyloader.DataLoader(datasets[stride], batch_size=BATCH, shuffle=True, io=io, num_threads=args.threads)
        return lambda: iter(made)

    contenders = {
        "nanoGPT loop": lambda: nanogpt_batches([path]),
        "pyloader stride=block": loader(BLOCK, "auto"),
        "pyloader stride=1": loader(1, "auto"),
        "pyloader stride=block mmap": loader(BLOCK, "mmap"),
        "pyloader stride=1 mmap": loader(1, "mmap"),
    }
    torch.manual_seed(0)
    rates: dict[str, list[float]] = {name: [] for name in [*contenders, "raw pread depth 64"]}
    for _ in range(args.rounds):
        for name, make in contenders.items():
            evict(path, maps)
            rates[name].append(round_rate(make, args.batches))
        evict(path, maps)
        rates["raw pread depth 64"].append(raw_window_reads(path, args.batches * BATCH))
    median = {name: statistics.median(values) for name, values in rates.items()}
    print(f"pyloader {pyloader.__version__}, torch {torch.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs")
    print(
        f"token windows, cold: {os.path.getsize(path) / 2**30:.2f} GiB raw uint16 file (prepared in "
        f"{prepared:.1f} s), evicted before every round, block {BLOCK}, batch {BATCH}, int64 x and y, "
        f"{args.batches} batches per round, median of {args.rounds} interleaved rounds: samples/s "
        "(windows/s for the raw reader)"
    )
    for name, values in rates.items():
        print(f"  {name:<27} {median[name]:>10,.0f}   (rounds {min(values):,.0f}-{max(values):,.0f})")
    print("\nratios (same run)")
    for stride in ("stride=block", "stride=1"):
        print(
            f"ratio cold token windows {stride}: pyloader / nanoGPT loop = "
            f"{median['pyloader ' + stride] / median['nanoGPT loop']:.1f}x"
        )
        print(
            f"ratio cold token windows {stride}: pyloader / raw pread depth 64 = "
            f"{median['pyloader ' + stride] / median['raw pread depth 64']:.0%}"
        )
        print(
            f"ratio cold token windows {stride}: io=auto / io=mmap = "
            f"{median['pyloader ' + stride] / median['pyloader ' + stride + ' mmap']:.1f}x"
        )


def warm_page_cache(paths: list[str]) -> None:
    buffer = bytearray(64 << 20)
    for path in paths:
        with open(path, "rb", buffering=0) as source:
            while source.readinto(buffer):
                pass


def nanogpt_batches(paths: list[str]):
    """nanoGPT's get_batch (train.py), with a random shard per batch."""
    while True:
        shard = int(torch.randint(len(paths), (1,)))
        data = np.memmap(paths[shard], dtype=np.uint16, mode="r")
        ix = torch.randint(len(data) - BLOCK, (BATCH,))
        x = torch.stack([torch.from_numpy((data[i : i + BLOCK]).astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy((data[i + 1 : i + 1 + BLOCK]).astype(np.int64)) for i in ix])
        yield x, y


class MemmapWindows(tud.Dataset):
    """What a torch user writes for TokenWindows' windows: window k of a shard starts at
    token k * BLOCK, and a shard's windows end before its last BLOCK + 1 tokens run out."""

    def __init__(self, paths: list[str]):
        self.paths = paths
        self.maps = None  # opened on first use, in each worker process
        counts = [(os.path.getsize(path) // 2 - BLOCK - 1) // BLOCK + 1 for path in paths]
        self.ends = np.cumsum(counts).tolist()

    def __len__(self):
        return self.ends[-1]

    def __getitem__(self, index):
        if self.maps is None:
            self.maps = [np.memmap(path, dtype=np.uint16, mode="r") for path in self.paths]
        shard = bisect.bisect_right(self.ends, index)
        start = (index - (self.ends[shard - 1] if shard else 0)) * BLOCK
        chunk = self.maps[shard][start : start + BLOCK + 1]
        return torch.from_numpy(chunk[:-1].astype(np.int64)), torch.from_numpy(chunk[1:].astype(np.int64))


def consume(batch) -> tuple[int, int]:
    x, y = batch
    return len(x), int(x[0, 0]) + int(y[-1, -1])


def round_rate(make_iterator, batches: int) -> float:
    return rounds.round_rate(make_iterator, batches, BATCH, consume)


def check_same_windows(ours: pyloader.TokenWindows, theirs: MemmapWindows) -> None:
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    for index in (0, 1, len(theirs) // 3, len(theirs) // 2 + 1, len(theirs) - 1):
        for a, b in zip(ours[index], theirs[index]):
            assert a.dtype == b.dtype == torch.int64 and torch.equal(a, b), index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1 << 29, help="total uint16 tokens over the 4 shards")
    parser.add_argument("--batches", type=int, default=200, help="timed batches per contender and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each contender's median counts")
    parser.add_argument("--threads", type=int, default=None, help="pyloader num_threads (default: its own)")
    parser.add_argument(
        "--dir",
        default=os.path.join(tempfile.gettempdir(), "pyloader-bench-tokens"),
        help="where the shards are generated and cached",
    )
    parser.add_argument("--cold", action="store_true", help="a file read from storage (see above)")
    parser.add_argument("--cold-gib", type=float, default=4.0, help="size of the --cold token file")
    args = parser.parse_args()
    if args.cold:
        cold(args)
        return
    if args.tokens // SHARDS < 2 * (BLOCK + 1):
        parser.error(f"--tokens must be at least {SHARDS * 2 * (BLOCK + 1)}")

    start = time.perf_counter()
    paths = make_shards(args.dir, args.tokens)
    warm_page_cache(paths)
    prepared = time.perf_counter() - start

    windows = pyloader.TokenWindows(paths, BLOCK, token_dtype=np.uint16)
    plain = MemmapWindows(paths)
    check_same_windows(windows, plain)
    ours = pyloader.DataLoader(windows, batch_size=BATCH, shuffle=True, num_threads=args.threads)
    assert ours.uses_native_path
    torch_loader = lambda workers: tud.DataLoader(plain, batch_size=BATCH, shuffle=True, num_workers=workers)
    contenders = {
        "nanoGPT loop": lambda: nanogpt_batches(paths),
        "torch w0": lambda: iter(torch_loader(0)),
        "torch w2": lambda: iter(torch_loader(2)),
        "pyloader": lambda: iter(ours),
    }
    torch.manual_seed(0)
    for make in contenders.values():  # warm-up round
        round_rate(make, max(1, args.batches // 10))
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, make in contenders.items():
            rates[name].append(round_rate(make, args.batches))
    median = {name: statistics.median(values) for name, values in rates.items()}

    total = sum(os.path.getsize(path) for path in paths)
    print(
        f"pyloader {pyloader.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, pyloader num_threads {ours.num_threads}"
    )
    print(
        f"token windows: {total / 2**30:.2f} GiB of uint16 tokens in {SHARDS} shards (page cache warm, "
        f"prepared in {prepared:.1f} s), block {BLOCK}, batch {BATCH}, int64 x and y, {args.batches} "
        f"batches per round, median of {args.rounds} interleaved rounds: samples/s"
    )
    for name, value in median.items():
        spread = f"{min(rates[name]):,.0f}-{max(rates[name]):,.0f}"
        print(f"  {name:<13} {value:>10,.0f}   (rounds {spread})")
    best_torch = max(median["torch w0"], median["torch w2"])
    print("\nratios (same run)")
    print(f"ratio token windows: pyloader / nanoGPT loop = {median['pyloader'] / median['nanoGPT loop']:.1f}x")
    print(f"ratio token windows: pyloader / best torch DataLoader = {median['pyloader'] / best_torch:.1f}x")


if __name__ == "__main__":
    main()
