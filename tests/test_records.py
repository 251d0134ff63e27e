"""Variable-length records and PadCollate: the same batches as torch over an equivalent Dataset."""

import numpy as np
import pytest
import torch
import torch.utils.data as tud
from torch.nn.utils.rnn import pad_sequence

import pyloader

from conftest import assert_batches_equal, assert_loaders_equal, assert_shrinking_file_raises_oserror


class ReferenceRecords(tud.Dataset):
    def __init__(self, values, offsets, dtype=None):
        self.values, self.offsets, self.dtype = values, offsets, dtype

    def __len__(self):
        return len(self.offsets) - 1

    def __getitem__(self, index):
        record = np.array(self.values[self.offsets[index] : self.offsets[index + 1]], dtype=self.dtype)
        return torch.from_numpy(record)


def records(rng, count, low=0, high=40, row_shape=(), dtype=np.uint16):
    lengths = rng.integers(low, high, count)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = rng.integers(0, 1000, (int(offsets[-1]), *row_shape)).astype(dtype)
    return values, offsets


def tutorial_collate(batch):
    """The padding collate_fn of the torch tutorials."""
    lengths = torch.tensor([len(x) for x in batch])
    return pad_sequence(batch, batch_first=True), lengths


PADS = {
    "default": dict(),
    "value_mask": dict(padding_value=7, return_mask=True),
    "left": dict(padding_value=-1, padding_side="left", return_mask=True),
    "truncate": dict(max_length=9),
    "multiple": dict(pad_to_multiple_of=8, return_mask=True),
    "all": dict(padding_value=3, max_length=20, pad_to_multiple_of=16, padding_side="left", return_mask=True),
}


@pytest.mark.parametrize("pad", list(PADS))
@pytest.mark.parametrize("dtype", [None, torch.int64, torch.int32])
def test_native_pad_collate_matches_torch(rng, pad, dtype):
    values, offsets = records(rng, 101)
    ours_ds = pyloader.RaggedDataset(values, offsets, dtype=dtype)
    np_dtype = {None: None, torch.int64: np.int64, torch.int32: np.int32}[dtype]
    reference = ReferenceRecords(values, offsets, np_dtype)
    collate = pyloader.PadCollate(**PADS[pad])
    if dtype is None and collate.padding_value < 0:
        collate.padding_value = 0  # uint16 cannot hold -1
    sampler = lambda: tud.RandomSampler(reference, generator=torch.Generator().manual_seed(2))
    ours = pyloader.DataLoader(ours_ds, batch_size=8, sampler=sampler(), collate_fn=collate)
    assert ours.uses_native_path and ours._plan().paddings is not None
    assert_loaders_equal(ours, tud.DataLoader(reference, batch_size=8, sampler=sampler(), collate_fn=collate))


def test_pad_collate_agrees_with_pad_sequence(rng):
    values, offsets = records(rng, 40, dtype=np.int64)
    ds = pyloader.RaggedDataset(values, offsets)
    for (padded, lengths, mask), (expected, expected_lengths) in zip(
        pyloader.DataLoader(ds, batch_size=6, collate_fn=pyloader.PadCollate()),
        tud.DataLoader(ReferenceRecords(values, offsets), batch_size=6, collate_fn=tutorial_collate),
    ):
        assert mask is None
        assert torch.equal(padded, expected) and torch.equal(lengths, expected_lengths)


@pytest.mark.parametrize("workers", [0, 2])
def test_custom_collate_receives_torchs_sample_list(rng, workers):
    values, offsets = records(rng, 77, low=0, high=5)
    ours = pyloader.DataLoader(
        pyloader.RaggedDataset(values, offsets, dtype=torch.int64),
        batch_size=5,
        collate_fn=tutorial_collate,
        num_workers=workers,
    )
    assert ours.uses_native_path
    assert_loaders_equal(
        ours, tud.DataLoader(ReferenceRecords(values, offsets, np.int64), batch_size=5, collate_fn=tutorial_collate)
    )
    seen = []
    listing = pyloader.DataLoader(pyloader.RaggedDataset(values, offsets), batch_size=5, collate_fn=list)
    for batch in listing:
        seen += batch
    assert len(seen) == 77 and all(isinstance(t, torch.Tensor) for t in seen)
    assert all(torch.equal(a, ReferenceRecords(values, offsets)[k]) for k, a in enumerate(seen))


def test_default_collate_behaves_as_torch(rng):
    values, offsets = records(rng, 12, low=4, high=5)  # all of length 4: torch stacks them
    assert_loaders_equal(
        pyloader.DataLoader(pyloader.RaggedDataset(values, offsets), batch_size=5),
        tud.DataLoader(ReferenceRecords(values, offsets), batch_size=5),
    )
    values, offsets = records(rng, 12, low=1, high=9)
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        list(pyloader.DataLoader(pyloader.RaggedDataset(values, offsets), batch_size=5))


def test_rows_with_features_and_shards(rng, tmp_path):
    shards = [records(rng, n, row_shape=(3,), dtype=np.float32) for n in (20, 0, 31)]
    values = [str(tmp_path / f"v{k}.npy") for k in range(3)]
    offsets = [str(tmp_path / f"o{k}.npy") for k in range(3)]
    for k, (v, o) in enumerate(shards):
        np.save(values[k], v)
        np.save(offsets[k], o)
    ds = pyloader.RaggedDataset(values, offsets)
    reference = tud.ConcatDataset([ReferenceRecords(v, o) for v, o in shards])
    assert len(ds) == 51
    collate = pyloader.PadCollate(padding_value=-0.5, return_mask=True)
    sampler = lambda: tud.RandomSampler(reference, generator=torch.Generator().manual_seed(5))
    ours = pyloader.DataLoader(ds, batch_size=7, sampler=sampler(), collate_fn=collate)
    assert ours.uses_native_path
    assert_loaders_equal(ours, tud.DataLoader(reference, batch_size=7, sampler=sampler(), collate_fn=collate))
    padded = next(iter(ours)).padded
    assert padded.shape[0] == 7 and padded.shape[2] == 3


def test_records_beside_labels(rng):
    values, offsets = records(rng, 30)
    labels = rng.integers(0, 5, 30)
    ds = pyloader.ArrayDataset(tokens=pyloader.Records(values, offsets, dtype=torch.int64), label=labels)
    collate = pyloader.PadCollate(return_mask=True)

    class Reference(tud.Dataset):
        def __len__(self):
            return 30

        def __getitem__(self, i):
            return {
                "tokens": torch.from_numpy(values[offsets[i] : offsets[i + 1]].astype(np.int64)),
                "label": torch.tensor(labels[i]),
            }

    ours = pyloader.DataLoader(ds, batch_size=4, collate_fn=collate, shuffle=False)
    assert ours._plan().paddings is not None
    assert_loaders_equal(ours, tud.DataLoader(Reference(), batch_size=4, collate_fn=collate))


def test_subset_concat_distributed_resume(rng):
    values, offsets = records(rng, 200)
    ds = pyloader.RaggedDataset(values, offsets, dtype=torch.int64)
    reference = ReferenceRecords(values, offsets, np.int64)
    indices = list(range(150, 0, -3))
    collate = pyloader.PadCollate()
    assert_loaders_equal(
        pyloader.DataLoader(tud.Subset(ds, indices), batch_size=8, collate_fn=collate),
        tud.DataLoader(tud.Subset(reference, indices), batch_size=8, collate_fn=collate),
    )
    lengths = []
    for rank in range(2):
        sampler = pyloader.DistributedSampler(ds, num_replicas=2, rank=rank, seed=1)
        lengths += [
            n
            for batch in pyloader.DataLoader(ds, batch_size=16, sampler=sampler, collate_fn=collate)
            for n in batch.lengths.tolist()
        ]
    assert sorted(lengths) == sorted(np.diff(offsets).tolist())
    torch.manual_seed(3)
    loader = pyloader.DataLoader(ds, batch_size=8, shuffle=True, collate_fn=collate)
    iterator = iter(loader)
    next(iterator)
    state = loader.state_dict()
    rest = list(iterator)
    resumed = pyloader.DataLoader(ds, batch_size=8, shuffle=True, collate_fn=collate)
    resumed.load_state_dict(state)
    for a, b in zip(resumed, rest, strict=True):
        assert_batches_equal(a, b)


def test_pin_memory_without_accelerator_still_delivers(rng):
    values, offsets = records(rng, 20)
    with pytest.warns(UserWarning):
        batches = list(
            pyloader.DataLoader(
                pyloader.RaggedDataset(values, offsets), batch_size=4, collate_fn=pyloader.PadCollate(), pin_memory=True
            )
        )
    assert len(batches) == 5


def test_padding_value_that_does_not_fit_takes_the_python_collate(rng):
    values, offsets = records(rng, 20)
    loader = pyloader.DataLoader(
        pyloader.RaggedDataset(values, offsets), batch_size=4, collate_fn=pyloader.PadCollate(padding_value=0.5)
    )
    assert loader.uses_native_path and loader._plan().paddings is None


def test_bad_input(rng, tmp_path):
    values, offsets = records(rng, 10)
    with pytest.raises(ValueError, match="offsets decrease"):
        pyloader.RaggedDataset(values, offsets[::-1].copy())
    with pytest.raises(ValueError, match="past the end of the values"):
        pyloader.RaggedDataset(values[:-1], offsets)
    with pytest.raises(ValueError, match="first offset is negative"):
        pyloader.RaggedDataset(values, offsets - 1)
    with pytest.raises(TypeError, match="float"):
        pyloader.RaggedDataset(values, offsets.astype(np.float64))
    with pytest.raises(ValueError, match="one-dimensional"):
        pyloader.RaggedDataset(values, offsets.reshape(1, -1))
    with pytest.raises(ValueError, match="empty"):
        pyloader.RaggedDataset(values, np.array([], dtype=np.int64))
    with pytest.raises(TypeError, match="int64 or torch.int32"):
        pyloader.RaggedDataset(values, offsets, dtype=torch.float32)
    with pytest.raises(TypeError, match="integer values"):
        pyloader.RaggedDataset(values.astype(np.float32), offsets, dtype=torch.int64)
    np.save(tmp_path / "values.npy", values)
    np.save(tmp_path / "offsets.npy", offsets[::-1].copy())
    with pytest.raises(ValueError, match="offsets.npy"):
        pyloader.RaggedDataset(str(tmp_path / "values.npy"), str(tmp_path / "offsets.npy"))
    np.save(tmp_path / "v2.npy", values.astype(np.int32))
    np.save(tmp_path / "offsets.npy", offsets)
    with pytest.raises(ValueError, match="v2.npy.*share dtype"):
        pyloader.RaggedDataset(
            [str(tmp_path / "values.npy"), str(tmp_path / "v2.npy")], [str(tmp_path / "offsets.npy")] * 2
        )
    with pytest.raises(ValueError, match="padding_side"):
        pyloader.PadCollate(padding_side="middle")
    with pytest.raises(ValueError, match="max_length"):
        pyloader.PadCollate(max_length=0)
    int32_offsets = pyloader.RaggedDataset(values, offsets.astype(np.int32))
    assert torch.equal(int32_offsets[3], ReferenceRecords(values, offsets)[3])


def test_truncated_values_file_raises_oserror_naming_it(rng, tmp_path):
    values, offsets = records(rng, 20_000, low=100, high=200)
    np.save(tmp_path / "values.npy", values)
    ds = pyloader.RaggedDataset(str(tmp_path / "values.npy"), offsets)
    loader = pyloader.DataLoader(ds, batch_size=64, shuffle=True, collate_fn=pyloader.PadCollate())
    assert_shrinking_file_raises_oserror(loader, tmp_path / "values.npy", 4096, "values.npy")


def test_pickles_for_spawned_workers(rng):
    import pickle

    values, offsets = records(rng, 30)
    ds = pyloader.RaggedDataset(values, offsets, dtype=torch.int64)
    clone = pickle.loads(pickle.dumps(ds))
    assert all(torch.equal(clone[k], ds[k]) for k in range(30))
    loader = tud.DataLoader(
        ds, batch_size=4, num_workers=1, multiprocessing_context="spawn", collate_fn=pyloader.PadCollate()
    )
    assert_loaders_equal(loader, tud.DataLoader(ds, batch_size=4, collate_fn=pyloader.PadCollate()))
