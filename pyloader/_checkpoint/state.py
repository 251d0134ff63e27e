"""The saved state of a DataLoader: its schema, written down in one place.

``DataLoader.state_dict()`` returns plain data (ints, strings, lists, dicts; RNG states
as base64 text), so ``json`` and ``torch.save`` both take it and a round trip gives it
back unchanged. :func:`parse` is the only reader of such a dict: it checks the type and
range of every field it can (what datasets and samplers saved of themselves is theirs to
check when they load it) before anything of a loader is touched, so a hand-edited state, or one passed through a
tool that turned ints into floats or strings, is refused with a ``ValueError`` naming
the field, and the rest of the package reads a :class:`LoaderState`, never raw keys.

What a state holds depends on its kind (:attr:`LoaderState.kind`):

* ``fresh``: the loader had not iterated. Only the RNGs and the sampler's epoch.
* ``in_epoch``: inside an epoch (also after its last batch, until ``StopIteration``):
  the epoch's order and how far it got, and what that order depends on (`identity`),
  which a resume compares with the loader it is loaded into.
* ``between_epochs``: an epoch ended; the next one starts fresh, from the RNGs, the
  sampler's epoch, and the dataset's (or its workers') states.

Format versions: 2 changed the native shuffle (states of /1 name another order); 3
added ``global_rng``, ``identity`` and ``self_iterating_workers``. /2 states are still
read: they lack the identity, so what they were saved over is not checked.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NoReturn

STATE_FORMAT = "pyloader.DataLoader/3"
_READABLE_FORMATS = (STATE_FORMAT, "pyloader.DataLoader/2")


class Order(str, enum.Enum):
    """How an epoch's batches were ordered (a `str`, so it compares with its name)."""

    NONE = "none"  # no epoch yet
    SEQUENTIAL = "sequential"  # native, in order
    SHUFFLED = "shuffled"  # native shuffle=True
    DISTRIBUTED = "distributed"  # native pyloader.DistributedSampler
    BLOCK = "block"  # native BlockShuffleSampler
    SAMPLER = "sampler"  # native gather, the indices from a user sampler
    TORCH = "torch"  # torch's path, a map-style dataset
    ITERABLE = "iterable"  # an IterableDataset

    def __str__(self) -> str:
        return self.value


class Kind(str, enum.Enum):
    FRESH = "fresh"
    IN_EPOCH = "in_epoch"
    BETWEEN_EPOCHS = "between_epochs"


# What an in-epoch position means depends on these; a resume refuses a loader that
# differs in any of them (None: not known, or not applicable, and not compared).
IDENTITY_FIELDS = (
    "rows",
    "batch_size",
    "drop_last",
    "sampler",
    "shuffle",
    "seed",
    "world_size",
    "sampler_drop_last",
    "block",
)


@dataclass
class LoaderState:
    """A parsed state. Field names are the dict's keys (see `DataLoader.state_dict`)."""

    format: str
    num_workers: int
    order: Order
    in_epoch: bool
    batches_yielded: int = 0  # batches the epoch moved past: delivered, or failed while loading
    native_seed: int | None = None  # the native shuffle's seed for this epoch
    epoch_start_rng: dict | None = None  # RNG states the epoch started from (replay)
    drew_base_seed: bool = True  # whether the epoch started workers, drawing their seed
    # A DistributedSampler epoch: who saved it, for merging ranks (elastic resume).
    rank: int | None = None
    world_size: int | None = None
    batch_size: int | None = None
    num_samples: int | None = None
    rows: int | None = None
    elastic: dict | None = None  # an epoch continued by another world size
    delivered: dict | None = None  # in_order=False: the batches delivered (watermark, above)
    sampler_state: dict | None = None  # a Stateful sampler's state (and its iterator's)
    sampler_started: bool = True  # whether the sampler had begun drawing its epoch
    # An IterableDataset's position, or a Stateful map-style dataset's state.
    dataset_state: object = None
    iterator_state: object = None
    worker_states: dict | None = None  # worker id (str) -> that worker's dataset state
    next_worker: int | None = None  # whose batch is due next (round robin)
    workers_ended: list = field(default_factory=list)  # workers whose stream ended this epoch
    self_iterating_workers: list = field(default_factory=list)  # workers whose dataset is its own iterator
    stream_ended: bool = False
    generators: list = field(default_factory=list)  # the loader's and samplers' generators
    global_rng: str | None = None  # torch's global RNG when the state was taken
    sampler_epoch: int | None = None  # the sampler's set_epoch
    next_epoch_starts_workers: bool = True  # False: persistent workers carried on (no seed draw)
    identity: dict | None = None  # IDENTITY_FIELDS of the loader that saved the epoch

    @property
    def kind(self) -> Kind:
        if self.order is Order.NONE:
            return Kind.FRESH
        return Kind.IN_EPOCH if self.in_epoch else Kind.BETWEEN_EPOCHS

    def to_dict(self) -> dict:
        state = asdict(self)
        state["order"] = self.order.value
        return state

    def replace(self, **changes: Any) -> LoaderState:
        return LoaderState(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse(state: Any) -> LoaderState:  # noqa: C901 (one check per field, in the schema's order)
    """A :class:`LoaderState` from what ``state_dict()`` returned, every field checked.
    Raises ValueError naming the first field that cannot be what ``state_dict()`` wrote."""
    if not isinstance(state, dict) or state.get("format") not in _READABLE_FORMATS:
        raise ValueError(f"not a pyloader DataLoader state (expected format {STATE_FORMAT!r})")

    def refuse(key: str, expected: str) -> NoReturn:
        raise ValueError(f"cannot resume: state[{key!r}] must be {expected}, got {state.get(key)!r}")

    known = {f.name for f in fields(LoaderState)}
    unknown = sorted(set(state) - known)
    if unknown:
        raise ValueError(f"cannot resume: the state has keys no pyloader state has: {unknown}")
    try:
        order = Order(state.get("order"))
    except ValueError:
        refuse("order", f"one of {[o.value for o in Order]}")
    if not isinstance(state.get("in_epoch"), bool):
        refuse("in_epoch", "True or False")
    for key in ("drew_base_seed", "sampler_started", "stream_ended", "next_epoch_starts_workers"):
        if key in state and not isinstance(state[key], bool):
            refuse(key, "True or False")
    for key in ("batches_yielded", "num_workers"):
        if not _is_int(state.get(key)) or state[key] < 0:
            refuse(key, "a non-negative int")
    for key in ("rank", "world_size", "batch_size", "num_samples", "rows", "next_worker", "sampler_epoch"):
        value = state.get(key)
        if value is not None and (not _is_int(value) or (key != "sampler_epoch" and value < 0)):
            refuse(key, "None or a non-negative int" if key != "sampler_epoch" else "None or an int")
    seed = state.get("native_seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed < 1 << 64):
        refuse("native_seed", "None or an int in [0, 2**64)")
    if order is Order.SHUFFLED and state["in_epoch"] and seed is None:
        refuse("native_seed", "an int for a shuffled epoch")
    generators = state.get("generators")
    if not isinstance(generators, list) or not all(isinstance(g, str) or _is_tensor(g) for g in generators):
        refuse("generators", "a list of encoded RNG states")
    if state.get("global_rng") is not None and not isinstance(state["global_rng"], str):
        refuse("global_rng", "None or an encoded RNG state")
    rng = state.get("epoch_start_rng")
    if rng is not None and not (
        isinstance(rng, dict) and set(rng) == {"global", "generators"} and isinstance(rng["generators"], list)
    ):
        refuse("epoch_start_rng", "None or the RNG states of an epoch's start")
    for key in ("elastic", "delivered", "sampler_state", "worker_states", "identity"):
        if state.get(key) is not None and not isinstance(state[key], dict):
            refuse(key, "None or a dict")
    delivered = state.get("delivered")
    if delivered is not None and not (
        _is_int(delivered.get("watermark"))
        and isinstance(delivered.get("above"), list)
        and all(_is_int(i) for i in delivered["above"])
    ):
        refuse("delivered", "a watermark and a list of batch numbers")
    for key in ("workers_ended", "self_iterating_workers"):
        value = state.get(key)
        if value is not None and not isinstance(value, list):
            refuse(key, "a list of worker ids")
    elastic = state.get("elastic")
    if elastic is not None and not (
        _is_int(elastic.get("world_size"))
        and elastic["world_size"] > 0
        and isinstance(elastic.get("consumed"), list)
        and len(elastic["consumed"]) == elastic["world_size"]
        and all(_is_int(c) and c >= 0 for c in elastic["consumed"])
    ):
        refuse("elastic", "None or what merge_states wrote (world_size, consumed per rank)")
    next_worker = state.get("next_worker")
    if next_worker is not None and next_worker >= max(1, state["num_workers"]):
        refuse("next_worker", f"a worker id below num_workers={state['num_workers']}")
    worker_states = state.get("worker_states")
    if worker_states is not None and not all(isinstance(k, str) and k.isdigit() for k in worker_states):
        refuse("worker_states", "keyed by worker id")
    identity = state.get("identity")
    if identity is not None and not set(identity) <= set(IDENTITY_FIELDS):
        refuse("identity", f"a dict of {list(IDENTITY_FIELDS)}")
    values = {key: value for key, value in state.items() if value is not None}
    values["order"] = order
    for key in ("workers_ended", "self_iterating_workers"):
        values[key] = list(values.get(key) or [])
    return LoaderState(**values)


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def check_identity(saved: LoaderState, current: dict) -> None:
    """Refuses resuming `saved` (inside an epoch) in a loader whose order would differ:
    `current` is that loader's identity (IDENTITY_FIELDS)."""
    if saved.kind is not Kind.IN_EPOCH or saved.identity is None:
        return
    for key in IDENTITY_FIELDS:
        before, now = saved.identity.get(key), current.get(key)
        if before is None or now is None or before == now:
            continue
        if key == "world_size" and saved.elastic is not None:
            continue  # a merged state is continued by another world size by design
        if key == "rows":
            raise ValueError(
                f"cannot resume: the state was saved over a dataset of {before} rows, this loader's dataset has {now}"
            )
        if key == "world_size":
            raise ValueError(
                f"cannot resume: the state was saved by a rank of a world of {before}, this loader's "
                f"sampler splits the data among {now}: merge the states of every rank with "
                "pyloader.DistributedSampler.merge_states(states) to resume in another world size"
            )
        raise ValueError(
            f"cannot resume: the state was saved with {key}={before!r}, this loader has "
            f"{key}={now!r}, and the epoch's order depends on it"
        )
