"""torchdata's StatefulDataLoader, side by side: the behaviours its users rely on when
they save, reload and resume, compared call for call with pyloader's DataLoader. The
states' layouts differ; what the loaders yield after loading them must not."""

import json
import multiprocessing

import pytest
import torch
import torch.utils.data as tud

import pyloader

stateful_dataloader = pytest.importorskip("torchdata.stateful_dataloader")
TorchdataLoader = stateful_dataloader.StatefulDataLoader
LOADERS = {"torchdata": TorchdataLoader, "pyloader": pyloader.DataLoader}

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Rows(tud.Dataset):
    def __len__(self):
        return 20

    def __getitem__(self, index):
        return torch.tensor(index)


class Sharded(tud.IterableDataset):
    """Each worker takes every num_workers-th of 20 items."""

    def __iter__(self):
        info = tud.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        return iter(range(worker, 20, workers))


class StatefulSharded(tud.IterableDataset):
    """A worker's position kept in the dataset (Stateful), restarting after its end."""

    def __init__(self, lengths=None):
        self.position, self.lengths = 0, lengths

    def __iter__(self):
        info = tud.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        items = (
            list(range(worker, 20, workers))
            if self.lengths is None
            else list(range(100 * worker, 100 * worker + self.lengths[worker]))
        )
        while self.position < len(items):
            self.position += 1
            yield items[self.position - 1]
        self.position = 0

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


def values(loader_or_iterator):
    return [batch.tolist() if isinstance(batch, torch.Tensor) else batch for batch in loader_or_iterator]


def saved(loader):
    """The loader's state; pyloader's through a JSON round trip (its states are plain data)."""
    state = loader.state_dict()
    return json.loads(json.dumps(state)) if isinstance(loader, pyloader.DataLoader) else state


def both(run):
    """run(cls) for torchdata's loader and pyloader's, from the same global seed."""
    results = {}
    for name, cls in LOADERS.items():
        torch.manual_seed(0)
        results[name] = run(cls)
    return results["torchdata"], results["pyloader"]


def same_order_as_torchdata(kwargs) -> bool:
    """Whether both loaders give the same batches: torchdata replaces shuffle=True's
    RandomSampler with its own, whose order differs from torch's (which pyloader keeps)."""
    return not kwargs.get("shuffle")


MAP_OPTIONS = {
    "w0": dict(batch_size=3),
    "w0-shuffle": dict(batch_size=3, shuffle=True),
    "w2": dict(batch_size=3, num_workers=2),
    "w2-persistent": dict(batch_size=3, num_workers=2, persistent_workers=True),
    "unbatched": dict(batch_size=None),
}
ITERABLE_OPTIONS = {
    "w0": dict(batch_size=3),
    "w2": dict(batch_size=3, num_workers=2),
    "w2-persistent": dict(batch_size=3, num_workers=2, persistent_workers=True),
    "w2-unbatched": dict(batch_size=None, num_workers=2),
}
CASES = (
    [("map", Rows, options) for options in MAP_OPTIONS]
    + [("iterable", Sharded, options) for options in ITERABLE_OPTIONS]
    + [("stateful-iterable", StatefulSharded, options) for options in ("w0", "w2")]
)


def options_of(kind, options):
    return (MAP_OPTIONS if kind == "map" else ITERABLE_OPTIONS)[options]


@pytest.mark.parametrize("mid_iteration", [False, True], ids=["idle", "mid-iteration"])
@pytest.mark.parametrize("kind,make,options", CASES, ids=[f"{k}-{o}" for k, _, o in CASES])
def test_state_after_an_epoch_resumes_with_a_whole_fresh_epoch(kind, make, options, mid_iteration):
    kwargs = options_of(kind, options)

    def run(cls):
        loader = cls(make(), **kwargs)
        values(loader)
        state = saved(loader)
        uninterrupted = values(loader)  # the next epoch of the run that saved the state
        restored = cls(make(), **kwargs)
        if mid_iteration:
            iterator = iter(restored)
            next(iterator)
        restored.load_state_dict(state)
        return uninterrupted, values(restored)

    theirs, ours = both(run)
    if same_order_as_torchdata(kwargs):
        assert ours == theirs
    # One whole epoch: the next one of the saved run (without a shuffle, equal to the first).
    assert ours[1] == ours[0] and theirs[1] == theirs[0]


@pytest.mark.parametrize("options", list(MAP_OPTIONS))
def test_initial_state_restarts_the_run(options):
    kwargs = MAP_OPTIONS[options]

    def run(cls):
        loader = cls(Rows(), **kwargs)
        initial = loader.state_dict()
        first, second = values(loader), values(loader)
        loader = cls(Rows(), **kwargs)
        iterator = iter(loader)
        next(iterator), next(iterator)
        loader.load_state_dict(initial)
        reported = loader.state_dict()
        return first, second, values(loader), values(loader), reported == initial

    theirs, ours = both(run)
    if same_order_as_torchdata(kwargs):
        assert ours == theirs
    for result in (theirs, ours):
        first, second, again_first, again_second, round_trip = result
        assert (again_first, again_second, round_trip) == (first, second, True)


@pytest.mark.parametrize("options", list(MAP_OPTIONS))
def test_a_loaded_state_is_what_state_dict_returns_until_iteration(options):
    kwargs = MAP_OPTIONS[options]
    loader = pyloader.DataLoader(Rows(), **kwargs)
    iterator = iter(loader)
    next(iterator)
    state = saved(loader)
    other = pyloader.DataLoader(Rows(), **kwargs)
    other.load_state_dict(state)
    assert other.state_dict() == state
    assert json.loads(json.dumps(other.state_dict())) == state


def failing_worker_init(worker_id):
    raise KeyError(f"no shard for worker {worker_id}")


def test_worker_init_fn_error_comes_out_of_iter():
    for cls in LOADERS.values():
        loader = cls(Rows(), batch_size=3, num_workers=2, worker_init_fn=failing_worker_init)
        with pytest.raises(KeyError, match="no shard for worker"):
            iterator = iter(loader)
            del iterator
        # The loader stays usable once the cause is gone.
        loader.worker_init_fn = None
        assert len(values(loader)) == 7


@pytest.mark.parametrize("snapshot_every_n_steps", [0, 1, 3])
@pytest.mark.parametrize("options", ["w0", "w2", "w2-persistent"])
def test_snapshot_interval_never_changes_a_state(options, snapshot_every_n_steps):
    kwargs = dict(MAP_OPTIONS[options], shuffle=True, snapshot_every_n_steps=snapshot_every_n_steps)
    torch.manual_seed(1)
    reference = values(pyloader.DataLoader(Rows(), **kwargs))
    for stop in range(len(reference) + 1):
        torch.manual_seed(1)
        loader = pyloader.DataLoader(Rows(), **kwargs)
        iterator = iter(loader)
        seen = [next(iterator).tolist() for _ in range(stop)]
        state = loader.state_dict()
        del iterator
        restored = pyloader.DataLoader(Rows(), **kwargs)
        restored.load_state_dict(state)
        assert seen + values(restored) == reference


@pytest.mark.parametrize("options", ["w2", "w2-persistent"])
@pytest.mark.parametrize("stop", [0, 1, 3])
def test_round_robin_workers_state_asked_again_right_after_a_resume(options, stop):
    kwargs = ITERABLE_OPTIONS[options]
    reference = values(pyloader.DataLoader(StatefulSharded(), **kwargs))
    loader = pyloader.DataLoader(StatefulSharded(), **kwargs)
    iterator = iter(loader)
    seen = [next(iterator).tolist() for _ in range(stop)]
    state = loader.state_dict()
    del iterator
    resumed = pyloader.DataLoader(StatefulSharded(), **kwargs)
    resumed.load_state_dict(state)
    iterator = iter(resumed)
    seen.append(next(iterator).tolist())  # one worker has produced a batch since the resume, the other not
    again = resumed.state_dict()
    del iterator
    last = pyloader.DataLoader(StatefulSharded(), **kwargs)
    last.load_state_dict(again)
    assert seen + values(last) == reference


@pytest.mark.parametrize("stop", [1, 3, 5, 7])
def test_out_of_order_workers_with_some_finished_resume_exactly(stop):
    # Worker 0 has 5 items, worker 1 has 14: worker 0 finishes early. Which batches come
    # first depends on the workers' timing; each comes exactly once across the two runs.
    # (Only pyloader's loader is checked: torchdata's repeats batches in some timings.)
    kwargs = dict(batch_size=2, num_workers=2, in_order=False)
    reference = sorted(values(pyloader.DataLoader(StatefulSharded([5, 14]), **kwargs)))
    loader = pyloader.DataLoader(StatefulSharded([5, 14]), **kwargs)
    iterator = iter(loader)
    seen = [next(iterator).tolist() for _ in range(stop)]
    state = saved(loader)
    del iterator
    resumed = pyloader.DataLoader(StatefulSharded([5, 14]), **kwargs)
    resumed.load_state_dict(state)
    assert sorted(seen + values(resumed)) == reference
    assert sorted(values(resumed)) == reference  # and the next epoch is whole


class SetUpOnIteration(tud.IterableDataset):
    """Its own iterator: __iter__ creates what load_state_dict needs."""

    def __iter__(self):
        info = tud.get_worker_info()
        self.items = list(range(100 * info.id, 100 * info.id + 7)) if info else list(range(7))
        self.position = 0
        return self

    def __next__(self):
        if self.position >= len(self.items):
            raise StopIteration
        self.position += 1
        return self.items[self.position - 1]

    def state_dict(self):
        return {"position": getattr(self, "position", 0)}

    def load_state_dict(self, state):
        assert self.items  # AttributeError unless __iter__ ran first
        self.position = state["position"]


@pytest.mark.parametrize("stop", [1, 3])
def test_dataset_set_up_in_its_worker_resumes(stop):
    kwargs = dict(batch_size=2, num_workers=2)

    def run(cls):
        reference = values(cls(SetUpOnIteration(), **kwargs))
        loader = cls(SetUpOnIteration(), **kwargs)
        iterator = iter(loader)
        seen = [next(iterator).tolist() for _ in range(stop)]
        state = saved(loader)
        del iterator
        resumed = cls(SetUpOnIteration(), **kwargs)
        resumed.load_state_dict(state)
        return reference, seen + values(resumed)

    theirs, ours = both(run)
    assert ours == theirs
    assert ours[1] == ours[0]


@pytest.mark.parametrize("options", ["w0", "w2", "w2-persistent"])
def test_states_reloaded_into_the_same_loader(options):
    kwargs = dict(MAP_OPTIONS[options], shuffle=True)

    def run(cls):
        loader = cls(Rows(), **kwargs)
        iterator = iter(loader)
        start = loader.state_dict()
        head = [next(iterator).tolist() for _ in range(4)]
        middle = loader.state_dict()
        loader.load_state_dict(middle)
        rest = values(loader)
        loader.load_state_dict(start)
        return head + rest, values(loader)

    theirs, ours = both(run)
    assert ours[0] == ours[1] and theirs[0] == theirs[1]  # both runs are the same epoch, batch for batch


def test_map_state_loads_with_another_number_of_workers():
    # Deliberately beyond torchdata (which asserts the same num_workers): the order of
    # a map-style dataset does not depend on the workers that fetch it.
    torch.manual_seed(2)
    reference = values(pyloader.DataLoader(Rows(), batch_size=3, shuffle=True))
    torch.manual_seed(2)
    loader = pyloader.DataLoader(Rows(), batch_size=3, shuffle=True)
    iterator = iter(loader)
    seen = [next(iterator).tolist() for _ in range(3)]
    state = loader.state_dict()
    resumed = pyloader.DataLoader(Rows(), batch_size=3, shuffle=True, num_workers=2)
    resumed.load_state_dict(state)
    assert seen + values(resumed) == reference


class SetUpOnIterationUneven(SetUpOnIteration):
    """Worker 0's stream has 3 items, worker 1's 9: worker 0 ends first."""

    def __iter__(self):
        info = tud.get_worker_info()
        self.items = list(range(100 * info.id, 100 * info.id + (3 if info.id == 0 else 9)))
        self.position = 0
        return self


@pytest.mark.parametrize("when", ["a worker ended", "between epochs"])
def test_self_iterating_dataset_with_persistent_workers_resumes_later_epochs_too(when):
    kwargs = dict(batch_size=2, num_workers=2, persistent_workers=True)

    def epochs(loader, count):
        return [values(loader) for _ in range(count)]

    def run(cls):
        reference = epochs(cls(SetUpOnIterationUneven(), **kwargs), 3)
        loader = cls(SetUpOnIterationUneven(), **kwargs)
        if when == "between epochs":
            seen = values(loader)
        else:
            iterator = iter(loader)
            seen = [next(iterator).tolist() for _ in range(4)]  # worker 0's 3 items are out
        state = saved(loader)
        resumed = cls(SetUpOnIterationUneven(), **kwargs)
        resumed.load_state_dict(state)
        if when == "between epochs":
            return reference, [seen] + epochs(resumed, 2)
        got = epochs(resumed, 3)
        return reference, [seen + got[0]] + got[1:]

    theirs, ours = both(run)
    assert ours == theirs
    assert ours[1] == ours[0]


def waiting_worker_init(release):
    def init(worker_id):
        if worker_id == 1:
            release.wait()

    return init


def test_a_worker_init_fn_that_blocks_is_bounded_by_timeout():
    # iter() waits for the workers' worker_init_fn, but never past the loader's timeout:
    # then torch's next() reports the timeout as it would.
    release = multiprocessing.get_context("fork").Event()
    loader = pyloader.DataLoader(
        Rows(), batch_size=2, num_workers=2, timeout=0.5, worker_init_fn=waiting_worker_init(release)
    )
    try:
        iterator = iter(loader)
        assert next(iterator).tolist() == [0, 1]  # worker 0 was ready
        with pytest.raises(RuntimeError, match="timed out after 0.5 seconds"):
            next(iterator)  # worker 1 is still in worker_init_fn
    finally:
        release.set()
    del iterator
