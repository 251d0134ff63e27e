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


def evict_mapped(path: str) -> None:
    """Drops the file's pages from the page cache even where a library (pyarrow, for
    datasets) maps the file in this process: every mapping of it is told first that its
    pages are not needed (they are read again from the file when touched)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    real = os.path.realpath(path)
    with open("/proc/self/maps", encoding="utf-8", errors="surrogateescape") as table:
        for line in table:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].rstrip("\n") == real:
                start, end = (int(bound, 16) for bound in fields[0].split("-"))
                libc.madvise(start, end - start, mmap.MADV_DONTNEED)
    evict(path)
