"""Exact mid-epoch resume: state_dict() / load_state_dict()."""

import json
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import pyloader

EPOCHS = 3


class PlainDataset(tud.Dataset):
    """A generic Python dataset: runs on torch's path."""

    def __len__(self):
        return 203

    def __getitem__(self, index):
        return index


def ids_of(batch):
    if isinstance(batch, torch.Tensor):
        return batch.tolist()
    return batch[0].tolist()


def loader_factories():
    data = pyloader.ArrayDataset(np.arange(203, dtype=np.int64), np.arange(203) * 2.0)
    weights = torch.linspace(0.1, 1.0, 203)
    return {
        "native_shuffle_global_rng": lambda: pyloader.DataLoader(data, batch_size=16, shuffle=True),
        "native_shuffle_generator": lambda: pyloader.DataLoader(
            data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(3)
        ),
        "native_sequential_drop_last": lambda: pyloader.DataLoader(data, batch_size=16, drop_last=True),
        "native_distributed": lambda: pyloader.DataLoader(
            data, batch_size=8, sampler=pyloader.DistributedSampler(data, 3, 1, seed=5)
        ),
        "sampler_random_generator": lambda: pyloader.DataLoader(
            data, batch_size=16, sampler=tud.RandomSampler(data, generator=torch.Generator().manual_seed(1))
        ),
        "sampler_weighted_global_rng": lambda: pyloader.DataLoader(
            data, batch_size=16, sampler=tud.WeightedRandomSampler(weights, 203)
        ),
        "torch_path_workers0": lambda: pyloader.DataLoader(PlainDataset(), batch_size=16, shuffle=True),
        "torch_path_workers2": lambda: pyloader.DataLoader(
            PlainDataset(), batch_size=16, shuffle=True, num_workers=2, collate_fn=torch.tensor
        ),
        "thread_workers2": lambda: pyloader.DataLoader(
            PlainDataset(), batch_size=16, shuffle=True, num_workers=2, worker_mode="thread"
        ),
    }


def run(make, stop=None, state=None):
    """Batches of EPOCHS epochs; with `stop=(epoch, batch)` returns (batches, checkpoint)."""
    loader = make()
    consumed = []
    first_epoch = 0
    if state is not None:
        torch.manual_seed(999)
        torch.set_rng_state(state["rng"])
        loader.load_state_dict(state["loader"])
        first_epoch = state["epoch"]
    else:
        torch.manual_seed(0)
    for epoch in range(first_epoch, EPOCHS):
        if hasattr(loader.sampler, "set_epoch") and state is None:
            loader.sampler.set_epoch(epoch)
        if state is not None and epoch > first_epoch and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for step, batch in enumerate(loader):
            consumed.append(ids_of(batch))
            if stop == (epoch, step + 1):
                return consumed, {"loader": loader.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch}
    return consumed, None


@pytest.mark.parametrize("name", list(loader_factories()))
@pytest.mark.parametrize("where", [(0, "first"), (1, "middle"), (1, "last"), (2, "last")])
def test_resume_matches_uninterrupted_run(name, where):
    make = loader_factories()[name]
    batches = len(make())
    stop = (where[0], {"first": 1, "middle": batches // 2, "last": batches}[where[1]])
    reference, _ = run(make)
    before, checkpoint = run(make, stop=stop)
    assert checkpoint is not None and checkpoint["loader"]["in_epoch"]
    after, _ = run(make, state=checkpoint)
    assert before + after == reference


def test_state_between_epochs_resumes_at_the_next_epoch():
    make = loader_factories()["native_shuffle_generator"]
    reference, _ = run(make)
    loader = make()
    torch.manual_seed(0)
    first = [ids_of(b) for b in loader]
    state = loader.state_dict()
    assert not state["in_epoch"]
    resumed = make()
    resumed.load_state_dict(state)
    assert first + [ids_of(b) for b in resumed] == reference[: 2 * len(first)]


def test_native_state_is_small_and_thread_count_independent():
    data = pyloader.ArrayDataset(np.arange(10_000))
    loader = pyloader.DataLoader(data, batch_size=100, shuffle=True, num_threads=1)
    iterator = iter(loader)
    for _ in range(7):
        next(iterator)
    state = loader.state_dict()
    assert state["batches_yielded"] == 7 and state["epoch_start_rng"] is None
    expected = [ids_of(b) for b in iterator]
    for threads in (1, 4):
        other = pyloader.DataLoader(data, batch_size=100, shuffle=True, num_threads=threads)
        other.load_state_dict(state)
        assert [ids_of(b) for b in other] == expected


def test_bad_states_raise_clearly():
    loader = pyloader.DataLoader(pyloader.ArrayDataset(np.arange(10)), batch_size=2)
    with pytest.raises(ValueError, match="not a pyloader DataLoader state"):
        loader.load_state_dict({"format": "something else"})
    shuffled = pyloader.DataLoader(pyloader.ArrayDataset(np.arange(10)), batch_size=2, shuffle=True)
    iterator = iter(shuffled)
    next(iterator)
    sequential = pyloader.DataLoader(pyloader.ArrayDataset(np.arange(10)), batch_size=2)
    with pytest.raises(ValueError, match="sampler='RandomSampler', this loader has sampler='SequentialSampler'"):
        sequential.load_state_dict(shuffled.state_dict())
    assert next(iter(sequential))[0].tolist() == [0, 1]  # refused before anything changed

    class Stream(tud.IterableDataset):
        def __iter__(self):
            return iter(range(5))

    stream = pyloader.DataLoader(Stream())
    with pytest.raises(ValueError, match="'shuffled' order, this loader iterates an IterableDataset"):
        stream.load_state_dict(shuffled.state_dict())


def test_resume_in_a_new_process_after_sigkill(tmp_path):
    worker = os.path.join(os.path.dirname(__file__), "resume_worker.py")
    path = str(tmp_path / "checkpoint.pt")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(__file__))
    saved = subprocess.run(
        [sys.executable, worker, "save", path, "1", "9"], capture_output=True, text=True, env=env, timeout=120
    )
    assert saved.returncode == -9, saved.stderr[-2000:]  # it really was killed
    resumed = subprocess.run(
        [sys.executable, worker, "resume", path], capture_output=True, text=True, env=env, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reference = subprocess.run(
        [sys.executable, worker, "save", path + ".ref", "99", "0"], capture_output=True, text=True, env=env, timeout=120
    )
    assert reference.returncode == 0, reference.stderr[-2000:]
    assert json.loads(saved.stdout) + json.loads(resumed.stdout) == json.loads(reference.stdout)


@pytest.mark.parametrize(
    "name", ["native_shuffle_global_rng", "sampler_random_generator", "torch_path_workers0", "thread_workers2"]
)
def test_checkpoint_after_break_resumes_the_same_epoch(name):
    make = loader_factories()[name]
    reference, _ = run(make)
    loader = make()
    torch.manual_seed(0)
    before = [ids_of(b) for b in loader]  # epoch 0
    for step, batch in enumerate(loader):  # epoch 1, pre-empted after 4 batches
        before.append(ids_of(batch))
        if step == 3:
            break
    import gc

    gc.collect()  # the abandoned iterator is gone; the loader still knows where it was
    checkpoint = {"loader": loader.state_dict(), "rng": torch.get_rng_state(), "epoch": 1}
    assert checkpoint["loader"]["in_epoch"] and checkpoint["loader"]["batches_yielded"] == 4
    after, _ = run(make, state=checkpoint)
    assert before + after == reference


def test_state_dict_of_a_restored_loader_is_the_restored_state():
    make = loader_factories()["sampler_random_generator"]
    reference, _ = run(make)
    _, checkpoint = run(make, stop=(1, 4))
    restored = make()
    restored.load_state_dict(checkpoint["loader"])
    again = restored.state_dict()  # pre-empted before the first step after restoring
    assert again["in_epoch"] and again["batches_yielded"] == 4
    after, _ = run(make, state=dict(checkpoint, loader=again))
    assert reference[len(reference) - len(after) :] == after and len(after) == len(reference) - (len(make()) + 4)


@pytest.mark.parametrize("where", [(0, 3), (1, 3), (2, 1)])
def test_persistent_workers_resume(where):
    make = lambda: pyloader.DataLoader(
        PlainDataset(), batch_size=16, shuffle=True, num_workers=2, persistent_workers=True, collate_fn=torch.tensor
    )
    reference, _ = run(make)
    before, checkpoint = run(make, stop=where)
    after, _ = run(make, state=checkpoint)
    assert before + after == reference


def test_persistent_workers_load_into_a_loader_that_already_ran():
    make = lambda: pyloader.DataLoader(
        PlainDataset(), batch_size=16, shuffle=True, num_workers=2, persistent_workers=True, collate_fn=torch.tensor
    )
    reference, _ = run(make)
    before, checkpoint = run(make, stop=(1, 5))
    loader = make()
    list(loader)  # its persistent workers exist now
    torch.set_rng_state(checkpoint["rng"])
    loader.load_state_dict(checkpoint["loader"])
    rest = [ids_of(b) for b in loader] + [ids_of(b) for b in loader]
    assert before + rest == reference


def test_out_of_order_delivery_of_a_replayed_iterable_cannot_be_checkpointed():
    # A Stateful dataset resumes each worker from its own state (test_torchdata_semantics.py);
    # one without state_dict() would have to be replayed, which needs the batches in order.
    class Stream(tud.IterableDataset):
        def __iter__(self):
            info = tud.get_worker_info()
            return iter(range(info.id, 40, info.num_workers))

    loader = pyloader.DataLoader(Stream(), batch_size=4, num_workers=2, in_order=False)
    iterator = iter(loader)
    next(iterator)
    with pytest.raises(ValueError, match="in_order=False and num_workers > 0 needs a dataset with state_dict"):
        loader.state_dict()
    del iterator


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_persistent_workers_checkpoint_between_epochs(mode):
    make = lambda: pyloader.DataLoader(
        PlainDataset(),
        batch_size=16,
        shuffle=True,
        num_workers=2,
        persistent_workers=True,
        worker_mode=mode,
        collate_fn=torch.tensor,
    )
    reference, _ = run(make)
    loader = make()
    torch.manual_seed(0)
    before = [ids_of(b) for b in loader]  # epoch 0 ran to its end: the workers live on
    checkpoint = {"loader": loader.state_dict(), "rng": torch.get_rng_state()}
    assert not checkpoint["loader"]["in_epoch"] and not checkpoint["loader"]["next_epoch_starts_workers"]
    restored = make()
    torch.manual_seed(999)
    torch.set_rng_state(checkpoint["rng"])
    restored.load_state_dict(checkpoint["loader"])
    after = [ids_of(b) for _ in range(EPOCHS - 1) for b in restored]
    assert before + after == reference


def test_resumed_iterator_outlives_its_loader():
    make = loader_factories()["torch_path_workers0"]
    reference, _ = run(make)
    before, checkpoint = run(make, stop=(1, 4))

    def resumed_iterator():
        loader = make()
        torch.set_rng_state(checkpoint["rng"])
        loader.load_state_dict(checkpoint["loader"])
        return iter(loader)  # the loader itself is dropped here

    rest = [ids_of(b) for b in resumed_iterator()]
    assert before + rest == reference[: len(before) + len(rest)] and len(before) + len(rest) == 2 * len(make())


def test_loading_a_state_replaces_the_loaders_own_progress():
    make = loader_factories()["native_shuffle_generator"]
    fresh = make()
    between_epochs = fresh.state_dict()
    loader = make()
    for step, _ in enumerate(loader):
        if step == 2:
            break
    assert loader.state_dict()["in_epoch"]
    loader.load_state_dict(between_epochs)
    assert not loader.state_dict()["in_epoch"] and loader.state_dict()["batches_yielded"] == 0


def test_a_failed_resume_can_be_retried():
    shuffled = pyloader.DataLoader(pyloader.ArrayDataset(np.arange(10)), batch_size=2, shuffle=True)
    iterator = iter(shuffled)
    next(iterator)
    state = shuffled.state_dict()
    # Refused at iter(): the plan (native or torch's path) is decided there.
    custom = pyloader.DataLoader(pyloader.ArrayDataset(np.arange(10)), batch_size=2, shuffle=True, native=False)
    custom.load_state_dict(state)
    for _ in range(2):
        with pytest.raises(ValueError, match="'shuffled' order, this loader now uses torch's path"):
            iter(custom)


@pytest.mark.parametrize("kind", ["native_shuffle", "sampler", "torch_path"])
def test_state_is_json_and_a_json_round_trip_resumes(kind):
    data = torch.arange(40).reshape(20, 2)
    ds = pyloader.TensorDataset(data)
    options = {
        "native_shuffle": dict(shuffle=True),
        "sampler": dict(sampler=pyloader.RandomSampler(ds, generator=torch.Generator().manual_seed(1))),
        "torch_path": dict(shuffle=True, native=False, generator=torch.Generator().manual_seed(2)),
    }[kind]
    torch.manual_seed(5)
    loader = pyloader.DataLoader(ds, batch_size=3, **options)
    iterator = iter(loader)
    next(iterator)
    next(iterator)
    text = json.dumps(loader.state_dict())
    rng = torch.get_rng_state()
    rest = [batch[0].tolist() for batch in iterator]
    following = [batch[0].tolist() for batch in loader]
    options = {
        "native_shuffle": dict(shuffle=True),
        "sampler": dict(sampler=pyloader.RandomSampler(ds, generator=torch.Generator().manual_seed(99))),
        "torch_path": dict(shuffle=True, native=False, generator=torch.Generator().manual_seed(98)),
    }[kind]
    resumed = pyloader.DataLoader(ds, batch_size=3, **options)
    resumed.load_state_dict(json.loads(text))
    torch.set_rng_state(rng)
    assert [batch[0].tolist() for batch in resumed] == rest
    assert [batch[0].tolist() for batch in resumed] == following


class HeldFirstBatch(tud.Dataset):
    """Batch 0 (samples 0-3) waits until the test releases it, so with workers and
    in_order=False another batch is always delivered first."""

    def __init__(self, released=True):
        self.release = multiprocessing.get_context("fork").Event()
        if released:
            self.release.set()

    def __len__(self):
        return 60

    def __getitem__(self, index):
        if index < 4:
            self.release.wait()
        return torch.tensor(index)


@pytest.mark.parametrize("worker_mode", ["process", "thread"])
@pytest.mark.parametrize("stop_after", [1, 4, 9])
def test_in_order_false_resumes_every_remaining_sample_once(worker_mode, stop_after):
    make = lambda dataset=None: pyloader.DataLoader(
        dataset or HeldFirstBatch(), batch_size=4, num_workers=2, in_order=False, worker_mode=worker_mode
    )
    held = HeldFirstBatch(released=False)
    loader = make(held)
    iterator = iter(loader)
    seen = [next(iterator).tolist()]
    assert seen[0] != [0, 1, 2, 3]  # overtaken
    if stop_after > 1:
        held.release.set()
    seen += [next(iterator).tolist() for _ in range(stop_after - 1)]
    state = json.loads(json.dumps(loader.state_dict()))
    if stop_after == 1:
        # Batch 0 is still held: the state records a batch delivered above a gap.
        assert state["delivered"]["watermark"] == 0 and state["delivered"]["above"]
    held.release.set()
    del iterator
    resumed = make()
    resumed.load_state_dict(state)
    rest = [batch.tolist() for batch in resumed]
    samples = [x for batch in seen + rest for x in batch]
    assert sorted(samples) == list(range(60))  # every sample exactly once
    # And a second interruption inside the resumed epoch composes with the first.
    again = make()
    again.load_state_dict(state)
    iterator = iter(again)
    middle = [next(iterator).tolist() for _ in range(2)]
    second_state = again.state_dict()
    del iterator
    last = make()
    last.load_state_dict(second_state)
    samples = [x for batch in seen + middle + [b.tolist() for b in last] for x in batch]
    assert sorted(samples) == list(range(60))


class FailsAtSeven(tud.Dataset):
    def __len__(self):
        return 20

    def __getitem__(self, index):
        if index == 7:
            raise KeyError("seven")
        return torch.tensor(index)


@pytest.mark.parametrize(
    "options", [dict(), dict(num_workers=2), dict(native=False), dict(native=False, num_workers=2)]
)
@pytest.mark.parametrize("continue_after_error", [False, True])
def test_state_after_an_error_resumes_after_the_failed_batch(options, continue_after_error):
    if options.get("native") is False:
        ds = FailsAtSeven()  # __getitem__ raises, in torch's fetch
    else:
        ds = pyloader.ArrayDataset(np.arange(20))  # native: the collate_fn raises
        options = {**options, "collate_fn": _fail_at_seven}
    loader = pyloader.DataLoader(ds, batch_size=3, **options)
    iterator = iter(loader)
    delivered = [next(iterator), next(iterator)]
    with pytest.raises(KeyError, match="seven"):
        next(iterator)
    if continue_after_error:
        delivered.append(next(iterator))
    state = json.loads(json.dumps(loader.state_dict()))
    del iterator
    resumed = pyloader.DataLoader(ds, batch_size=3, **options)
    resumed.load_state_dict(state)
    rest = list(resumed)
    samples = [int(x) for batch in delivered + rest for x in (batch if isinstance(batch, torch.Tensor) else batch[0])]
    assert samples == [x for x in range(20) if x not in (6, 7, 8)]  # each once; the failed batch skipped


def _fail_at_seven(samples):
    values = [int(s[0]) if isinstance(s, tuple) else int(s) for s in samples]
    if 7 in values:
        raise KeyError("seven")
    return torch.tensor(values)


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("batches_yielded", -5, "a non-negative int, got -5"),
        ("batches_yielded", 5.0, "a non-negative int, got 5.0"),
        ("batches_yielded", "5", "a non-negative int, got '5'"),
        ("batches_yielded", True, "a non-negative int, got True"),
        ("native_seed", None, "an int for a shuffled epoch, got None"),
        ("native_seed", -1, r"None or an int in \[0, 2\*\*64\), got -1"),
        ("native_seed", 3.5, r"None or an int in \[0, 2\*\*64\), got 3.5"),
        ("native_seed", 1 << 64, r"None or an int in \[0, 2\*\*64\)"),
        ("in_epoch", "yes", "True or False, got 'yes'"),
        ("num_workers", -1, "a non-negative int, got -1"),
        ("generators", "abc", "a list of encoded RNG states"),
        ("sampler_epoch", "3", "None or an int, got '3'"),
    ],
)
def test_a_mangled_state_is_refused_naming_the_field_and_the_loader_stays_usable(key, value, expected):
    # As after a JSON round trip through another tool, or a hand edit.
    data = np.arange(1000)
    make = lambda: pyloader.DataLoader(
        pyloader.ArrayDataset(data),
        batch_size=10,
        shuffle=True,  # noqa: E731
        generator=torch.Generator().manual_seed(3),
    )
    loader = make()
    iterator = iter(loader)
    for _ in range(5):
        next(iterator)
    state = loader.state_dict()
    restored = make()
    with pytest.raises(ValueError, match=rf"cannot resume: state\['{key}'\] must be {expected}"):
        restored.load_state_dict({**state, key: value})
    restored.load_state_dict(state)  # a refusal changed nothing: the good state still loads
    reference = make()
    expected_rest = list(reference)[5:]
    assert [b[0].tolist() for b in restored] == [b[0].tolist() for b in expected_rest]
