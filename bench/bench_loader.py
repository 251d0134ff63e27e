"""Throughput of pyloader against torch's DataLoader, a numpy loop and a raw gather.

Generates float32 memmap datasets (>= 1 GiB each, no download), then measures, in one
process run, samples/s for shuffled batches of 256 rows:

  pyloader      pyloader.DataLoader(ArrayDataset(memmap), shuffle=True)
  torch w0/w2   torch DataLoader over a per-sample __getitem__ dataset, 0 and 2 workers
  numpy loop    torch.from_numpy(X[idx]) for each shuffled batch of indices
  raw gather    the same rows copied by the native gather alone (2 threads, no hand-off)

at 256-byte and 12-KiB rows, plus batches/s for batch_size=1 over an in-RAM
TensorDataset, and the fixed cost of a batch: batches/s of 256 shuffled 4-byte rows,
where there is almost nothing to copy. pyloader runs with its default number of gather
threads (what a user gets); the raw gather uses --threads. "pyloader no stats" is
pyloader with its iterator counters (LoaderStats) switched off, to show what they cost.
Every contender reads the same mapping after one warm-up pass, so the
page cache and page tables are equally warm for all. Contenders run in interleaved
rounds and each keeps its best round. Prints a table and ratio lines.

With --cold, the file's pages are evicted from the page cache (madvise + posix_fadvise
DONTNEED) before every contender's round, and each round reads a fixed quarter of the
file's rows (shuffled: spread over nearly every page), so the reads come from storage
as for a dataset larger than RAM; the warm-up pass is skipped.

With --sequential every contender reads in file order instead of shuffled.

pyloader also runs with io="mmap" (copies from the mapping only, page faults reading
what is not cached): against the default io="auto" it shows what explicit reads gain
cold and cost warm. With --cold a raw reader keeping 64 pread()s in flight over the
same rows runs too (the explicit-read ceiling).

    python bench/bench_loader.py [--gib 1.0] [--seconds 1.5] [--rounds 3] [--dir /tmp] [--cold] [--sequential]
                                 [--row-bytes 256 4096 ...] [--cold-fraction 0.25] [--no-torch]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
import torch.utils.data as tud

import pyloader
from pyloader import _core
from pyloader._native.columns import file_position

from _cold import evict

BATCH = 256


class PerSampleDataset(tud.Dataset):
    """What a torch user typically writes over a memmap: one row per __getitem__."""

    def __init__(self, array):
        self.array = array

    def __len__(self):
        return len(self.array)

    def __getitem__(self, index):
        return torch.from_numpy(np.array(self.array[index]))


def make_memmap(directory: str, row_bytes: int, gib: float, warm: bool = True) -> np.memmap:
    columns = row_bytes // 4
    rows = int(gib * (1 << 30)) // row_bytes
    path = os.path.join(directory, f"pyloader_bench_{row_bytes}B_{rows}.npy")
    if not os.path.exists(path):
        out = np.lib.format.open_memmap(path + ".part", mode="w+", dtype=np.float32, shape=(rows, columns))
        step = max(1, (64 << 20) // row_bytes)
        for first in range(0, rows, step):
            block = np.arange(first, min(rows, first + step), dtype=np.float32)[:, None]
            out[first : first + len(block)] = block + np.arange(columns, dtype=np.float32) / columns
        out.flush()
        del out
        os.replace(path + ".part", path)
    array = np.load(path, mmap_mode="r")
    if warm:
        for first in range(0, rows, max(1, (256 << 20) // row_bytes)):  # warm-up pass
            np.asarray(array[first : first + (256 << 20) // row_bytes]).sum()
    return array


def timed(batches, budget_s: float, rows_of=len, max_samples: int | None = None) -> float:
    """Samples/s over `batches`: after the first batch, for at most `budget_s` seconds,
    or (cold runs) from the start until `max_samples` samples."""
    iterator = iter(batches)
    samples = 0
    if max_samples is None:
        next(iterator)
    start = time.perf_counter()
    for batch in iterator:
        samples += rows_of(batch)
        if max_samples is None and time.perf_counter() - start > budget_s:
            break
        if max_samples is not None and samples >= max_samples:
            break
    return samples / (time.perf_counter() - start)


def epoch_order(rows: int, generator, sequential: bool) -> np.ndarray:
    return np.arange(rows, dtype=np.int64) if sequential else generator.permutation(rows).astype(np.int64)


def numpy_loop(array, generator, sequential: bool = False):
    order = epoch_order(len(array), generator, sequential)
    for first in range(0, len(order) - BATCH + 1, BATCH):
        yield torch.from_numpy(array[order[first : first + BATCH]])


def chunked_rate(read_chunk, order: np.ndarray, budget_s: float, max_samples: int | None) -> float:
    """Samples/s of `read_chunk` over chunks of 64 batches of `order`, for `budget_s`
    seconds or (cold runs) until `max_samples` samples."""
    chunk = BATCH * 64
    samples, start, first = 0, time.perf_counter(), 0
    while (time.perf_counter() - start < budget_s) if max_samples is None else samples < max_samples:
        if first + chunk > len(order):
            first = 0
        read_chunk(order[first : first + chunk])
        samples += chunk
        first += chunk
    return samples / (time.perf_counter() - start)


def raw_gather_rate(
    array, generator, budget_s: float, threads: int, max_samples: int | None = None, sequential: bool = False
) -> float:
    pool = _core.ThreadPool(threads)
    return chunked_rate(
        lambda rows: _core.reference_gather(pool, [array], rows, BATCH),
        epoch_order(len(array), generator, sequential),
        budget_s,
        max_samples,
    )


def raw_pread_rate(
    array, generator, budget_s: float, depth: int, max_samples: int | None = None, sequential: bool = False
) -> float:
    """The same rows read with `depth` pread()s in flight, one per row, into private
    buffers: the explicit-read ceiling for a cold file."""
    path, offset = file_position(array)
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_RANDOM)
        return chunked_rate(
            lambda rows: _core.reference_read(descriptor, offset, array.strides[0], np.sort(rows), depth),
            epoch_order(len(array), generator, sequential),
            budget_s,
            max_samples,
        )
    finally:
        os.close(descriptor)


def best_of(rounds: int, contenders: dict, before_each=lambda: None) -> dict:
    """Each contender's best rate over `rounds` rounds, run interleaved so that a noisy
    stretch of the shared machine hits all of them alike."""
    best = dict.fromkeys(contenders, 0.0)
    for _ in range(rounds):
        for name, measure in contenders.items():
            before_each()
            best[name] = max(best[name], measure())
    return best


def without_stats(loader):
    loader._keeps_stats = False
    return loader


def measure_rows(
    array,
    seconds: float,
    threads: int,
    rounds: int,
    cold: bool = False,
    sequential: bool = False,
    cold_fraction: float = 0.25,
    with_torch: bool = True,
) -> dict:
    generator = np.random.default_rng(0)
    first_of = lambda batch: len(batch[0])
    cap = max(BATCH, int(len(array) * cold_fraction)) if cold else None
    make = lambda io: pyloader.DataLoader(
        pyloader.ArrayDataset(array), batch_size=BATCH, shuffle=not sequential, drop_last=True, io=io
    )
    loader = make("auto")  # the defaults: what a user gets without asking
    assert loader.uses_native_path
    uncounted = without_stats(make("auto"))
    per_sample = PerSampleDataset(array)
    torch_loader = lambda workers: tud.DataLoader(
        per_sample, batch_size=BATCH, shuffle=not sequential, drop_last=True, num_workers=workers
    )
    contenders = {"pyloader": lambda: timed(loader, seconds, first_of, cap)}
    if not cold:
        contenders["pyloader no stats"] = lambda: timed(uncounted, seconds, first_of, cap)
    mapped = make("mmap")
    contenders["pyloader mmap"] = lambda: timed(mapped, seconds, first_of, cap)
    if with_torch:
        contenders["torch w0"] = lambda: timed(torch_loader(0), seconds, max_samples=cap)
        contenders["torch w2"] = lambda: timed(torch_loader(2), seconds, max_samples=cap)
    contenders["numpy loop"] = lambda: timed(numpy_loop(array, generator, sequential), seconds, max_samples=cap)
    contenders["raw gather"] = lambda: raw_gather_rate(array, generator, seconds, threads, cap, sequential)
    if cold:
        contenders["raw pread64"] = lambda: raw_pread_rate(array, generator, seconds, 64, cap, sequential)
    return best_of(rounds, contenders, before_each=(lambda: evict(array.filename, [array])) if cold else (lambda: None))


def measure_fixed_cost(seconds: float, rounds: int) -> float:
    """Batches/s of 256 shuffled 4-byte rows (16 Mi rows in RAM): the per-batch work
    around a copy of 1 KiB (order, sorting, hand-offs, making the tensor)."""
    values = np.arange(1 << 24, dtype=np.float32)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(values), batch_size=BATCH, shuffle=True, drop_last=True)
    return best_of(rounds, {"pyloader": lambda: timed(loader, seconds, lambda batch: 1)})["pyloader"]


def measure_small_batches(seconds: float, rounds: int) -> dict:
    x = torch.randn(100_000, 32)
    y = torch.randint(0, 10, (100_000,))
    dataset = tud.TensorDataset(x, y)
    count = lambda batch: 1  # batches/s
    torch.manual_seed(0)
    ours = pyloader.DataLoader(dataset, batch_size=1, shuffle=True)
    theirs = tud.DataLoader(dataset, batch_size=1, shuffle=True)
    return best_of(
        rounds,
        {
            "pyloader": lambda: timed(ours, seconds, count),
            "torch w0": lambda: timed(theirs, seconds, count),
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0, help="size of each generated dataset")
    parser.add_argument("--seconds", type=float, default=1.5, help="time budget per contender and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each contender's best counts")
    parser.add_argument("--threads", type=int, default=2, help="threads of the raw gather (the copy ceiling)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where datasets are generated")
    parser.add_argument("--cold", action="store_true", help="evict the page cache before every round")
    parser.add_argument("--sequential", action="store_true", help="read in file order instead of shuffled")
    parser.add_argument(
        "--row-bytes",
        type=int,
        nargs="+",
        default=None,
        help="row sizes to measure (default: 256 and 12288; cold: 256, 4096 and 12288)",
    )
    parser.add_argument(
        "--cold-fraction", type=float, default=0.25, help="share of the file's rows each cold round reads"
    )
    parser.add_argument(
        "--no-torch",
        action="store_true",
        help="leave out torch's DataLoader (slow on cold files; the IO ceilings stay)",
    )
    args = parser.parse_args()
    sizes = args.row_bytes or ((256, 4096, 12 * 1024) if args.cold else (256, 12 * 1024))

    print(
        f"pyloader {pyloader.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, pyloader's default {pyloader.DataLoader([0]).num_threads} gather thread(s), "
        f"batch {BATCH}, "
        f"{'in file order' if args.sequential else 'shuffled'}, "
        f"best of {args.rounds} interleaved rounds of {args.seconds:g} s"
        + (", page cache evicted before each round" if args.cold else "")
    )
    table = []
    for row_bytes in sizes:
        array = make_memmap(args.dir, row_bytes, args.gib, warm=not args.cold)
        rates = measure_rows(
            array,
            args.seconds,
            args.threads,
            args.rounds,
            cold=args.cold,
            sequential=args.sequential,
            cold_fraction=args.cold_fraction,
            with_torch=not args.no_torch,
        )
        table.append((row_bytes, rates))
        state = "cold" if args.cold else "warm"
        print(
            f"\n{row_bytes}-byte rows, {len(array):,} rows ({array.nbytes / 2**30:.2f} GiB memmap, {state}): samples/s"
        )
        for name, rate in rates.items():
            print(f"  {name:<14} {rate:>14,.0f}")
    small = measure_small_batches(args.seconds, args.rounds)
    print("\nbatch_size=1, TensorDataset in RAM: batches/s")
    for name, rate in small.items():
        print(f"  {name:<12} {rate:>14,.0f}")
    fixed = measure_fixed_cost(args.seconds, args.rounds)
    print(f"\nfixed per-batch cost: 256 shuffled 4-byte rows, {fixed:,.0f} batches/s ({1e6 / fixed:.2f} us a batch)")

    print("\nratios (same run)")
    for row_bytes, rates in table:
        if "torch w0" in rates:
            best_torch = max(rates["torch w0"], rates["torch w2"])
            print(f"ratio {row_bytes}B rows: pyloader / best torch DataLoader = {rates['pyloader'] / best_torch:.1f}x")
        print(f"ratio {row_bytes}B rows: pyloader / numpy loop = {rates['pyloader'] / rates['numpy loop']:.2f}x")
        print(
            f"ratio {row_bytes}B rows: pyloader / raw {args.threads}-thread gather = "
            f"{100 * rates['pyloader'] / rates['raw gather']:.0f}%"
        )
        if "raw pread64" in rates:
            print(
                f"ratio {row_bytes}B rows: pyloader / raw pread at depth 64 = "
                f"{100 * rates['pyloader'] / rates['raw pread64']:.0f}%"
            )
        versus_mapping = rates["pyloader"] / rates["pyloader mmap"]
        print(f"ratio {row_bytes}B rows: pyloader / pyloader io=mmap = {versus_mapping:.2f}x")
        if "pyloader no stats" in rates:
            print(
                f"ratio {row_bytes}B rows: pyloader / pyloader without stats = "
                f"{100 * rates['pyloader'] / rates['pyloader no stats']:.0f}%"
            )
    print(f"ratio batch_size=1: pyloader / torch DataLoader = {small['pyloader'] / small['torch w0']:.1f}x")
    print(f"ratio fixed per-batch cost: {fixed:,.0f} batches/s of 256 4-byte rows ({1e6 / fixed:.2f} us a batch)")


if __name__ == "__main__":
    main()
