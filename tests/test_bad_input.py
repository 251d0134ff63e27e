"""Bad input gets a clear Python exception, never a crash or silent corruption."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import pyloader


def test_unequal_lengths():
    with pytest.raises(ValueError, match="same length.*#0: 10.*#1: 9"):
        pyloader.ArrayDataset(np.zeros((10, 2)), np.zeros(9))


def test_mixed_positional_and_named_or_nothing():
    with pytest.raises(ValueError, match="either positionally or by name"):
        pyloader.ArrayDataset(np.zeros(3), y=np.zeros(3))
    with pytest.raises(ValueError, match="at least one"):
        pyloader.ArrayDataset()


@pytest.mark.parametrize(
    "array",
    [
        np.array([object(), 1], dtype=object),
        np.array(["ab", "c"]),
        np.array([b"ab", b"c"]),
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        np.zeros(4, dtype=[("a", "f4"), ("b", "i4")]),
    ],
)
def test_unsupported_dtypes(array):
    with pytest.raises(TypeError, match="dtype"):
        pyloader.ArrayDataset(array)


def test_non_native_byte_order():
    with pytest.raises(TypeError, match="byte order"):
        pyloader.ArrayDataset(np.zeros(4, dtype=">f4"))


def test_not_an_array():
    with pytest.raises(TypeError, match="numpy array"):
        pyloader.ArrayDataset([1, 2, 3])
    with pytest.raises(ValueError, match="0-d"):
        pyloader.ArrayDataset(np.array(3.0))


def test_non_contiguous_rows_are_refused_clearly():
    fortran = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(4, 3))
    with pytest.raises(ValueError, match="not contiguous.*ascontiguousarray"):
        pyloader.ArrayDataset(fortran)
    with pytest.raises(ValueError, match="not contiguous"):
        pyloader.ArrayDataset(np.zeros((5, 6))[:, ::2])
    with pytest.raises(ValueError, match="not contiguous"):
        pyloader.ArrayDataset(torch.zeros(5, 6).t())
    # A Fortran-ordered 1-D array and a column vector are contiguous per row: accepted.
    pyloader.ArrayDataset(np.asfortranarray(np.zeros((5, 1))))


def test_non_contiguous_tensor_dataset_falls_back_to_torch():
    x = torch.arange(24.0).reshape(4, 6).t()  # rows are strided
    ds = tud.TensorDataset(x)
    loader = pyloader.DataLoader(ds, batch_size=2)
    assert not loader.uses_native_path
    assert [b[0].tolist() for b in loader] == [b[0].tolist() for b in tud.DataLoader(ds, batch_size=2)]


def test_gpu_or_sparse_tensors_are_refused():
    with pytest.raises(ValueError, match="sparse|layout"):
        pyloader.ArrayDataset(torch.eye(3).to_sparse())


def test_missing_npy():
    with pytest.raises(FileNotFoundError):
        pyloader.ArrayDataset("/nonexistent/features.npy")


def test_truncated_npy(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(1000, dtype=np.float64))
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) - 100)
    with pytest.raises(ValueError, match="x.npy"):
        pyloader.ArrayDataset(path)


@pytest.mark.parametrize("content", [b"", b"not a numpy file at all", b"\x93NUMPY\x01\x00garbage"])
def test_corrupt_npy(tmp_path, content):
    path = tmp_path / "bad.npy"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.npy"):
        pyloader.ArrayDataset(path)


def test_pickled_object_npy_is_refused(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="objects.npy"):
        pyloader.ArrayDataset(path)


def test_file_truncated_while_mapped_raises_instead_of_crashing(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.ones((4096, 64), dtype=np.float32))
    loader = pyloader.DataLoader(pyloader.ArrayDataset(path), batch_size=64)
    assert len(list(loader)) == 64
    with open(path, "r+b") as handle:
        handle.truncate(4096)
    with pytest.raises(OSError, match="shrank"):
        list(loader)


@pytest.mark.parametrize("bad_index", [10, -11, 2**40])
def test_out_of_range_sampler_index_raises_index_error_at_its_batch(bad_index):
    x = np.arange(10)
    sampler = [0, 1, 2, 3, bad_index, 5]
    ours = iter(pyloader.DataLoader(pyloader.ArrayDataset(x), batch_size=2, sampler=sampler))
    theirs = iter(tud.DataLoader(tud.TensorDataset(torch.from_numpy(x)), batch_size=2, sampler=sampler))
    assert next(ours)[0].tolist() == next(theirs)[0].tolist() == [0, 1]
    assert next(ours)[0].tolist() == [2, 3]
    with pytest.raises(IndexError, match="out of range"):
        next(ours)


def test_non_integer_sampler_indices_raise_index_error_like_torch():
    x = np.arange(10)
    with pytest.raises(IndexError):
        list(tud.DataLoader(tud.TensorDataset(torch.from_numpy(x)), batch_size=2, sampler=[0.5, 1.0]))
    with pytest.raises(IndexError):
        list(pyloader.DataLoader(pyloader.ArrayDataset(x), batch_size=2, sampler=[0.5, 1.0]))
    with pytest.raises(IndexError):
        pyloader.ArrayDataset(x)[1.5]


def test_sampler_exception_keeps_type_and_traceback():
    class Broken(tud.Sampler):
        def __init__(self):
            pass

        def __len__(self):
            return 10

        def __iter__(self):
            yield 0
            yield 1
            raise KeyError("sampler broke")

    loader = pyloader.DataLoader(pyloader.ArrayDataset(np.arange(10)), batch_size=1, sampler=Broken())
    iterator = iter(loader)
    assert next(iterator)[0].item() == 0
    assert next(iterator)[0].item() == 1
    with pytest.raises(KeyError, match="sampler broke") as info:
        next(iterator)
    assert any(entry.name == "__iter__" for entry in info.traceback)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_getitem_and_collate_exceptions_keep_their_type(num_workers):
    class Flaky(tud.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, index):
            if index == 5:
                raise ZeroDivisionError("bad sample 5")
            return index

    def collate(batch):
        raise LookupError("collate failed")

    for loader, error, message in (
        (pyloader.DataLoader(Flaky(), batch_size=2, num_workers=num_workers), ZeroDivisionError, "bad sample 5"),
        (
            pyloader.DataLoader(
                pyloader.ArrayDataset(np.arange(8)),
                batch_size=2,
                collate_fn=collate,
                num_workers=num_workers,
                native=False,
            ),
            LookupError,
            "collate failed",
        ),
    ):
        iterator = iter(loader)
        with pytest.raises(error, match=message):
            for _ in iterator:
                pass
        # Shut worker processes down now: left to garbage collection after a worker
        # error, torch's teardown waits out its 5-second join timeout per worker.
        getattr(iterator, "_shutdown_workers", lambda: None)()


def test_argument_errors_match_torch():
    ds = pyloader.ArrayDataset(np.arange(10))
    cases = [
        dict(batch_size=2, batch_sampler=[[0]]),
        dict(shuffle=True, sampler=[0, 1]),
        dict(num_workers=-1),
        dict(timeout=-1),
        dict(prefetch_factor=2),
        dict(persistent_workers=True),
        dict(batch_size=None, drop_last=True),
        dict(shuffle=True, batch_sampler=[[0]]),
    ]
    for kwargs in cases:
        with pytest.raises(ValueError) as theirs:
            tud.DataLoader(ds, **kwargs)
        with pytest.raises(ValueError) as ours:
            pyloader.DataLoader(ds, **kwargs)
        assert str(ours.value) == str(theirs.value), kwargs


def test_pyloader_option_errors():
    ds = pyloader.ArrayDataset(np.arange(10))
    for threads in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_threads"):
            pyloader.DataLoader(ds, num_threads=threads)
    with pytest.raises(ValueError, match="native"):
        pyloader.DataLoader(ds, native="yes")


def test_pin_memory_without_accelerator_warns_like_torch():
    if torch.accelerator.is_available():
        pytest.skip("an accelerator is present")
    ds = pyloader.ArrayDataset(np.arange(10))
    with pytest.warns(UserWarning, match="no accelerator is found"):
        batches = list(pyloader.DataLoader(ds, batch_size=5, pin_memory=True))
    assert [b[0].tolist() for b in batches] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def _truncate_mid_epoch_expecting_sigbus_error(path):
    """Starts an epoch over `path`, truncates the file, and expects the guard's error;
    the failed batch counts as passed, as torch's iterator counts a failed batch, so a
    state taken then resumes after it."""
    loader = pyloader.DataLoader(pyloader.ArrayDataset(path), batch_size=64)
    iterator = iter(loader)
    next(iterator)
    delivered = 1
    with open(path, "r+b") as handle:
        handle.truncate(4096)
    with pytest.raises(OSError, match="SIGBUS"):
        for _ in iterator:
            delivered += 1
    assert loader.state_dict()["batches_yielded"] == delivered + 1


@pytest.fixture
def mapped_16mib_file(tmp_path, monkeypatch):
    import pyloader._native.iterator as native

    monkeypatch.setattr(native, "_FILE_CHECK_INTERVAL_S", 1e9)  # only the first size check runs
    path = tmp_path / "x.npy"
    np.save(path, np.ones((1 << 16, 64), dtype=np.float32))  # far more than is prefetched
    return path


def test_truncation_between_checks_is_caught_by_the_sigbus_guard(mapped_16mib_file):
    _truncate_mid_epoch_expecting_sigbus_error(mapped_16mib_file)


@pytest.mark.parametrize("sampler", [[np.uint64(2**63 + 5)], np.array([2**63 + 5], dtype=np.uint64), [True], [1.5]])
def test_unrepresentable_or_non_integer_indices_raise_index_error(sampler):
    loader = pyloader.DataLoader(pyloader.ArrayDataset(np.arange(10)), batch_size=1, sampler=sampler)
    with pytest.raises(IndexError):
        list(loader)


def test_sigbus_guard_survives_faulthandler_being_reenabled(mapped_16mib_file):
    import faulthandler

    list(pyloader.DataLoader(pyloader.ArrayDataset(mapped_16mib_file), batch_size=4096))  # handler installed
    was_enabled = faulthandler.is_enabled()
    faulthandler.enable()  # replaces the SIGBUS handler
    try:
        _truncate_mid_epoch_expecting_sigbus_error(mapped_16mib_file)
    finally:
        if not was_enabled:
            faulthandler.disable()


_SIGBUS_SCRIPT_PREAMBLE = """
import faulthandler, sys
import numpy as np
import pyloader, pyloader._native.iterator as native
native._FILE_CHECK_INTERVAL_S = 1e9  # only the first size check runs: reads reach the pages
path = sys.argv[1]
np.save(path, np.ones((1 << 16, 64), dtype=np.float32))
def truncate():
    with open(path, "r+b") as handle:
        handle.truncate(4096)
"""


def _run_sigbus_script(tmp_path, body):
    script = _SIGBUS_SCRIPT_PREAMBLE + textwrap.dedent(body)
    # cwd away from the source tree, which `-c` would put first on sys.path
    return subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


_LOAD = "list(pyloader.DataLoader(pyloader.ArrayDataset(path), batch_size=4096))"


@pytest.mark.parametrize(
    "installs",
    [
        # the guard, faulthandler over it, the guard again (faulthandler now hands faults
        # back to the guard, which hands them to faulthandler: a cycle to be broken)
        ["faulthandler.disable()", _LOAD, "faulthandler.enable()", _LOAD],
        # faulthandler first (as pytest runs), then loaders
        ["faulthandler.enable()", _LOAD, _LOAD],
        ["faulthandler.enable()", _LOAD, "faulthandler.disable()", "faulthandler.enable()", _LOAD],
    ],
)
def test_unguarded_fault_is_reported_once_and_ends_the_process(tmp_path, installs):
    # A fault outside any guarded copy must reach faulthandler exactly once and end
    # the process by SIGBUS, however the handlers were stacked.
    result = _run_sigbus_script(
        tmp_path,
        "\n".join(installs)
        + textwrap.dedent("""
        mapped = np.load(path, mmap_mode="r")
        truncate()
        print(float(mapped[-1].sum()))  # numpy reads a page past the end: not guarded
    """),
    )
    assert result.returncode == -signal.SIGBUS, (result.returncode, result.stderr)
    assert result.stderr.count("Fatal Python error: Bus error") == 1, result.stderr


def test_unguarded_fault_without_faulthandler_ends_the_process_by_sigbus(tmp_path):
    result = _run_sigbus_script(
        tmp_path,
        """
        faulthandler.disable()
        list(pyloader.DataLoader(pyloader.ArrayDataset(path), batch_size=4096))
        mapped = np.load(path, mmap_mode="r")
        truncate()
        print(float(mapped[-1].sum()))
    """,
    )
    assert result.returncode == -signal.SIGBUS, (result.returncode, result.stderr)


def test_guarded_faults_never_reach_faulthandler(tmp_path):
    result = _run_sigbus_script(
        tmp_path,
        """
        faulthandler.enable()
        for attempt in range(3):
            np.save(path, np.ones((1 << 16, 64), dtype=np.float32))
            iterator = iter(pyloader.DataLoader(pyloader.ArrayDataset(path), batch_size=64))
            next(iterator)
            truncate()
            try:
                for _ in iterator:
                    pass
            except OSError as error:
                assert "SIGBUS" in str(error), error
            else:
                raise SystemExit("no error")
        print("ok")
    """,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    assert "Fatal Python error" not in result.stderr, result.stderr


def test_batches_beyond_the_row_limit_are_refused():
    from pyloader import _core

    pipeline = _core.BatchPipeline([np.zeros(4, dtype=np.uint8)], _core.ThreadPool(1), 2)
    with pytest.raises(ValueError, match="larger than"):
        pipeline.schedule_positions(_core.IndexOrder.sequential(4), 0, 4, 1 << 32)
