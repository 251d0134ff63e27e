"""Iterator lifecycle: held batches, early exits, interrupts, fork, and no leaks."""

import gc
import os
import signal

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import pyloader

from conftest import acting_once_inside, assert_fork_mid_epoch_continues, native_thread_count


def rss_bytes():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def dataset():
    rng = np.random.default_rng(0)
    return pyloader.ArrayDataset(rng.random((4000, 64), dtype=np.float32), np.arange(4000))


def test_held_batches_stay_intact_across_later_batches(dataset):
    x = dataset.columns[0].array
    loader = pyloader.DataLoader(dataset, batch_size=100, shuffle=True)
    held = list(loader)  # every batch kept alive while later ones are gathered
    for _ in range(3):
        list(loader)  # more epochs recycle whatever buffers are free
    for xb, ib in held:
        assert torch.equal(xb, torch.from_numpy(x[ib.numpy()]))


def test_buffers_are_writable_and_independent(dataset):
    first, second = list(pyloader.DataLoader(dataset, batch_size=1000))[:2]
    first[0].zero_()
    assert second[0].abs().sum() > 0
    assert not np.shares_memory(first[0].numpy(), dataset.columns[0].array)


@pytest.mark.parametrize("stop_after", [0, 1, 5])
def test_break_then_reuse(dataset, stop_after):
    loader = pyloader.DataLoader(dataset, batch_size=64, shuffle=True)
    for k, _ in enumerate(loader):
        if k == stop_after:
            break
    ids = torch.cat([ib for _, ib in loader])
    assert sorted(ids.tolist()) == list(range(4000))


def test_del_live_iterator_and_explicit_close(dataset):
    loader = pyloader.DataLoader(dataset, batch_size=64)
    iterator = iter(loader)
    next(iterator)
    del iterator
    gc.collect()
    iterator = iter(loader)
    next(iterator)
    iterator.close()
    with pytest.raises(StopIteration):
        next(iterator)
    assert len(list(loader)) == len(loader)


def test_no_thread_or_memory_growth_over_many_iterators(dataset):
    loader = pyloader.DataLoader(dataset, batch_size=256, shuffle=True, num_threads=2)
    for _ in range(20):  # warm up allocator and buffer pools
        next(iter(loader))
    threads, rss = native_thread_count(), rss_bytes()
    for k in range(300):
        iterator = iter(loader)
        for _ in range(k % 7):
            next(iterator)
        if k % 50 == 0:
            list(loader)
    del iterator
    gc.collect()
    assert native_thread_count() == threads
    assert rss_bytes() - rss < 32 << 20


def test_loaders_release_their_threads(dataset):
    before = native_thread_count()
    for _ in range(30):
        loader = pyloader.DataLoader(dataset, batch_size=500, num_threads=3)
        list(loader)
        del loader
    gc.collect()
    assert native_thread_count() == before


def test_keyboard_interrupt_mid_epoch_then_reuse(dataset):
    class InterruptingSampler(tud.Sampler):
        def __init__(self):
            self.armed = True

        def __len__(self):
            return 4000

        def __iter__(self):
            for index in range(4000):
                if index == 1000 and self.armed:
                    self.armed = False
                    raise KeyboardInterrupt
                yield index

    loader = pyloader.DataLoader(dataset, batch_size=100, sampler=InterruptingSampler())
    with pytest.raises(KeyboardInterrupt):
        list(loader)
    assert torch.cat([ib for _, ib in loader]).tolist() == list(range(4000))


def test_sigint_while_waiting_raises_keyboard_interrupt(sigint_raises):
    # Batches big enough that gathering each takes a while; Ctrl-C arrives once the
    # caller is inside next() (almost always waiting for a gather there). One long
    # epoch: no iterator is dropped inside the loop, since a KeyboardInterrupt raised
    # in a finaliser (__del__) would be printed and ignored instead of reaching here.
    from pyloader._native.iterator import NativeIterator

    big = np.zeros((64, 1 << 20), dtype=np.uint8)  # 64 MiB
    dataset = pyloader.ArrayDataset(big)
    loader = pyloader.DataLoader(dataset, batch_size=64, num_threads=1)
    iterator = iter(loader)
    endless = pyloader.DataLoader(
        dataset,
        batch_size=16,
        num_threads=1,
        sampler=tud.RandomSampler(dataset, replacement=True, num_samples=16 << 20),
    )
    stream = iter(endless)
    with acting_once_inside(NativeIterator.__next__.__code__, lambda: os.kill(os.getpid(), signal.SIGINT)):
        with pytest.raises(KeyboardInterrupt):
            for _ in stream:  # ends by the interrupt
                pass
    assert next(stream)[0].shape == (16, 1 << 20)  # the interrupted iterator goes on
    assert next(iterator)[0].shape == (64, 1 << 20)


def test_fork_after_iteration_started(dataset):
    loader = pyloader.DataLoader(dataset, batch_size=100, shuffle=False)
    assert_fork_mid_epoch_continues(loader, list(range(4000)))


def test_worker_processes_fork_cleanly_after_native_use(dataset):
    list(pyloader.DataLoader(dataset, batch_size=500))  # native threads exist now
    torch_path = pyloader.DataLoader(dataset, batch_size=500, native=False, num_workers=2)
    assert torch.cat([ib for _, ib in torch_path]).tolist() == list(range(4000))


def test_close_from_another_thread_while_next_waits():
    from pyloader._native.iterator import NativeIterator

    big = np.zeros((64, 1 << 20), dtype=np.uint8)
    for _ in range(20):
        loader = pyloader.DataLoader(pyloader.ArrayDataset(big), batch_size=32, num_threads=1)
        iterator = iter(loader)
        with acting_once_inside(NativeIterator.__next__.__code__, iterator.close):
            try:
                for _ in iterator:
                    pass
            except (ValueError, RuntimeError):
                pass  # closed under our feet: an exception, never a crash
        with pytest.raises(StopIteration):
            next(iterator)


def test_pipeline_closed_by_a_signal_handler_while_waiting():
    from pyloader import _core

    big = np.zeros((16, 4 << 20), dtype=np.uint8)
    pipeline = _core.BatchPipeline([big], _core.ThreadPool(1), 4)
    for _ in range(4):
        pipeline.enqueue_indices(list(range(16)))
    previous = signal.signal(signal.SIGALRM, lambda *_: pipeline.close())

    def take_all():
        for _ in range(4):
            try:
                pipeline.next(0.0)
            except ValueError:
                break

    try:
        with acting_once_inside(take_all.__code__, lambda: os.kill(os.getpid(), signal.SIGALRM)):
            take_all()
    finally:
        signal.signal(signal.SIGALRM, previous)
