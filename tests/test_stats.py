"""iterator.stats(): what a training loop learns about waiting for its data."""

from __future__ import annotations

import numpy as np
import torch

import pyloader


def test_native_counters_add_up():
    data = np.arange(10000 * 8, dtype=np.float32).reshape(10000, 8)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(data), batch_size=100, shuffle=True)
    iterator = iter(loader)
    for _ in range(30):
        next(iterator)
    partway = iterator.stats()
    assert isinstance(partway, pyloader.LoaderStats)
    assert partway.batches == 30
    rest = sum(1 for _ in iterator)
    final = iterator.stats()  # kept after the epoch ended and the pipeline closed
    assert final.batches == 30 + rest == 100
    assert 0 <= final.ready_when_asked <= final.batches
    assert final.mean_ahead >= 0
    assert final.gathered_bytes == data.nbytes
    assert final.read_bytes == 0
    assert 0 <= final.waited_s <= final.elapsed_s
    assert 0 <= final.wait_fraction <= 1
    line = final.summary()
    assert line.startswith("100 batches in ") and "waited for data" in line and "GiB gathered" in line


def test_counters_can_be_switched_off():
    loader = pyloader.DataLoader(pyloader.ArrayDataset(np.arange(1000)), batch_size=10)
    loader._keeps_stats = False
    iterator = iter(loader)
    batches = list(iterator)
    assert len(batches) == 100 and iterator.stats().batches == 0


def test_torch_path_counts_batches_and_time_in_next():
    class Squares(torch.utils.data.Dataset):
        def __len__(self):
            return 50

        def __getitem__(self, index):
            return index * index

    iterator = iter(pyloader.DataLoader(Squares(), batch_size=5))
    assert sum(1 for _ in iterator) == 10
    stats = iterator.stats()
    assert stats.batches == 10 and stats.ready_when_asked is None and stats.gathered_bytes is None
    assert 0 < stats.waited_s <= stats.elapsed_s
    assert "10 batches in " in stats.summary()


def test_stats_of_a_new_iterator_start_from_zero():
    loader = pyloader.DataLoader(pyloader.ArrayDataset(np.arange(100)), batch_size=10)
    list(loader)
    assert iter(loader).stats().batches == 0
