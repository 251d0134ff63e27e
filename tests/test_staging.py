"""Device staging (DataLoader(device=...)) and pinned gathering, against a stand-in CUDA
driver whose copies land late on stream threads: batches must equal the CPU loader's,
held ones must stay intact, and host blocks must not be reused under a pending copy."""

from __future__ import annotations

import gc
import os
import signal
import time

import numpy as np
import pytest
import torch

import pyloader
from pyloader import _core

from conftest import acting_once_inside, assert_batches_equal, native_thread_count

DEVICE = "cuda:0"


def _datasets(tmp_path):
    rng = np.random.default_rng(7)
    features = rng.standard_normal((3000, 24)).astype(np.float32)
    labels = rng.integers(0, 10, 3000)
    path = tmp_path / "features.npy"
    np.save(path, features)
    tokens = rng.integers(0, 50000, 40000).astype(np.uint16)
    lengths = rng.integers(0, 40, 500)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = rng.integers(0, 1000, offsets[-1]).astype(np.int32)
    return {
        "tuple": (pyloader.ArrayDataset(features, labels), {}),
        "dict": (pyloader.ArrayDataset(x=features, y=labels), {}),
        "tensors": (pyloader.TensorDataset(torch.from_numpy(features), torch.from_numpy(labels)), {}),
        "npy file": (pyloader.ArrayDataset(str(path), labels), {}),
        "tokens": (pyloader.TokenWindows(tokens, block_size=64), {}),
        "padded records": (
            pyloader.RaggedDataset(values, offsets),
            {"collate_fn": pyloader.PadCollate(return_mask=True)},
        ),
        "subset": (torch.utils.data.Subset(pyloader.ArrayDataset(features, labels), list(range(0, 3000, 3))), {}),
    }


KINDS = ["tuple", "dict", "tensors", "npy file", "tokens", "padded records", "subset"]


@pytest.mark.parametrize("kind", KINDS)
def test_device_batches_equal_cpu_batches_and_stay_intact(stand_in_cuda, tmp_path, kind):
    dataset, options = _datasets(tmp_path)[kind]
    copies_before = stand_in_cuda.copies()
    ours = pyloader.DataLoader(
        dataset, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(3), device=DEVICE, **options
    )
    assert ours.uses_native_path
    expected = list(
        pyloader.DataLoader(dataset, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(3), **options)
    )
    held = []
    for batch, want in zip(ours, expected):
        assert_batches_equal(batch, want)  # as delivered
        held.append(batch)
    assert len(held) == len(expected)
    for batch, want in zip(held, expected):  # after every later batch was staged
        assert_batches_equal(batch, want)
    assert stand_in_cuda.copies() - copies_before == len(expected)  # one copy per batch, by the pipeline


def test_device_batches_lie_in_pooled_device_blocks(stand_in_cuda):
    data = np.arange(4000 * 8, dtype=np.float32).reshape(4000, 8)
    allocated = stand_in_cuda.allocations()
    loader = pyloader.DataLoader(pyloader.ArrayDataset(data, np.arange(4000)), batch_size=100, device=DEVICE)
    iterator = iter(loader)
    features, labels = next(iterator)
    # Both columns lie in one block of the driver's device memory (the stand-in's
    # cuMemAlloc, filled with 0xAB until a copy lands): the pipeline's copy wrote them.
    assert 0 < labels.data_ptr() - features.data_ptr() < 64 << 10
    assert torch.equal(features, torch.from_numpy(data[:100]))
    depth = iterator._depth
    del features, labels, iterator  # closed with copies pending: let them land first
    while stand_in_cuda.pending_copies():
        time.sleep(0.001)
    for _ in range(4):
        for _ in loader:
            pass
    # The caller's stream is the host here, so every block is free again once its batch
    # is dropped: the pools never hold more than a block per batch in flight, the one
    # delivered and the one being dropped, of each kind, over all epochs (40 batches each).
    assert stand_in_cuda.allocations() - allocated <= 2 * (depth + 2)


@pytest.mark.parametrize("delay_us", [0, 3000])
def test_host_blocks_are_not_reused_under_a_pending_copy(stand_in_cuda, delay_us):
    # The consumer does not wait on the host (its stream waits, as a GPU stream waits on
    # the device), and copies wait up to 3 ms before reading their source: a pinned
    # block let go when its batch was handed over would be refilled with a later batch
    # before its copy read it, and a device block reused before the consumer's work on
    # it would be overwritten under it.
    stand_in_cuda.host_waits(False)
    stand_in_cuda.configure(delay_us=delay_us)
    data = np.random.default_rng(0).integers(0, 1 << 30, (20000, 32)).astype(np.int32)
    loader = pyloader.DataLoader(
        pyloader.ArrayDataset(data),
        batch_size=128,
        shuffle=True,
        generator=torch.Generator().manual_seed(1),
        device=DEVICE,
    )
    native = pyloader.DataLoader(
        pyloader.ArrayDataset(data), batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    held = [batch for (batch,) in loader]
    stand_in_cuda.synchronize()  # as a program synchronises before reading results on the host
    for batch, (want,) in zip(held, native, strict=True):
        assert torch.equal(batch, want)


def test_custom_collate_batches_are_moved_after_collating(stand_in_cuda):
    data = np.arange(1000 * 4, dtype=np.float32).reshape(1000, 4)

    def collate(samples):
        return {"x": torch.stack([s[0] for s in samples]) * 2, "n": len(samples)}

    ours = list(pyloader.DataLoader(pyloader.ArrayDataset(data), batch_size=50, collate_fn=collate, device=DEVICE))
    theirs = list(
        torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.from_numpy(data)), batch_size=50, collate_fn=collate
        )
    )
    for a, b in zip(ours, theirs):
        assert_batches_equal(a, b)
    assert stand_in_cuda.copies() >= 0 and len(ours) == 20


def test_torch_path_batches_are_moved(stand_in_cuda):
    class Squares(torch.utils.data.Dataset):
        def __len__(self):
            return 100

        def __getitem__(self, index):
            return torch.tensor([index, index * index])

    loader = pyloader.DataLoader(Squares(), batch_size=10, device=DEVICE)
    assert not loader.uses_native_path
    assert_batches_equal(list(loader), list(torch.utils.data.DataLoader(Squares(), batch_size=10)))


def test_distributed_sampler_with_device(stand_in_cuda):
    data = np.arange(1000, dtype=np.int64)

    def loader(rank, **device):
        sampler = pyloader.DistributedSampler(pyloader.ArrayDataset(data), num_replicas=2, rank=rank, seed=5)
        return pyloader.DataLoader(pyloader.ArrayDataset(data), batch_size=32, sampler=sampler, **device)

    seen = []
    for rank in range(2):
        for (a,), (b,) in zip(loader(rank, device=DEVICE), loader(rank), strict=True):
            assert torch.equal(a, b)
            seen.append(a)
    assert sorted(torch.cat(seen).tolist()) == list(range(1000))


def test_exact_resume_with_device(stand_in_cuda):
    data = np.arange(5000, dtype=np.int64)
    make = lambda: pyloader.DataLoader(
        pyloader.ArrayDataset(data),
        batch_size=100,
        shuffle=True,  # noqa: E731
        generator=torch.Generator().manual_seed(9),
        device=DEVICE,
    )
    uninterrupted = [b.clone() for (b,) in make()]
    loader = make()
    iterator = iter(loader)
    first = [next(iterator)[0].clone() for _ in range(17)]
    state = loader.state_dict()
    del iterator
    resumed = make()
    resumed.load_state_dict(state)
    rest = [b for (b,) in resumed]
    for a, b in zip(first + rest, uninterrupted, strict=True):
        assert torch.equal(a, b)


def test_break_close_and_del_during_pending_copies(stand_in_cuda):
    stand_in_cuda.configure(delay_us=5000)
    data = np.arange(20000 * 16, dtype=np.float32).reshape(20000, 16)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(data), batch_size=256, shuffle=True, device=DEVICE)
    next(iter(loader))  # the loader's gather threads and copy stream exist from here on
    gc.collect()
    threads = native_thread_count()
    for _ in range(5):
        for k, _ in enumerate(loader):
            if k == 2:
                break
        iterator = iter(loader)
        next(iterator)
        iterator.close()
        iterator = iter(loader)
        next(iterator)
        del iterator
        gc.collect()
    assert native_thread_count() <= threads  # no thread per iterator
    stand_in_cuda.configure(delay_us=0)
    assert torch.equal(torch.sort(torch.cat([b[:, 0] for (b,) in loader])).values, torch.from_numpy(data[:, 0]))


def test_many_loaders_leave_no_threads_or_contexts(stand_in_cuda):
    data = np.zeros((1000, 8), dtype=np.float32)
    list(pyloader.DataLoader(pyloader.ArrayDataset(data), batch_size=100, device=DEVICE))
    gc.collect()
    threads, contexts = native_thread_count(), stand_in_cuda.retained_contexts()
    for _ in range(20):
        loader = pyloader.DataLoader(pyloader.ArrayDataset(data), batch_size=100, device=DEVICE)
        list(loader)
        del loader
    gc.collect()
    assert native_thread_count() <= threads
    assert stand_in_cuda.retained_contexts() <= contexts
    assert stand_in_cuda.calls_without_context() == 0  # every thread bound the context first


def test_failed_copy_raises_and_the_loader_recovers(stand_in_cuda):
    data = np.arange(3000 * 4, dtype=np.float32).reshape(3000, 4)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(data), batch_size=100, device=DEVICE)
    stand_in_cuda.configure(delay_us=0, fail_after=3)
    with pytest.raises(_core.CudaError, match="cuMemcpyHtoDAsync failed: CUDA_ERROR_INVALID_VALUE"):
        list(loader)
    stand_in_cuda.configure(delay_us=0)
    assert torch.equal(torch.cat([b for (b,) in loader]), torch.from_numpy(data))


def test_pinning_failure_falls_back_to_pageable_with_one_warning(stand_in_cuda):
    stand_in_cuda.fail_pinning(True)
    data = np.arange(3000 * 4, dtype=np.float32).reshape(3000, 4)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(data), batch_size=100, device=DEVICE)
    with pytest.warns(RuntimeWarning, match="pinned memory could not be allocated") as caught:
        batches = [b for (b,) in loader]
        batches += [b for (b,) in loader]
    assert sum("pinned memory" in str(w.message) for w in caught) == 1
    assert torch.equal(torch.cat(batches), torch.cat([torch.from_numpy(data)] * 2))


def test_pin_memory_gathers_into_supplied_blocks(stand_in_cuda, monkeypatch):
    from pyloader._native import iterator as _native

    monkeypatch.setattr(_native, "pin_device", lambda loader, stacklevel: "cuda")
    data = np.arange(3000 * 4, dtype=np.float32).reshape(3000, 4)
    labels = np.arange(3000)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(data, labels), batch_size=100, pin_memory=True)
    batches = list(loader)
    (backend,) = [ref() for ref in stand_in_cuda.backends]
    blocks = backend.host_addresses
    for features, ids in batches:  # no second copy: the batch views the pinned block it was gathered into
        assert features.untyped_storage().data_ptr() in blocks
        assert ids.untyped_storage().data_ptr() == features.untyped_storage().data_ptr()
    assert torch.equal(torch.cat([f for f, _ in batches]), torch.from_numpy(data))
    assert backend.copier is None  # pinning alone copies nothing to a device


def test_sigint_while_copies_pending(stand_in_cuda, sigint_raises):
    # Ctrl-C arriving inside next() with copies still queued (each waits up to 20 ms, and
    # the caller's stream, here the host, waits for them): the interrupt reaches the
    # caller, and the loader's next epoch is whole. One long epoch, so that no iterator
    # is dropped in the loop (a KeyboardInterrupt raised in __del__ would be ignored).
    from pyloader._native.iterator import NativeIterator

    stand_in_cuda.configure(delay_us=20000)
    big = np.ones((64, 1 << 18), dtype=np.uint8)
    dataset = pyloader.ArrayDataset(big)
    endless = pyloader.DataLoader(
        dataset,
        batch_size=16,
        device=DEVICE,
        sampler=torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=16 << 20),
    )
    stream = iter(endless)
    with acting_once_inside(NativeIterator.__next__.__code__, lambda: os.kill(os.getpid(), signal.SIGINT)):
        with pytest.raises(KeyboardInterrupt):
            for _ in stream:  # ends by the interrupt
                pass
    stream.close()
    stand_in_cuda.configure(delay_us=0)
    loader = pyloader.DataLoader(dataset, batch_size=16, device=DEVICE)
    assert all(bool((b == 1).all()) for (b,) in loader)


def test_fork_after_staging_started_fails_clearly_in_the_child(stand_in_cuda):
    data = np.arange(2000, dtype=np.int64)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(data), batch_size=100, device=DEVICE)
    iterator = iter(loader)
    next(iterator)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        message = b"no error"
        try:
            list(iterator)
        except Exception as error:  # noqa: BLE001 - reported to the parent
            message = f"{type(error).__name__}: {error}".encode()
        finally:
            os.write(write, message[:500])
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    reported = os.read(read, 500).decode()
    os.close(read)
    assert os.WIFEXITED(status)
    assert "forked" in reported and "CudaError" in reported
    assert torch.equal(torch.cat([b for (b,) in iterator]), torch.from_numpy(data[100:]))


def test_device_argument_errors():
    with pytest.raises(ValueError, match="CUDA device"):
        pyloader.DataLoader(pyloader.ArrayDataset(np.zeros(4)), device="cpu")
    with pytest.raises(ValueError, match="CUDA device"):
        pyloader.DataLoader(pyloader.ArrayDataset(np.zeros(4)), device="not a device")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pyloader.DataLoader(pyloader.ArrayDataset(np.zeros(4)), device="cuda")


def test_pin_memory_without_cuda_warns_as_torch_does():
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine pins")
    data = np.arange(100, dtype=np.float32)
    with pytest.warns(UserWarning, match="no accelerator is found"):
        batches = list(pyloader.DataLoader(pyloader.ArrayDataset(data), batch_size=10, pin_memory=True))
    assert torch.equal(torch.cat([b for (b,) in batches]), torch.from_numpy(data))


def test_cuda_without_index_follows_local_rank_when_that_device_exists(monkeypatch):
    from pyloader._native import staging as _staging

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setenv("LOCAL_RANK", "2")
    cuda = torch.device("cuda")
    assert _staging.device_index(cuda) == torch.device("cuda", 2)
    monkeypatch.setenv("LOCAL_RANK", "5")  # each rank sees fewer GPUs than ranks
    assert _staging.device_index(cuda) == torch.device("cuda", 0)
    monkeypatch.delenv("LOCAL_RANK")
    assert _staging.device_index(cuda) == torch.device("cuda", 0)
    assert _staging.device_index(torch.device("cuda", 3)) == torch.device("cuda", 3)


def test_missing_driver_is_a_clear_error(tmp_path):
    with pytest.raises(_core.CudaError, match="cannot load the CUDA driver"):
        _core.DeviceCopier(str(tmp_path / "libcuda.so.1"), 0, 0)


def test_pipeline_supplies_stay_bounded():
    data = np.arange(50000 * 8, dtype=np.float32).reshape(50000, 8)
    pipeline = _core.BatchPipeline([data], _core.ThreadPool(2), 6)
    allocated = 0

    def allocate(nbytes):
        nonlocal allocated
        allocated += 1
        return torch.empty(nbytes, dtype=torch.uint8)

    pipeline.set_staging(allocate)
    order = _core.IndexOrder.shuffled(50000, 4)
    pipeline.schedule_positions(order, 0, 50000, 500)
    expected = data[np.array(order.take(0, 50000))]
    delivered = 0
    while True:
        try:
            (batch,) = pipeline.next()
        except StopIteration:
            break
        staged = batch.base
        start = batch.ctypes.data - staged.address
        in_block = staged.host[start : start + batch.nbytes].view(torch.float32).view(batch.shape)
        assert np.array_equal(in_block.numpy(), expected[delivered * 500 : (delivered + 1) * 500])
        delivered += 1
        # One per batch the pipeline may hold, plus one.
        assert pipeline.supplied_blocks <= 6 + 1
    assert delivered == 100
    assert allocated <= 100 + 7
    pipeline.close()
    assert pipeline.supplied_blocks == 0


def test_batches_of_varying_size_each_get_a_device_block(stand_in_cuda):
    # Padded batches change size from batch to batch: one that no supplied block fits
    # is copied when due, into a block no gather thread can take first.
    rng = np.random.default_rng(0)
    for trial in range(25):
        lengths = rng.integers(0, 200, 1500)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        values = rng.integers(0, 1000, offsets[-1]).astype(np.int64)
        dataset = pyloader.RaggedDataset(values, offsets)
        options = dict(batch_size=8, shuffle=True, collate_fn=pyloader.PadCollate(), num_threads=8)
        ours = pyloader.DataLoader(dataset, generator=torch.Generator().manual_seed(trial), device=DEVICE, **options)
        cpu = pyloader.DataLoader(dataset, generator=torch.Generator().manual_seed(trial), **options)
        for a, b in zip(ours, cpu, strict=True):
            assert_batches_equal(a, b)


def test_the_callers_current_context_is_left_as_it_was(stand_in_cuda):
    import ctypes

    driver = ctypes.CDLL(stand_in_cuda.path)
    mine = ctypes.create_string_buffer(8)  # stands for another context, e.g. torch's current device's
    driver.cuCtxSetCurrent(ctypes.cast(mine, ctypes.c_void_p))
    current = ctypes.c_void_p()
    try:
        data = np.arange(3000 * 4, dtype=np.float32).reshape(3000, 4)
        loader = pyloader.DataLoader(pyloader.ArrayDataset(data), batch_size=100, device=DEVICE)
        for _ in loader:
            driver.cuCtxGetCurrent(ctypes.byref(current))
            assert current.value == ctypes.addressof(mine)
    finally:
        driver.cuCtxSetCurrent(None)


def test_fences_in_a_forked_child_count_as_done(stand_in_cuda):
    copier = _core.DeviceCopier(stand_in_cuda.path, 0, 0)
    source, target = torch.arange(1000, dtype=torch.int32), torch.zeros(1000, dtype=torch.int32)
    fence = copier.copy(target.data_ptr(), source.data_ptr(), 4000)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fence.wait()
            code = 0 if fence.done() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    fence.wait()
    assert torch.equal(source, target)


def test_cuda_in_a_forked_child_is_a_clear_error(monkeypatch):
    # torch reports a child forked after CUDA was initialised as a "bad fork"; staging
    # there names the cause and the way out instead of warning about pinned memory.
    from pyloader._native import staging as _staging

    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: True)
    with pytest.raises(RuntimeError, match="forked after CUDA was initialised.*spawn"):
        _staging.CudaBackend(torch.device("cuda", 0), copies=False)


def test_each_loader_copies_on_a_stream_of_its_own(stand_in_cuda):
    # Not one of the pool torch.cuda.Stream() hands out, which other components share.
    data = np.arange(1000, dtype=np.int64)
    created = stand_in_cuda.streams_created()
    first = pyloader.DataLoader(pyloader.ArrayDataset(data), batch_size=100, device=DEVICE)
    second = pyloader.DataLoader(pyloader.ArrayDataset(data), batch_size=100, device=DEVICE)
    for loader in (first, second):
        list(loader)
    streams = {loader._staging.get(loader).backend.device_staging.copier.stream for loader in (first, second)}
    assert len(streams) == 2 and 0 not in streams
    assert stand_in_cuda.streams_created() - created == 2


def test_host_waits_on_fences_sleep_instead_of_spinning(stand_in_cuda):
    spinning = stand_in_cuda.spinning_events()
    data = np.arange(20000, dtype=np.int64)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(data), batch_size=100, shuffle=True, device=DEVICE)
    for _ in range(2):
        list(loader)
    assert stand_in_cuda.spinning_events() == spinning  # every event blocking-sync


def test_a_copy_that_cannot_be_fenced_is_finished_before_its_blocks_go(stand_in_cuda):
    # The event after a copy fails to record while the copy is still queued (each
    # waits up to 20 ms): its blocks may only be reused once it has run, so the copy
    # stream is drained before the error is reported and the blocks go back.
    stand_in_cuda.configure(delay_us=20000)
    data = np.arange(64 * 4096, dtype=np.int64).reshape(64, 4096)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(data), batch_size=8, device=DEVICE)
    syncs = stand_in_cuda.stream_syncs()
    stand_in_cuda.fail_record(1)
    with pytest.raises(_core.CudaError, match="cuEventRecord failed"):
        for _ in loader:
            pass
    assert stand_in_cuda.stream_syncs() == syncs + 1
    stand_in_cuda.configure(delay_us=0)
    assert torch.equal(torch.cat([b for (b,) in loader]), torch.from_numpy(data))


def test_device_without_index_is_resolved_when_iteration_starts(stand_in_cuda, monkeypatch):
    # SLURM and MPI launchers call torch.cuda.set_device(rank) after building loaders;
    # building one neither initialises CUDA nor asks for the current device.
    from pyloader._native import staging as _staging

    opened = []

    def open_backend(device, copies):
        opened.append(device)
        return _staging.CudaBackend.__new__(_staging.CudaBackend)  # not started: nothing runs here

    monkeypatch.setattr(_staging, "open_backend", open_backend)
    monkeypatch.delenv("LOCAL_RANK", raising=False)

    def not_yet():
        raise AssertionError("the current device was asked for while building the loader")

    monkeypatch.setattr(torch.cuda, "current_device", not_yet)
    monkeypatch.setattr(torch.cuda, "init", not_yet)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(np.arange(10)), batch_size=5, device="cuda")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)  # set_device(1), after building
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    staging = loader._staging.get(loader)  # as iteration starts
    assert staging.device == torch.device("cuda", 1) and opened == [torch.device("cuda", 1)]


def test_a_warning_raised_as_an_error_loses_no_batch(stand_in_cuda):
    # The pinning-failure warning comes from next(); under warnings-as-errors it must
    # leave the batch that was due first in line, not take it with it.
    import warnings

    stand_in_cuda.fail_pinning(True)
    data = np.arange(1000, dtype=np.int64)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(data), batch_size=100, device=DEVICE)
    iterator = iter(loader)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(RuntimeWarning, match="pinned memory could not be allocated"):
            next(iterator)
    assert torch.equal(torch.cat([b for (b,) in iterator]), torch.from_numpy(data))
    assert loader.state_dict()["batches_yielded"] == 10
