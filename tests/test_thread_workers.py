"""worker_mode='thread': torch's batches, fetched by threads."""

import threading
import time

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import pyloader

from conftest import WaitsForRelease, assert_loaders_equal


class Squares(tud.Dataset):
    def __init__(self, n=97, fail_at=None, delay=0.0):
        self.n, self.fail_at, self.delay = n, fail_at, delay

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if index == self.fail_at:
            raise ZeroDivisionError(f"sample {index} is bad")
        if self.delay:
            time.sleep(self.delay)
        return {"x": torch.full((3,), float(index)), "y": index * index}


class Batched(Squares):
    def __getitems__(self, indices):
        return [("batched", i) for i in indices]


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_same_batches_as_torch(workers):
    sampler = lambda: tud.RandomSampler(range(97), generator=torch.Generator().manual_seed(0))
    ours = pyloader.DataLoader(Squares(), batch_size=8, sampler=sampler(), num_workers=workers, worker_mode="thread")
    theirs = tud.DataLoader(Squares(), batch_size=8, sampler=sampler())
    assert not ours.uses_native_path
    assert_loaders_equal(ours, theirs)


def test_getitems_and_collate_are_used_as_torch_uses_them():
    ours = list(pyloader.DataLoader(Batched(), batch_size=4, num_workers=2, worker_mode="thread", collate_fn=list))
    theirs = list(tud.DataLoader(Batched(), batch_size=4, collate_fn=list))
    assert ours == theirs


class HeldFirst(Squares):
    """Sample 0 waits until the test releases it."""

    def __init__(self, released=False):
        super().__init__()
        self.release = threading.Event()
        if released:
            self.release.set()

    def __getitem__(self, index):
        if index == 0:
            self.release.wait()
        return super().__getitem__(index)


def test_out_of_order_delivery_yields_every_batch_once():
    dataset = HeldFirst()
    loader = pyloader.DataLoader(dataset, batch_size=5, num_workers=3, worker_mode="thread", in_order=False)
    iterator = iter(loader)
    first = next(iterator)["y"].tolist()  # batch 0 is held: another one overtook it
    dataset.release.set()
    batches = [first] + [b["y"].tolist() for b in iterator]
    assert first != [0, 1, 4, 9, 16]
    assert sorted(y for batch in batches for y in batch) == [i * i for i in range(97)]
    ordered = pyloader.DataLoader(HeldFirst(released=True), batch_size=5, num_workers=3, worker_mode="thread")
    assert next(iter(ordered))["y"].tolist() == [0, 1, 4, 9, 16]


def test_exception_keeps_type_and_traceback():
    loader = pyloader.DataLoader(Squares(fail_at=20), batch_size=4, num_workers=2, worker_mode="thread")
    with pytest.raises(ZeroDivisionError, match="sample 20") as info:
        list(loader)
    assert any(entry.name == "__getitem__" for entry in info.traceback)


def test_worker_init_fn_runs_once_per_thread():
    seen = []
    lock = threading.Lock()

    def init(worker_id):
        with lock:
            seen.append((worker_id, threading.current_thread().name))

    class MeetInThreeThreads(Squares):
        """The first samples of the first three batches wait for each other: the pool
        must run three threads at once, however the machine schedules them."""

        barrier = threading.Barrier(3)

        def __getitem__(self, index):
            if index in (0, 2, 4):
                self.barrier.wait(timeout=120)  # a hang guard, not a deadline the test races
            return super().__getitem__(index)

    loader = pyloader.DataLoader(
        MeetInThreeThreads(), batch_size=2, num_workers=3, worker_mode="thread", worker_init_fn=init
    )
    list(loader)
    list(loader)  # threads persist across epochs: no second initialisation
    assert sorted(worker_id for worker_id, _ in seen) == [0, 1, 2]
    assert len({name for _, name in seen}) == 3


def test_timeout_raises_like_torch():
    release = threading.Event()
    loader = pyloader.DataLoader(
        WaitsForRelease(release), batch_size=1, num_workers=1, worker_mode="thread", timeout=0.05
    )
    try:
        with pytest.raises(RuntimeError, match="timed out after 0.05 seconds"):
            next(iter(loader))
    finally:
        release.set()


def test_break_and_reuse():
    loader = pyloader.DataLoader(Squares(), batch_size=4, num_workers=2, worker_mode="thread")
    for k, _ in enumerate(loader):
        if k == 2:
            break
    assert len(list(loader)) == len(loader)


def test_argument_errors():
    with pytest.raises(ValueError, match="worker_mode"):
        pyloader.DataLoader(Squares(), worker_mode="fibers")

    class Stream(tud.IterableDataset):
        def __iter__(self):
            return iter(range(3))

    with pytest.raises(ValueError, match="map-style"):
        pyloader.DataLoader(Stream(), num_workers=2, worker_mode="thread")


def test_array_datasets_still_take_the_native_path():
    loader = pyloader.DataLoader(
        pyloader.ArrayDataset(np.arange(10)), batch_size=2, num_workers=2, worker_mode="thread"
    )
    assert loader.uses_native_path


def test_failing_worker_init_fn_raises_its_error_and_is_retried():
    calls = []

    def init(worker_id):
        calls.append(worker_id)
        if len(calls) == 1:
            raise ValueError("init failed")

    loader = pyloader.DataLoader(Squares(), batch_size=8, num_workers=1, worker_mode="thread", worker_init_fn=init)
    with pytest.raises(ValueError, match="init failed"):
        list(loader)
    assert len(list(loader)) == len(loader)  # the next epoch initialises the thread again


def test_batch_size_none_matches_torch():
    ours = pyloader.DataLoader(Squares(), batch_size=None, num_workers=2, worker_mode="thread")
    assert_loaders_equal(ours, tud.DataLoader(Squares(), batch_size=None))


def test_pin_memory_warning_matches_torch():
    if torch.accelerator.is_available():
        pytest.skip("an accelerator is present")
    with pytest.warns(UserWarning, match="no accelerator is found"):
        list(pyloader.DataLoader(Squares(n=8), batch_size=4, num_workers=2, worker_mode="thread", pin_memory=True))


def test_dropped_loaders_release_their_threads():
    import gc
    import weakref

    def worker_threads():
        return sum(thread.name.startswith("pyloader-worker") for thread in threading.enumerate())

    gc.collect()
    before = worker_threads()
    refs = []
    for _ in range(20):
        loader = pyloader.DataLoader(Squares(n=16), batch_size=4, num_workers=3, worker_mode="thread")
        list(loader)
        refs.append(weakref.ref(loader))
        del loader
    gc.collect()
    deadline = time.time() + 60  # how long to wait at most, not a race: it ends once they have exited
    while worker_threads() > before and time.time() < deadline:
        time.sleep(0.05)
    assert all(ref() is None for ref in refs)
    assert worker_threads() <= before


def test_persistent_thread_workers_shuffle_like_torchs_persistent_workers():
    def epochs(loader):
        torch.manual_seed(0)
        return [[b["y"].tolist() for b in loader] for _ in range(3)]

    ours = pyloader.DataLoader(
        Squares(), batch_size=8, shuffle=True, num_workers=2, worker_mode="thread", persistent_workers=True
    )
    theirs = tud.DataLoader(Squares(), batch_size=8, shuffle=True, num_workers=2, persistent_workers=True)
    assert epochs(ours) == epochs(theirs)


def test_pin_memory_warning_points_at_the_caller():
    if torch.accelerator.is_available():
        pytest.skip("an accelerator is present")
    for loader in (
        pyloader.DataLoader(Squares(n=8), batch_size=4, num_workers=2, worker_mode="thread", pin_memory=True),
        pyloader.DataLoader(pyloader.ArrayDataset(np.arange(8)), batch_size=4, pin_memory=True),
    ):
        with pytest.warns(UserWarning, match="no accelerator") as record:
            iter(loader)
        assert record[0].filename == __file__
