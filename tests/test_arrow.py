"""Arrow files and Hugging Face datasets: the native path against datasets + torch's
DataLoader over the same data, side by side, and the errors bad Arrow input gets."""

import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import RandomSampler

import pyloader

from conftest import assert_batches_equal, assert_loaders_equal, assert_shrinking_file_raises_oserror

pa = pytest.importorskip("pyarrow")
datasets = pytest.importorskip("datasets")
datasets.disable_progress_bars()

ROWS = 600


def _token_rows(rng, rows, low=1, high=40):
    return [rng.integers(0, 50_000, rng.integers(low, high)).astype(np.int32).tolist() for _ in range(rows)]


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    """A tokenized dataset saved in two shards of several record batches each."""
    rng = np.random.default_rng(7)
    ids = _token_rows(rng, ROWS)
    data = {
        "input_ids": ids,
        "attention_mask": [[1] * len(row) for row in ids],
        "labels": [row[::-1] for row in ids],
        "label": rng.integers(0, 5, ROWS).tolist(),
        "score": rng.random(ROWS).astype(np.float32).tolist(),
    }
    features = datasets.Features(
        {
            "input_ids": datasets.List(datasets.Value("int32")),
            "attention_mask": datasets.List(datasets.Value("int8")),
            "labels": datasets.List(datasets.Value("int32")),
            "label": datasets.Value("int64"),
            "score": datasets.Value("float32"),
        }
    )
    folder = tmp_path_factory.mktemp("tokenized") / "saved"
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(folder), num_shards=2)
    return str(folder), data


def _padding():
    return pyloader.PadCollate({"input_ids": 3, "labels": -100}, pad_to_multiple_of=8, return_mask=True)


def _side_by_side(dataset, sampler_seed=None, **kwargs):
    """Our native loader and torch's over the same dataset object and arguments (and
    random samplers seeded alike)."""

    def sampler():
        return (
            None
            if sampler_seed is None
            else RandomSampler(dataset, generator=torch.Generator().manual_seed(sampler_seed))
        )

    ours = pyloader.DataLoader(dataset, native=True, sampler=sampler(), **kwargs)
    theirs = TorchDataLoader(dataset, sampler=sampler(), **kwargs)
    assert_loaders_equal(ours, theirs)


@pytest.mark.parametrize("shuffle", [False, True])
def test_saved_dataset_in_torch_format_matches_datasets_and_torch(tokenized, shuffle):
    folder, _ = tokenized
    dataset = datasets.load_from_disk(folder).with_format("torch")
    _side_by_side(dataset, sampler_seed=3 if shuffle else None, batch_size=64, collate_fn=_padding())


def test_fixed_columns_with_the_default_collate_match(tokenized):
    folder, _ = tokenized
    dataset = datasets.load_from_disk(folder).select_columns(["label", "score"]).with_format("torch")
    _side_by_side(dataset, batch_size=50, drop_last=True)


@pytest.mark.parametrize("mapping", ["select", "shuffle", "filter", "train_test_split"])
def test_index_mappings_are_honoured_without_copying(tokenized, mapping):
    folder, _ = tokenized
    dataset = datasets.load_from_disk(folder).with_format("torch")
    if mapping == "select":
        mapped = dataset.select([5, 1, 599, 300, 2, 2, 17])
    elif mapping == "shuffle":
        mapped = dataset.shuffle(seed=1)
    elif mapping == "filter":
        mapped = dataset.filter(lambda row: row["label"] > 1)
    else:
        mapped = dataset.train_test_split(test_size=0.25, seed=4)["test"]
    assert mapped._indices is not None  # a mapping over the same table, not a copy
    _side_by_side(mapped, batch_size=16, collate_fn=_padding())


def test_two_ranks_shard_like_distributed_sampler(tokenized):
    folder, _ = tokenized
    dataset = datasets.load_from_disk(folder).with_format("torch").select_columns(["input_ids", "label"])
    seen = []
    for rank in range(2):

        def sampler(rank=rank):
            return pyloader.DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=5)

        ours = pyloader.DataLoader(dataset, batch_size=32, sampler=sampler(), collate_fn=_padding(), native=True)
        theirs = TorchDataLoader(dataset, batch_size=32, sampler=sampler(), collate_fn=_padding())
        assert_loaders_equal(ours, theirs)
        seen += list(sampler())
    assert sorted(seen) == list(range(ROWS))


def test_thread_workers_and_a_python_collate_get_the_same_samples(tokenized):
    folder, _ = tokenized
    dataset = datasets.load_from_disk(folder).with_format("torch")

    def collate(samples):  # a user's own collate: receives the dict samples datasets gives
        return [{key: value.tolist() for key, value in sample.items()} for sample in samples]

    ours = pyloader.DataLoader(dataset, batch_size=40, num_workers=2, collate_fn=collate, native=True)
    assert list(ours) == list(TorchDataLoader(dataset, batch_size=40, collate_fn=collate))


def test_resume_mid_epoch_continues_with_the_same_batches(tokenized):
    folder, _ = tokenized
    dataset = datasets.load_from_disk(folder).with_format("torch")
    loader = pyloader.StatefulDataLoader(dataset, batch_size=32, shuffle=True, collate_fn=_padding())
    torch.manual_seed(11)
    iterator = iter(loader)
    for _ in range(5):
        next(iterator)
    state = loader.state_dict()
    rest = list(iterator)
    assert rest
    resumed = pyloader.StatefulDataLoader(dataset, batch_size=32, shuffle=True, collate_fn=_padding())
    resumed.load_state_dict(state)
    assert_batches_equal(list(resumed), rest)


def test_numpy_format_and_no_format_match_torch_where_native(tokenized):
    folder, _ = tokenized
    plain = datasets.load_from_disk(folder).select_columns(["label", "score"])
    as_numpy = plain.with_format("numpy")
    _side_by_side(as_numpy, batch_size=64)
    # Without a format rows are Python scalars: ints collate to int64, and this float32
    # column becomes Python floats, float64 (the gather widens it).
    _side_by_side(plain, batch_size=64)
    assert next(iter(pyloader.DataLoader(plain, batch_size=4)))["score"].dtype == torch.float64


def test_what_cannot_go_native_says_why_and_takes_torchs_path(tokenized):
    folder, _ = tokenized
    base = datasets.load_from_disk(folder)
    cases = {
        "format": (base.with_format("pandas"), "'pandas' format"),
        "transform": (base.with_transform(lambda batch: batch), "'custom' format"),
        "options": (base.with_format("torch", dtype=torch.float64), "format has options"),
        "lists without a format": (base, "Python lists"),
    }
    for dataset, reason in cases.values():
        with pytest.raises(ValueError, match=reason):
            pyloader.DataLoader(dataset, batch_size=8, native=True)

    class Doubled(type(base)):
        def __getitem__(self, key):
            return super().__getitem__(key)

    doubled = base.with_format("torch")
    doubled.__class__ = Doubled
    with pytest.raises(ValueError, match="Doubled defines __getitem__"):
        pyloader.DataLoader(doubled, batch_size=8, native=True)


def test_a_format_set_in_place_is_seen_at_the_next_epoch(tokenized):
    folder, _ = tokenized
    dataset = datasets.load_from_disk(folder).select_columns(["label"])
    loader = pyloader.DataLoader(dataset, batch_size=100)
    first = next(iter(loader))
    assert first["label"].dtype == torch.int64
    dataset.set_format("numpy", columns=["label"])
    assert_batches_equal(next(iter(loader)), next(iter(TorchDataLoader(dataset, batch_size=100))))


def test_arrow_dataset_reads_folders_files_globs_and_tables(tokenized):
    folder, data = tokenized
    files = sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.startswith("data-"))
    assert len(files) == 2
    by_folder = pyloader.ArrowDataset(folder, columns=["input_ids", "label"])
    by_files = pyloader.ArrowDataset(files, columns=["input_ids", "label"])
    by_glob = pyloader.ArrowDataset(os.path.join(folder, "data-*.arrow"), columns=["input_ids", "label"])
    table = pa.Table.from_pydict(
        {"input_ids": pa.array(data["input_ids"], pa.list_(pa.int32())), "label": data["label"]}
    )
    by_table = pyloader.ArrowDataset(table)
    for dataset in (by_folder, by_files, by_glob, by_table):
        assert len(dataset) == ROWS
        for row in (0, 299, 300, 599):
            sample = dataset[row]
            assert list(sample) == ["input_ids", "label"]
            assert sample["input_ids"].dtype == torch.int32  # the column's own dtype
            assert sample["input_ids"].tolist() == data["input_ids"][row]
            assert sample["label"].item() == data["label"][row]
    native = list(pyloader.DataLoader(by_folder, batch_size=64, collate_fn=pyloader.PadCollate(), native=True))
    assert_batches_equal(native, list(TorchDataLoader(by_table, batch_size=64, collate_fn=pyloader.PadCollate())))


def test_hugging_face_dataset_in_arrow_dataset_keeps_its_mapping(tokenized):
    folder, data = tokenized
    mapped = datasets.load_from_disk(folder).shuffle(seed=2).select(range(50))
    dataset = pyloader.ArrowDataset(mapped, columns=["labels"])
    expected = mapped["labels"]
    assert [dataset[k]["labels"].tolist() for k in range(50)] == expected
    loader = pyloader.DataLoader(dataset, batch_size=8, collate_fn=pyloader.PadCollate(-1), native=True)
    rows = [
        row[: int(length)] for batch in loader for row, length in zip(batch["labels"].padded, batch["labels"].lengths)
    ]
    assert [row.tolist() for row in rows] == expected


ARROW_TYPES = {
    "int8": (pa.int8(), np.int8),
    "uint8": (pa.uint8(), np.uint8),
    "int16": (pa.int16(), np.int16),
    "uint16": (pa.uint16(), np.uint16),
    "int32": (pa.int32(), np.int32),
    "uint32": (pa.uint32(), np.uint32),
    "int64": (pa.int64(), np.int64),
    "uint64": (pa.uint64(), np.uint64),
    "float16": (pa.float16(), np.float16),
    "float32": (pa.float32(), np.float32),
    "float64": (pa.float64(), np.float64),
    "bool": (pa.bool_(), np.bool_),
}


@pytest.mark.parametrize("name", sorted(ARROW_TYPES))
@pytest.mark.parametrize("shape", ["scalar", "fixed_size_list", "list", "large_list", "list_of_rows"])
def test_every_dtype_and_layout_matches_the_values_written(tmp_path, name, shape):
    arrow_type, np_type = ARROW_TYPES[name]
    rng = np.random.default_rng(1)
    rows = 70
    lengths = rng.integers(0, 9, rows)

    def values(count):
        return (rng.integers(0, 2, count) if np_type == np.bool_ else rng.integers(0, 100, count)).astype(np_type)

    if shape == "scalar":
        expected = [values(1)[0] for _ in range(rows)]
        column = pa.array(expected, type=arrow_type)
    elif shape == "fixed_size_list":
        expected = [values(3) for _ in range(rows)]
        column = pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(expected), type=arrow_type), 3)
    elif shape == "list_of_rows":
        expected = [values(2 * n).reshape(n, 2) for n in lengths]
        flat = pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate([e.ravel() for e in expected]), arrow_type), 2)
        column = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int32()), flat)
    else:
        expected = [values(n) for n in lengths]
        offsets_type = pa.int64() if shape == "large_list" else pa.int32()
        array_type = pa.LargeListArray if shape == "large_list" else pa.ListArray
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]), offsets_type)
        column = array_type.from_arrays(offsets, pa.array(np.concatenate(expected), type=arrow_type))
    table = pa.Table.from_arrays([column, pa.array(np.arange(rows))], names=["x", "row"])
    path = tmp_path / "table.arrow"
    with pa.ipc.new_file(str(path), table.schema) as writer:
        for start in range(0, rows, 25):  # several record batches
            writer.write_table(table.slice(start, 25))
    dataset = pyloader.ArrowDataset(str(path))
    for k in (0, 24, 25, 69):
        got = dataset[k]["x"]
        assert got.dtype == torch.from_numpy(np.empty(0, np_type)).dtype
        assert np.array_equal(got.numpy(), np.asarray(expected[k]))
    collate = pyloader.PadCollate() if shape in ("list", "large_list", "list_of_rows") else None
    kwargs = {"collate_fn": collate} if collate else {}
    ours = list(pyloader.DataLoader(dataset, batch_size=16, shuffle=False, native=True, **kwargs))
    theirs = list(TorchDataLoader(dataset, batch_size=16, **kwargs))
    assert_batches_equal(ours, theirs)


def test_sliced_arrays_and_slices_of_lists_read_their_own_rows():
    rng = np.random.default_rng(2)
    rows = _token_rows(rng, 200, low=0)
    table = pa.Table.from_pydict({"ids": pa.array(rows, pa.list_(pa.int32())), "n": np.arange(200)})
    sliced = pa.concat_tables([table.slice(13, 50), table.slice(150, 30)])
    dataset = pyloader.ArrowDataset(sliced)
    expected = rows[13:63] + rows[150:180]
    assert [dataset[k]["ids"].tolist() for k in range(80)] == expected
    loader = pyloader.DataLoader(dataset, batch_size=9, collate_fn=pyloader.PadCollate(), native=True)
    assert_batches_equal(list(loader), list(TorchDataLoader(dataset, batch_size=9, collate_fn=pyloader.PadCollate())))


def test_nulls_are_refused_naming_the_column_unless_filled():
    table = pa.Table.from_pydict(
        {
            "ids": pa.array([[1, 2], None, [3, None, 4], []], pa.list_(pa.int32())),
            "label": pa.array([1, None, 3, 4], pa.int64()),
        }
    )
    with pytest.raises(ValueError, match="column .label.*nulls.*fill_values"):
        pyloader.ArrowDataset(table, columns=["label"])
    with pytest.raises(ValueError, match="column 'ids'.*nulls"):
        pyloader.ArrowDataset(table, columns=["ids"])
    filled = pyloader.ArrowDataset(table, fill_values={"ids": 0, "label": -1})
    assert [filled[k]["ids"].tolist() for k in range(4)] == [[1, 2], [], [3, 0, 4], []]
    assert [filled[k]["label"].item() for k in range(4)] == [1, -1, 3, 4]
    with pytest.raises(ValueError, match="fill_values names 'other'"):
        pyloader.ArrowDataset(table, fill_values={"other": 0})


def test_hugging_face_nulls_take_torchs_path_and_say_why():
    dataset = datasets.Dataset.from_dict({"label": [1, None, 3]}).with_format("torch")
    with pytest.raises(ValueError, match="'label'.*nulls"):
        pyloader.DataLoader(dataset, batch_size=2, native=True)


def test_unsupported_types_and_missing_columns_are_named():
    table = pa.Table.from_pydict({"text": ["a", "b"], "nested": [[[1], [2, 3]], [[4]]], "n": [1, 2]})
    with pytest.raises(ValueError, match="column 'text'.*type string"):
        pyloader.ArrowDataset(table, columns=["text"])
    with pytest.raises(ValueError, match="column 'nested'.*list<item: list"):
        pyloader.ArrowDataset(table, columns=["nested"])
    with pytest.raises(KeyError, match="no column 'missing'"):
        pyloader.ArrowDataset(table, columns=["missing"])
    with pytest.raises(TypeError, match="not int"):
        pyloader.ArrowDataset(5)


def test_a_file_that_is_not_arrow_is_refused(tmp_path):
    path = tmp_path / "noise.arrow"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="noise.arrow.*not a readable Arrow"):
        pyloader.ArrowDataset(str(path))
    with pytest.raises(FileNotFoundError):
        pyloader.ArrowDataset(str(tmp_path / "absent.arrow"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="state.json"):
        pyloader.ArrowDataset(str(tmp_path / "folder"))


def _write_stream(path, table):
    with pa.ipc.new_stream(str(path), table.schema) as writer:
        writer.write_table(table)


def test_corrupt_list_offsets_are_refused(tmp_path):
    values = pa.array(np.arange(100, dtype=np.int32))
    offsets = np.array([0, 10, 20, 30, 40], dtype=np.int32)
    table = pa.Table.from_arrays([pa.ListArray.from_arrays(pa.array(offsets), values)], names=["ids"])
    path = tmp_path / "corrupt.arrow"
    _write_stream(path, table)
    raw = bytearray(path.read_bytes())
    marker = offsets.tobytes()
    at = raw.find(marker)
    assert at >= 0
    raw[at + 8 : at + 12] = np.array([5000], dtype=np.int32).tobytes()  # the third offset, past the values
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="column 'ids'.*offsets.*corrupt"):
        pyloader.ArrowDataset(str(path))


def test_a_file_truncated_under_its_mapping_raises_oserror(tmp_path):
    rng = np.random.default_rng(3)
    table = pa.Table.from_pydict(
        {"ids": pa.array(_token_rows(rng, 4000, low=200, high=400), pa.list_(pa.int32())), "n": np.arange(4000)}
    )
    path = tmp_path / "shrinking.arrow"
    _write_stream(path, table)
    dataset = pyloader.ArrowDataset(str(path))
    loader = pyloader.DataLoader(dataset, batch_size=64, collate_fn=pyloader.PadCollate(), native=True)
    assert_shrinking_file_raises_oserror(loader, path, 4096, "shrinking.arrow")


@pytest.mark.parametrize("io", ["read", "mmap"])
def test_explicit_reads_of_arrow_records_match_the_mapping(tmp_path, io):
    rng = np.random.default_rng(4)
    rows = _token_rows(rng, 900, low=1, high=300)
    table = pa.Table.from_pydict({"ids": pa.array(rows, pa.list_(pa.int32())), "n": np.arange(900)})
    path = tmp_path / "records.arrow"
    with pa.ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table, max_chunksize=100)
    dataset = pyloader.ArrowDataset(str(path))
    assert len(dataset.columns[0].pieces) == 1  # all record batches of one file: one piece
    loader = pyloader.DataLoader(dataset, batch_size=50, shuffle=True, collate_fn=pyloader.PadCollate(), io=io)
    seen = []
    for batch in loader:
        for row, length, n in zip(batch["ids"].padded, batch["ids"].lengths, batch["n"]):
            assert row[: int(length)].tolist() == rows[int(n)]
            seen.append(int(n))
    assert sorted(seen) == list(range(900))


def test_small_row_columns_name_their_file_extents_for_read_ahead(tmp_path):
    table = pa.Table.from_pydict({"label": np.arange(1000, dtype=np.int64), "ids": [[1, 2]] * 1000})
    path = tmp_path / "labels.arrow"
    with pa.ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table, max_chunksize=300)
    loader = pyloader.DataLoader(pyloader.ArrowDataset(str(path)), batch_size=10, collate_fn=pyloader.PadCollate())
    columns = loader._plan().columns
    extents = columns.small_row_extents
    assert len(extents) == 4  # one per record batch of the label column; the records are read explicitly
    raw = path.read_bytes()
    got = np.concatenate([np.frombuffer(raw[offset : offset + size], np.int64) for _, offset, size in extents])
    assert np.array_equal(got, np.arange(1000)) and {file for file, _, _ in extents} == {str(path)}


def test_compressed_feather_is_read_into_memory():
    import pyarrow.feather as feather

    rows = _token_rows(np.random.default_rng(6), 100)
    table = pa.Table.from_pydict({"ids": pa.array(rows, pa.list_(pa.int32())), "n": np.arange(100)})
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"pyloader-test-{os.getpid()}.feather")
    try:
        feather.write_feather(table, path, compression="zstd")
        dataset = pyloader.ArrowDataset(path)
        assert [dataset[k]["ids"].tolist() for k in range(100)] == rows
        batches = list(pyloader.DataLoader(dataset, batch_size=7, collate_fn=pyloader.PadCollate(), native=True))
        assert sum(len(batch["n"]) for batch in batches) == 100
    finally:
        os.remove(path)


def test_array_dataset_row_map_is_checked_and_followed():
    dataset = pyloader.ArrayDataset(x=np.arange(10) * 10)
    dataset.row_map = np.array([9, 0, 3])
    assert len(dataset) == 3 and dataset[0]["x"].item() == 90 and dataset[-1]["x"].item() == 30
    assert [batch["x"].tolist() for batch in pyloader.DataLoader(dataset, batch_size=2, native=True)] == [[90, 0], [30]]
    dataset.row_map = np.array([0, 10])
    with pytest.raises(ValueError, match="row_map.*out of range"):
        pyloader.DataLoader(dataset, batch_size=2, native=True)


def test_block_shuffle_over_a_saved_dataset_matches_torch(tokenized):
    folder, _ = tokenized
    dataset = datasets.load_from_disk(folder).with_format("torch")

    def sampler():
        return pyloader.BlockShuffleSampler(dataset, block_rows=64, seed=9)

    ours = pyloader.DataLoader(dataset, batch_size=16, sampler=sampler(), collate_fn=_padding(), native=True)
    theirs = TorchDataLoader(dataset, batch_size=16, sampler=sampler(), collate_fn=_padding())
    assert_loaders_equal(ours, theirs)


@pytest.mark.parametrize("format_type", ["torch", "numpy", None])
@pytest.mark.parametrize("name", sorted(ARROW_TYPES))
@pytest.mark.parametrize("shape", ["scalar", "fixed_size_list", "list"])
def test_each_format_delivers_what_datasets_gives_or_says_why_not(name, shape, format_type):
    arrow_type, np_type = ARROW_TYPES[name]
    rng = np.random.default_rng(8)
    rows = 40
    raw = (rng.integers(0, 2, rows * 3) if np_type == np.bool_ else rng.integers(0, 100, rows * 3)).astype(np_type)
    values = pa.array(raw, type=arrow_type)
    if shape == "scalar":
        column = values.slice(0, rows)
    elif shape == "fixed_size_list":
        column = pa.FixedSizeListArray.from_arrays(values, 3)
    else:
        offsets = np.concatenate([[0], np.sort(rng.integers(0, rows * 3, rows - 1)), [rows * 3]]).astype(np.int32)
        column = pa.ListArray.from_arrays(pa.array(offsets), values)
    dataset = datasets.Dataset(pa.Table.from_arrays([column], names=["x"])).with_format(format_type)
    collate = pyloader.PadCollate() if shape == "list" and format_type == "torch" else None
    kwargs = {"batch_size": 16, **({"collate_fn": collate} if collate else {})}
    loader = pyloader.DataLoader(dataset, **kwargs)
    try:
        expected = list(TorchDataLoader(dataset, **kwargs))
    except (TypeError, RuntimeError):
        expected = None  # torch's own path cannot collate this: neither may the native one succeed silently
    if loader.uses_native_path:
        assert expected is not None, "the native path batches what torch's path cannot"
        assert_batches_equal(list(loader), expected)
    else:
        with pytest.raises(ValueError, match="column 'x'|Python lists"):
            pyloader.DataLoader(dataset, native=True, **kwargs)
        if expected is not None:
            assert_batches_equal(list(loader), expected)


def test_arrow_dataset_pickles_by_path_and_loads_in_worker_processes(tokenized):
    import pickle

    folder, data = tokenized
    dataset = pyloader.ArrowDataset(folder, columns=["input_ids", "label"])
    pickled = pickle.dumps(dataset)
    assert len(pickled) < 2000  # the paths, not the contents
    copy = pickle.loads(pickled)
    assert copy[123]["input_ids"].tolist() == data["input_ids"][123]
    loader = TorchDataLoader(
        dataset, batch_size=50, num_workers=2, collate_fn=pyloader.PadCollate(), multiprocessing_context="spawn"
    )
    assert sum(len(batch["label"]) for batch in loader) == ROWS


def test_review_cases_nulls_in_fixed_lists_key_order_instance_fetch_and_python_samples(tokenized):
    fixed = pa.array([[1, None], [2, 3], [4, 5], [6, 7]], pa.list_(pa.int32(), 2))
    hf = datasets.Dataset(pa.table({"z": fixed})).with_format("torch")
    with pytest.raises(ValueError, match="column 'z'.*nulls"):
        pyloader.DataLoader(hf, batch_size=2, native=True)
    for ours, theirs in zip(pyloader.DataLoader(hf, batch_size=2), TorchDataLoader(hf, batch_size=2), strict=True):
        torch.testing.assert_close(ours["z"], theirs["z"], equal_nan=True, rtol=0, atol=0)
    with pytest.raises(ValueError, match="column 'z'.*nulls"):
        pyloader.ArrowDataset(pa.table({"z": fixed}))
    filled = pyloader.ArrowDataset(pa.table({"z": fixed}), fill_values={"z": -1})
    assert filled[0]["z"].tolist() == [1, -1]

    folder, _ = tokenized
    reordered = datasets.load_from_disk(folder).with_format("torch", columns=["label", "labels", "input_ids"])
    _side_by_side(reordered, batch_size=32, collate_fn=_padding())  # keys in the table's order, as datasets

    own = datasets.load_from_disk(folder).with_format("torch", columns=["label"])
    own.__getitems__ = lambda keys: [{"label": torch.tensor(-1)} for _ in keys]
    with pytest.raises(ValueError, match="its own __getitems__"):
        pyloader.DataLoader(own, batch_size=4, native=True)
    assert next(iter(pyloader.DataLoader(own, batch_size=4)))["label"].tolist() == [-1] * 4

    def kinds(samples):
        return [type(sample["label"]).__name__ for sample in samples]

    for format_type in (None, "numpy"):
        plain = datasets.load_from_disk(folder).select_columns(["label"]).with_format(format_type)
        with pytest.raises(ValueError, match="not tensors"):
            pyloader.DataLoader(plain, batch_size=4, collate_fn=kinds, native=True)
        assert next(iter(pyloader.DataLoader(plain, batch_size=4, collate_fn=kinds))) == next(
            iter(TorchDataLoader(plain, batch_size=4, collate_fn=kinds))
        )
        assert pyloader.DataLoader(plain, batch_size=4).uses_native_path  # the default collate: tensors either way


def test_float64_columns_are_delivered_as_datasets_formats_convert_them():
    rng = np.random.default_rng(12)
    table = pa.table(
        {
            "score": pa.array(rng.random(90)),  # float64, as from_dict stores Python floats
            "small": pa.array(rng.random(90).astype(np.float32)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(rng.random(270)), 3),
            "ragged": pa.array([rng.random(int(n)).tolist() for n in rng.integers(1, 9, 90)], pa.list_(pa.float64())),
        }
    )
    torch_format = datasets.Dataset(table).with_format("torch")
    _side_by_side(torch_format, batch_size=16, collate_fn=pyloader.PadCollate(-1.5))
    _side_by_side(datasets.Dataset(table).select_columns(["score", "vector"]).with_format("numpy"), batch_size=16)
    # No format: Python floats, which torch collates as float64 (float32 columns too).
    _side_by_side(datasets.Dataset(table).select_columns(["score", "small"]), batch_size=16)
    batch = next(iter(pyloader.DataLoader(torch_format, batch_size=4, collate_fn=pyloader.PadCollate(-1.5))))
    assert batch["score"].dtype == torch.float32 and batch["ragged"].padded.dtype == torch.float32
