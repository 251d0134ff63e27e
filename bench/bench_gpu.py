"""Device delivery on a GPU: copy bandwidth, end-to-end rate against torch, and how long
a training step waits for data.

1. H2D bandwidth at the sizes loaders move (64 KiB to 64 MiB): the core's copies
   (``DeviceStaging.copier``, from pinned blocks) against torch's own
   ``pinned.to("cuda", non_blocking=True)``, same blocks.
2. End to end, shuffled, batch 256, rows of 256 bytes and of 150 KiB:
   ``pyloader.DataLoader(..., device="cuda")`` against torch's DataLoader with
   ``pin_memory=True`` and 0/2/4/8 workers, each batch then moved with
   ``.to(device, non_blocking=True)``; every batch is consumed by a small GPU reduction,
   so both sides really deliver. Each contender runs for a time window (--seconds).
3. Wait: a simulated training step (a fixed loop of matmuls, its loss read on the host)
   fed by pyloader, by torch's best loader, and by a batch already on the device. The
   step's extra time over the pre-staged one is the whole stall (host wait in next()
   and the GPU's wait on the copy); pyloader's own count of the host wait
   (iterator.stats()) is printed beside it.

    python bench/bench_gpu.py [--quick] [--seconds 2] [--matmuls 40]

Prints "ratio ..." lines; without CUDA it says so and measures nothing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import pyloader
from pyloader._native import staging as _staging

BATCH = 256


def copy_bandwidth(nbytes: int, seconds: float) -> tuple[float, float]:
    """Bytes/s of the core's copier and of torch's non_blocking copy, same blocks."""
    device = torch.device("cuda", torch.cuda.current_device())
    staging = _staging.Staging(device)
    copier = staging.backend.copier
    sources = [torch.empty(nbytes, dtype=torch.uint8, pin_memory=True).fill_(k % 251) for k in range(4)]
    targets = [torch.empty(nbytes, dtype=torch.uint8, device=device) for _ in range(4)]
    torch.cuda.synchronize()
    copies = max(8, int(4e9 * seconds / 3) // nbytes)  # about `seconds` at ~50 GB/s

    def ours() -> float:
        start = time.perf_counter()
        fence = None
        for k in range(copies):
            fence = copier.copy(targets[k % 4].data_ptr(), sources[k % 4].data_ptr(), nbytes)
        fence.wait()
        return nbytes * copies / (time.perf_counter() - start)

    def theirs() -> float:
        stream = torch.cuda.Stream()
        start = time.perf_counter()
        with torch.cuda.stream(stream):
            for k in range(copies):
                targets[k % 4].copy_(sources[k % 4], non_blocking=True)
        stream.synchronize()
        return nbytes * copies / (time.perf_counter() - start)

    ours(), theirs()  # warm-up
    best_ours = max(ours() for _ in range(3))
    best_theirs = max(theirs() for _ in range(3))
    return best_ours, best_theirs


def consume(batch, sink: torch.Tensor) -> None:
    features = batch[0] if isinstance(batch, (list, tuple)) else batch
    sink += features.view(features.shape[0], -1)[:, :8].float().sum()


def delivered_rate(loader, seconds: float, to_device, host_cost: list | None = None) -> float:
    """Samples/s over a window of `seconds`, each batch made a device batch by
    `to_device` and consumed on the GPU, after one warm-up batch; epochs restart.
    `host_cost` (pyloader only) receives the training thread's time per batch inside
    next() that was not spent waiting for a batch (its counters say how long that was)."""
    sink = torch.zeros((), device="cuda")
    iterator = iter(loader)
    consume(to_device(next(iterator)), sink)  # threads, workers and staging started
    torch.cuda.synchronize()
    waited = -iterator.stats().waited_s if host_cost is not None else 0.0  # the warm-up's wait is not timed
    start, seen, inside, clock = time.perf_counter(), 0, 0.0, time.perf_counter
    while clock() - start < seconds:
        for _ in range(50):
            before = clock()
            try:
                batch = next(iterator)
            except StopIteration:
                if host_cost is not None:
                    waited += iterator.stats().waited_s
                iterator = iter(loader)
                continue
            inside += clock() - before
            consume(to_device(batch), sink)
            seen += 1
    torch.cuda.synchronize()
    if host_cost is not None:
        waited += iterator.stats().waited_s
        host_cost.append((inside - waited) / seen)
    return seen * BATCH / (time.perf_counter() - start)


def pyloader_loader(array: np.ndarray):
    return pyloader.DataLoader(
        pyloader.ArrayDataset(array), batch_size=BATCH, shuffle=True, drop_last=True, device="cuda"
    )


def torch_loader(array: np.ndarray, workers: int):
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(array))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        pin_memory=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )


def torch_to_device(batch):
    return [t.to("cuda", non_blocking=True) for t in batch]


def step_times(array: np.ndarray, seconds: float, matmuls: int, torch_workers: int) -> dict:
    """Mean step time (s) fed by pyloader, by torch's loader and by a pre-staged batch,
    and the host wait pyloader's iterator counted."""
    weights = torch.randn(2048, 2048, device="cuda")

    def step(batch) -> None:
        activations = weights
        for _ in range(matmuls):
            activations = torch.tanh(activations @ weights)
        consume(batch, activations[0, :1])
        activations[0, 0].item()  # a step that ends with its loss on the host

    def run(next_batch) -> float:
        step(next_batch())
        start, steps = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            step(next_batch())
            steps += 1
        return (time.perf_counter() - start) / steps

    def cycling(loader, to_device=lambda batch: batch):
        state = {"iterator": iter(loader)}

        def next_batch():
            try:
                return to_device(next(state["iterator"]))
            except StopIteration:
                state["iterator"] = iter(loader)
                return to_device(next(state["iterator"]))

        return next_batch, state

    staged = [torch.from_numpy(array[:BATCH]).cuda()]
    ours, state = cycling(pyloader_loader(array))
    times = {"pre-staged": run(lambda: staged), "pyloader": run(ours)}
    stats = state["iterator"].stats()
    times["pyloader host wait"] = stats.waited_s / max(1, stats.batches)
    theirs, _ = cycling(torch_loader(array, torch_workers), torch_to_device)
    times[f"torch workers={torch_workers}"] = run(theirs)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and torch worker counts")
    parser.add_argument("--seconds", type=float, default=2.0, help="time window per measurement")
    parser.add_argument("--matmuls", type=int, default=40, help="2048x2048 matmuls in the simulated step")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("CUDA is not available: nothing measured (run this on a machine with a GPU)")
        return
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, windows of {args.seconds:g} s")
    ratios = []

    print("\nH2D copy bandwidth, GB/s (pinned source)")
    sizes = (64 << 10, 1 << 20, 64 << 20) if args.quick else (64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20)
    for nbytes in sizes:
        ours, theirs = copy_bandwidth(nbytes, min(args.seconds, 1.0))
        print(f"  {nbytes / 2**20:8.3f} MiB  pyloader {ours / 1e9:7.2f}  torch {theirs / 1e9:7.2f}")
        ratios.append(f"ratio H2D {nbytes >> 10} KiB: pyloader/torch = {100 * ours / theirs:.0f}%")

    print("\nEnd to end, shuffled, batch 256, samples/s")
    rng = np.random.default_rng(0)
    best_workers = {}
    for row_bytes, rows in ((256, 1 << 20), (150 * 1024, 12000)):
        array = rng.integers(0, 255, (rows, row_bytes), dtype=np.uint8)
        host_cost: list = []
        ours = delivered_rate(pyloader_loader(array), args.seconds, lambda batch: batch, host_cost)
        print(
            f"  {row_bytes} B rows: pyloader device=cuda {ours:12,.0f}   "
            f"(training thread: {1e6 * host_cost[0]:.1f} us a batch in next(), waits excluded)"
        )
        ratios.append(f"ratio host cost of device=cuda, {row_bytes} B rows: {1e6 * host_cost[0]:.1f} us a batch")
        best_name, best = 0, 0.0
        for workers in (0, 4) if args.quick else (0, 2, 4, 8):
            theirs = delivered_rate(torch_loader(array, workers), args.seconds, torch_to_device)
            print(f"  {row_bytes} B rows: torch workers={workers}      {theirs:12,.0f}")
            if theirs > best:
                best_name, best = workers, theirs
        best_workers[row_bytes] = best_name
        ratios.append(
            f"ratio end-to-end {row_bytes} B rows: pyloader / best torch (workers={best_name}) = {ours / best:.1f}x"
        )
        del array

    print("\nSimulated step (150 KiB rows, batch 256): mean step time")
    array = rng.integers(0, 255, (12000, 150 * 1024), dtype=np.uint8)
    times = step_times(array, args.seconds, args.matmuls, best_workers.get(150 * 1024, 4))
    for name, value in times.items():
        print(f"  {name:<22} {1000 * value:8.2f} ms")
    staged, ours = times["pre-staged"], times["pyloader"]
    ratios.append(
        f"ratio wait (step {1000 * staged:.1f} ms): pyloader's step is {100 * (ours - staged) / ours:.2f}% "
        f"longer than a pre-staged batch's (host wait in next() {100 * times['pyloader host wait'] / ours:.2f}%)"
    )
    theirs_name = [name for name in times if name.startswith("torch")][0]
    theirs = times[theirs_name]
    ratios.append(
        f"ratio wait, {theirs_name}: its step is {100 * (theirs - staged) / theirs:.2f}% longer than a "
        "pre-staged batch's"
    )

    print("\nratios (same run)")
    for line in ratios:
        print(line)


if __name__ == "__main__":
    main()
