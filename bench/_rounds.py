"""Timing rounds shared by the benchmarks: samples/s of one round, and interleaved rounds."""

from __future__ import annotations

import statistics
import time


def round_rate(make_iterator, batches: int, batch_size: int, consume) -> float:
    """Samples/s over `batches` batches of `batch_size` after an untimed first one; a
    finished epoch starts the next (its start-up is timed: a training loop pays it too).
    `consume(batch)` reads a value of the batch (so the loader cannot be lazy) and
    returns (samples in it, the value read)."""
    iterator = make_iterator()
    next(iterator)
    samples, touched = 0, 0
    start = time.perf_counter()
    while samples < batches * batch_size:
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = make_iterator()
            continue
        count, value = consume(batch)
        touched += value
        samples += count
    return samples / (time.perf_counter() - start)


def interleaved_rounds(loaders: dict, rounds: int, rate, before_each=lambda: None) -> tuple[dict, dict]:
    """Each contender's samples/s per round (`rate(make_iterator)`), rounds interleaved,
    and each one's median."""
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(rounds):
        for name, loader in loaders.items():
            before_each()
            rates[name].append(rate(loader.__iter__))
    return rates, {name: statistics.median(values) for name, values in rates.items()}
