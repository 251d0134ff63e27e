"""Elastic resume: an epoch saved by N ranks continued by M ranks.

Under :class:`pyloader.DistributedSampler` the epoch is one global order (the native
shuffle of the dataset's rows, or the rows in order) and rank ``r`` of ``N`` takes
global positions ``r, r + N, r + 2N, ...``. A rank that delivered ``k`` batches of
``b`` rows has consumed its first ``k * b`` positions. Ranks rarely stop at the same
step, so the states of all N ranks are merged (:func:`merge_rank_states`):

* the global position agreed on is ``N * min_r(consumed_r)``: every position below it
  was consumed by some rank;
* the positions between that minimum and each rank's own count (at most
  ``N * (max - min)`` of them) are listed as consumed too, so no sample is repeated.

The M new ranks split what remains (the positions from the agreed one to the end of
the dataset, minus the listed ones) as DistributedSampler splits an epoch: rank ``r``
takes every M-th remaining position from ``r``, padding by wrapping to the start of
the remainder so that every rank gets the same number of batches (or truncating, with
the sampler's ``drop_last``). Across the two runs every sample of the epoch is then
seen exactly once, besides the padding DistributedSampler itself adds. Later epochs
are ordinary epochs of the new world. Computing the remainder costs one pass over the
positions left in the epoch, in bounded chunks, once per rank; the rows are gathered
natively as usual.
"""

from __future__ import annotations

import typing

import numpy as np

_CHUNK = 1 << 16
# Positions further apart than this are read with separate native calls.
_WINDOW_GAP = 1 << 12


def merge_rank_states(states: list[dict]) -> dict:
    """One state for a new world of any size from the states of every rank of the old
    one (each ``loader.state_dict()``, in any order). Every new rank loads the result
    with ``load_state_dict``."""
    from .state import Order, parse

    if not states:
        raise ValueError("merge_rank_states needs the state of every rank")
    parsed = [parse(state) for state in states]
    if any(state.order not in (Order.DISTRIBUTED, Order.NONE) for state in parsed):
        raise ValueError(
            "merge_rank_states merges states of loaders with a pyloader.DistributedSampler on the native path"
        )
    if all(not state.in_epoch for state in parsed):
        return parsed[0].replace(rank=None).to_dict()
    unplaced = [k for k, state in enumerate(parsed) if state.order is Order.NONE]
    if unplaced:
        raise ValueError(
            f"the state(s) at {unplaced} were saved by loaders that had not iterated yet, so they "
            "name no rank and no position, while other ranks were inside an epoch: save every "
            "rank's state after its loader has started the epoch"
        )
    world = {state.world_size for state in parsed}
    if len(world) != 1 or world != {len(parsed)}:
        raise ValueError(
            f"merge_rank_states needs one state per rank: got {len(parsed)} states saved by "
            f"world size(s) {sorted(w for w in world if w is not None)}"
        )
    # Every state is placed here (Order.DISTRIBUTED): a missing rank fails the check below.
    by_rank = sorted(parsed, key=lambda state: typing.cast(int, state.rank))
    if [state.rank for state in by_rank] != list(range(len(parsed))):
        raise ValueError("merge_rank_states needs the state of every rank exactly once")
    for key in ("sampler_epoch", "batch_size", "rows", "format"):
        if len({repr(getattr(state, key)) for state in by_rank}) != 1:
            raise ValueError(f"the ranks' states disagree on {key!r}: they are not of one run and epoch")
    # What each rank's order depends on (seed, shuffle, drop_last, ...) must agree too.
    # (A rank that finished its epoch records none: it holds no position any more.)
    identities = [state.identity for state in by_rank if state.identity is not None]
    for key in sorted(set().union(*identities) if identities else ()):
        seen = {repr(identity.get(key)) for identity in identities}
        if len(seen) != 1:
            raise ValueError(
                f"the ranks' states disagree on {key!r} ({', '.join(sorted(seen))}): they are not of one run"
            )
    if any(state.elastic is not None for state in by_rank):
        raise ValueError(
            "these states continue an elastic resume: resume them with the same world size, "
            "or change it again once that epoch ends"
        )
    # A rank that finished the epoch consumed all its samples. (Placed states record both
    # counts.)
    consumed = [
        state.num_samples
        if not state.in_epoch
        else min(state.batches_yielded * typing.cast(int, state.batch_size), typing.cast(int, state.num_samples))
        for state in by_rank
    ]
    merged = by_rank[0].replace(
        in_epoch=True,
        rank=None,
        world_size=None,
        batches_yielded=0,
        elastic={"world_size": len(parsed), "consumed": consumed},
        identity=identities[0] if identities else None,
    )
    return merged.to_dict()


def remaining_positions(elastic: dict, rows: int) -> tuple[int, np.ndarray]:
    """(first global position not known to be consumed, sorted consumed positions at or
    beyond it and below `rows`)."""
    world, consumed = elastic["world_size"], elastic["consumed"]
    low = min(consumed)
    start = world * low
    per_rank = [rank + world * np.arange(low, count, dtype=np.int64) for rank, count in enumerate(consumed)]
    extra = np.concatenate(per_rank) if per_rank else np.empty(0, np.int64)
    extra = np.unique(extra[(extra >= start) & (extra < rows)])
    return start, extra


def elastic_batches(
    base_order,
    elastic: dict,
    rank: int,
    world: int,
    drop_last_samples: bool,
    batch_size: int,
    drop_last: bool,
    skip_batches: int,
):
    """Index batches of `rank` of `world` for the rest of an elastic epoch."""
    rows = base_order.rows
    start, extra = remaining_positions(elastic, rows)
    remaining = rows - start - len(extra)
    if remaining <= 0:
        return iter(())
    per_rank = remaining // world if drop_last_samples else -(-remaining // world)
    batches = per_rank // batch_size if drop_last else -(-per_rank // batch_size)
    return _batches(base_order, start, extra, remaining, rank, world, per_rank, batch_size, skip_batches, batches)


def _batches(base_order, start, extra, remaining, rank, world, per_rank, batch_size, skip, batches):
    pending = np.empty(0, np.int64)
    emitted = 0
    for first in range(0, per_rank, _CHUNK):
        # This rank's j-th sample is remainder element (rank + j * world) mod remaining:
        # DistributedSampler's split, wrapping to the start to pad.
        steps = np.arange(first, min(first + _CHUNK, per_rank), dtype=np.int64)
        elements = (rank + steps * world) % remaining
        pending = np.concatenate([pending, _rows_of_elements(base_order, start, extra, elements)])
        while len(pending) >= batch_size and emitted < batches:
            batch, pending = pending[:batch_size], pending[batch_size:]
            if emitted >= skip:
                yield batch
            emitted += 1
    if len(pending) and emitted < batches and emitted >= skip:
        yield pending


def _rows_of_elements(base_order, start, extra, elements):
    """Dataset rows of remainder elements: element e is the e-th position >= start that
    is not in `extra` (sorted)."""
    positions = start + elements
    if len(extra):
        # p = start + e + #(extra <= p), found by iterating from below: each step passes
        # at least one more extra position, and it stops on a position outside `extra`.
        while True:
            shifted = start + elements + np.searchsorted(extra, positions, side="right")
            if np.array_equal(shifted, positions):
                break
            positions = shifted
    rows = np.empty(len(positions), np.int64)
    # One native call per window of nearby positions (a rank's positions are `world`
    # apart; padding wraps some to the start of the remainder).
    order = np.argsort(positions, kind="stable")
    sorted_positions = positions[order]
    breaks = np.flatnonzero(np.diff(sorted_positions) > _WINDOW_GAP) + 1
    for group in np.split(np.arange(len(sorted_positions)), breaks):
        group_positions = sorted_positions[group]
        low = int(group_positions[0])
        window = base_order.take(low, int(group_positions[-1]) - low + 1)
        rows[order[group]] = window[group_positions - low]
    return rows
