"""Explicit reads of memory-mapped files (io="read" / "auto"): the same batches as the
mapping gives and as torch gives, every column kind that has a file behind it, clear
errors for a file that shrinks, and nothing left running after break, del or fork."""

import gc
import os
import signal

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import pyloader
from pyloader import _core

from conftest import (
    assert_fork_mid_epoch_continues,
    assert_loaders_equal,
    assert_shrinking_file_raises_oserror,
    evict,
    native_thread_count,
)

ROWS = 3000


def write_npy(path, array):
    np.save(path, array)
    return str(path)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(7)
    features = write_npy(tmp_path / "features.npy", rng.random((ROWS, 700), dtype=np.float32))  # 2800-byte rows
    labels = write_npy(tmp_path / "labels.npy", np.arange(ROWS, dtype=np.int64))
    return features, labels


def explicit_batches(loader) -> tuple[list, int]:
    """The epoch's batches and how many of them the pipeline read from files."""
    iterator = iter(loader)
    batches = []
    for _ in range(len(loader) - 1):
        batches.append(next(iterator))
    read = iterator._pipeline.explicitly_read_batches
    batches += list(iterator)
    return batches, read


def assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key])
    else:
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)


@pytest.mark.parametrize("io", ["read", "auto"])
def test_reads_give_the_mappings_batches(files, io):
    features, labels = files
    make = lambda io: pyloader.DataLoader(
        pyloader.ArrayDataset(features, labels),
        batch_size=128,
        shuffle=True,
        generator=torch.Generator().manual_seed(3),
        io=io,
    )
    expected = list(make("mmap"))
    gc.collect()  # no mapping of the file is left to keep its pages cached
    evict(features)
    got, read = explicit_batches(make(io))
    assert read > 0  # the explicit path really ran (cold file, 2800-byte rows)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert_same(a, b)


def test_reads_match_torch_for_views_subsets_concat_and_duplicates(files, tmp_path):
    features, labels = files
    mapped = np.load(features, mmap_mode="r")
    shifted = mapped[17:]  # a view whose first row is not the file's first row
    columns = dict(x=shifted, y=np.load(labels, mmap_mode="r")[17:])
    ours = pyloader.ArrayDataset(**columns)
    tensors = tud.TensorDataset(torch.from_numpy(np.array(shifted)), torch.arange(17, ROWS))
    sampler = lambda: tud.RandomSampler(
        range(len(shifted)), replacement=True, num_samples=900, generator=torch.Generator().manual_seed(1)
    )
    loader = pyloader.DataLoader(ours, batch_size=100, sampler=sampler(), io="read")
    got = [(b["x"], b["y"]) for b in loader]
    theirs = list(tud.DataLoader(tensors, batch_size=100, sampler=sampler()))
    for (x, y), (ex, ey) in zip(got, theirs, strict=True):
        assert torch.equal(x, ex) and torch.equal(y, ey)

    second = write_npy(tmp_path / "second.npy", np.random.default_rng(2).random((500, 700), dtype=np.float32))
    concat = tud.ConcatDataset([pyloader.ArrayDataset(features), pyloader.ArrayDataset(second)])
    subset = tud.Subset(concat, list(range(ROWS - 300, ROWS + 200)))
    plain = tud.Subset(
        tud.ConcatDataset(
            [
                tud.TensorDataset(torch.from_numpy(np.load(features))),
                tud.TensorDataset(torch.from_numpy(np.load(second))),
            ]
        ),
        list(range(ROWS - 300, ROWS + 200)),
    )
    loader = pyloader.DataLoader(subset, batch_size=64, shuffle=False, io="read")
    assert loader.uses_native_path
    assert_loaders_equal(loader, tud.DataLoader(plain, batch_size=64, shuffle=False))


def test_rows_that_are_not_contiguous_in_the_file_use_the_mapping(files):
    features, _ = files
    narrow = np.load(features, mmap_mode="r")[:, :100]  # rows 400 bytes wide, 2800 apart
    evict(features)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(narrow), batch_size=256, io="read")
    batches, read = explicit_batches(loader)
    assert read == 0
    assert torch.equal(torch.cat([b[0] for b in batches]), torch.from_numpy(np.array(narrow)))


@pytest.mark.parametrize("source", ["in_memory", "small_rows"])
def test_in_memory_arrays_and_small_rows_are_copied_from_memory(files, source):
    _, labels = files
    array = np.arange(ROWS * 4, dtype=np.float32).reshape(ROWS, 4) if source == "in_memory" else labels
    evict(labels)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(array), batch_size=100, io="auto")
    batches, read = explicit_batches(loader)
    assert read == 0  # nothing to read from, or 8-byte rows: the kernel's read-around serves them
    expected = np.load(labels) if source == "small_rows" else array
    assert torch.equal(torch.cat([b[0] for b in batches]), torch.from_numpy(np.array(expected)))


def test_io_is_validated():
    with pytest.raises(ValueError, match="io must be"):
        pyloader.DataLoader(pyloader.ArrayDataset(np.zeros((4, 2))), io="direct")


def test_a_file_that_shrinks_under_explicit_reads_raises_oserror_naming_it(tmp_path):
    path = write_npy(tmp_path / "shrinking.npy", np.ones((4096, 1024), dtype=np.float32))  # 16 MiB
    mapped = np.load(path, mmap_mode="r")
    source = read_source(path, mapped)
    assert source[0] == path
    pool = _core.ThreadPool(2)
    pipeline = _core.BatchPipeline([mapped], pool, 4, files=[[source]], io="read", read_threads=8)
    pipeline.enqueue_indices(list(range(0, 4096, 16)))
    assert pipeline.next()[0].shape == (256, 1024)
    os.truncate(path, 1 << 20)  # 1 MiB left: most rows are past the end now
    pipeline.enqueue_indices(list(range(2048, 4096, 8)))
    with pytest.raises(OSError, match="shrinking.npy.*short"):
        pipeline.next()
    pipeline.close()  # closable, nothing hangs

    # Through the loader too: an OSError naming the file, whichever check sees it first.
    write_npy(tmp_path / "shrinking2.npy", np.ones((4096, 1024), dtype=np.float32))
    loader = pyloader.DataLoader(pyloader.ArrayDataset(str(tmp_path / "shrinking2.npy")), batch_size=256, io="read")
    assert_shrinking_file_raises_oserror(loader, tmp_path / "shrinking2.npy", 1 << 20, "shrinking2.npy")


def read_source(path, mapped):
    position = pyloader._native.columns.file_position(mapped)
    status = os.stat(path)
    return (*position, status.st_dev, status.st_ino)


def test_a_piece_whose_file_is_gone_or_replaced_is_copied_from_its_mapping(tmp_path):
    path = write_npy(tmp_path / "data.npy", np.full((64, 1024), 1.0, dtype=np.float32))
    mapped = np.load(path, mmap_mode="r")
    source = read_source(path, mapped)
    os.replace(write_npy(tmp_path / "other.npy", np.full((64, 1024), 2.0, dtype=np.float32)), path)
    for files in ([[source]], [[(str(tmp_path / "gone.npy"), *source[1:])]]):
        pipeline = _core.BatchPipeline([mapped], _core.ThreadPool(1), 2, files=files, io="read")
        pipeline.enqueue_indices(list(range(64)))
        assert (pipeline.next()[0] == 1.0).all()  # the mapped file's rows, not the new file's
        assert pipeline.explicitly_read_batches == 0
    with pytest.raises(ValueError, match="io must be"):
        _core.BatchPipeline([mapped], _core.ThreadPool(1), 2, io="fast")


def test_views_that_explicit_reads_cannot_place_use_the_mapping(tmp_path):
    path = write_npy(tmp_path / "data.npy", np.arange(200 * 1024, dtype=np.float32).reshape(200, 1024))
    mapped = np.load(path, mmap_mode="r")
    rebuilt = np.lib.stride_tricks.as_strided(mapped[5:], shape=(195, 1024), strides=mapped.strides, subok=True)
    private = np.load(path, mmap_mode="c")
    private[::7] = -1  # copy-on-write: these pages no longer match the file
    for array in (rebuilt, private):
        batches, read = explicit_batches(pyloader.DataLoader(pyloader.ArrayDataset(array), batch_size=50, io="read"))
        assert read == 0
        assert torch.equal(torch.cat([b[0] for b in batches]), torch.from_numpy(np.array(array)))


def test_columns_too_small_for_explicit_reads_open_no_files(tmp_path):
    shards = [
        write_npy(tmp_path / f"shard{k}.npy", np.arange(k * 100, k * 100 + 100, dtype=np.int64)) for k in range(50)
    ]
    loader = pyloader.DataLoader(pyloader.ArrayDataset(shards), batch_size=64, shuffle=True)
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    iterator = iter(loader)
    first = next(iterator)
    assert len(os.listdir("/proc/self/fd")) - before < len(shards)  # not one more per shard
    assert sorted(torch.cat([first[0], *(b[0] for b in iterator)]).tolist()) == list(range(5000))


def test_a_pipeline_used_in_a_forked_child_copies_from_its_mapping(tmp_path):
    path = write_npy(tmp_path / "data.npy", np.arange(64 * 1024, dtype=np.float32).reshape(64, 1024))
    mapped = np.load(path, mmap_mode="r")
    pipeline = _core.BatchPipeline([mapped], _core.ThreadPool(1), 2, files=[[read_source(path, mapped)]], io="read")
    pipeline.enqueue_indices([0, 1])
    pipeline.next()  # the reader threads exist now, in this process only
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(20)  # a hang fails the test instead of stalling it
            pipeline.enqueue_indices([3, 63])
            rows = pipeline.next()[0]
            code = 0 if rows[0, 0] == 3 * 1024 and rows[1, 0] == 63 * 1024 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_break_del_and_many_iterators_leave_no_reader_threads(files):
    features, labels = files
    loader = pyloader.DataLoader(pyloader.ArrayDataset(features, labels), batch_size=256, shuffle=True, io="read")
    next(iter(loader))
    gc.collect()
    before = native_thread_count()
    for k in range(40):
        iterator = iter(loader)
        for _ in range(k % 5):
            next(iterator)
        if k % 3 == 0:
            del iterator
        else:
            for _ in iterator:
                break
    iterator = None
    gc.collect()
    assert native_thread_count() == before


def test_fork_with_reads_in_flight(files):
    features, labels = files
    loader = pyloader.DataLoader(pyloader.ArrayDataset(features, labels), batch_size=100, io="read")
    assert_fork_mid_epoch_continues(loader, list(range(ROWS)))


def write_tokens(path, count, seed=0):
    np.random.default_rng(seed).integers(0, 50_000, count, dtype=np.uint16).tofile(path)
    return str(path)


@pytest.mark.parametrize("stride", [None, 1, 7, 3000])
@pytest.mark.parametrize("dtype", [torch.int64, None])
@pytest.mark.parametrize("io", ["read", "auto"])
def test_token_windows_are_read_explicitly_with_the_mappings_bytes(tmp_path, stride, dtype, io):
    # Windows are strided views of the token file (overlapping when stride < block_size),
    # delivered as int64 (read as uint16, then widened) or as stored.
    shards = [write_tokens(tmp_path / f"shard{k}.bin", 60_000 + 999 * k, seed=k) for k in range(2)]
    make = lambda io: pyloader.DataLoader(
        pyloader.TokenWindows(shards, 1024, stride=stride, dtype=dtype, token_dtype=np.uint16),
        batch_size=8,
        shuffle=True,
        generator=torch.Generator().manual_seed(5),
        io=io,
    )
    expected = list(make("mmap"))
    gc.collect()
    for shard in shards:
        evict(shard)
    got, read = explicit_batches(make(io))
    assert read > 0  # 2-KiB windows of a cold file: read explicitly
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert_same(a, b)


def test_token_windows_of_npy_and_megatron_files_are_read_explicitly(tmp_path):
    from megatron_files import write_megatron

    tokens = np.random.default_rng(1).integers(0, 30_000, 50_000).astype(np.uint16)
    np.save(tmp_path / "tokens.npy", tokens)
    prefix = write_megatron(tmp_path / "corpus", [[tokens[:20_000]], [tokens[20_000:]]], np.uint16)
    for dataset in (
        pyloader.TokenWindows(str(tmp_path / "tokens.npy"), 512),
        pyloader.TokenWindows.from_megatron(prefix, 512),
    ):
        make = lambda io, dataset=dataset: pyloader.DataLoader(
            dataset, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(2), io=io
        )
        got, read = explicit_batches(make("read"))
        assert read > 0
        for a, b in zip(got, make("mmap"), strict=True):
            assert_same(a, b)


def test_a_token_file_that_shrinks_under_explicit_reads_raises_oserror_naming_it(tmp_path):
    path = write_tokens(tmp_path / "shrinking.bin", 1 << 22)  # 8 MiB of uint16 tokens
    windows = pyloader.TokenWindows(path, 1024, token_dtype=np.uint16)
    column = windows.columns[0].pieces[0]
    pool = _core.ThreadPool(2)
    pipeline = _core.BatchPipeline(
        [column.array], pool, 4, casts=[np.dtype(np.int64)], files=[[column.read_source]], io="read", read_threads=8
    )
    pipeline.enqueue_indices(list(range(0, 4096, 16)))
    first = pipeline.next()[0]
    assert torch.equal(
        torch.as_tensor(first[1]),
        torch.from_numpy(np.fromfile(path, np.uint16)[16 * 1024 : 17 * 1024].astype(np.int64)),
    )
    os.truncate(path, 1 << 20)  # 1 MiB left: most windows are past the end now
    pipeline.enqueue_indices(list(range(2048, 4096, 8)))
    with pytest.raises(OSError, match="shrinking.bin.*short"):  # a short read, not a SIGBUS
        pipeline.next()
    pipeline.close()


def test_loaders_in_one_process_share_one_bounded_read_engine(files):
    # Each pipeline used to start its own reader threads: eight loaders read 8 x 64.
    # One engine per process serves every loader and iterator.
    features, labels = files
    loaders = [
        pyloader.DataLoader(
            pyloader.ArrayDataset(features, labels), batch_size=64, shuffle=True, io="read", num_threads=1
        )
        for _ in range(8)
    ]
    for loader in loaders:
        next(iter(loader))  # each loader's own gather thread exists from now on
    gc.collect()
    before = native_thread_count()
    iterators = [iter(loader) for loader in loaders]
    for iterator in iterators:
        next(iterator)
    assert all(iterator._pipeline.explicitly_read_batches > 0 for iterator in iterators)
    assert (
        native_thread_count() - before <= pyloader._native.iterator.READS_IN_FLIGHT
    )  # one engine's readers, not eight
    del iterators, iterator
    gc.collect()
    assert native_thread_count() == before
