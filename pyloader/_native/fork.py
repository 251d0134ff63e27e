"""Fork detection for cached native objects.

A forked child has none of the parent's C++ threads, so a thread pool or pipeline
inherited from the parent can never finish work. Their C++ destructors recognise the
child and release nothing that a parent thread might hold (see process_owner.hpp);
Python code that caches native objects keeps them in a :class:`PerProcess`, which
builds a fresh one in a child.
"""

from __future__ import annotations

import os
from typing import Any, Callable

_generation = 0


def generation() -> int:
    """Increases in a child process each time it is forked."""
    return _generation


def _count_fork() -> None:
    global _generation
    _generation += 1


class PerProcess:
    """An object built on first use by `factory(owner)`, and built again after a fork.

    The factory receives the owner at each build rather than capturing it, so an owner
    holding its PerProcess forms no reference cycle.
    """

    def __init__(self, factory: Callable[[Any], Any]) -> None:
        self._factory = factory
        self._value = None
        self._generation = -1

    def get(self, owner: Any) -> Any:
        if self._value is None or self._generation != _generation:
            self._value = self._factory(owner)
            self._generation = _generation
        return self._value


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_count_fork)
