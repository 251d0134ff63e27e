"""Concurrent use of one iterator or pipeline, and batches collated on worker threads."""

import gc
import os
import subprocess
import sys
import textwrap
import threading
import traceback

import numpy as np
import pytest
import torch
import torch.utils.data as tud
from torch.nn.utils.rnn import pad_sequence

import pyloader
from pyloader import _core

from conftest import acting_once_inside, assert_loaders_equal

JOIN_TIMEOUT_S = 60


def drain_from_threads(iterator, threads=2):
    """Pulls `iterator` from several threads at once; every batch each thread got."""
    got = [[] for _ in range(threads)]
    errors = []

    def pull(mine):
        try:
            for batch in iterator:
                mine.append(batch)
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    workers = [threading.Thread(target=pull, args=(got[k],), daemon=True) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(JOIN_TIMEOUT_S)
    assert not any(worker.is_alive() for worker in workers), "concurrent next() calls deadlocked"
    assert not errors, errors
    return got


# Large rows so gathers go to the worker threads and the two consumers overlap in waits.
ROWS = np.repeat(np.arange(2048, dtype=np.int64)[:, None], 512, axis=1)


@pytest.mark.parametrize("sampler", [None, "shuffle", "user"])
def test_two_threads_share_one_iterator_each_batch_once(sampler):
    dataset = pyloader.ArrayDataset(ROWS)
    kwargs = {"shuffle": True} if sampler == "shuffle" else {}
    if sampler == "user":
        kwargs = {"sampler": tud.RandomSampler(dataset, generator=torch.Generator().manual_seed(3))}
    for _ in range(5):
        iterator = iter(pyloader.DataLoader(dataset, batch_size=16, num_threads=2, **kwargs))
        got = drain_from_threads(iterator)
        rows = sorted(int(b[0][k, 0]) for batches in got for b in batches for k in range(len(b[0])))
        assert rows == list(range(2048))


def test_two_threads_share_one_pipeline():
    order = _core.IndexOrder.shuffled(len(ROWS), 9)
    for _ in range(5):
        pipeline = _core.BatchPipeline([ROWS], _core.ThreadPool(2), 6)
        pipeline.schedule_positions(order, 0, len(ROWS), 8)

        got = drain_from_threads(iter(lambda pipeline=pipeline: pipeline.next(0.0), None), threads=3)
        rows = sorted(int(row) for batches in got for (x,) in batches for row in x[:, 0])
        assert rows == list(range(len(ROWS)))
        assert pipeline.popped == len(ROWS) // 8


def lengths_dataset(rows=300, width=48, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, width + 1, rows)
    tokens = rng.integers(1, 1000, (rows, width))
    tokens[np.arange(width)[None, :] >= lengths[:, None]] = 0
    return tokens, lengths


def pad_collate(samples):
    sequences = [tokens[:length] for tokens, length in samples]
    return pad_sequence(sequences, batch_first=True), torch.stack([length for _, length in samples])


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("shuffle", ["none", "native", "sampler"])
def test_padding_collate_matches_torch(workers, shuffle):
    tokens, lengths = lengths_dataset()
    dataset = pyloader.ArrayDataset(tokens, lengths)
    common = {"batch_size": 32, "collate_fn": pad_collate}
    if shuffle == "sampler":
        ours = pyloader.DataLoader(
            dataset,
            num_workers=workers,
            **common,
            sampler=tud.RandomSampler(dataset, generator=torch.Generator().manual_seed(5)),
        )
        theirs = tud.DataLoader(
            dataset, **common, sampler=tud.RandomSampler(dataset, generator=torch.Generator().manual_seed(5))
        )
        assert_loaders_equal(ours, theirs)
    elif shuffle == "native":
        ours = pyloader.DataLoader(dataset, num_workers=workers, shuffle=True, **common)
        seen = []
        for padded, batch_lengths in ours:
            assert padded.shape[1] == int(batch_lengths.max())
            seen.extend(batch_lengths.tolist())
        assert sorted(seen) == sorted(lengths.tolist())
    else:
        assert_loaders_equal(
            pyloader.DataLoader(dataset, num_workers=workers, **common), tud.DataLoader(dataset, **common)
        )
    assert pyloader.DataLoader(dataset, num_workers=workers, **common).uses_native_path


def test_collate_runs_on_worker_threads_only_with_workers():
    main = threading.get_ident()

    def where(samples):
        return threading.get_ident()

    dataset = pyloader.ArrayDataset(np.arange(64))
    assert set(pyloader.DataLoader(dataset, batch_size=8, collate_fn=where)) == {main}
    assert main not in set(pyloader.DataLoader(dataset, batch_size=8, collate_fn=where, num_workers=2))


class CollateError(Exception):
    pass


def failing_at(bad_first_value):
    def collate(samples):
        if int(samples[0][0]) == bad_first_value:
            raise CollateError(f"cannot collate the batch starting at {bad_first_value}")
        return torch.stack([s[0] for s in samples])

    return collate


@pytest.mark.parametrize("workers", [0, 2])
def test_collate_errors_keep_type_message_traceback_and_position(workers):
    dataset = pyloader.ArrayDataset(np.arange(40))
    loader = pyloader.DataLoader(dataset, batch_size=10, collate_fn=failing_at(20), num_workers=workers)
    iterator = iter(loader)
    assert next(iterator).tolist() == list(range(10))
    assert next(iterator).tolist() == list(range(10, 20))
    with pytest.raises(CollateError, match="starting at 20") as raised:
        next(iterator)
    frames = [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]
    assert "collate" in frames  # the original traceback, down to the raising line
    assert next(iterator).tolist() == list(range(30, 40))  # the epoch goes on, as torch's does
    with pytest.raises(StopIteration):
        next(iterator)


@pytest.mark.parametrize("stop", ["break", "del", "close"])
def test_leaving_an_epoch_with_collates_in_flight(stop):
    dataset = pyloader.ArrayDataset(ROWS)
    loader = pyloader.DataLoader(
        dataset,
        batch_size=16,
        num_workers=2,
        prefetch_factor=4,
        collate_fn=lambda samples: torch.stack([s[0] for s in samples]),
    )
    for _ in range(10):
        iterator = iter(loader)
        next(iterator)
        if stop == "close":
            iterator.close()
            with pytest.raises(StopIteration):
                next(iterator)
        del iterator
        gc.collect()
    batches = list(loader)
    assert sorted(torch.cat(batches)[:, 0].tolist()) == list(range(2048))


def test_no_thread_growth_with_collate_threads():
    def thread_count():
        return len(os.listdir("/proc/self/task"))

    dataset = pyloader.ArrayDataset(np.arange(512))
    list(pyloader.DataLoader(dataset, batch_size=8, num_workers=2, collate_fn=lambda s: len(s)))
    gc.collect()
    before = thread_count()
    for _ in range(30):
        loader = pyloader.DataLoader(dataset, batch_size=8, num_workers=2, collate_fn=lambda s: len(s))
        iterator = iter(loader)
        next(iterator)
        del loader, iterator
    gc.collect()
    deadline = 600  # tenths of a second at most: the loop ends once they have exited
    while thread_count() > before and deadline:  # executor threads exit once told to
        threading.Event().wait(0.1)
        deadline -= 1
    assert thread_count() <= before


def test_fork_with_collates_in_flight():
    dataset = pyloader.ArrayDataset(np.arange(400))
    loader = pyloader.DataLoader(
        dataset, batch_size=10, num_workers=2, collate_fn=lambda samples: torch.stack([s[0] for s in samples])
    )
    iterator = iter(loader)
    first = next(iterator)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            rest = list(iterator)
            ok = torch.cat([first, *rest]).tolist() == list(range(400))
            ok = ok and torch.cat(list(loader)).tolist() == list(range(400))
            code = 0 if ok else 2
        finally:
            os._exit(code)
    rest = list(iterator)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert torch.cat([first, *rest]).tolist() == list(range(400))


@pytest.mark.parametrize("through", ["positions", "a sampler over a reversed Subset"])
def test_a_failed_allocation_does_not_move_the_position(tmp_path, through):
    # Batches are held so the pipeline must allocate new buffers; once address space
    # runs out, next() raises MemoryError, and after memory is freed the epoch goes on
    # with the batch that was due: nothing is lost or repeated (and a batch gathered
    # again maps its rows through the Subset once, not twice).
    if through == "positions":
        dataset, sampler = "pyloader.ArrayDataset(rows)", "None"
        expected = "list(range(0, 256, 16))"
    else:
        dataset = "torch.utils.data.Subset(pyloader.ArrayDataset(rows), list(range(255, -1, -1)))"
        sampler, expected = "list(range(256))", "list(range(255, -1, -16))"
    script = textwrap.dedent(f"""
        import resource, numpy as np, torch, pyloader
        rows = np.repeat(np.arange(256, dtype=np.int64)[:, None], 1 << 16, axis=1)  # 512 KiB rows
        loader = pyloader.DataLoader({dataset}, batch_size=16, num_threads=1, sampler={sampler})
        assert loader.uses_native_path
        iterator = iter(loader)
        held = [next(iterator) for _ in range(2)]
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + (24 << 20), resource.RLIM_INFINITY))
        failures = 0
        try:
            while True:
                held.append(next(iterator))
        except MemoryError:
            failures += 1
        except StopIteration:
            pass
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        first_rows = [int(b[0][0, 0]) for b in held]
        del held
        rest = [int(b[0][0, 0]) for b in iterator]
        assert failures == 1, failures
        assert first_rows + rest == {expected}, (first_rows, rest)
        print("ok")
    """)
    # cwd away from the source tree, which `-c` would put first on sys.path
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_iterator_closed_by_a_signal_handler_inside_next():
    import signal

    from pyloader._native.iterator import NativeIterator

    big = np.zeros((64, 1 << 20), dtype=np.uint8)  # gathering a batch takes a while
    loader = pyloader.DataLoader(pyloader.ArrayDataset(big), batch_size=16, num_threads=1)
    for _ in range(5):
        iterator = iter(loader)
        previous = signal.signal(signal.SIGALRM, lambda *_, iterator=iterator: iterator.close())
        try:
            # The handler runs on this thread, inside next(), as it waits.
            with acting_once_inside(NativeIterator.__next__.__code__, lambda: os.kill(os.getpid(), signal.SIGALRM)):
                try:
                    for _ in iterator:  # must end (StopIteration or an error), never hang
                        pass
                except (ValueError, RuntimeError):
                    pass
        finally:
            signal.signal(signal.SIGALRM, previous)
        with pytest.raises(StopIteration):
            next(iterator)
    assert len(list(loader)) == 4


def test_close_from_another_thread_during_next_stops_the_epoch():
    big = np.zeros((64, 1 << 20), dtype=np.uint8)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(big), batch_size=8, num_threads=1)
    iterator = iter(loader)
    next(iterator)
    closer = threading.Thread(target=iterator.close)
    closer.start()
    closer.join(JOIN_TIMEOUT_S)
    assert not closer.is_alive()
    with pytest.raises(StopIteration):
        next(iterator)
