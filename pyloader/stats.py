"""How long a training loop waits for its data, answered by the loader.

Every iterator a :class:`~pyloader.DataLoader` returns keeps a few counters that cost
nothing measurable per batch, and ``iterator.stats()`` returns them as a
:class:`LoaderStats`::

    batches = iter(loader)
    for step, batch in enumerate(batches):
        ...
    print(batches.stats().summary())
    # 390 batches in 41.2 s: waited for data 0.35 s (0.8%); 99% ready when asked,
    # 12.4 ahead on average; 2.44 GiB gathered

``waited_s`` is the time the caller spent inside ``next()`` blocked on a batch that was
not ready yet. When it is a small share of ``elapsed_s``, loading is not the bottleneck;
when it is large, more gather threads, a deeper prefetch or a faster store help.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class LoaderStats:
    """Counters of one iterator, since it started.

    Attributes:
        batches: batches delivered.
        waited_s: seconds the caller spent blocked in ``next()`` waiting for a batch.
            On the native path, only the wait for a batch still being gathered counts;
            on torch's path, every ``next()`` counts in full (the fetch runs there, or
            is waited for there).
        elapsed_s: seconds since the iterator was created.
        ready_when_asked: batches that were already finished when ``next()`` asked
            (native path; None on torch's path).
        mean_ahead: finished batches waiting behind each delivered one, on average
            (native path; None on torch's path).
        gathered_bytes: bytes of the batches gathered (native path; None on torch's).
        read_bytes: bytes read from files with explicit reads (see ``io=``).
    """

    batches: int
    waited_s: float
    elapsed_s: float
    ready_when_asked: int | None = None
    mean_ahead: float | None = None
    gathered_bytes: int | None = None
    read_bytes: int | None = None

    @property
    def wait_fraction(self) -> float:
        """Share of the elapsed time spent waiting for data (0 before any time passed)."""
        return self.waited_s / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        """One line for a training log."""
        line = (
            f"{self.batches} batches in {self.elapsed_s:.1f} s: waited for data {self.waited_s:.2f} s "
            f"({100 * self.wait_fraction:.1f}%)"
        )
        if self.ready_when_asked is not None and self.batches:
            line += (
                f"; {100 * self.ready_when_asked / self.batches:.0f}% ready when asked, "
                f"{self.mean_ahead:.1f} ahead on average"
            )
        if self.gathered_bytes is not None:
            line += f"; {self.gathered_bytes / 2**30:.2f} GiB gathered"
        if self.read_bytes:
            line += f" ({self.read_bytes / 2**30:.2f} GiB read from files)"
        return line


def native_stats(counters: dict, started: float) -> LoaderStats:
    """LoaderStats from a native pipeline's counters (``BatchPipeline.stats()``)."""
    batches = counters["batches"]
    return LoaderStats(
        batches=batches,
        waited_s=counters["waited_ns"] / 1e9,
        elapsed_s=time.monotonic() - started,
        ready_when_asked=counters["ready_when_asked"],
        mean_ahead=counters["finished_ahead"] / batches if batches else 0.0,
        gathered_bytes=counters["gathered_bytes"],
        read_bytes=counters["read_bytes"],
    )


class WaitClock:
    """The time spent in an iterator's ``next()`` calls, for torch's path."""

    __slots__ = ("started", "waited", "batches")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.waited = 0.0
        self.batches = 0

    def stats(self) -> LoaderStats:
        return LoaderStats(batches=self.batches, waited_s=self.waited, elapsed_s=time.monotonic() - self.started)
