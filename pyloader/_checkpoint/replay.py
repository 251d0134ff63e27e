"""Exact mid-epoch resumption: what a loader saves, and how an epoch is replayed.

Two mechanisms, chosen per epoch:

* Native orders (sequential, ``shuffle=True``, :class:`pyloader.DistributedSampler`):
  the order is a pure function of a seed, so the state is (seed, batches yielded) and
  resuming starts the pipeline at that position: O(1), nothing is replayed.
* Any other sampler: the random draws an epoch makes are reproduced by restoring the
  RNG states captured when the epoch started (torch's global CPU RNG, the loader's
  ``generator``, and a ``generator`` attribute on the sampler or batch sampler), then
  the sampler's index stream is advanced past the batches already delivered. Indices
  are replayed, no data is read; the cost is O(batches skipped) sampler steps. This is
  exact for samplers whose randomness comes from those sources (all of torch's), and
  not for samplers drawing from other RNGs (``random``, ``numpy.random``) unless the
  caller restores those too.

Later epochs draw from the same RNGs as an uninterrupted run would: the loader's and
the sampler's generators are restored by ``load_state_dict``; torch's global RNG is the
caller's, restored with ``torch.set_rng_state`` from the same checkpoint as usual.
"""

from __future__ import annotations

import base64
import contextlib
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from ..stats import LoaderStats, WaitClock
from .state import Order
from .torch_internals import is_timeout, pin_memory, sent_and_received


def encode_rng_state(state: torch.Tensor) -> str:
    """An RNG state (a uint8 tensor) as text, so that loader states are plain JSON data."""
    return base64.b64encode(state.numpy().tobytes()).decode("ascii")


def decode_rng_state(encoded) -> torch.Tensor:
    """The RNG state `encode_rng_state` wrote (a tensor, as older states hold, is kept)."""
    if isinstance(encoded, torch.Tensor):
        return encoded
    if not isinstance(encoded, str):
        raise ValueError(f"not an encoded RNG state: {type(encoded).__name__}")
    return torch.frombuffer(bytearray(base64.b64decode(encoded)), dtype=torch.uint8)


def sampler_generators(loader) -> list[torch.Generator]:
    """Generators a loader's sampling draws from, besides torch's global RNG."""
    found: list[torch.Generator] = []
    for owner in (loader, loader.batch_sampler, getattr(loader.batch_sampler, "sampler", None), loader.sampler):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


@dataclass
class RngSnapshot:
    """RNG states at the start of an epoch, before any of its draws."""

    global_state: torch.Tensor
    generator_states: list[torch.Tensor]

    @classmethod
    def capture(cls, loader) -> RngSnapshot:
        return cls(torch.get_rng_state(), [g.get_state() for g in sampler_generators(loader)])

    def restore(self, generators: list[torch.Generator]) -> None:
        """Puts torch's global RNG and `generators` (`sampler_generators()`) back."""
        torch.set_rng_state(self.global_state)
        for generator, state in zip(generators, self.generator_states):
            generator.set_state(state)

    def to_dict(self) -> dict:
        return {
            "global": encode_rng_state(self.global_state),
            "generators": [encode_rng_state(state) for state in self.generator_states],
        }

    @classmethod
    def from_dict(cls, state: dict) -> RngSnapshot:
        return cls(decode_rng_state(state["global"]), [decode_rng_state(g) for g in state["generators"]])

    @contextlib.contextmanager
    def replaying(self, generators: list[torch.Generator]):
        """Runs the block with the epoch-start states; torch's global RNG is given back
        afterwards, the loader's and sampler's generators (`sampler_generators()`) keep
        what the block drew."""
        with ReplaySession(self, generators).active():
            yield


class ReplaySession:
    """A saved epoch's RNG states, replayed apart from the caller's.

    Creating it puts the sampler generators back to their epoch-start states; they keep
    what the replay draws, as the saved run's did. The replay's torch global RNG is kept
    here and switched in only while a replay step runs (`active`), so the caller's
    global RNG, restored from the checkpoint, already holds the draws the saved run
    made and is left as it is. Replay steps may be apart in time: torch's iterator is
    created in one and the sampler's lazy draws happen at the first batch, in another.
    """

    def __init__(self, snapshot: RngSnapshot, generators: list[torch.Generator]) -> None:
        if len(generators) != len(snapshot.generator_states):
            raise ValueError(
                "cannot resume: the loader's generators differ from the ones saved "
                f"({len(generators)} now, {len(snapshot.generator_states)} in the state)"
            )
        self._snapshot, self._generators = snapshot, generators
        self._active = False
        self.restart()

    def restart(self) -> None:
        """Back to the epoch's start, undoing what the replay drew so far."""
        for generator, state in zip(self._generators, self._snapshot.generator_states):
            generator.set_state(state)
        self._global_state = self._snapshot.global_state
        if self._active:
            torch.set_rng_state(self._global_state)

    @contextlib.contextmanager
    def active(self):
        if self._active:  # a step within a step (the sampler's first batch, taken while torch's iterator is created)
            yield
            return
        self._active = True
        caller_state = torch.get_rng_state()
        torch.set_rng_state(self._global_state)
        try:
            yield
        finally:
            self._active = False
            self._global_state = torch.get_rng_state()
            torch.set_rng_state(caller_state)


@dataclass
class DeliveredBatches:
    """Which batches of an epoch (numbered in sampler order) were delivered: all below
    `watermark`, and those in `above`. With ``in_order=False`` the batches delivered are
    not a prefix of the sampler's, so resuming must skip exactly these."""

    watermark: int = 0
    above: tuple = ()

    def to_state(self) -> dict:
        return {"watermark": self.watermark, "above": list(self.above)}

    @classmethod
    def from_state(cls, state: dict | None) -> DeliveredBatches | None:
        return None if state is None else cls(int(state["watermark"]), tuple(int(i) for i in state["above"]))

    def __contains__(self, index: int) -> bool:
        return index < self.watermark or index in self.above

    def original(self, index: int) -> int:
        """The sampler number of the index-th batch not in this set (the numbering of an
        epoch resumed from it)."""
        position = self.watermark + index
        above = sorted(self.above)
        for delivered in above:  # few: at most the batches that were in flight
            if delivered <= position:
                position += 1
        return position

    def after(self, watermark: int, above) -> DeliveredBatches:
        """This set plus the batches a resumed epoch delivered, given in its numbering."""
        delivered = set(self.above) | {self.original(i) for i in above}
        mark = self.original(watermark) if watermark else self.watermark
        while mark in delivered:
            delivered.discard(mark)
            mark += 1
        return DeliveredBatches(mark, tuple(sorted(i for i in delivered if i >= mark)))


def out_of_order_delivered(torch_iterator) -> tuple[int, tuple] | None:
    """(watermark, delivered above it) of a live iterator delivering out of order."""
    report = getattr(torch_iterator, "delivered_batches", None)
    if callable(report):
        return report()
    progress = sent_and_received(torch_iterator)
    if progress is None:
        return None
    # torch's worker iterator: batches sent and not yet delivered are outstanding.
    watermark, sent, outstanding = progress
    while watermark < sent and watermark not in outstanding:
        watermark += 1
    return watermark, tuple(i for i in range(watermark, sent) if i not in outstanding)


class WorkerBatch:
    """A batch made in a worker process, with that worker's dataset state after it
    (see iterable.py); unwrapped by TrackedIterator."""

    __slots__ = ("batch", "worker_id", "state", "ended", "empty", "self_iterating")

    def __init__(
        self, batch, worker_id: int, state, ended: bool = False, empty: bool = False, self_iterating: bool = False
    ) -> None:
        self.batch, self.worker_id, self.state = batch, worker_id, state
        self.self_iterating = self_iterating  # the worker's dataset is its own iterator
        self.ended = ended  # the worker's stream ended with this batch: `state` is its state after the end
        self.empty = empty  # no batch, only the end's state (the stream ended on a batch boundary)

    def pin_memory(self, device=None):  # torch's pin-memory thread calls this
        self.batch = pin_memory(self.batch, device) if device else pin_memory(self.batch)
        return self


def stateful_sampler(loader):
    """The loader's Stateful sampler (state_dict/load_state_dict): its batch_sampler when
    that is one, else its sampler; None when neither is."""
    for candidate in (loader.batch_sampler, loader.sampler):
        if callable(getattr(candidate, "state_dict", None)) and callable(getattr(candidate, "load_state_dict", None)):
            return candidate
    return None


def restore_sampler(loader, resume):
    """Loads a saved Stateful sampler's state. Returns None when none was saved, else
    the state to load into the sampler's new iterator (torchdata's samplers keep their
    position in the iterator), or {} when the sampler itself holds all of it."""
    saved = resume.sampler_state
    if saved is None:
        return None
    load_sampler_state(loader, saved)
    return saved.get("iterator") or {}


def load_sampler_state(loader, saved: dict) -> None:
    """Loads the sampler's own part of a saved sampler state (a state between epochs
    needs only this: the next epoch makes a new iterator)."""
    sampler = stateful_sampler(loader)
    if sampler is None:
        raise ValueError(
            "cannot resume: the state holds a sampler state, but this loader's sampler has no load_state_dict()"
        )
    if "sampler" in saved:
        sampler.load_state_dict(saved["sampler"])


def sampler_iterator(sampler_like, iterator_state):
    """iter(sampler_like), with a saved iterator state loaded into it."""
    iterator = iter(sampler_like)
    if iterator_state:
        if not callable(getattr(iterator, "load_state_dict", None)):
            raise ValueError(
                "cannot resume: the state holds a sampler iterator's state, but iterating this "
                "sampler gives an iterator without load_state_dict()"
            )
        iterator.load_state_dict(iterator_state)
    return iterator


def sampler_state_of(sampler, iterator) -> dict:
    """What to save of a Stateful sampler: its own state, and its iterator's when the
    iterator has one (torchdata's samplers keep their position there)."""
    state = {"sampler": sampler.state_dict()}
    if callable(getattr(iterator, "state_dict", None)):
        state["iterator"] = iterator.state_dict()
    return state


def epoch_complete(index_sampler, batches_passed: int) -> bool:
    """Whether `batches_passed` batches are the whole epoch of `index_sampler` (False
    when its length is unknown)."""
    try:
        return batches_passed >= len(index_sampler)
    except TypeError:
        return False


class CapturingBatches:
    """Index batches of a Stateful sampler, each paired with the sampler's state right
    after it: a batch's state is what a checkpoint taken once it is delivered must hold,
    whereas the sampler itself runs ahead by the prefetch."""

    def __init__(self, batches, sampler, states) -> None:
        self._batches = iter(batches)
        self._sampler = sampler
        self._states = states  # a deque the consumer pops from as batches are delivered

    def __iter__(self):
        return self

    def __next__(self):
        try:
            batch = next(self._batches)
        except StopIteration:
            raise
        except Exception:
            self._states.append(sampler_state_of(self._sampler, self._batches))  # a failed batch is passed too
            raise
        self._states.append(sampler_state_of(self._sampler, self._batches))
        return batch


def skip_batches(batches, count: int):
    """Advances an iterator of index batches past `count` batches."""
    for _ in range(count):
        try:
            next(batches)
        except StopIteration:
            break
    return batches


class ResumedIndexSampler:
    """Stands in for a loader's index sampler on torch's path.

    Its first iteration after a resume is the saved epoch: the same index stream,
    replayed from the epoch-start RNG states of `session`, minus the batches already
    delivered (or the Stateful sampler, restored, continuing by itself). Other
    iterations (a fresh epoch, or later epochs of persistent workers, which keep the
    index sampler their iterator was created with) are plain epochs of the real
    sampler. Either way each batch is paired with the Stateful sampler's state of the
    epoch then current, and the epoch records when the sampler starts drawing.

    ``iter()`` reaches the real sampler at once, as torch's own iterators do (some
    samplers draw when iterated, not at their first batch; torch's worker iterator
    iterates its sampler twice while it is created).
    """

    def __init__(
        self, loader, index_sampler, session: ReplaySession | None = None, restart_at_reset: RngSnapshot | None = None
    ) -> None:
        # A weak reference: a persistent iterator keeps this sampler and the loader keeps
        # that iterator, and a cycle would leave torch's iterator to the cyclic GC, which
        # may tear its workers down at any allocation.
        self._loader = weakref.ref(loader)
        self._generators = sampler_generators(loader)
        self._index_sampler = index_sampler
        self._session = session  # the replay still to do; None once it has started
        # Set when the saved epoch reused persistent workers, whose iterator only iterated
        # its sampler in _reset. A worker iterator created now also iterates it in
        # __init__ and draws a seed after that: that first iteration does not reach the
        # sampler, and at the second the RNGs are put back to the epoch's start.
        self._restart_at_reset = restart_at_reset
        self._created = False

    def __len__(self) -> int:
        return len(self._index_sampler)

    def _progress(self) -> EpochProgress:
        loader = self._loader()
        if loader is None or loader._progress is None:
            raise RuntimeError("the DataLoader of this iterator is gone")
        return loader._progress

    def __iter__(self):
        progress = self._progress()
        session = self._session
        if self._restart_at_reset is not None:
            if not self._created:
                self._created = True
                return iter(())
            if session is None:
                self._restart_at_reset.restore(self._generators)
            else:
                session.restart()
            self._restart_at_reset = None
        if session is None:
            return self._plain_epoch(progress, iter(self._index_sampler))
        with session.active():
            if progress.sampler_restored is not None:
                batches = sampler_iterator(self._index_sampler, progress.sampler_restored)
            else:
                batches = iter(self._index_sampler)
        return self._replayed_epoch(progress, session, batches)

    @staticmethod
    def _plain_epoch(progress: EpochProgress, batches):
        progress.sampler_started = True
        if progress.sampler is not None:
            batches = CapturingBatches(batches, progress.sampler, progress.sampler_states)
        yield from batches

    def _replayed_epoch(self, progress: EpochProgress, session: ReplaySession, batches):
        self._session = None
        progress.sampler_started = True
        # Draws the saved run made before its checkpoint are replayed apart; a sampler
        # that had not drawn yet when the state was taken draws from the caller's RNG.
        step = contextlib.nullcontext() if progress.draws_live else session.active()
        with step:
            delivered = progress.delivered
            if progress.sampler_restored is not None:
                if epoch_complete(self._index_sampler, progress.batches_yielded):
                    return  # the saved epoch had delivered its last batch
                if delivered is not None:  # the sampler resumes at the watermark
                    batches = (
                        batch for number, batch in enumerate(batches, delivered.watermark) if number not in delivered
                    )
            elif delivered is None:
                batches = skip_batches(batches, progress.batches_yielded)
            else:
                batches = (batch for number, batch in enumerate(batches) if number not in delivered)
            if progress.sampler is not None:
                batches = CapturingBatches(batches, progress.sampler, progress.sampler_states)
            try:
                first = next(batches)  # the sampler's own lazy draws happen here
            except StopIteration:
                return
        yield first
        yield from batches


def draw_base_seed(generator: torch.Generator | None) -> int:
    """The draw torch's DataLoader iterator makes from the loader's `generator` (or the
    global RNG) when it is created."""
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


@dataclass
class EpochProgress:
    """Where the current epoch stands. The loader holds it strongly, since a checkpoint
    is often taken after `break` has dropped the iterator; iterators update it."""

    order: Order  # how the epoch's batches are ordered (see _state.Order)
    native_seed: int | None = None  # the shuffle seed of a native "shuffled" epoch
    snapshot: RngSnapshot | None = None  # RNG states at the epoch's start, for replay
    drew_base_seed: bool = True  # whether the epoch began with the iterator's seed draw
    batches_yielded: int = 0  # batches the epoch has moved past: delivered, or failed while loading
    finished: bool = False  # StopIteration seen: the next iteration is a new epoch
    source: object = None  # weak reference to torch's iterator of an IterableDataset epoch
    # A DistributedSampler epoch: who saved it, for merging the ranks' states (elastic.py).
    rank: int | None = None
    world_size: int | None = None
    batch_size: int | None = None
    num_samples: int | None = None
    rows: int | None = None
    elastic: dict | None = None  # set while continuing an epoch saved by another world size
    # in_order=False on torch's path: the batches delivered before this epoch was resumed
    # (None: a prefix of batches_yielded), and the live iterator's report since.
    delivered: DeliveredBatches | None = None
    out_of_order: bool = False
    recent: tuple | None = None  # (watermark, above) of this run, in its own numbering
    # A Stateful sampler: its state as of the last batch passed, the states of the
    # batches pulled but not yet passed, and whether a resume restored it.
    sampler: Any = None
    sampler_state: object = None
    sampler_states: deque | None = None
    sampler_restored: dict | None = None  # set by a resume: the iterator state to load, or {}
    # Whether the sampler had begun its epoch (torch's path): a state taken before it
    # did resumes with its draws made from the caller's RNG (draws_live).
    sampler_started: bool = False
    draws_live: bool = False
    sampler_settled: int = 0  # with out-of-order delivery: batches below the watermark
    # An IterableDataset in worker processes that report their dataset states.
    worker_states: dict | None = None
    last_worker: int | None = None
    workers_ended: set | None = None  # workers whose stream ended this epoch
    identity: dict | None = None  # what the epoch's order depends on (_state.IDENTITY_FIELDS)
    self_iterating: set = field(default_factory=set)  # workers whose dataset is its own iterator

    def worker_reported(self, report: WorkerBatch) -> None:
        if self.worker_states is None:
            return
        worker = str(report.worker_id)
        self.worker_states[worker] = report.state
        self.last_worker = report.worker_id
        if report.ended:
            assert self.workers_ended is not None  # set with worker_states
            self.workers_ended.add(worker)
        if report.self_iterating:
            self.self_iterating.add(worker)

    def passed_batch(self) -> None:
        """One more batch delivered (or failed): the epoch moves past it."""
        self.batches_yielded += 1
        if self.sampler_states and not self.out_of_order:
            self.sampler_state = self.sampler_states.popleft()

    def delivered_out_of_order(self, recent: tuple | None) -> None:
        """The live iterator's (watermark, above), reported after each batch passed.
        A Stateful sampler's state is kept as of the watermark: the batches above it
        that were delivered are skipped by number when it resumes."""
        self.recent = recent
        if recent is None or not self.sampler_states:
            return
        while self.sampler_settled < recent[0] and self.sampler_states:
            self.sampler_state = self.sampler_states.popleft()
            self.sampler_settled += 1

    def to_state(self) -> dict:
        return {
            "order": self.order.value,
            "in_epoch": not self.finished,
            "batches_yielded": self.batches_yielded,
            "native_seed": self.native_seed,
            "epoch_start_rng": None if self.snapshot is None else self.snapshot.to_dict(),
            "drew_base_seed": self.drew_base_seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "num_samples": self.num_samples,
            "rows": self.rows,
            "elastic": self.elastic,
            "delivered": self.delivered_state(),
            "sampler_state": self.sampler_state,
            "sampler_started": self.sampler_started,
        }

    def delivered_state(self) -> dict | None:
        if not self.out_of_order:
            return None if self.delivered is None else self.delivered.to_state()
        base = self.delivered or DeliveredBatches()
        if self.recent is None:
            return base.to_state()
        return base.after(*self.recent).to_state()


class TrackedIterator:
    """torch's iterator, reporting each delivered batch and the epoch's end to an
    EpochProgress."""

    def __init__(self, iterator, progress: EpochProgress) -> None:
        self._iterator = iterator
        self.progress = progress
        self.deliver = None  # applied to each batch on its way out (device=: moves it there)
        self._clock = WaitClock()

    def __iter__(self):
        return self

    def stats(self) -> LoaderStats:
        """How this epoch's loading went so far (see pyloader.LoaderStats)."""
        return self._clock.stats()

    def __next__(self):
        clock = self._clock
        started = time.monotonic()
        try:
            batch = self._next()
        finally:
            clock.waited += time.monotonic() - started
        clock.batches += 1
        return batch

    def _next(self):
        while True:
            try:
                batch = next(self._iterator)
            except StopIteration:
                self.progress.finished = True
                raise
            except Exception as error:
                if not is_timeout(error):
                    # The batch's own failure: torch's iterator has moved past it.
                    self.progress.passed_batch()
                    if self.progress.out_of_order:
                        self.progress.delivered_out_of_order(out_of_order_delivered(self._iterator))
                raise
            if batch.__class__ is not WorkerBatch:
                break
            self.progress.worker_reported(batch)
            if not batch.empty:
                batch = batch.batch
                break
        self.progress.passed_batch()
        if self.progress.out_of_order:
            self.progress.delivered_out_of_order(out_of_order_delivered(self._iterator))
        return batch if self.deliver is None else self.deliver(batch)

    def __len__(self) -> int:
        return len(self._iterator)

    def __getattr__(self, name):
        return getattr(self._iterator, name)
