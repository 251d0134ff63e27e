"""DistributedSampler: torch's semantics, backed by the native O(1)-memory order."""

from __future__ import annotations

from collections.abc import Iterator

import torch.utils.data

from . import _core

_UINT64_SPAN = 1 << 64
# Indices are produced in chunks of this many: bounded memory, few native calls.
_CHUNK = 1 << 16


def epoch_seed(seed: int, epoch: int) -> int:
    """The native shuffle seed of (seed, epoch); the same on every rank."""
    return _core.mix_seed(int(seed) % _UINT64_SPAN, int(epoch) % _UINT64_SPAN)  # numpy ints too


class DistributedSampler(torch.utils.data.DistributedSampler):
    """``torch.utils.data.DistributedSampler`` with an O(1)-memory native order.

    Same signature, argument checks, defaults (``num_replicas`` and ``rank`` from the
    initialised ``torch.distributed`` group), ``num_samples``, padding rule (wrap to
    the start of the epoch's order until the split is even) or truncation
    (``drop_last``), striding by rank, and ``set_epoch``. The shuffle differs from
    torch's ``randperm``: it is a seeded bijection evaluated per position, so no rank
    ever materialises the whole epoch, and in a :class:`pyloader.DataLoader` the
    indices never reach Python at all.
    """

    @staticmethod
    def merge_states(states: list[dict]) -> dict:
        """The loader states of every rank of one run merged into one that any number of
        ranks can load: elastic resume, see ``pyloader/_checkpoint/elastic.py``."""
        from ._checkpoint.elastic import merge_rank_states

        return merge_rank_states(states)

    def native_order(self) -> _core.IndexOrder:
        """This rank's order for the current epoch (num_samples positions)."""
        rows = len(self.dataset)  # type: ignore[arg-type]  # a sized dataset, as torch's sampler assumes
        if self.shuffle:
            base = _core.IndexOrder.shuffled(rows, epoch_seed(self.seed, self.epoch))
        else:
            base = _core.IndexOrder.sequential(rows)
        return base.strided(self.rank, self.num_replicas, self.num_samples)

    def __iter__(self) -> Iterator[int]:
        order = self.native_order()
        for first in range(0, len(order), _CHUNK):
            yield from order.take(first, min(_CHUNK, len(order) - first)).tolist()
