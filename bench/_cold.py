"""Reading from storage in the cold benchmarks: dropping a file's pages from the page cache."""

from __future__ import annotations

import mmap
import os


def evict(path: str, maps=()) -> None:
    """Drops the file's pages from the page cache (no root needed). Pages still mapped
    into this process are not dropped, so `maps` (np.memmaps of the file) let go of
    theirs first."""
    for array in maps:
        array._mmap.madvise(mmap.MADV_DONTNEED)
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)
