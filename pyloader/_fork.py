"""Fork safety for native objects.

After ``os.fork()`` the child has none of the parent's C++ threads, and a mutex held
by one of them at fork time stays locked forever. Destroying a thread pool or a
pipeline inherited from the parent would join threads that do not exist or wait for
work that will never finish, so the child never destroys them: they are pinned (their
reference count raised, never lowered) and fresh ones are built on demand. Code that
caches a native object compares its ``generation`` with :func:`generation` to know
when to rebuild.
"""

from __future__ import annotations

import ctypes
import os
import weakref

_live = weakref.WeakSet()
_pinned: list = []
_generation = 0


def generation() -> int:
    """Increases in a child process each time it is forked."""
    return _generation


def track(native_object):
    """Registers a thread pool or pipeline so a forked child never destroys it."""
    _live.add(native_object)
    return native_object


def _abandon_inherited_objects() -> None:
    global _generation
    _generation += 1
    for native_object in list(_live):
        # An extra reference that is never released keeps the destructor from running,
        # even during interpreter shutdown.
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(native_object))
        _pinned.append(native_object)
    _live.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_abandon_inherited_objects)
