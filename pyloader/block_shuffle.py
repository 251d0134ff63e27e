"""BlockShuffleSampler: a locality-aware shuffle for datasets far larger than RAM."""

from __future__ import annotations

from typing import Any

from . import _core
from .distributed import DistributedSampler, epoch_seed


class BlockShuffleSampler(DistributedSampler):
    """Shuffles blocks of ``block_rows`` consecutive rows, ``window_blocks`` blocks at a
    time, and the rows within each window of blocks: every sample once per epoch, while a
    batch draws from a few blocks, so reads from storage are large and close together
    (with a fully random shuffle, every row of a file far larger than RAM is its own
    random read).

    The order is a pure function of (``seed``, epoch, position), evaluated in C++ with O(1)
    memory, so resuming is O(1) as for ``shuffle=True``. Call ``set_epoch(epoch)`` before
    each epoch, as with ``DistributedSampler``, for a new order. With several processes
    (``num_replicas``/``rank``, by default from an initialised ``torch.distributed`` group,
    else one process) each rank takes its own contiguous share of the epoch's order, and
    so its own windows of blocks; shares are padded from the start of the order (or
    truncated with ``drop_last``) to equal length, as ``DistributedSampler`` pads.

    Larger blocks and windows read faster; smaller ones shuffle better.
    ``python bench/bench_block_shuffle.py`` reports both for a choice of sizes.
    """

    def __init__(
        self,
        dataset: Any,
        block_rows: int,
        window_blocks: int = 16,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        for name, value in (("block_rows", block_rows), ("window_blocks", window_blocks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if num_replicas is None and rank is None:
            import torch.distributed as dist

            if not (dist.is_available() and dist.is_initialized()):
                num_replicas, rank = 1, 0
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.block_rows, self.window_blocks = block_rows, window_blocks

    def native_order(self) -> _core.IndexOrder:
        """This rank's order for the current epoch (num_samples positions)."""
        rows = len(self.dataset)  # type: ignore[arg-type]  # a sized dataset, as torch's sampler assumes
        if self.shuffle:
            base = _core.IndexOrder.block_shuffled(
                rows, epoch_seed(self.seed, self.epoch), self.block_rows, self.window_blocks
            )
        else:
            base = _core.IndexOrder.sequential(rows)
        return base.strided(self.rank * self.num_samples, 1, self.num_samples)
