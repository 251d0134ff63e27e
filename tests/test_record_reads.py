"""Variable-length records (RaggedDataset, Records columns, Megatron files) and token
windows read from their files explicitly: the same bytes as the mapping gives, cold,
sharded, under Subsets, ranks and resume; a values file that shrinks is an OSError
naming it."""

import gc

import numpy as np
import pytest
import torch

import pyloader
from pyloader import _core

from conftest import assert_shrinking_file_raises_oserror, evict

RECORDS = 3000


def write_records(directory, name, records, seed, dtype=np.uint16, max_length=400):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, max_length, size=records)
    lengths[::97] = 0  # empty records too
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = rng.integers(0, 30_000, size=int(offsets[-1])).astype(dtype)
    np.save(directory / f"{name}-values.npy", values)
    np.save(directory / f"{name}-offsets.npy", offsets)
    return str(directory / f"{name}-values.npy"), str(directory / f"{name}-offsets.npy")


def mapped(path):
    return np.load(path, mmap_mode="r")


def tensors(batch):
    """Every tensor of a batch, in a fixed order, whatever its structure."""
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, dict):
        return [t for key in sorted(batch) for t in tensors(batch[key])]
    if isinstance(batch, (list, tuple)):
        return [t for item in batch for t in tensors(item)]
    if hasattr(batch, "_fields") or hasattr(batch, "__dataclass_fields__"):
        return [t for value in vars(batch).values() for t in tensors(value)]
    return []


def epoch_and_reads(loader, evicted=()):
    """The epoch's batches and how many the pipeline read from files, files evicted first."""
    gc.collect()
    for path in evicted:
        evict(path)
    iterator = iter(loader)
    batches = [next(iterator) for _ in range(len(loader) - 1)]
    read = iterator._pipeline.explicitly_read_batches
    batches += list(iterator)
    return batches, read


def assert_batches_equal(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        ta, tb = tensors(a), tensors(b)
        assert len(ta) == len(tb) and ta
        for x, y in zip(ta, tb):
            assert x.dtype == y.dtype and torch.equal(x, y)


@pytest.fixture
def shards(tmp_path):
    return [write_records(tmp_path, f"shard{k}", RECORDS + 17 * k, seed=k) for k in range(2)]


@pytest.mark.parametrize("io", ["read", "auto"])
@pytest.mark.parametrize(
    "collate",
    [
        pyloader.PadCollate(padding_value=7),
        pyloader.PadCollate(
            padding_value=3, max_length=100, pad_to_multiple_of=8, padding_side="left", return_mask=True
        ),
    ],
    ids=["right", "left-truncated-masked"],
)
@pytest.mark.parametrize("dtype", [torch.int64, None])
def test_records_are_read_explicitly_with_the_mappings_bytes(shards, io, collate, dtype):
    def make(io):
        dataset = pyloader.RaggedDataset([mapped(v) for v, _ in shards], [mapped(o) for _, o in shards], dtype=dtype)
        return pyloader.DataLoader(
            dataset, batch_size=32, shuffle=True, collate_fn=collate, generator=torch.Generator().manual_seed(3), io=io
        )

    expected, read = epoch_and_reads(make("mmap"))
    assert read == 0
    got, read = epoch_and_reads(make(io), evicted=[v for v, _ in shards])
    assert read > 0  # cold records are read explicitly under io="auto" too
    assert_batches_equal(got, expected)


@pytest.mark.parametrize("kind", ["records and labels", "token windows", "megatron"])
def test_subsets_ranks_and_resume_read_the_mappings_bytes(shards, tmp_path, kind):
    from megatron_files import write_megatron

    values, offsets = shards[0]
    if kind == "records and labels":
        np.save(tmp_path / "labels.npy", np.arange(RECORDS, dtype=np.int64) * 3)
        files = [values]
        new_dataset = lambda: pyloader.ArrayDataset(
            tokens=pyloader.Records(mapped(values), mapped(offsets), dtype=torch.int64),
            label=mapped(str(tmp_path / "labels.npy")),
        )
    elif kind == "token windows":
        files = [str(tmp_path / "tokens.bin")]
        np.random.default_rng(5).integers(0, 50_000, 1 << 19, dtype=np.uint16).tofile(files[0])
        new_dataset = lambda: pyloader.TokenWindows(files[0], 1024, token_dtype=np.uint16)  # 2-KiB rows
    else:
        rng = np.random.default_rng(6)
        prefix = write_megatron(
            tmp_path / "corpus",
            [[rng.integers(0, 30_000, int(n)).astype(np.uint16)] for n in rng.integers(1, 300, 1500)],
        )
        files = [prefix + ".bin"]
        new_dataset = lambda: pyloader.MegatronDataset(prefix)
    collate = None if kind == "token windows" else pyloader.PadCollate()

    def make(io, rank=0, world=1, subset=False):
        dataset = new_dataset()
        if subset:
            dataset = torch.utils.data.Subset(dataset, list(range(5, len(dataset), 3)))
        sampler = pyloader.DistributedSampler(dataset, num_replicas=world, rank=rank, seed=4)
        return pyloader.DataLoader(dataset, batch_size=16, sampler=sampler, collate_fn=collate, io=io)

    for world in (1, 3):
        for rank in range(world):
            for subset in (False, True):
                expected, _ = epoch_and_reads(make("mmap", rank, world, subset))
                got, read = epoch_and_reads(make("read", rank, world, subset), evicted=files)
                assert read > 0
                assert_batches_equal(got, expected)

    # Resumed mid-epoch: the rest of the epoch, read explicitly, is what the mapping gives.
    loader = make("read", 1, 3)
    iterator = iter(loader)
    for _ in range(5):
        next(iterator)
    state = loader.state_dict()
    del iterator
    resumed = make("auto", 1, 3)
    resumed.load_state_dict(state)
    gc.collect()
    for file in files:
        evict(file)
    iterator = iter(resumed)
    rest = [next(iterator)]
    assert iterator._pipeline.explicitly_read_batches > 0  # the first batch itself was read
    rest += list(iterator)
    assert_batches_equal(rest, list(make("mmap", 1, 3))[5:])


def test_megatron_records_are_read_explicitly(tmp_path):
    from megatron_files import write_megatron

    rng = np.random.default_rng(9)
    documents = [
        [rng.integers(0, 30_000, int(n)).astype(np.uint16) for n in rng.integers(1, 300, 3)] for _ in range(400)
    ]
    prefix = write_megatron(tmp_path / "corpus", documents, np.uint16)
    for unit in ("sequence", "document"):
        make = lambda io, unit=unit: pyloader.DataLoader(
            pyloader.MegatronDataset(prefix, unit=unit),
            batch_size=16,
            shuffle=True,
            generator=torch.Generator().manual_seed(1),
            collate_fn=pyloader.PadCollate(),
            io=io,
        )
        expected, _ = epoch_and_reads(make("mmap"))
        got, read = epoch_and_reads(make("auto"), evicted=[prefix + ".bin"])
        assert read > 0
        assert_batches_equal(got, expected)


def test_packed_records_read_explicitly_equal_the_mapping(shards):
    values, offsets = shards[0]
    source = _core.RaggedSource(mapped(values), mapped(offsets))
    position = pyloader._native.columns.file_position(mapped(values))
    identity = pyloader._native.columns.file_identity(values)
    indices = list(np.random.default_rng(0).permutation(RECORDS)[:500])
    outputs = []
    for io, files in (("mmap", None), ("read", [[(*position, *identity)]])):
        pipeline = _core.BatchPipeline([source], _core.ThreadPool(2), 16, files=files, io=io, read_threads=8)
        for first in range(0, 500, 50):
            pipeline.enqueue_indices(indices[first : first + 50])
        outputs.append([tensors(pipeline.next()) for _ in range(10)])
        assert pipeline.explicitly_read_batches == (10 if io == "read" else 0)
        pipeline.close()
    for a, b in zip(*outputs):
        assert a and all(torch.equal(torch.as_tensor(x), torch.as_tensor(y)) for x, y in zip(a, b, strict=True))


def test_a_values_file_that_shrinks_under_explicit_reads_raises_oserror_naming_it(tmp_path):
    values, offsets = write_records(tmp_path, "shrinking", 20_000, seed=2)
    loader = pyloader.DataLoader(
        pyloader.RaggedDataset(mapped(values), mapped(offsets)),
        batch_size=64,
        shuffle=True,
        collate_fn=pyloader.PadCollate(),
        io="read",
    )
    assert_shrinking_file_raises_oserror(loader, values, 4096, "shrinking-values.npy")


def test_a_window_and_its_targets_are_read_once(tmp_path):
    # Inputs and targets (one token later) overlap in the file: each window's
    # block_size + 1 tokens are read once, then split and widened.
    path = str(tmp_path / "tokens.bin")
    np.random.default_rng(0).integers(0, 50_000, 1 << 20, dtype=np.uint16).tofile(path)
    block, batch = 1024, 8
    make = lambda io: pyloader.DataLoader(
        pyloader.TokenWindows(path, block, token_dtype=np.uint16),
        batch_size=batch,
        shuffle=True,
        io=io,
        generator=torch.Generator().manual_seed(0),
    )
    gc.collect()
    evict(path)
    iterator = iter(make("read"))
    got = list(iterator)
    windows = len(iterator._loader.dataset)
    assert iterator.stats().read_bytes == windows * (block + 1) * 2  # not 2 * block * 2
    for a, b in zip(got, make("mmap"), strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert torch.equal(a[0][:, 1:], a[1][:, :-1])


@pytest.mark.parametrize("io", ["auto", "read"])
def test_block_shuffle_over_windows_and_records(tmp_path, shards, io):
    # Blocks of windows are ranges of the token file (read ahead under io="auto", even
    # at stride 1 where windows overlap); blocks of records are read explicitly.
    path = str(tmp_path / "tokens.bin")
    np.random.default_rng(0).integers(0, 50_000, 1 << 19, dtype=np.uint16).tofile(path)
    values, offsets = shards[0]
    for new_dataset, collate, files in (
        (lambda: pyloader.TokenWindows(path, 256, stride=1, token_dtype=np.uint16), None, [path]),
        (lambda: pyloader.RaggedDataset(mapped(values), mapped(offsets)), pyloader.PadCollate(), [values]),
    ):

        def make(io, new_dataset=new_dataset, collate=collate):
            dataset = new_dataset()  # its own mappings: pages mapped by an earlier one are not evicted
            sampler = pyloader.BlockShuffleSampler(dataset, 64, 4, seed=2)
            return pyloader.DataLoader(dataset, batch_size=32, sampler=sampler, collate_fn=collate, io=io)

        expected, _ = epoch_and_reads(make("mmap"))
        assert len(expected) == len(make("mmap"))
        gc.collect()
        for file in files:
            evict(file)
        iterator = iter(make(io))
        got = [next(iterator) for _ in range(len(expected) - 1)]
        windows, read = iterator._pipeline.windows_read_ahead, iterator._pipeline.explicitly_read_batches
        got += list(iterator)
        assert_batches_equal(got, expected)
        if io == "read":
            assert read > 0 and windows == 0
        elif collate is None:  # windows: read ahead, copied from the mapping
            assert windows > 0 and read == 0
        else:  # records: nothing to read ahead, read explicitly
            assert windows == 0 and read > 0
