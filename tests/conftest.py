import contextlib
import signal
import sys
import threading
import time

import numpy as np
import pytest
import torch


def as_list(loader):
    return list(loader)


def assert_batches_equal(actual, expected):
    """Batches equal in structure, values, dtypes and shapes."""
    assert type(actual) is type(expected), (type(actual), type(expected))
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype
        assert actual.shape == expected.shape
        assert torch.equal(actual, expected)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            assert_batches_equal(actual[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_batches_equal(a, e)
    else:
        assert actual == expected


def assert_loaders_equal(ours, theirs):
    assert len(ours) == len(theirs)
    ours_batches, their_batches = list(ours), list(theirs)
    assert len(ours_batches) == len(their_batches)
    for a, e in zip(ours_batches, their_batches):
        assert_batches_equal(a, e)


@contextlib.contextmanager
def acting_once_inside(code, action):
    """Runs `action()` once, from a helper thread, as soon as the calling thread is seen
    executing `code` (a function's __code__, anywhere on its stack): the moment is chosen
    by what the thread is doing, not by a clock racing it. Looking needs the GIL, so the
    thread is seen either waiting inside a native call of that function (which released
    the GIL) or between its bytecodes; both are inside `code`. Stops looking on exit."""
    target = threading.get_ident()
    done = threading.Event()

    def watch():
        while not done.is_set():
            frame = sys._current_frames().get(target)
            while frame is not None and frame.f_code is not code:
                frame = frame.f_back
            if frame is not None:
                done.set()
                action()
                return
            time.sleep(0.0002)  # how often to look, not a deadline

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


@pytest.fixture
def sigint_raises():
    """Ctrl-C raises KeyboardInterrupt during the test, also where the suite was started
    with SIGINT ignored (a background job of a non-interactive shell: Python then
    installs no handler, and a SIGINT does nothing)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def assert_fork_mid_epoch_continues(loader, expected: list) -> None:
    """Forks after the first batch of an epoch whose batches are (data, label): parent and
    child each finish it, and the child runs a fresh epoch too; all labels as expected."""
    import os

    iterator = iter(loader)
    first = next(iterator)
    pid = os.fork()
    if pid == 0:  # child: none of the parent's native threads exist here
        code = 1
        try:
            rest = [labels for _, labels in iterator]
            fresh = [labels for _, labels in loader]
            ok = torch.cat([first[1], *rest]).tolist() == expected and torch.cat(fresh).tolist() == expected
            code = 0 if ok else 2
        finally:
            os._exit(code)
    rest = [labels for _, labels in iterator]
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert torch.cat([first[1], *rest]).tolist() == expected


def assert_shrinking_file_raises_oserror(loader, path, size: int, match: str) -> None:
    """After a first batch, `path` is truncated to `size` bytes: the rest of the epoch
    raises OSError matching `match` (the file's name), and the iterator stays closable."""
    import os

    iterator = iter(loader)
    next(iterator)
    os.truncate(path, size)
    with pytest.raises(OSError, match=match):
        for _ in iterator:
            pass
    iterator.close()


def evict(path) -> None:
    """Drops a file's pages from the page cache, so the next reads come from storage."""
    import os

    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)  # dirty pages (a file just written) are not dropped
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def native_thread_count() -> int:
    """Threads of this process, native ones included (threading sees only Python's)."""
    import os

    return len(os.listdir("/proc/self/task"))


@pytest.fixture(scope="session")
def stand_in_driver(tmp_path_factory):
    """The stand-in CUDA driver, compiled once per session."""
    from stand_in_cuda import StandInDriver, build

    return StandInDriver(build(str(tmp_path_factory.mktemp("stand_in_cuda"))))


@pytest.fixture
def stand_in_cuda(stand_in_driver, monkeypatch):
    """Makes pyloader's device staging run against the stand-in driver: device="cuda:0"
    is accepted, and device blocks are host tensors. Yields the driver; weak references
    to the backends opened are in `stand_in_driver.backends`."""
    import weakref

    from stand_in_cuda import StandInBackend

    from pyloader._native import staging as _staging

    backends = []

    def open_backend(device, copies):
        backend = StandInBackend(stand_in_driver, device, copies)
        backends.append(weakref.ref(backend))
        return backend

    monkeypatch.setattr(_staging, "cuda_available", lambda: True)
    monkeypatch.setattr(_staging, "open_backend", open_backend)
    stand_in_driver.backends = backends
    stand_in_driver.configure(delay_us=300)
    yield stand_in_driver
    stand_in_driver.configure(delay_us=300)
    stand_in_driver.fail_pinning(False)
    stand_in_driver.host_waits(True)
    stand_in_driver.fail_record(0)


class WaitsForRelease(torch.utils.data.Dataset):
    """Samples from `free` on wait until the test sets `release` (a multiprocessing
    Event, for worker processes): no deadline can be met before, however loaded the
    machine is."""

    def __init__(self, release, free=0):
        self.release, self.free = release, free

    def __len__(self):
        return 4

    def __getitem__(self, index):
        if index >= self.free:
            self.release.wait()
        return torch.tensor(index)
