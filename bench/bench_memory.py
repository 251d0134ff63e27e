"""Resident memory over several cold epochs of a memory-mapped file much larger than the
loader's prefetch budget.

The page cache is evicted before every epoch, so each reads from storage as a dataset
larger than RAM would. After each epoch it prints the process's anonymous resident
memory (heap, batch buffers: what the loader itself holds) and its file-backed resident
memory (pages of the file mapped into the process), against the loader's in-flight
budget (batches gathered ahead x bytes per batch). With io="auto" cold batches are read
with pread() into the batch buffers, so the file's pages are not mapped into the process;
with io="mmap" they are, up to the whole file.

    python bench/bench_memory.py [--gib 4] [--row-bytes 12288] [--epochs 3] [--io auto] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time

from bench_loader import BATCH, evict, make_memmap

import pyloader


def resident_kib() -> dict:
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("RssAnon", "RssFile", "VmHWM"):
                fields[name] = int(value.split()[0])
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=4.0)
    parser.add_argument("--row-bytes", type=int, default=12 * 1024)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--io", default="auto", choices=("auto", "mmap", "read"))
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()

    array = make_memmap(args.dir, args.row_bytes, args.gib, warm=False)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(array), batch_size=BATCH, shuffle=True, io=args.io)
    iterator = iter(loader)
    depth = iterator._depth
    del iterator
    budget = depth * BATCH * args.row_bytes
    print(
        f"{array.nbytes / 2**30:.2f} GiB file, {args.row_bytes}-byte rows, io={args.io}, "
        f"{depth} batches in flight = {budget / 2**20:.0f} MiB budget"
    )
    gc.collect()
    start = resident_kib()
    print(f"before:   anon {start['RssAnon'] / 1024:8.0f} MiB   file {start['RssFile'] / 1024:8.0f} MiB")
    for epoch in range(args.epochs):
        evict(array)
        began = time.perf_counter()
        rows = sum(len(batch[0]) for batch in loader)
        seconds = time.perf_counter() - began
        gc.collect()
        now = resident_kib()
        print(
            f"epoch {epoch}: anon {now['RssAnon'] / 1024:8.0f} MiB   file {now['RssFile'] / 1024:8.0f} MiB   "
            f"({rows:,} rows in {seconds:.1f} s, {rows / seconds:,.0f} rows/s)"
        )
    grown = (now["RssAnon"] - start["RssAnon"]) * 1024
    print(
        f"anonymous memory grew by {grown / 2**20:.0f} MiB over {args.epochs} epochs "
        f"({100 * grown / array.nbytes:.1f}% of the file, {grown / budget:.2f}x the in-flight budget)"
    )


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
