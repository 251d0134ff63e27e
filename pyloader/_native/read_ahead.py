"""Small-row columns read ahead whole when an epoch starts.

Under ``io="auto"`` rows smaller than ``_core.EXPLICIT_READ_MIN_ROW_BYTES`` are copied
from their mapping (a read per row would cost more than the row). When the file is cold,
each such row is a synchronous page fault from storage: a label column of 8-byte rows
next to records read at depth makes a shuffled epoch wait on one fault per sample. Such
columns are small next to what they label, so the kernel is asked to read each one
whole, in the background, as the epoch starts (``POSIX_FADV_WILLNEED``); pages already
cached cost nothing. Columns over the budget are left to their page faults: reading
them whole could evict the data being trained on.
"""

from __future__ import annotations

import os

# Small-row columns read ahead at most, all files together: 1/32 of the machine's memory,
# at most 1 GiB.
_BUDGET_BYTES = min(1 << 30, (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 32)


def read_ahead(extents: list[tuple[str, int, int]]) -> None:
    """Asks the kernel to read each (file, offset, bytes) extent into the page cache;
    advice only (nothing is done when the extents exceed the budget or a file is gone)."""
    if not extents or sum(size for _, _, size in extents) > _BUDGET_BYTES:
        return
    by_file: dict[str, list[tuple[int, int]]] = {}
    for path, offset, size in extents:
        by_file.setdefault(path, []).append((offset, size))
    for path, ranges in by_file.items():
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # the mapping still reads it; the file check reports a vanished file
        try:
            for offset, size in ranges:
                os.posix_fadvise(descriptor, offset, size, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(descriptor)
