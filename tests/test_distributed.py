"""pyloader.DistributedSampler: torch's semantics with a native order; torchrun end to end."""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import pyloader

from conftest import assert_loaders_equal


def ranks(n, world, **kwargs):
    return [list(pyloader.DistributedSampler(range(n), world, rank, **kwargs)) for rank in range(world)]


def interleave(per_rank):
    """The padded global order: position p went to rank p % world as its (p // world)-th sample."""
    world = len(per_rank)
    return [per_rank[p % world][p // world] for p in range(world * len(per_rank[0]))]


@pytest.mark.parametrize("n", [1, 2, 9, 10, 11, 64, 1001])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("drop_last", [False, True])
def test_unshuffled_matches_torch_exactly(n, world, drop_last):
    ours = ranks(n, world, shuffle=False, drop_last=drop_last)
    theirs = [
        list(tud.DistributedSampler(range(n), world, rank, shuffle=False, drop_last=drop_last)) for rank in range(world)
    ]
    assert ours == theirs


@pytest.mark.parametrize("n", [1, 2, 9, 10, 11, 64, 1001])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shuffled_follows_torchs_padding_and_sharding_rule(n, world, drop_last):
    ours = ranks(n, world, shuffle=True, drop_last=drop_last, seed=3)
    theirs = [tud.DistributedSampler(range(n), world, rank, drop_last=drop_last) for rank in range(world)]
    assert [len(s) for s in ours] == [len(t) for t in theirs]
    order = interleave(ours)
    if drop_last:
        assert len(set(order)) == len(order)  # the tail is dropped, nothing repeats
    else:
        assert sorted(order[:n]) == list(range(n))  # an even split is never shorter than n
        for p in range(n, len(order)):  # padding wraps to the start of the epoch's order
            assert order[p] == order[p % n]
        assert set(order) == set(range(n))


def test_set_epoch_and_seed_change_the_order_consistently():
    a = pyloader.DistributedSampler(range(100), 2, 0, seed=1)
    first = list(a)
    assert list(a) == first  # same epoch, same order
    a.set_epoch(1)
    assert list(a) != first
    b = pyloader.DistributedSampler(range(100), 2, 0, seed=1)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(pyloader.DistributedSampler(range(100), 2, 0, seed=2)) != first


def test_rank_and_world_size_default_from_the_process_group():
    import socket

    import torch.distributed as dist

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        sampler = pyloader.DistributedSampler(range(10))
        assert (sampler.rank, sampler.num_replicas) == (0, 1)
        assert sorted(sampler) == list(range(10))
    finally:
        dist.destroy_process_group()


def test_loader_with_native_sampler_yields_the_sampler_order():
    ds = pyloader.ArrayDataset(np.arange(103), np.arange(103) * 2)
    for world in (1, 3):
        for rank in range(world):
            sampler = pyloader.DistributedSampler(ds, world, rank, drop_last=False)
            sampler.set_epoch(5)
            loader = pyloader.DataLoader(ds, batch_size=8, sampler=sampler, drop_last=True)
            assert loader.uses_native_path
            expected = list(sampler)
            got = torch.cat([b[0] for b in loader]).tolist()
            assert got == expected[: len(expected) // 8 * 8]
            assert len(loader) == len(list(loader))


def test_torch_distributed_sampler_gives_torchs_batches():
    x = np.random.default_rng(0).random((57, 3), dtype=np.float32)
    ds = pyloader.ArrayDataset(x)
    for rank in range(3):
        make = lambda rank=rank: tud.DistributedSampler(ds, 3, rank, seed=4)
        assert_loaders_equal(
            pyloader.DataLoader(ds, batch_size=5, sampler=make()), tud.DataLoader(ds, batch_size=5, sampler=make())
        )


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
    reason="torchrun not installed",
)
def test_torchrun_two_ranks(tmp_path):
    rows, epochs, world = 101, 3, 2
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        torchrun = shutil.which("torchrun")
    worker = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [torchrun, "--standalone", f"--nproc_per_node={world}", worker, str(tmp_path), str(rows), str(epochs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(world)]
    assert [r["rank"] for r in records] == [0, 1] and all(r["world_size"] == world for r in records)
    per_rank = math.ceil(rows / world)
    for epoch in range(epochs):
        shards = [r["epochs"][epoch] for r in records]
        assert all(len(s) == per_rank for s in shards)
        padding = per_rank * world - rows
        combined = shards[0] + shards[1]
        assert set(combined) == set(range(rows))  # together they cover the dataset
        assert len(combined) - len(set(combined)) == padding  # disjoint but for torch's padding
        # The same computation in one process gives the same shards.
        for rank in range(world):
            sampler = pyloader.DistributedSampler(range(rows), world, rank, seed=7)
            sampler.set_epoch(epoch)
            assert shards[rank] == list(sampler)
    assert records[0]["epochs"][0] != records[0]["epochs"][1]  # set_epoch reshuffles


def _elastic_run(states, world, rows, stop=None):
    """Every rank of `world` in one process: (samples per rank, states per rank)."""
    ds = pyloader.ArrayDataset(np.arange(rows))
    seen, saved = [], []
    for rank in range(world):
        sampler = pyloader.DistributedSampler(ds, num_replicas=world, rank=rank, seed=3)
        loader = pyloader.DataLoader(ds, batch_size=4, sampler=sampler)
        if states is not None:
            loader.load_state_dict(states)
        samples = []
        for step, (batch,) in enumerate(loader, start=1):
            samples += batch.tolist()
            if stop is not None and step == stop(rank):
                break
        seen.append(samples)
        saved.append(json.loads(json.dumps(loader.state_dict())))
    return seen, saved


@pytest.mark.parametrize("old,new", [(2, 3), (3, 2), (4, 1), (1, 4), (3, 3)])
@pytest.mark.parametrize("rows", [103, 120])
def test_elastic_resume_sees_every_sample_once(old, new, rows):
    first, states = _elastic_run(None, old, rows, stop=lambda rank: 2 + 3 * rank)
    second, _ = _elastic_run(pyloader.DistributedSampler.merge_states(states), new, rows)
    assert len({len(s) for s in second}) == 1  # equal steps on every new rank
    combined = [x for s in first + second for x in s]
    assert set(combined) == set(range(rows))
    # Repeats only where DistributedSampler pads: the old world's padding positions a
    # finished rank consumed, and the new world's padding of what remained.
    old_padding = sum(1 for rank, s in enumerate(first) for p in range(len(s)) if rank + old * p >= rows)
    remaining = rows - (sum(len(s) for s in first) - old_padding)
    new_padding = -(-remaining // new) * new - remaining
    assert len(combined) - rows == old_padding + new_padding


def test_elastic_epoch_resumes_again_with_the_same_world():
    rows = 200
    first, states = _elastic_run(None, 2, rows, stop=lambda rank: 4 + rank)
    merged = pyloader.DistributedSampler.merge_states(states)
    uninterrupted, _ = _elastic_run(merged, 3, rows)
    partial, again = _elastic_run(merged, 3, rows, stop=lambda rank: 2)
    for rank in range(3):
        ds = pyloader.ArrayDataset(np.arange(rows))
        loader = pyloader.DataLoader(
            ds, batch_size=4, sampler=pyloader.DistributedSampler(ds, num_replicas=3, rank=rank, seed=3)
        )
        loader.load_state_dict(again[rank])
        assert partial[rank] + [x for (b,) in loader for x in b.tolist()] == uninterrupted[rank]
    with pytest.raises(ValueError, match="same world size"):
        pyloader.DistributedSampler.merge_states(again)


def test_merge_states_refuses_incomplete_or_mixed_states():
    _, states = _elastic_run(None, 3, 90, stop=lambda rank: 2)
    with pytest.raises(ValueError, match="one state per rank"):
        pyloader.DistributedSampler.merge_states(states[:2])
    with pytest.raises(ValueError, match="exactly once"):
        pyloader.DistributedSampler.merge_states([states[0], states[0], states[1]])
    _, other = _elastic_run(None, 3, 91, stop=lambda rank: 2)
    with pytest.raises(ValueError, match="disagree"):
        pyloader.DistributedSampler.merge_states([states[0], states[1], other[2]])
    ds = pyloader.ArrayDataset(np.arange(90))
    never_iterated = pyloader.DataLoader(ds, batch_size=4, sampler=pyloader.DistributedSampler(ds, 3, 2, seed=3))
    with pytest.raises(ValueError, match=r"at \[2\].*had not iterated"):
        pyloader.DistributedSampler.merge_states([states[0], states[1], never_iterated.state_dict()])


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
    reason="torchrun not installed",
)
@pytest.mark.parametrize("old,new", [(2, 3), (3, 2)])
def test_torchrun_elastic_resume(tmp_path, old, new):
    rows = 157
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        torchrun = shutil.which("torchrun")
    worker = os.path.join(os.path.dirname(__file__), "elastic_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for mode, world in (("save", old), ("resume", new)):
        result = subprocess.run(
            [torchrun, "--standalone", f"--nproc_per_node={world}", worker, str(tmp_path), str(rows), mode],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    saved = [json.loads((tmp_path / f"save{rank}.json").read_text()) for rank in range(old)]
    resumed = [json.loads((tmp_path / f"resume{rank}.json").read_text()) for rank in range(new)]
    epoch1 = [x for r in saved + resumed for x in r["epoch1"]]
    assert set(epoch1) == set(range(rows))
    remaining = rows - sum(len(r["epoch1"]) for r in saved)
    assert len(epoch1) - rows == -(-remaining // new) * new - remaining
    epoch2 = [x for r in resumed for x in r["epoch2"]]
    assert set(epoch2) == set(range(rows))  # later epochs are ordinary epochs of the new world
