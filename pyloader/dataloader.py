"""DataLoader: torch's DataLoader, with a native path for array-shaped datasets."""

from __future__ import annotations

import numbers
import warnings
import weakref
from collections import deque
from collections.abc import Iterable
from typing import Any, TypeVar, cast

import torch
import torch.utils.data

from . import _core
from ._checkpoint.iterable import (
    PERSISTENT_ITERABLE_WARNING,
    is_stateful,
    iterable_state,
    load_dataset_state,
    reports_worker_states,
    resume_iterable,
    start_reporting_iterator,
)
from ._checkpoint.replay import (
    DeliveredBatches,
    EpochProgress,
    ReplaySession,
    ResumedIndexSampler,
    RngSnapshot,
    TrackedIterator,
    decode_rng_state,
    encode_rng_state,
    load_sampler_state,
    restore_sampler,
    sampler_generators,
    stateful_sampler,
)
from ._checkpoint.state import STATE_FORMAT, Kind, LoaderState, Order, check_identity, parse
from ._checkpoint.torch_internals import (
    IndexSamplerHook,
    is_map_style,
    persistent_iterator,
    shut_down_persistent_workers,
    torch_index_sampler,
)
from ._checkpoint.worker_start import start_reporting_workers
from ._native import fork as _fork
from ._native import staging as _staging
from ._native.eligibility import ColumnsCache
from ._native.iterator import NativeIterator, NativePlan, default_num_threads, plan_native
from ._native.threads import ThreadWorkerIterator, start_worker_threads

_T_co = TypeVar("_T_co", covariant=True)


class DataLoader(IndexSamplerHook, torch.utils.data.DataLoader[_T_co]):
    """A drop-in ``torch.utils.data.DataLoader``.

    Takes exactly torch's arguments, with the same defaults and the same argument
    errors, and yields the same batches. When the dataset is array-shaped (an
    :class:`ArrayDataset`, a ``TensorDataset`` of CPU tensors, and Subsets and
    ConcatDatasets of them), rows are gathered by native threads instead of per-sample
    ``__getitem__`` calls, for the default collate and for custom ones alike;
    ``shuffle=True`` then uses a native O(1)-memory shuffle seeded from ``generator``
    (or torch's global RNG), new each epoch. Everything else runs on torch's own
    machinery.

    pyloader keyword-only extras:
        num_threads: native gather threads (default: min(4, usable CPUs - 1), at least 1).
        native: ``None`` picks the native path when possible; ``False`` never uses it;
            ``True`` requires it and raises ValueError explaining why it is impossible.
        snapshot_every_n_steps: accepted as torchdata's ``StatefulDataLoader`` takes it;
            states are exact at every step whatever its value (see :meth:`state_dict`).
        worker_mode: ``"process"`` (torch's worker processes) or ``"thread"``: off the
            native path, ``num_workers`` threads fetch and collate map-style batches,
            for datasets whose ``__getitem__`` releases the GIL (see ``_native/threads.py``).
        io: how the native path reads memory-mapped files. ``"mmap"`` copies from the
            mapping (pages not in the page cache are read by page faults, one run at a
            time per thread); ``"read"`` reads every batch's rows from the file with
            many reads in flight (neighbouring rows in one read); ``"auto"`` (default)
            reads explicitly the batches whose rows are not in the page cache, for rows
            of 2 KiB or more (smaller rows share pages, where the kernel's read-around
            is the faster reader), and copies cached ones from the mapping.
        device: a CUDA device (``"cuda"``, ``"cuda:1"``, a ``torch.device``) to deliver
            batches on. Native batches are gathered into pinned memory and copied by the
            native threads on a stream of their own as soon as each is gathered; the
            caller's current stream waits for the copy on the device (no host
            synchronisation). ``"cuda"`` means ``cuda:$LOCAL_RANK`` under torchrun (when
            that device exists), else the current device. Other batches are moved with torch after collating.
            Raises RuntimeError when CUDA is not available.
    """

    def __init__(
        self,
        dataset,
        batch_size=1,
        shuffle=None,
        sampler=None,
        batch_sampler=None,
        num_workers=0,
        collate_fn=None,
        pin_memory=False,
        drop_last=False,
        timeout=0,
        worker_init_fn=None,
        multiprocessing_context=None,
        generator=None,
        *,
        prefetch_factor=None,
        persistent_workers=False,
        pin_memory_device="",
        in_order=True,
        snapshot_every_n_steps: int | None = 1,
        num_threads: int | None = None,
        native: bool | None = None,
        worker_mode: str = "process",
        io: str = "auto",
        device=None,
    ):
        self.worker_mode = worker_mode  # read by check_worker_number_rationality during init
        super().__init__(
            dataset,
            batch_size,
            shuffle,
            sampler,
            batch_sampler,
            num_workers,
            collate_fn,
            pin_memory,
            drop_last,
            timeout,
            worker_init_fn,
            multiprocessing_context,
            generator,
            prefetch_factor=prefetch_factor,
            persistent_workers=persistent_workers,
            pin_memory_device=pin_memory_device,
            in_order=in_order,
        )
        if num_threads is None:
            num_threads = default_num_threads()
        if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")
        if native not in (None, True, False):
            raise ValueError(f"native must be None, True or False, got {native!r}")
        if worker_mode not in ("process", "thread"):
            raise ValueError(f"worker_mode must be 'process' or 'thread', got {worker_mode!r}")
        if worker_mode == "thread" and not is_map_style(self) and num_workers > 0:
            raise ValueError(
                "worker_mode='thread' needs a map-style dataset; an IterableDataset "
                "shards itself per worker process (get_worker_info)"
            )
        if io not in ("auto", "mmap", "read"):
            raise ValueError(f"io must be 'auto', 'mmap' or 'read', got {io!r}")
        if snapshot_every_n_steps is not None and (
            isinstance(snapshot_every_n_steps, bool)
            or not isinstance(snapshot_every_n_steps, int)
            or snapshot_every_n_steps < 0
        ):
            raise ValueError(
                f"snapshot_every_n_steps must be a non-negative integer or None, got {snapshot_every_n_steps!r}"
            )
        # Accepted as torchdata's StatefulDataLoader accepts it. pyloader computes a
        # state from the position reached instead of snapshotting worker states, so
        # every step's state is exact whatever the interval.
        self.snapshot_every_n_steps = snapshot_every_n_steps
        self.num_threads = num_threads
        self.native = native
        self.io = io
        self.device = _staging.resolve_device(device)
        self._staging = _fork.PerProcess(lambda loader: _staging.Staging(loader.device))
        # Iterators count waits and bytes (LoaderStats); off only to measure what that costs.
        self._keeps_stats = True
        # torch sets prefetch_factor to 2 whenever there are workers; the native gather
        # depth follows it only when the caller chose it.
        self._prefetch_factor_given = prefetch_factor is not None
        self._thread_workers = _fork.PerProcess(start_worker_threads)
        self._thread_epochs_started = False
        # shuffle=True with no sampler is the one case where torch leaves the order to
        # us; an explicitly passed sampler is always honoured as given.
        self._native_shuffle = bool(shuffle) and sampler is None and batch_sampler is None
        self._thread_pool = _fork.PerProcess(lambda loader: _core.ThreadPool(loader.num_threads))
        self._columns_cache = ColumnsCache()
        self._progress: EpochProgress | None = None  # the current epoch's
        self._resume_state: LoaderState | None = None  # set by load_state_dict, consumed by the next __iter__
        # Set by load_state_dict when the saved run's next epoch starts no workers (its
        # persistent ones carried on): ours must start them without the seed draw.
        self._next_epoch_draws_no_seed = False
        self._loaded: LoaderState | None = None  # loaded, until an iteration starts: what state_dict() returns
        self._resumed_index_sampler = None
        if native:
            self._plan()

    def _plan(self) -> NativePlan | None:
        if self.native is False:
            return None
        plan = plan_native(self, self._columns_cache)
        if isinstance(plan, str):
            if self.native:
                raise ValueError(f"native=True, but this loader cannot take the native path: {plan}")
            return None
        return plan

    @property
    def uses_native_path(self) -> bool:
        """Whether iterating this loader gathers natively."""
        return self._plan() is not None

    def _native_thread_pool(self):
        return self._thread_pool.get(self)

    def _native_collate_executor(self):
        """The threads that collate native batches when num_workers > 0: the loader's
        thread workers (num_workers of them, ended with the loader)."""
        return self._thread_workers.get(self).executor

    def check_worker_number_rationality(self):
        # torch's warning counts worker processes; threads are not bounded by cores alike
        # (they mostly wait on I/O or GIL-free work).
        if self.worker_mode != "thread":
            super().check_worker_number_rationality()

    def _thread_workers_for_epoch(self):
        return self._thread_workers.get(self)

    def _thread_workers_reused(self) -> bool:
        """Called as a thread-worker epoch starts: whether persistent threads carry on
        from an earlier epoch (torch's persistent workers draw their seed only once)."""
        reused = self.persistent_workers and self._thread_epochs_started
        self._thread_epochs_started = True
        return reused

    def _epoch_starts_workers(self) -> bool:
        """Whether the next epoch on torch's path starts its workers, drawing a seed."""
        if not (self.persistent_workers and self.num_workers > 0):
            return True
        if self.worker_mode == "thread":
            return not self._thread_epochs_started
        return persistent_iterator(self) is None

    def _torch_path_iterator(self):
        if self.worker_mode == "thread" and self.num_workers > 0:
            return ThreadWorkerIterator(self)
        if self.num_workers > 0 and self.worker_init_fn is not None:
            return start_reporting_workers(self, super().__iter__)
        return super().__iter__()

    def _torch_path_iterator_around(self, index_sampler):
        """A torch-path iterator built around `index_sampler` instead of the loader's own
        (iterators read `_index_sampler` once, when created)."""
        self._resumed_index_sampler = index_sampler
        try:
            return self._torch_path_iterator()
        finally:
            self._resumed_index_sampler = None  # the new iterator holds it; nobody else

    def _epoch_sampler(self):
        """The sampler whose `epoch` (set_epoch) a checkpoint records."""
        return self.batch_sampler.sampler if hasattr(self.batch_sampler, "sampler") else self.sampler

    def _staging_for(self, pinned_for: str | None):
        """The loader's Staging when batches go to a device or pinned CUDA memory, else None."""
        if self.device is None and pinned_for != "cuda":
            return None
        return self._staging.get(self)

    def __iter__(self):
        resume, self._resume_state = self._resume_state, None
        no_seed_draw, self._next_epoch_draws_no_seed = self._next_epoch_draws_no_seed, False
        loaded, self._loaded = self._loaded, None
        try:
            iterator = self._start_epoch(resume, no_seed_draw)
        except BaseException:
            # A failed resume can be retried, not lost.
            self._resume_state, self._next_epoch_draws_no_seed, self._loaded = resume, no_seed_draw, loaded
            raise
        # What this epoch's order depends on, once per epoch: len(dataset) may not be cheap.
        self._progress.identity = self._identity()
        if self.device is not None and isinstance(iterator, TrackedIterator):
            iterator.deliver = self._staging.get(self).move
        return iterator

    def _start_epoch(self, resume: LoaderState | None, no_seed_draw: bool = False):
        plan = self._plan()
        if plan is not None:
            iterator = NativeIterator(self, plan, resume)
            self._progress = iterator.progress
            return iterator
        if not is_map_style(self):
            return self._start_iterable_epoch(resume)
        if resume is not None and resume.order != Order.TORCH:
            raise ValueError(
                f"cannot resume: the state was saved for a {resume.order.value!r} order, "
                "this loader now uses torch's path"
            )
        sampler = stateful_sampler(self)
        index_sampler = torch_index_sampler(self)
        if resume is None and not no_seed_draw:
            progress = EpochProgress(
                order=Order.TORCH, snapshot=RngSnapshot.capture(self), drew_base_seed=self._epoch_starts_workers()
            )
            self._track_sampler(progress, sampler)
            self._progress = progress
            iterator = self._torch_path_iterator_around(ResumedIndexSampler(self, index_sampler))
        elif resume is None:
            # A new epoch whose saved run started no workers (persistent ones carried on):
            # ours must start them without the seed draw that comes with it.
            progress = EpochProgress(order=Order.TORCH, snapshot=RngSnapshot.capture(self), drew_base_seed=False)
            self._track_sampler(progress, sampler)
            self._progress = progress
            if self.worker_mode == "thread":
                self._thread_epochs_started = True  # as if its threads carried on: no seed draw
                iterator = self._torch_path_iterator_around(ResumedIndexSampler(self, index_sampler))
            else:
                # Worker processes take their first indices while being created.
                iterator = self._torch_path_iterator_around(
                    ResumedIndexSampler(self, index_sampler, restart_at_reset=progress.snapshot)
                )
        else:
            if self.worker_mode == "process" and self.persistent_workers:
                # Its workers keep the index sampler they started with; a resumed epoch
                # needs a fresh iterator built around the replaying one.
                shut_down_persistent_workers(self)
            progress = EpochProgress(
                order=Order.TORCH,
                snapshot=RngSnapshot.from_dict(cast(dict, resume.epoch_start_rng)),  # an in-epoch state has it
                drew_base_seed=resume.drew_base_seed,
                batches_yielded=resume.batches_yielded,
                delivered=DeliveredBatches.from_state(resume.delivered),
                draws_live=not resume.sampler_started,
            )
            self._track_sampler(progress, sampler)
            restored = restore_sampler(self, resume)
            if restored is not None:
                progress.sampler_state, progress.sampler_restored = resume.sampler_state, restored
            self._progress = progress
            # The new iterator's own draws (its seed, and samplers that draw when
            # iterated) come from the epoch-start states; the replaying sampler then
            # redoes the epoch's draws exactly as they were.
            session = ReplaySession(cast(RngSnapshot, progress.snapshot), sampler_generators(self))
            restart = None
            if not progress.drew_base_seed:  # the saved epoch reused persistent workers
                if self.worker_mode == "thread":
                    self._thread_epochs_started = True  # ours carry on too: no seed draw
                else:
                    restart = progress.snapshot
            with session.active():
                iterator = self._torch_path_iterator_around(
                    ResumedIndexSampler(self, index_sampler, session, restart_at_reset=restart)
                )
        progress.out_of_order = not self.in_order and self.num_workers > 0
        return TrackedIterator(iterator, progress)

    @staticmethod
    def _track_sampler(progress: EpochProgress, sampler) -> None:
        if sampler is not None:
            progress.sampler, progress.sampler_states = sampler, deque()
            progress.sampler_state = {"sampler": sampler.state_dict()}  # as of no batch passed

    def _start_iterable_epoch(self, resume: LoaderState | None):
        """An epoch of an IterableDataset, resumable as described in `iterable_state`."""
        if resume is not None and resume.order != Order.ITERABLE:
            raise ValueError(
                f"cannot resume: the state was saved for a {resume.order.value!r} order, "
                "this loader now iterates an IterableDataset"
            )
        carried = None  # worker states a new epoch's workers start from
        self_iterating: Iterable = ()  # worker ids whose datasets are their own iterators
        if resume is not None and not resume.in_epoch:
            # A state between epochs (persistent workers): the next epoch's workers start from it.
            carried, self_iterating, resume = resume.worker_states, resume.self_iterating_workers, None
            shut_down_persistent_workers(self)
        if resume is None:
            progress = EpochProgress(
                order=Order.ITERABLE, snapshot=RngSnapshot.capture(self), drew_base_seed=self._epoch_starts_workers()
            )
            if reports_worker_states(self):
                previous = self._progress
                if (
                    carried is None
                    and self.persistent_workers
                    and persistent_iterator(self) is not None
                    and previous is not None
                    and previous.worker_states is not None
                ):
                    carried = previous.worker_states  # persistent workers carry on from there
                    self_iterating = previous.self_iterating
                progress.worker_states, progress.workers_ended = dict(carried or {}), set()
                progress.self_iterating = set(self_iterating) if carried is not None else set()
                if carried is not None and not self.persistent_workers:
                    carried = None
                self._progress = progress
                if carried is not None and persistent_iterator(self) is None:
                    # New workers standing in for the saved run's persistent ones, which
                    # drew no seed for this epoch: the caller's RNG is left as it was.
                    with torch.random.fork_rng(devices=[]):
                        iterator = start_reporting_iterator(
                            self, carried, self_iterating=self_iterating, between_epochs=True
                        )
                else:
                    iterator = start_reporting_iterator(self)
            else:
                iterator = self._torch_path_iterator()
        else:
            progress = EpochProgress(
                order=Order.ITERABLE,
                snapshot=RngSnapshot.from_dict(cast(dict, resume.epoch_start_rng)),
                drew_base_seed=resume.drew_base_seed,
            )
            shut_down_persistent_workers(self)  # its workers' datasets are past the saved point
            iterator = resume_iterable(self, resume, progress)
        self._progress = progress
        progress.source = weakref.ref(iterator)
        return TrackedIterator(iterator, progress)

    def _identity(self) -> dict:
        """What an epoch's order depends on (`_state.IDENTITY_FIELDS`): a state saved
        inside an epoch is refused by a loader that differs in any of them."""
        identity: dict[str, Any] = {"batch_size": self.batch_size, "drop_last": self.drop_last}
        if is_map_style(self):
            try:
                identity["rows"] = len(self.dataset)  # type: ignore[arg-type]  # map-style: sized, as torch assumes
            except Exception:  # no length (or none that can be had): not compared
                pass
        sampler = self._epoch_sampler()
        if sampler is not None:
            identity["sampler"] = type(sampler).__name__
        if isinstance(sampler, torch.utils.data.DistributedSampler):
            # A subclass may not set every attribute torch's __init__ sets: None is "not compared".
            identity.update(
                shuffle=getattr(sampler, "shuffle", None),
                seed=getattr(sampler, "seed", None),
                world_size=getattr(sampler, "num_replicas", None),
                sampler_drop_last=getattr(sampler, "drop_last", None),
            )
            if hasattr(sampler, "block_rows"):
                identity["block"] = [sampler.block_rows, getattr(sampler, "window_blocks", None)]
        plain = {}
        for key, value in identity.items():
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                value = int(value)  # a numpy seed, say: states are plain data
            if isinstance(value, (int, bool, str, list)):
                plain[key] = value
        return plain

    def state_dict(self) -> dict:
        """Where this loader stands, to resume exactly with :meth:`load_state_dict`.

        Taken after k batches of an epoch (inside the loop, or after leaving it with
        ``break``), a loader restored from it in a new process, with the same dataset
        and arguments, yields batch k+1 onwards of that epoch, then the same later
        epochs as an uninterrupted run. The state holds torch's global RNG as it was
        when the state was taken (shuffles and samplers draw from it), and
        :meth:`load_state_dict` puts it back, so the state alone decides what comes
        next. Native orders resume in O(1); other samplers replay their index stream
        (see ``pyloader/_checkpoint/replay.py``). The state is plain data (RNG states as base64
        text, schema in ``pyloader/_checkpoint/state.py``): ``json.dumps`` and ``torch.save``
        both take it, and loading it then calling this before iterating gives it back.
        """
        if self._loaded is not None:
            return self._loaded.replace(format=STATE_FORMAT).to_dict()  # loaded, not iterated since
        if (
            not self.in_order
            and self.num_workers > 0
            and not is_map_style(self)
            and not self.uses_native_path
            and not reports_worker_states(self)
        ):
            raise ValueError(
                "state_dict() of an IterableDataset with in_order=False and num_workers > 0 needs a "
                "dataset with state_dict()/load_state_dict(): without them each worker's stream is "
                "replayed, which needs the batches in their order"
            )
        progress = self._progress if self._progress is not None else EpochProgress(order=Order.NONE, finished=True)
        epoch = progress.to_state()
        if not is_map_style(self):
            epoch.update(iterable_state(self))
        elif is_stateful(self.dataset):
            # A map-style dataset with state of its own (e.g. a curriculum stage): the copy
            # in this process, which worker processes are started from.
            epoch["dataset_state"] = self.dataset.state_dict()  # type: ignore[attr-defined]  # is_stateful
        order = Order(epoch.pop("order"))
        in_epoch = epoch["in_epoch"] and order is not Order.NONE
        return LoaderState(
            format=STATE_FORMAT,
            num_workers=self.num_workers,
            order=order,
            **epoch,
            generators=[encode_rng_state(g.get_state()) for g in sampler_generators(self)],
            global_rng=encode_rng_state(torch.get_rng_state()),
            sampler_epoch=getattr(self._epoch_sampler(), "epoch", None),
            # Between epochs with persistent workers running, the next epoch draws no
            # seed; a restored loader, whose workers are new, must not draw one either.
            next_epoch_starts_workers=self._epoch_starts_workers(),
            identity=progress.identity if in_epoch else None,
        ).to_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restores a :meth:`state_dict`: the next iteration resumes where it was taken.

        The whole state is checked before anything of the loader changes; a state that
        cannot be what ``state_dict()`` wrote, or that was saved inside an epoch whose
        order this loader would not reproduce (another dataset length, batch size,
        sampler, seed or world size), is refused with a ValueError naming the field,
        and the loader stays as it was. Loading sets torch's global RNG to what it was
        when the state was taken (the loader's orders draw from it): restore your own
        RNG state after this call if it should differ."""
        loaded = parse(state)
        iterable = not is_map_style(self)
        if loaded.kind is Kind.IN_EPOCH and (loaded.order is Order.ITERABLE) != iterable:
            raise ValueError(
                f"cannot resume: the state was saved for a {loaded.order.value!r} order, this loader "
                f"iterates {'an IterableDataset' if iterable else 'a map-style dataset'}"
            )
        if loaded.kind is Kind.IN_EPOCH:
            check_identity(loaded, self._identity())
        if not is_map_style(self) and loaded.num_workers != self.num_workers and loaded.in_epoch:
            # Each worker process iterates its own copy of the dataset (sharded by
            # get_worker_info): the stream itself depends on the number of workers.
            raise ValueError(
                f"cannot resume: the state was saved with num_workers={loaded.num_workers}, this "
                f"loader has num_workers={self.num_workers}, and an IterableDataset's stream "
                "depends on the number of workers"
            )
        generators = sampler_generators(self)
        if len(generators) != len(loaded.generators):
            raise ValueError(
                "cannot resume: the loader's generators differ from the ones saved "
                f"({len(generators)} now, {len(loaded.generators)} in the state)"
            )
        generator_states = [
            _decoded_rng(encoded, "generators", g.get_state()) for g, encoded in zip(generators, loaded.generators)
        ]
        global_rng = (
            None if loaded.global_rng is None else _decoded_rng(loaded.global_rng, "global_rng", torch.get_rng_state())
        )
        # Checked: from here on the loader takes the state.
        for generator, generator_state in zip(generators, generator_states):
            generator.set_state(generator_state)
        if global_rng is not None:
            torch.set_rng_state(global_rng)
        sampler = self._epoch_sampler()
        if loaded.sampler_epoch is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(loaded.sampler_epoch)
        self._progress = None  # whatever this loader did before is not the restored run
        if is_map_style(self) and loaded.dataset_state is not None:
            load_dataset_state(self.dataset, loaded.dataset_state)
        if not loaded.in_epoch and loaded.sampler_state is not None:
            load_sampler_state(self, loaded.sampler_state)  # where the next epoch's sampler starts
        self._resume_state = loaded if loaded.kind is Kind.IN_EPOCH else None
        self._next_epoch_draws_no_seed = False
        if not is_map_style(self) and loaded.kind is not Kind.IN_EPOCH:
            self._load_iterable_between_epochs(loaded)
        elif (
            self._resume_state is None
            and not loaded.next_epoch_starts_workers
            and self._epoch_starts_workers()
            and self._plan() is None
        ):
            self._next_epoch_draws_no_seed = True  # the saved run's next epoch starts no workers
        self._loaded = loaded

    def _load_iterable_between_epochs(self, state: LoaderState) -> None:
        if state.worker_states is not None:
            if self.persistent_workers and self.num_workers > 0:
                self._resume_state = state  # the next epoch's workers start from these
            return
        if state.dataset_state is not None:
            load_dataset_state(self.dataset, state.dataset_state)
        elif not state.next_epoch_starts_workers and state.order is Order.ITERABLE:
            warnings.warn(PERSISTENT_ITERABLE_WARNING, UserWarning, stacklevel=3)


def _decoded_rng(encoded, key: str, like: torch.Tensor) -> torch.Tensor:
    """A saved RNG state, refused (naming `key`) unless it is one of `like`'s kind."""
    try:
        decoded = decode_rng_state(encoded)
    except ValueError:
        decoded = None
    if decoded is None or decoded.dtype != like.dtype or decoded.numel() != like.numel():
        raise ValueError(f"cannot resume: state[{key!r}] holds something that is not an RNG state of this kind")
    return decoded


# torchdata's name for a checkpointable loader: pyloader's DataLoader is one.
StatefulDataLoader = DataLoader
