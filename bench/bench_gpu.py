"""Device delivery on a GPU: copy bandwidth, end-to-end rate against torch, and how long
a training loop waits for data.

1. H2D bandwidth: the pipeline's copies (DeviceCopier, from pinned blocks of torch's host
   allocator) against torch's own ``pinned.to("cuda", non_blocking=True)``, same sizes.
2. End to end, shuffled, batch 256, rows of 256 bytes and of 150 KiB:
   ``pyloader.DataLoader(..., device="cuda")`` against torch's DataLoader with
   ``pin_memory=True`` and 0/2/4/8 workers, each batch then moved with
   ``.to(device, non_blocking=True)``; every batch is consumed by a small GPU reduction so
   both sides really deliver.
3. Wait fraction: a simulated step (a fixed loop of matmuls) per batch; the share of the
   loop's time spent inside ``next()``.

    python bench/bench_gpu.py [--quick]

Prints "ratio ..." lines; without CUDA it says so and measures nothing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import pyloader
from pyloader import _staging

BATCH = 256


def copy_bandwidth(nbytes: int, copies: int) -> tuple[float, float]:
    """Bytes/s of the pipeline's copier and of torch's non_blocking copy, same blocks."""
    device = torch.device("cuda", torch.cuda.current_device())
    backend = _staging.CudaBackend(device)
    sources = [torch.empty(nbytes, dtype=torch.uint8, pin_memory=True).fill_(k % 251) for k in range(4)]
    targets = [backend.device_block(nbytes) for _ in range(4)]
    torch.cuda.synchronize()

    def ours() -> float:
        start = time.perf_counter()
        fence = None
        for k in range(copies):
            fence = backend.copier.copy(targets[k % 4].data_ptr(), sources[k % 4].data_ptr(), nbytes)
        fence.wait()
        return nbytes * copies / (time.perf_counter() - start)

    def theirs() -> float:
        start = time.perf_counter()
        with torch.cuda.stream(backend.stream):
            for k in range(copies):
                targets[k % 4].copy_(sources[k % 4], non_blocking=True)
        backend.stream.synchronize()
        return nbytes * copies / (time.perf_counter() - start)

    ours(), theirs()  # warm-up
    best_ours = max(ours() for _ in range(3))
    best_theirs = max(theirs() for _ in range(3))
    return best_ours, best_theirs


def consume(batch, sink: torch.Tensor) -> None:
    features = batch[0] if isinstance(batch, (list, tuple)) else batch
    sink += features.view(features.shape[0], -1)[:, :8].float().sum()


def delivered_rate(loader, batches: int, to_device) -> float:
    """Samples/s of `batches` batches of `loader`, each made a device batch by
    `to_device` and consumed on the GPU, after one warm-up batch; epochs restart."""
    sink = torch.zeros((), device="cuda")
    iterator = iter(loader)
    consume(to_device(next(iterator)), sink)  # threads, workers and staging started
    torch.cuda.synchronize()
    start, seen = time.perf_counter(), 0
    while seen < batches:
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            continue
        consume(to_device(batch), sink)
        seen += 1
    torch.cuda.synchronize()
    return seen * BATCH / (time.perf_counter() - start)


def pyloader_rate(array: np.ndarray, batches: int) -> float:
    loader = pyloader.DataLoader(pyloader.ArrayDataset(array), batch_size=BATCH, shuffle=True, drop_last=True,
                                 device="cuda")
    return delivered_rate(loader, batches, lambda batch: batch)


def torch_rate(array: np.ndarray, batches: int, workers: int) -> float:
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(array))
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True, pin_memory=True,
                                         num_workers=workers, persistent_workers=workers > 0)
    return delivered_rate(loader, batches, lambda batch: [t.to("cuda", non_blocking=True) for t in batch])


def wait_fraction(array: np.ndarray, batches: int, matmuls: int) -> tuple[float, float]:
    """Share of a training loop's time spent in next(), and the step's length (s)."""
    loader = pyloader.DataLoader(pyloader.ArrayDataset(array), batch_size=BATCH, shuffle=True, drop_last=True,
                                 device="cuda")
    weights = torch.randn(2048, 2048, device="cuda")

    def step(batch) -> None:
        activations = weights
        for _ in range(matmuls):
            activations = torch.tanh(activations @ weights)
        consume(batch, activations[0, :1])
        torch.cuda.current_stream().synchronize()  # a step that ends with its loss on the host

    iterator = iter(loader)
    step(next(iterator))
    waited, seen, total_start = 0.0, 0, time.perf_counter()
    while seen < batches:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:  # a new epoch: its first batch is waited for, as in training
            iterator = iter(loader)
            continue
        finally:
            waited += time.perf_counter() - start
        step(batch)
        seen += 1
    total = time.perf_counter() - total_start
    return waited / total, total / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer batches and sizes")
    parser.add_argument("--matmuls", type=int, default=40, help="2048x2048 matmuls in the simulated step")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("CUDA is not available: nothing measured (run this on a machine with a GPU)")
        return
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    ratios = []

    print("\nH2D copy bandwidth, GB/s (pinned source)")
    for nbytes in ((1 << 20, 64 << 20) if args.quick else (256 << 10, 1 << 20, 8 << 20, 64 << 20)):
        copies = max(8, (2 << 30) // nbytes)
        ours, theirs = copy_bandwidth(nbytes, copies)
        print(f"  {nbytes / 2**20:8.2f} MiB  pyloader {ours / 1e9:7.2f}  torch {theirs / 1e9:7.2f}")
        ratios.append(f"ratio H2D {nbytes / 2**20:g} MiB: pyloader/torch = {100 * ours / theirs:.0f}%")

    print("\nEnd to end, shuffled, batch 256, samples/s")
    rng = np.random.default_rng(0)
    for row_bytes, rows in ((256, 1 << 20), (150 * 1024, 12000)):
        array = rng.integers(0, 255, (rows, row_bytes), dtype=np.uint8)
        batches = (50 if args.quick else 200) if row_bytes > 4096 else (100 if args.quick else 500)
        ours = pyloader_rate(array, batches)
        print(f"  {row_bytes} B rows: pyloader device=cuda {ours:12,.0f}")
        best_name, best = "", 0.0
        for workers in (0, 2, 4, 8):
            theirs = torch_rate(array, batches, workers)  # the same count: warm-up weighs alike
            print(f"  {row_bytes} B rows: torch workers={workers}      {theirs:12,.0f}")
            if theirs > best:
                best_name, best = f"workers={workers}", theirs
        ratios.append(f"ratio end-to-end {row_bytes} B rows: pyloader / best torch ({best_name}) = {ours / best:.1f}x")
        del array

    print("\nWait fraction with a simulated step (150 KiB rows)")
    array = rng.integers(0, 255, (12000, 150 * 1024), dtype=np.uint8)
    fraction, step = wait_fraction(array, 50 if args.quick else 200, matmuls=args.matmuls)
    print(f"  step {1000 * step:.1f} ms, waiting for data {100 * fraction:.2f}% of the loop")
    ratios.append(f"ratio wait fraction (step {1000 * step:.0f} ms): {100 * fraction:.2f}% of the loop in next()")

    print("\nratios (same run)")
    for line in ratios:
        print(line)


if __name__ == "__main__":
    main()
