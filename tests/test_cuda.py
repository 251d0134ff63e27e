"""Device staging on a real GPU (skipped without CUDA): batches on the device equal the
CPU loader's for every native dataset kind, and stay correct while the caller holds and
drops them at random and keeps the GPU busy between batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pyloader
from conftest import assert_batches_equal

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


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
        "custom collate": (pyloader.ArrayDataset(features, labels),
                           {"collate_fn": lambda samples: torch.stack([torch.as_tensor(s[0]) for s in samples])}),
    }


@pytest.mark.parametrize("kind", ["tuple", "dict", "tensors", "npy file", "tokens", "padded records",
                                  "custom collate"])
def test_device_batches_equal_cpu_batches(tmp_path, kind):
    dataset, options = _kinds(tmp_path)[kind]
    device = torch.device("cuda", 0)
    ours = pyloader.DataLoader(dataset, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(1),
                               device=device, **options)
    cpu = pyloader.DataLoader(dataset, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(1),
                              **options)
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
        assert torch.equal(on_device.cpu(), torch.from_numpy(data[k * 256:(k + 1) * 256]))


def test_stress_hold_drop_and_gpu_work_between_batches():
    # >= 10k batches; the caller holds a random subset, drops others, and queues GPU
    # work on the current stream between batches, so copies, reuse and the allocator's
    # cross-stream tracking all race with real work.
    rows, width, batch_size = 40000, 16, 32
    data = np.arange(rows * width, dtype=np.int32).reshape(rows, width)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(data, np.arange(rows)), batch_size=batch_size, shuffle=True,
                                 device="cuda:0")
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
