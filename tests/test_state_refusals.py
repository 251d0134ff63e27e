"""A saved state is refused where it would resume the wrong data: another dataset
length, world size, seed or sampler; fields that cannot be what state_dict() wrote.
Each refusal is a ValueError naming what differs, raised before the loader changes."""

import copy
import json

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import pyloader
from pyloader._checkpoint.state import IDENTITY_FIELDS, STATE_FORMAT, parse


def batches(loader):
    return [b[0].tolist() if isinstance(b, (list, tuple)) else b.tolist() for b in loader]


def state_after(loader, steps):
    iterator = iter(loader)
    for _ in range(steps):
        next(iterator)
    state = json.loads(json.dumps(loader.state_dict()))
    del iterator
    return state


def assert_usable(loader, expected):
    """The refused loader still iterates as it would have without the refusal."""
    assert batches(loader) == expected


@pytest.mark.parametrize("path", ["native", "torch"])
def test_another_dataset_length_is_refused_naming_both(path):
    make = lambda rows: pyloader.DataLoader(
        pyloader.ArrayDataset(np.arange(rows)), batch_size=10, shuffle=True, native=path == "native"
    )
    state = state_after(make(1000), 5)
    smaller = make(600)
    with pytest.raises(ValueError, match="dataset of 1000 rows, this loader's dataset has 600"):
        smaller.load_state_dict(state)
    assert len(batches(smaller)) == 60


@pytest.mark.parametrize("sampler_class", [pyloader.DistributedSampler, tud.DistributedSampler])
def test_a_rank_state_in_another_world_size_points_to_merge_states(sampler_class):
    ds = pyloader.ArrayDataset(np.arange(100))
    saved = state_after(pyloader.DataLoader(ds, batch_size=4, sampler=sampler_class(ds, 2, 0, seed=1)), 5)
    loader = pyloader.DataLoader(ds, batch_size=4, sampler=sampler_class(ds, 3, 1, seed=1))
    with pytest.raises(ValueError, match=r"world of 2.*among 3.*merge_states"):
        loader.load_state_dict(saved)
    expected = batches(pyloader.DataLoader(ds, batch_size=4, sampler=sampler_class(ds, 3, 1, seed=1)))
    assert_usable(loader, expected)


def test_a_rank_0_state_loads_on_every_rank_of_the_same_world():
    ds = pyloader.ArrayDataset(np.arange(100))
    saved = state_after(pyloader.DataLoader(ds, batch_size=4, sampler=pyloader.DistributedSampler(ds, 4, 0)), 3)
    for rank in range(4):
        loader = pyloader.DataLoader(ds, batch_size=4, sampler=pyloader.DistributedSampler(ds, 4, rank))
        loader.load_state_dict(saved)
        whole = batches(pyloader.DataLoader(ds, batch_size=4, sampler=pyloader.DistributedSampler(ds, 4, rank)))
        assert batches(loader) == whole[3:]


@pytest.mark.parametrize(
    "change,field",
    [
        (dict(seed=2), "seed"),
        (dict(shuffle=False), "shuffle"),
        (dict(drop_last=True), "sampler_drop_last"),
    ],
)
def test_a_changed_sampler_argument_is_refused_naming_it(change, field):
    ds = pyloader.ArrayDataset(np.arange(101))
    options = dict(num_replicas=2, rank=0, seed=1, shuffle=True, drop_last=False)
    saved = state_after(pyloader.DataLoader(ds, batch_size=4, sampler=pyloader.DistributedSampler(ds, **options)), 3)
    changed = pyloader.DataLoader(ds, batch_size=4, sampler=pyloader.DistributedSampler(ds, **{**options, **change}))
    with pytest.raises(ValueError, match=f"saved with {field}=.*this loader has {field}="):
        changed.load_state_dict(saved)


def test_block_geometry_and_batch_size_are_part_of_the_order():
    ds = pyloader.ArrayDataset(np.arange(500))
    block = lambda rows: pyloader.BlockShuffleSampler(ds, block_rows=rows, window_blocks=4, seed=5)
    saved = state_after(pyloader.DataLoader(ds, batch_size=8, sampler=block(16)), 4)
    with pytest.raises(ValueError, match=r"block=\[16, 4\].*block=\[32, 4\]"):
        pyloader.DataLoader(ds, batch_size=8, sampler=block(32)).load_state_dict(saved)
    with pytest.raises(ValueError, match="batch_size=8.*batch_size=16"):
        pyloader.DataLoader(ds, batch_size=16, sampler=block(16)).load_state_dict(saved)
    with pytest.raises(ValueError, match="drop_last=False.*drop_last=True"):
        pyloader.DataLoader(ds, batch_size=8, sampler=block(16), drop_last=True).load_state_dict(saved)


def test_between_epochs_a_state_carries_no_position_and_loads_into_a_changed_loader():
    # Growing a dataset between epochs is a deliberate change: nothing of the old
    # order remains to be continued.
    loader = pyloader.DataLoader(pyloader.ArrayDataset(np.arange(30)), batch_size=10)
    list(loader)
    state = loader.state_dict()
    assert state["identity"] is None
    bigger = pyloader.DataLoader(pyloader.ArrayDataset(np.arange(50)), batch_size=10)
    bigger.load_state_dict(state)
    assert len(batches(bigger)) == 5


def test_merge_states_refuses_states_of_runs_with_different_seeds():
    ds = pyloader.ArrayDataset(np.arange(90))
    states = [
        state_after(
            pyloader.DataLoader(ds, batch_size=4, sampler=pyloader.DistributedSampler(ds, 2, rank, seed=seed)), 2
        )
        for rank, seed in ((0, 1), (1, 2))
    ]
    with pytest.raises(ValueError, match="disagree on 'seed'"):
        pyloader.DistributedSampler.merge_states(states)


def test_a_merged_state_loads_in_another_world_size():
    ds = pyloader.ArrayDataset(np.arange(90))
    states = [
        state_after(pyloader.DataLoader(ds, batch_size=4, sampler=pyloader.DistributedSampler(ds, 2, rank)), 2)
        for rank in range(2)
    ]
    merged = pyloader.DistributedSampler.merge_states(states)
    loader = pyloader.DataLoader(ds, batch_size=4, sampler=pyloader.DistributedSampler(ds, 3, 1))
    loader.load_state_dict(merged)
    assert len(batches(loader)) > 0


MANGLED = [
    ("batches_yielded", -5, "a non-negative int"),
    ("batches_yielded", 5.0, "a non-negative int"),
    ("batches_yielded", "5", "a non-negative int"),
    ("batches_yielded", True, "a non-negative int"),
    ("native_seed", None, "an int for a shuffled epoch"),
    ("native_seed", -1, r"None or an int in \[0, 2\*\*64\)"),
    ("native_seed", 2**64, r"None or an int in \[0, 2\*\*64\)"),
    ("native_seed", 3.5, r"None or an int in \[0, 2\*\*64\)"),
    ("in_epoch", "yes", "True or False"),
    ("num_workers", -1, "a non-negative int"),
    ("order", "random", "one of"),
    ("generators", "abc", "a list of encoded RNG states"),
    ("global_rng", 5, "None or an encoded RNG state"),
    ("sampler_epoch", 1.0, "None or an int"),
    ("epoch_start_rng", [], "None or the RNG states"),
    ("delivered", {"watermark": "1", "above": []}, "a watermark and a list"),
    ("identity", {"colour": 1}, "a dict of"),
]


@pytest.mark.parametrize("key,value,message", MANGLED, ids=[f"{k}={v!r}" for k, v, _ in MANGLED])
def test_a_mangled_field_is_refused_naming_it_and_the_loader_stays_usable(key, value, message):
    make = lambda: pyloader.DataLoader(
        pyloader.ArrayDataset(np.arange(40)), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3)
    )
    state = state_after(make(), 3)
    state[key] = value
    loader = make()
    expected = batches(make())
    with pytest.raises(ValueError, match=rf"cannot resume: state\['{key}'\] must be {message}"):
        loader.load_state_dict(state)
    assert_usable(loader, expected)


def test_an_rng_state_of_the_wrong_size_is_refused_before_anything_changes():
    make = lambda: pyloader.DataLoader(
        pyloader.ArrayDataset(np.arange(40)), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3)
    )
    state = state_after(make(), 3)
    state["global_rng"] = "AAAA"
    loader = make()
    rng = torch.get_rng_state()
    with pytest.raises(ValueError, match=r"state\['global_rng'\] holds something that is not an RNG state"):
        loader.load_state_dict(state)
    assert torch.equal(torch.get_rng_state(), rng)
    assert loader.generator.get_state().equal(make().generator.get_state())


def test_unknown_keys_and_other_formats_are_refused():
    loader = pyloader.DataLoader(pyloader.ArrayDataset(np.arange(40)), batch_size=4)
    state = state_after(loader, 1)
    with pytest.raises(ValueError, match="keys no pyloader state has: \\['extra'\\]"):
        loader.load_state_dict({**state, "extra": 1})
    with pytest.raises(ValueError, match="not a pyloader DataLoader state"):
        loader.load_state_dict({**state, "format": "pyloader.DataLoader/1"})
    with pytest.raises(ValueError, match="not a pyloader DataLoader state"):
        loader.load_state_dict([state])


def test_a_format_2_state_still_resumes_without_the_checks_it_cannot_support():
    make = lambda: pyloader.DataLoader(
        pyloader.ArrayDataset(np.arange(40)), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3)
    )
    reference = batches(make())
    state = state_after(make(), 3)
    old = {
        key: value for key, value in state.items() if key not in ("global_rng", "identity", "self_iterating_workers")
    }
    old["format"] = "pyloader.DataLoader/2"
    loader = make()
    loader.load_state_dict(old)
    assert batches(loader) == reference[3:]


def test_the_schema_names_every_key_state_dict_writes():
    loader = pyloader.DataLoader(pyloader.ArrayDataset(np.arange(40)), batch_size=4, shuffle=True)
    state = state_after(loader, 2)
    assert state["format"] == STATE_FORMAT
    assert parse(copy.deepcopy(state)).to_dict() == state
    assert set(state["identity"]) <= set(IDENTITY_FIELDS)


class UnknownLength(tud.Dataset):
    def __getitem__(self, index):
        return torch.tensor(index)

    def __len__(self):
        raise NotImplementedError("length unknown")


def test_a_dataset_without_a_length_still_saves_and_resumes():
    batches_of = lambda: tud.BatchSampler(range(10), 2, False)
    loader = pyloader.DataLoader(UnknownLength(), batch_sampler=batches_of())
    state = state_after(loader, 2)
    assert "rows" not in state["identity"]
    resumed = pyloader.DataLoader(UnknownLength(), batch_sampler=batches_of())
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == [[4, 5], [6, 7], [8, 9]]


def test_a_distributed_sampler_subclass_with_its_own_init_saves_and_resumes():
    class Shard(tud.DistributedSampler):
        def __init__(self, rows):  # sets none of torch's attributes
            self.rows = rows

        def __iter__(self):
            return iter(range(0, self.rows, 2))

        def __len__(self):
            return (self.rows + 1) // 2

    ds = pyloader.ArrayDataset(np.arange(20))
    state = state_after(pyloader.DataLoader(ds, batch_size=2, sampler=Shard(20)), 2)
    resumed = pyloader.DataLoader(ds, batch_size=2, sampler=Shard(20))
    resumed.load_state_dict(state)
    assert batches(resumed) == [[8, 10], [12, 14], [16, 18]]


def test_a_merged_state_keeps_what_the_order_depends_on():
    # Rank 0 finished its epoch (its state records no identity), rank 1 did not.
    ds = pyloader.ArrayDataset(np.arange(40))
    make = lambda rank, seed=5: pyloader.DataLoader(
        ds, batch_size=4, sampler=pyloader.DistributedSampler(ds, 2, rank, seed=seed)
    )
    finished = make(0)
    list(finished)
    states = [json.loads(json.dumps(finished.state_dict())), state_after(make(1), 2)]
    merged = pyloader.DistributedSampler.merge_states(states)
    assert merged["identity"]["seed"] == 5
    with pytest.raises(ValueError, match="seed=5, this loader has seed=6"):
        make(0, seed=6).load_state_dict(merged)


def test_a_numpy_seed_is_plain_data_in_the_state():
    ds = pyloader.ArrayDataset(np.arange(40))
    loader = pyloader.DataLoader(ds, batch_size=4, sampler=pyloader.DistributedSampler(ds, 2, 0, seed=np.int64(7)))
    state = state_after(loader, 1)
    assert state["identity"]["seed"] == 7 and type(state["identity"]["seed"]) is int
