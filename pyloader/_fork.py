"""Fork detection for cached native objects.

A forked child has none of the parent's C++ threads, so a thread pool or pipeline
inherited from the parent can never finish work. Their C++ destructors recognise the
child and release nothing that a parent thread might hold (see process_owner.hpp);
Python code that caches native objects compares its saved :func:`generation` with
the current one and builds fresh objects when they differ.
"""

from __future__ import annotations

import os

_generation = 0


def generation() -> int:
    """Increases in a child process each time it is forked."""
    return _generation


def _count_fork() -> None:
    global _generation
    _generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_count_fork)
