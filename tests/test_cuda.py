"""Device staging on a real GPU (skipped without CUDA): batches on the device equal the
CPU loader's for every native dataset kind, and stay correct while the caller holds and
drops them at random and keeps the GPU busy between batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pyloader

from conftest import assert_batches_equal

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _to_cpu(batch):
    if isinstance(batch, torch.Tensor):
        return batch.cpu()
    if isinstance(batch, dict):
        return {key: _to_cpu(value) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(_to_cpu(value) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_cpu(value) for value in batch)
    return batch


def _is_on(batch, device: torch.device) -> bool:
    if isinstance(batch, torch.Tensor):
        return batch.device == device
    if isinstance(batch, dict):
        return all(_is_on(value, device) for value in batch.values())
    if isinstance(batch, (list, tuple)):
        return all(_is_on(value, device) for value in batch if value is not None)
    return True


def _kinds(tmp_path):
    rng = np.random.default_rng(3)
    features = rng.standard_normal((4000, 40)).astype(np.float32)
    labels = rng.integers(0, 10, 4000)
    np.save(tmp_path / "features.npy", features)
    tokens = rng.integers(0, 50000, 100000).astype(np.uint16)
    lengths = rng.integers(0, 50, 800)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = rng.integers(0, 1000, offsets[-1]).astype(np.int64)
    return {
        "tuple": (pyloader.ArrayDataset(features, labels), {}),
        "dict": (pyloader.ArrayDataset(x=features, y=labels), {}),
        "tensors": (pyloader.TensorDataset(torch.from_numpy(features), torch.from_numpy(labels)), {}),
        "npy file": (pyloader.ArrayDataset(str(tmp_path / "features.npy"), labels), {}),
        "tokens": (pyloader.TokenWindows(tokens, block_size=128), {}),
        "padded records": (pyloader.RaggedDataset(values, offsets), {"collate_fn": pyloader.PadCollate()}),
        "custom collate": (
            pyloader.ArrayDataset(features, labels),
            {"collate_fn": lambda samples: torch.stack([torch.as_tensor(s[0]) for s in samples])},
        ),
    }


@pytest.mark.parametrize("kind", ["tuple", "dict", "tensors", "npy file", "tokens", "padded records", "custom collate"])
def test_device_batches_equal_cpu_batches(tmp_path, kind):
    dataset, options = _kinds(tmp_path)[kind]
    device = torch.device("cuda", 0)
    ours = pyloader.DataLoader(
        dataset, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(1), device=device, **options
    )
    cpu = pyloader.DataLoader(
        dataset, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(1), **options
    )
    held = list(ours)
    for batch, want in zip(held, cpu, strict=True):
        assert _is_on(batch, device)
        assert_batches_equal(_to_cpu(batch), want)


def test_pin_memory_batches_are_pinned_and_copy_asynchronously():
    data = np.random.default_rng(0).standard_normal((10000, 64)).astype(np.float32)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(data), batch_size=256, pin_memory=True)
    for k, (batch,) in enumerate(loader):
        assert batch.is_pinned()
        on_device = batch.to("cuda", non_blocking=True)
        del batch  # torch's host allocator keeps the block until that copy is done
        assert torch.equal(on_device.cpu(), torch.from_numpy(data[k * 256 : (k + 1) * 256]))


def test_stress_hold_drop_and_gpu_work_between_batches():
    # >= 10k batches; the caller holds a random subset, drops others, and queues GPU
    # work on the current stream between batches, so copies, reuse and the allocator's
    # cross-stream tracking all race with real work.
    rows, width, batch_size = 40000, 16, 32
    data = np.arange(rows * width, dtype=np.int32).reshape(rows, width)
    loader = pyloader.DataLoader(
        pyloader.ArrayDataset(data, np.arange(rows)), batch_size=batch_size, shuffle=True, device="cuda:0"
    )
    rng = np.random.default_rng(5)
    work = torch.randn(512, 512, device="cuda")
    held: list = []
    checked = 0
    while checked < 10000:
        for features, ids in loader:
            expected = ids.to(torch.int32)[:, None] * width + torch.arange(width, device="cuda", dtype=torch.int32)
            assert torch.equal(features, expected)
            for _ in range(int(rng.integers(0, 3))):
                work = torch.tanh(work @ work)
            if rng.random() < 0.3:
                held.append((features, ids))
            if len(held) > 50:
                held.pop(int(rng.integers(0, len(held))))
            checked += 1
        for features, ids in held:  # still intact after everything that came later
            expected = ids.to(torch.int32)[:, None] * width + torch.arange(width, device="cuda", dtype=torch.int32)
            assert torch.equal(features, expected)
    torch.cuda.synchronize()


# --- Ordering and block reuse under delayed streams -------------------------------------
# Each check compares batches with expected ones on the device and synchronises once at
# the end, so the only thing keeping the comparison after the copy (and the copy after
# the comparison) is the stream ordering the loader sets up. tests/cuda_controls.py runs
# the same checks with the loader handed the wrong stream, where they must fail.

# An epoch of 512 batches, several times the prefetch depth: blocks are reused within it.
ROWS, WIDTH, BATCH = 131072, 16, 256
SLEEP_CYCLES = 50_000_000  # ~25 ms of one SM at ~2 GHz


def delayed_stream_loader(epochs: int = 1, shuffle_seed: int = 2):
    """A device loader and, per epoch, its expected batches (each epoch is shuffled anew)."""
    data = np.arange(ROWS * WIDTH, dtype=np.int32).reshape(ROWS, WIDTH)
    make = lambda **device: pyloader.DataLoader(  # noqa: E731
        pyloader.ArrayDataset(data),
        batch_size=BATCH,
        shuffle=True,
        generator=torch.Generator().manual_seed(shuffle_seed),
        **device,
    )
    cpu = make()
    expected = [[batch.to("cuda") for (batch,) in cpu] for _ in range(epochs)]  # staged before any delay
    return make(device="cuda:0"), expected if epochs > 1 else expected[0]


def mismatches_with_late_copies(loader, expected, stream_for=None) -> int:
    """Batches consumed at once on the current stream while the copy stream sleeps
    first: right only if the current stream waits for each copy."""
    staging = loader._staging.get(loader)
    with torch.cuda.stream(staging.backend.stream):
        torch.cuda._sleep(SLEEP_CYCLES)  # every copy queued from now lands late
    errors = torch.zeros((), dtype=torch.int64, device="cuda")
    iterator = iter(loader)
    if stream_for is not None:
        iterator._consumer_stream = stream_for
    for (batch,), want in zip(iterator, expected, strict=True):
        errors += (batch != want).sum()
    torch.cuda.synchronize()
    return int(errors)


def mismatches_with_a_slow_consumer(loader, expected, stream_for=None) -> int:
    """Each batch dropped as soon as its (delayed) comparison is queued: right only if its
    block is reused after that comparison, not when the tensor dies on the host."""
    errors = torch.zeros((), dtype=torch.int64, device="cuda")
    iterator = iter(loader)
    if stream_for is not None:
        iterator._consumer_stream = stream_for
    for (batch,), want in zip(iterator, expected, strict=True):
        torch.cuda._sleep(SLEEP_CYCLES // 50)  # the consumer's stream runs ~0.5 ms a batch behind
        errors += (batch != want).sum()
        del batch  # its block goes back to the pool now, on the host
    torch.cuda.synchronize()
    return int(errors)


def test_the_consumer_stream_waits_for_each_copy():
    loader, expected = delayed_stream_loader()
    assert mismatches_with_late_copies(loader, expected) == 0


def test_blocks_are_reused_only_after_the_consumer_is_done():
    loader, epochs = delayed_stream_loader(epochs=3)
    for expected in epochs:  # pooled blocks, reused across epochs
        assert mismatches_with_a_slow_consumer(loader, expected) == 0


def test_device_batches_on_a_side_stream():
    loader, expected = delayed_stream_loader()
    side = torch.cuda.Stream()
    errors = torch.zeros((), dtype=torch.int64, device="cuda")
    with torch.cuda.stream(side):
        for (batch,), want in zip(loader, expected, strict=True):
            torch.cuda._sleep(SLEEP_CYCLES // 500)
            errors += (batch != want.to("cuda", non_blocking=True)).sum()
    torch.cuda.synchronize()
    assert int(errors) == 0


def test_device_is_resolved_when_iteration_starts():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    loader = pyloader.DataLoader(pyloader.ArrayDataset(np.arange(100)), batch_size=10, device="cuda")
    with torch.cuda.device(1):
        (batch,) = next(iter(loader))
    assert batch.device == torch.device("cuda", 1)
