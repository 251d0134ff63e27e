"""`python -m pyloader inspect` and `bench`: the numbers printed against the files written.

Most tests call `pyloader._cli.main` in-process (fast); one runs the real `python -m
pyloader` in a subprocess from a scratch directory, so that the source tree cannot shadow
the installed package and the entry point itself is exercised. Bench runs are tiny and
check the form of the report, never timings.
"""

import argparse
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyloader import _cli

from megatron_files import write_corrupted, write_megatron


def run(capsys, *argv):
    status = _cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def blocks(out):
    """{path: {key: value}} from inspect's output."""
    parsed = {}
    for block in out.strip().split("\n\n"):
        first, *rest = block.splitlines()
        parsed[first] = dict(line.strip().split(": ", 1) for line in rest)
    return parsed


@pytest.fixture
def shards(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    rows = [10, 11, 12]
    for k, count in enumerate(rows):
        np.save(folder / f"part-{k}.npy", np.full((count, 4), k, dtype=np.int16))
    return folder, rows


def megatron_documents():
    rng = np.random.default_rng(7)
    return [
        [rng.integers(0, 60000, int(rng.integers(1, 40))) for _ in range(int(rng.integers(1, 4)))] for _ in range(9)
    ]


def test_inspect_array(tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((37, 3, 2), dtype=np.float32))
    status, out, err = run(capsys, "inspect", str(path))
    assert (status, err) == (0, "")
    info = blocks(out)[str(path)]
    assert info["kind"] == "array"
    assert info["dtype"] == "float32"
    assert info["rows"] == "37"
    assert info["row shape"] == "(3, 2)"
    assert info["size"].startswith(f"{os.path.getsize(path)} bytes (")
    assert info["files"] == "1"


def test_inspect_shards_by_glob_and_directory(shards, capsys):
    folder, rows = shards
    pattern = str(folder / "part-*.npy")
    status, out, err = run(capsys, "inspect", pattern, str(folder))
    assert (status, err) == (0, "")
    size = sum(os.path.getsize(folder / name) for name in os.listdir(folder))
    for path in (pattern, str(folder)):
        info = blocks(out)[path]
        assert info["kind"] == "shards"
        assert (info["dtype"], info["rows"], info["row shape"]) == ("int16", str(sum(rows)), "(4,)")
        assert info["files"] == "3"
        assert info["size"].startswith(f"{size} bytes")


def test_inspect_raw_tokens(tmp_path, capsys):
    path = tmp_path / "train.bin"
    np.arange(1001, dtype=np.uint16).tofile(path)
    status, out, err = run(capsys, "inspect", str(path), "--token-dtype", "uint16")
    assert (status, err) == (0, "")
    info = blocks(out)[str(path)]
    assert (info["kind"], info["dtype"], info["tokens"]) == ("tokens", "uint16", "1001")
    assert info["size"] == "2002 bytes (2.0 KiB)"

    # 2002 bytes are not a whole number of uint32 tokens.
    status, out, err = run(capsys, "inspect", str(path), "--token-dtype", "uint32")
    assert status == 2 and out == ""
    assert "2002 bytes" in err and "uint32" in err

    status, out, err = run(capsys, "inspect", str(path))
    assert status == 2 and "--token-dtype" in err


def test_inspect_megatron(tmp_path, capsys):
    documents = megatron_documents()
    prefix = write_megatron(tmp_path / "corpus_text_document", documents, np.uint16)
    lengths = [len(sequence) for document in documents for sequence in document]
    status, out, err = run(capsys, "inspect", prefix, prefix + ".bin", prefix + ".idx")
    assert (status, err) == (0, "")
    parsed = blocks(out)
    assert len(parsed) == 3
    size = os.path.getsize(prefix + ".bin") + os.path.getsize(prefix + ".idx")
    for info in parsed.values():
        assert (info["kind"], info["dtype"]) == ("megatron", "uint16")
        assert info["tokens"] == str(sum(lengths))
        assert info["sequences"] == str(len(lengths))
        assert info["documents"] == str(len(documents))
        assert info["sequence length"] == (f"min {min(lengths)}, mean {np.mean(lengths):.1f}, max {max(lengths)}")
        assert info["size"].startswith(f"{size} bytes")
        assert info["files"] == "2"


def test_inspect_megatron_without_sequences(tmp_path, capsys):
    prefix = write_megatron(tmp_path / "empty", [], np.int32)
    status, out, _ = run(capsys, "inspect", prefix)
    info = blocks(out)[prefix]
    assert status == 0
    assert (info["dtype"], info["tokens"], info["sequences"], info["documents"]) == ("int32", "0", "0", "0")


@pytest.mark.parametrize(
    "make", ["missing", "not_npy", "truncated_npy", "truncated_idx", "empty_dir", "no_glob_match", "mismatched_shards"]
)
def test_inspect_unreadable_path_is_one_line_and_status_2(tmp_path, capsys, make):
    if make == "missing":
        path = tmp_path / "nope.npy"
    elif make == "not_npy":
        path = tmp_path / "junk.npy"
        path.write_bytes(b"not an npy file at all")
    elif make == "truncated_npy":
        path = tmp_path / "cut.npy"
        np.save(path, np.zeros((100, 8)))
        path.write_bytes(path.read_bytes()[:-16])
    elif make == "truncated_idx":
        path = tmp_path / "cut"
        write_corrupted(path, megatron_documents(), np.uint16, idx_cut=3)
    elif make == "empty_dir":
        path = tmp_path / "empty"
        path.mkdir()
    elif make == "no_glob_match":
        path = tmp_path / "none-*.npy"
    else:
        np.save(tmp_path / "a-0.npy", np.zeros((3, 4), np.float32))
        np.save(tmp_path / "a-1.npy", np.zeros((3, 5), np.float32))
        path = tmp_path / "a-*.npy"
    status, out, err = run(capsys, "inspect", str(path))
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("python -m pyloader inspect: error: ")
    assert "Traceback" not in err


def test_inspect_reports_good_paths_even_when_one_is_bad(tmp_path, capsys):
    good = tmp_path / "good.npy"
    np.save(good, np.zeros(5, np.int8))
    status, out, err = run(capsys, "inspect", str(tmp_path / "bad.npy"), str(good))
    assert status == 2
    assert blocks(out)[str(good)]["rows"] == "5"
    assert "bad.npy" in err and err.count("\n") == 1


def test_bad_command_lines_exit_2(capsys):
    for argv in ([], ["inspect"], ["inspect", "x", "--token-dtype", "float7"], ["frobnicate"]):
        with pytest.raises(SystemExit) as exited:
            _cli.main(argv)
        assert exited.value.code == 2, argv
    capsys.readouterr()


def test_python_dash_m_from_another_directory(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((6, 2), np.float64))
    done = subprocess.run(
        [sys.executable, "-m", "pyloader", "inspect", "good.npy", "missing.npy"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    info = blocks(done.stdout)["good.npy"]
    assert (info["kind"], info["dtype"], info["rows"], info["row shape"]) == ("array", "float64", "6", "(2,)")
    assert done.stderr.count("\n") == 1 and "missing.npy" in done.stderr
    assert "Traceback" not in done.stderr


def ratio_lines(out, case, workers):
    # The ratios' values are timings of a few tiny batches: only their form is checked
    # (under load one rounds to 0.0x).
    found = re.findall(rf"^ratio {case}: pyloader / torch DataLoader w(\d+) = (\d+\.\d)x$", out, re.M)
    assert [int(k) for k, _ in found] == workers, out
    assert re.search(r"^  pyloader DataLoader .* samples/s$", out, re.M), out
    for k in workers:
        assert re.search(rf"^  torch DataLoader w{k} .* samples/s$", out, re.M), out


def test_bench_arrays(tmp_path, shards, capsys):
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, np.random.default_rng(0).random((600, 8), dtype=np.float32))
    np.save(y, np.arange(600))
    status, out, err = run(capsys, "bench", str(x), str(y), "--batches", "3", "--rounds", "1", "--workers", "0")
    assert (status, err) == (0, "")
    assert "batch size 256, shuffled" in out
    ratio_lines(out, "array", [0])

    folder, _ = shards
    options = "--batch-size 8 --batches 3 --rounds 1 --workers 0 1 --no-shuffle"
    status, out, err = run(capsys, "bench", str(folder), *options.split())
    assert (status, err) == (0, "")
    assert "batch size 8, in order" in out
    ratio_lines(out, "shards", [0, 1])


def test_bench_tokens_and_megatron(tmp_path, capsys):
    raw = tmp_path / "train.bin"
    np.arange(5000, dtype=np.uint16).tofile(raw)
    options = "--token-dtype uint16 --block-size 16 --batches 3 --rounds 1 --workers 0"
    status, out, err = run(capsys, "bench", str(raw), *options.split())
    assert (status, err) == (0, "")
    assert "5000 uint16 tokens" in out and "batch size 32" in out
    ratio_lines(out, "tokens", [0])

    prefix = write_megatron(tmp_path / "corpus", megatron_documents(), np.uint16)
    status, out, err = run(
        capsys, "bench", prefix, "--block-size", "8", "--batches", "3", "--rounds", "1", "--workers", "0"
    )
    assert (status, err) == (0, "")
    ratio_lines(out, "megatron", [0])


def test_bench_errors_exit_2(tmp_path, capsys):
    raw = tmp_path / "short.bin"
    np.arange(100, dtype=np.uint16).tofile(raw)
    # The default block of 1024 tokens does not fit in 100.
    status, out, err = run(capsys, "bench", str(raw), "--token-dtype", "uint16")
    assert status == 2 and "1025" in err and err.count("\n") == 1
    status, _, err = run(capsys, "bench", str(tmp_path / "absent.npy"))
    assert status == 2 and "absent.npy" in err
    status, _, err = run(capsys, "bench", str(raw), "--token-dtype", "uint16", "--batches", "0")
    assert status == 2 and "--batches" in err


def case_for(paths, **options):
    arguments = argparse.Namespace(
        paths=[str(p) for p in paths], token_dtype=None, tokens=False, batch_size=None, block_size=1024
    )
    vars(arguments).update(options)
    return _cli.build_case(arguments)


def assert_same_samples(case):
    ours, theirs = case.pyloader_dataset, case.torch_dataset
    assert len(ours) == len(theirs)
    for i in range(len(ours)):
        for a, b in zip(ours[i], theirs[i], strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b), i


def test_torch_baselines_serve_the_same_samples(tmp_path, shards):
    """A ratio means something only if both contenders load the same thing."""
    folder, rows = shards
    labels = tmp_path / "labels.npy"
    np.save(labels, np.arange(sum(rows), dtype=np.int32))
    assert_same_samples(case_for([folder, labels]))

    rng = np.random.default_rng(3)
    first, second = tmp_path / "t0.bin", tmp_path / "t1.bin"
    rng.integers(0, 65535, 333).astype(np.uint16).tofile(first)
    rng.integers(0, 65535, 170).astype(np.uint16).tofile(second)
    case = case_for([first, second], token_dtype="uint16", block_size=16)
    assert case.batch_size == 32
    assert_same_samples(case)

    stream = tmp_path / "stream.npy"
    np.save(stream, rng.integers(0, 1000, 400).astype(np.int32))
    assert_same_samples(case_for([stream], tokens=True, block_size=10))

    prefix = write_megatron(tmp_path / "corpus", megatron_documents(), np.uint16)
    case = case_for([prefix], block_size=8)
    assert case.name == "megatron"
    assert_same_samples(case)

    # Workers started by spawn get the dataset pickled: paths, not the mapped contents.
    copy = pickle.loads(pickle.dumps(case.torch_dataset))
    assert copy._maps is None
    assert torch.equal(copy[3][0], case.torch_dataset[3][0])


def test_human_bytes():
    assert _cli.human_bytes(0) == "0 B"
    assert _cli.human_bytes(1023) == "1023 B"
    assert _cli.human_bytes(1536) == "1.5 KiB"
    assert _cli.human_bytes(5 * 1024**3) == "5.0 GiB"
    assert _cli.human_bytes(3 * 1024**5) == "3072.0 TiB"


def test_inspect_and_bench_arrow_files_and_saved_datasets(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    rng = np.random.default_rng(5)
    ids = [rng.integers(0, 1000, rng.integers(1, 30)).astype(np.int32).tolist() for _ in range(300)]
    table = pa.Table.from_pydict(
        {"ids": pa.array(ids, pa.list_(pa.int32())), "label": np.arange(300), "text": ["x"] * 300}
    )
    folder = tmp_path / "saved"
    datasets.Dataset(table).save_to_disk(str(folder), num_shards=2)
    status, out, err = run(capsys, "inspect", str(folder))
    assert (status, err) == (0, "")
    described = blocks(out)[str(folder)]
    assert described["kind"] == "arrow" and described["rows"] == "300" and described["files"] == "2"
    assert described["column ids"] == "list<item: int32>"
    assert described["column text"] == "string (torch path only)"

    case = case_for([folder])
    assert case.name == "arrow" and case.batch_size == 64 and isinstance(case.collate_fn, _cli_pad_collate())
    ours, theirs = case.pyloader_dataset, case.torch_dataset
    for i in (0, 150, 299):
        assert list(ours[i]) == list(theirs[i]) == ["ids", "label"]
        for name in ("ids", "label"):
            assert ours[i][name].dtype == theirs[i][name].dtype and torch.equal(ours[i][name], theirs[i][name])
    status, out, err = run(capsys, "bench", str(folder), "--batches", "3", "--rounds", "1", "--workers", "0")
    assert (status, err) == (0, "")
    ratio_lines(out, "arrow", [0])

    noise = tmp_path / "noise.arrow"
    noise.write_bytes(b"\x00" * 100)
    status, _, err = run(capsys, "inspect", str(noise))
    assert status == 2 and "noise.arrow" in err and err.count("\n") == 1


def _cli_pad_collate():
    import pyloader

    return pyloader.PadCollate
