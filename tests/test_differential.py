"""Native batches must equal torch.utils.data's for the same sampler, side by side."""

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import pyloader

from conftest import assert_batches_equal, assert_loaders_equal

DTYPES = [
    np.float32,
    np.float64,
    np.float16,
    np.int64,
    np.int32,
    np.int16,
    np.int8,
    np.uint8,
    np.uint16,
    np.uint32,
    np.bool_,
    np.complex64,
]
TRAILING = [(), (1,), (3,), (2, 5), (4, 1, 3)]


def make_array(rng, rows, trailing, dtype):
    values = rng.integers(0, 120, size=(rows, *trailing))
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trailing", TRAILING)
def test_dtypes_and_shapes_match_torch(rng, dtype, trailing):
    x = make_array(rng, 53, trailing, dtype)
    y = np.arange(53)
    ours = pyloader.DataLoader(pyloader.ArrayDataset(x, y), batch_size=8)
    theirs = tud.DataLoader(pyloader.ArrayDataset(x, y), batch_size=8)
    assert ours.uses_native_path
    assert_loaders_equal(ours, theirs)


@pytest.mark.parametrize("rows", [1, 2, 17, 64, 1000])
@pytest.mark.parametrize("batch_size", [1, 3, 16, 64, 5000])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sizes_and_drop_last_match_torch(rng, rows, batch_size, drop_last):
    x = rng.random((rows, 6), dtype=np.float32)
    y = rng.integers(0, 10, rows)
    ours = pyloader.DataLoader(pyloader.ArrayDataset(x, y), batch_size=batch_size, drop_last=drop_last)
    theirs = tud.DataLoader(
        tud.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=batch_size, drop_last=drop_last
    )
    assert_loaders_equal(ours, theirs)


def _samplers(n):
    """Fresh (ours, theirs) sampler pairs that yield identical index streams."""
    weights = torch.rand(n, generator=torch.Generator().manual_seed(5))
    return {
        "random": lambda: tud.RandomSampler(range(n), generator=torch.Generator().manual_seed(1)),
        "random_replacement": lambda: tud.RandomSampler(
            range(n), replacement=True, num_samples=2 * n, generator=torch.Generator().manual_seed(2)
        ),
        "subset_random": lambda: tud.SubsetRandomSampler(
            list(range(0, n, 3)), generator=torch.Generator().manual_seed(3)
        ),
        "weighted": lambda: tud.WeightedRandomSampler(weights, n, generator=torch.Generator().manual_seed(4)),
        "plain_list": lambda: [n - 1 - i for i in range(n)],
        "numpy_ints": lambda: np.random.default_rng(0).permutation(n),
        "negative": lambda: [-1 - i for i in range(n)],
    }


@pytest.mark.parametrize("name", list(_samplers(10)))
@pytest.mark.parametrize("drop_last", [False, True])
def test_user_samplers_match_torch(rng, name, drop_last):
    n = 101
    make = _samplers(n)[name]
    x = rng.random((n, 4, 2), dtype=np.float32)
    y = np.arange(n)
    ours = pyloader.DataLoader(pyloader.ArrayDataset(x, y), batch_size=7, sampler=make(), drop_last=drop_last)
    theirs = tud.DataLoader(
        tud.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=7, sampler=make(), drop_last=drop_last
    )
    assert ours.uses_native_path
    assert_loaders_equal(ours, theirs)


def test_batch_sampler_matches_torch(rng):
    n = 60
    x = rng.random((n, 3), dtype=np.float32)
    batches = [[0, 1, 2], [59], list(range(10, 40)), [5, 5, 5, -2]]
    ours = pyloader.DataLoader(pyloader.ArrayDataset(x), batch_sampler=batches)
    theirs = tud.DataLoader(tud.TensorDataset(torch.from_numpy(x)), batch_sampler=batches)
    assert_loaders_equal(ours, theirs)
    for loader in (
        pyloader.DataLoader(pyloader.ArrayDataset(x), batch_sampler=[[1], []]),
        tud.DataLoader(tud.TensorDataset(torch.from_numpy(x)), batch_sampler=[[1], []]),
    ):
        iterator = iter(loader)
        next(iterator)
        with pytest.raises(IndexError):
            next(iterator)
    bs = lambda: tud.BatchSampler(tud.RandomSampler(range(n), generator=torch.Generator().manual_seed(8)), 9, False)
    assert_loaders_equal(
        pyloader.DataLoader(pyloader.ArrayDataset(x), batch_sampler=bs()),
        tud.DataLoader(tud.TensorDataset(torch.from_numpy(x)), batch_sampler=bs()),
    )


def test_named_columns_match_stack_dataset(rng):
    x = rng.random((30, 5), dtype=np.float32)
    y = rng.integers(0, 3, 30)
    ours = pyloader.DataLoader(pyloader.ArrayDataset(features=x, label=y), batch_size=4)
    theirs = tud.DataLoader(
        tud.StackDataset(features=tud.TensorDataset(torch.from_numpy(x)), label=tud.TensorDataset(torch.from_numpy(y))),
        batch_size=4,
    )
    for a, e in zip(ours, theirs):
        assert list(a) == ["features", "label"]
        assert_batches_equal(a["features"], e["features"][0])
        assert_batches_equal(a["label"], e["label"][0])
    # Same samples as torch's own DataLoader over the ArrayDataset itself.
    assert_loaders_equal(ours, tud.DataLoader(pyloader.ArrayDataset(features=x, label=y), batch_size=4))


def test_tensor_dataset_native_matches_torch():
    torch.manual_seed(0)
    x = torch.randn(77, 3, 4)
    y = torch.randint(0, 5, (77,))
    w = torch.randn(77, 2).to(torch.bfloat16)
    ds = tud.TensorDataset(x, y, w)
    ours = pyloader.DataLoader(
        ds, batch_size=10, sampler=tud.RandomSampler(ds, generator=torch.Generator().manual_seed(0))
    )
    theirs = tud.DataLoader(
        ds, batch_size=10, sampler=tud.RandomSampler(ds, generator=torch.Generator().manual_seed(0))
    )
    assert ours.uses_native_path
    assert_loaders_equal(ours, theirs)


def test_npy_paths_and_memmaps_match_torch(tmp_path, rng):
    x = rng.random((200, 16), dtype=np.float32)
    tokens = rng.integers(0, 65535, (200, 32)).astype(np.uint16)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "tokens.npy", tokens)
    ds = pyloader.ArrayDataset(str(tmp_path / "x.npy"), tmp_path / "tokens.npy")
    assert isinstance(ds.columns[0].array, np.memmap)
    ours = pyloader.DataLoader(ds, batch_size=32, drop_last=True)
    theirs = tud.DataLoader(
        tud.TensorDataset(torch.from_numpy(x), torch.from_numpy(tokens)), batch_size=32, drop_last=True
    )
    assert_loaders_equal(ours, theirs)


def test_strided_and_reversed_rows(rng):
    base = rng.random((100, 6), dtype=np.float32)
    for view in (base[::3], base[::-1], base[10:90:7], base[::-2]):
        ours = pyloader.DataLoader(pyloader.ArrayDataset(view), batch_size=5, shuffle=False)
        theirs = tud.DataLoader(tud.TensorDataset(torch.from_numpy(view.copy())), batch_size=5)
        assert_loaders_equal(ours, theirs)


def test_shuffled_batches_hold_the_rows_they_claim(rng):
    x = rng.random((1000, 12), dtype=np.float32)
    ids = np.arange(1000)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(x, ids), batch_size=64, shuffle=True)
    for xb, ib in loader:
        assert torch.equal(xb, torch.from_numpy(x[ib.numpy()]))


def test_large_batches_split_across_threads_match(rng):
    x = rng.random((20_000, 40), dtype=np.float32)  # batches above the inline size
    y = np.arange(20_000)
    sampler = lambda: tud.RandomSampler(range(20_000), generator=torch.Generator().manual_seed(11))
    ours = pyloader.DataLoader(pyloader.ArrayDataset(x, y), batch_size=512, sampler=sampler(), num_threads=3)
    theirs = tud.DataLoader(
        tud.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=512, sampler=sampler()
    )
    assert_loaders_equal(ours, theirs)


def test_len_matches_torch(rng):
    x = rng.random((10, 2), dtype=np.float32)
    for kwargs in (
        {"batch_size": 3},
        {"batch_size": 3, "drop_last": True},
        {"batch_size": 20},
        {"batch_size": 4, "shuffle": True},
    ):
        assert len(pyloader.DataLoader(pyloader.ArrayDataset(x), **kwargs)) == len(
            tud.DataLoader(pyloader.ArrayDataset(x), **kwargs)
        )


def test_iterator_protocol():
    loader = pyloader.DataLoader(pyloader.ArrayDataset(np.arange(10)), batch_size=4)
    iterator = iter(loader)
    assert iter(iterator) is iterator
    assert len(iterator) == 3
    assert [b[0].tolist() for b in iterator] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(StopIteration):
        next(iterator)


def test_native_false_and_non_array_datasets_use_torch_path(rng):
    x = rng.random((20, 2), dtype=np.float32)
    loader = pyloader.DataLoader(pyloader.ArrayDataset(x), batch_size=4, native=False)
    assert not loader.uses_native_path
    assert_loaders_equal(loader, tud.DataLoader(pyloader.ArrayDataset(x), batch_size=4))
    with pytest.raises(ValueError, match="not an ArrayDataset"):
        pyloader.DataLoader(list(range(5)), native=True)


def test_tensors_requiring_grad_keep_their_graph_via_torchs_path():
    x = torch.randn(10, 3, requires_grad=True)
    loader = pyloader.DataLoader(tud.TensorDataset(x), batch_size=4)
    assert not loader.uses_native_path
    (batch,) = next(iter(loader))
    assert batch.requires_grad and batch.grad_fn is not None


def test_batch_samplers_yielding_tensors_generators_and_sets(rng):
    x = rng.random((40, 3), dtype=np.float32)
    for batches in (
        lambda: torch.randperm(40, generator=torch.Generator().manual_seed(0)).split(6),
        lambda: [iter([1, 2, 3]) for _ in range(2)],
        lambda: [{4, 5}, {7}],
    ):
        assert_loaders_equal(
            pyloader.DataLoader(pyloader.ArrayDataset(x), batch_sampler=batches()),
            tud.DataLoader(tud.TensorDataset(torch.from_numpy(x)), batch_sampler=batches()),
        )


def test_empty_arrays_are_accepted():
    for shape in ((0, 3), (5, 1, 0, 2), (0,)):
        ds = pyloader.ArrayDataset(np.zeros(shape, dtype=np.float32))
        loader = pyloader.DataLoader(ds, batch_size=2)
        assert loader.uses_native_path
        assert_loaders_equal(loader, tud.DataLoader(tud.TensorDataset(torch.zeros(shape)), batch_size=2))


def _pad_collate(samples):
    """A typical padding collate: variable-length rows (trailing zeros cut) padded back."""
    lengths = torch.tensor([int((s[0] != 0).sum()) for s in samples])
    padded = torch.nn.utils.rnn.pad_sequence([s[0][: int(n)] for s, n in zip(samples, lengths)], batch_first=True)
    return padded, lengths, torch.stack([s[1] for s in samples])


@pytest.mark.parametrize("collate", [_pad_collate, lambda samples: samples, lambda samples: len(samples)])
def test_custom_collate_gathers_natively_and_gets_torchs_samples(rng, collate):
    x = rng.integers(0, 5, (50, 7)).astype(np.int64)
    y = np.arange(50)
    sampler = lambda: tud.RandomSampler(range(50), generator=torch.Generator().manual_seed(2))
    ours = pyloader.DataLoader(pyloader.ArrayDataset(x, y), batch_size=8, sampler=sampler(), collate_fn=collate)
    theirs = tud.DataLoader(
        tud.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=8, sampler=sampler(), collate_fn=collate
    )
    assert ours.uses_native_path
    assert_loaders_equal(ours, theirs)


def test_custom_collate_with_named_columns_gets_dict_samples(rng):
    x = rng.random((20, 3), dtype=np.float32)
    seen = []
    loader = pyloader.DataLoader(
        pyloader.ArrayDataset(a=x, b=np.arange(20)),
        batch_size=5,
        collate_fn=lambda samples: seen.append(samples) or len(samples),
    )
    assert list(loader) == [5, 5, 5, 5]
    reference = [pyloader.ArrayDataset(a=x, b=np.arange(20))[i] for i in range(5)]
    assert_batches_equal(seen[0], reference)


@pytest.mark.parametrize("shuffle", [False, True])
def test_subsets_gather_natively_and_match_torch(rng, shuffle):
    x = rng.random((100, 4), dtype=np.float32)
    y = np.arange(100)
    base = pyloader.ArrayDataset(x, y)
    inner = tud.Subset(base, list(range(90, 0, -3)) + [-1, -100])
    nested = tud.Subset(inner, [5, 0, 3, 3, -2, 31])
    for ds in (inner, nested, tud.Subset(tud.TensorDataset(torch.from_numpy(x)), np.arange(0, 100, 7))):
        kwargs = (
            dict(batch_size=4, sampler=tud.RandomSampler(ds, generator=torch.Generator().manual_seed(1)))
            if shuffle
            else dict(batch_size=4)
        )
        loader = pyloader.DataLoader(ds, **kwargs)
        assert loader.uses_native_path
        kwargs2 = (
            dict(batch_size=4, sampler=tud.RandomSampler(ds, generator=torch.Generator().manual_seed(1)))
            if shuffle
            else dict(batch_size=4)
        )
        assert_loaders_equal(loader, tud.DataLoader(ds, **kwargs2))
    shuffled = pyloader.DataLoader(inner, batch_size=4, shuffle=True)
    assert shuffled.uses_native_path
    got = torch.cat([b[1] for b in shuffled]).tolist()
    assert sorted(got) == sorted(inner[i][1].item() for i in range(len(inner)))


def test_subset_with_out_of_range_indices_falls_back_and_raises_like_torch():
    ds = tud.Subset(pyloader.ArrayDataset(np.arange(10)), [0, 10])
    loader = pyloader.DataLoader(ds, batch_size=2)
    assert not loader.uses_native_path
    with pytest.raises(IndexError):
        list(loader)


def test_concat_datasets_gather_natively_and_match_torch(rng):
    parts = [
        pyloader.ArrayDataset(rng.random((n, 3), dtype=np.float32), np.arange(n) + 1000 * k)
        for k, n in enumerate((7, 1, 30, 12))
    ]
    tensors = tud.TensorDataset(torch.rand(5, 3), torch.arange(5) + 9000)
    concat = tud.ConcatDataset(parts + [tensors])
    nested = tud.ConcatDataset([concat, parts[0]])
    subset_of_concat = tud.Subset(nested, [0, 60, 7, 8, -1, 30])
    for ds in (concat, nested, subset_of_concat):
        for kwargs in (
            dict(batch_size=4),
            dict(batch_size=6, drop_last=True),
            dict(batch_size=5, sampler=tud.RandomSampler(ds, generator=torch.Generator().manual_seed(3))),
        ):
            loader = pyloader.DataLoader(ds, **kwargs)
            assert loader.uses_native_path
            if "sampler" in kwargs:
                kwargs = dict(kwargs, sampler=tud.RandomSampler(ds, generator=torch.Generator().manual_seed(3)))
            assert_loaders_equal(loader, tud.DataLoader(ds, **kwargs))
    shuffled = torch.cat([b[1] for b in pyloader.DataLoader(concat, batch_size=8, shuffle=True)]).tolist()
    assert sorted(shuffled) == sorted(concat[i][1].item() for i in range(len(concat)))


def test_concat_of_mismatched_parts_falls_back_to_torch(rng):
    a = pyloader.ArrayDataset(np.zeros((4, 3), dtype=np.float32))
    b = pyloader.ArrayDataset(np.zeros((4, 2), dtype=np.float32))
    loader = pyloader.DataLoader(tud.ConcatDataset([a, b]), batch_size=8)
    assert not loader.uses_native_path
    with pytest.raises(RuntimeError):
        list(loader)  # torch's collate cannot stack rows of different shapes either


@pytest.mark.parametrize("indices", [[1.7, 2.0], [True, False], [[0, 1], [2, 3]]])
def test_subsets_with_non_integer_indices_take_torchs_path(indices):
    ds = tud.Subset(tud.TensorDataset(torch.arange(10)), indices)
    loader = pyloader.DataLoader(ds, batch_size=2)
    assert not loader.uses_native_path


def test_concat_of_subsets_and_random_split_parts_gathers_natively(rng):
    base = pyloader.ArrayDataset(rng.random((50, 3), dtype=np.float32), np.arange(50))
    train, val = tud.random_split(base, [40, 10], generator=torch.Generator().manual_seed(0))
    other = pyloader.ArrayDataset(rng.random((7, 3), dtype=np.float32), np.arange(100, 107))
    for ds in (
        tud.ConcatDataset([train, val]),
        tud.ConcatDataset([val, other, tud.Subset(other, [6, 0])]),
        tud.Subset(tud.ConcatDataset([other, train]), [0, 20, -1]),
    ):
        for make in (
            lambda ds=ds: dict(batch_size=4),
            lambda ds=ds: dict(batch_size=3, sampler=tud.RandomSampler(ds, generator=torch.Generator().manual_seed(2))),
        ):
            loader = pyloader.DataLoader(ds, **make())
            assert loader.uses_native_path
            assert_loaders_equal(loader, tud.DataLoader(ds, **make()))
