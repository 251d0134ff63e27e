"""Which file, and where in it, a memory address is mapped from.

Arrow readers (pyarrow's memory-mapped IPC reader, and ``datasets`` through it) hand
out buffers that point into a mapping of the file without saying which file or where.
The process's own mapping table (``/proc/self/maps`` on Linux) says both, exactly, for
every file-backed mapping: that lets the loader read those bytes with explicit reads
when they are cold, check the file for truncation, and map the same bytes again. On
systems without that table every lookup answers None, and the columns are read
through the reader's mapping only.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class FileRegion:
    """Where a run of bytes lies in a file."""

    path: str
    offset: int  # of the run's first byte in the file
    identity: tuple[int, int]  # (st_dev, st_ino) of the file mapped


class MappedRegions:
    """A snapshot of the process's file-backed mappings. Valid for addresses whose
    mapping outlives the snapshot (buffers the caller holds)."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._entries: list[tuple[int, int, int, str, tuple[int, int]]] = []
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="surrogateescape") as table:
                lines = table.readlines()
        except OSError:
            return
        for line in lines:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or not fields[5].startswith("/"):
                continue  # anonymous memory, the heap, the stack
            path = fields[5].rstrip("\n")
            if path.endswith(" (deleted)"):
                continue  # the mapping no longer has a path to read or check
            start, end = (int(bound, 16) for bound in fields[0].split("-"))
            major, minor = (int(part, 16) for part in fields[3].split(":"))
            identity = (os.makedev(major, minor), int(fields[4]))
            self._starts.append(start)
            self._entries.append((start, end, int(fields[2], 16), path, identity))
        order = sorted(range(len(self._starts)), key=self._starts.__getitem__)
        self._starts = [self._starts[k] for k in order]
        self._entries = [self._entries[k] for k in order]

    def locate(self, address: int, size: int) -> FileRegion | None:
        """Where the `size` bytes at `address` lie in a file, or None when they are not
        all in one file-backed mapping whose path still names the file mapped."""
        k = bisect.bisect_right(self._starts, address) - 1
        if k < 0:
            return None
        start, end, file_offset, path, identity = self._entries[k]
        if address + max(size, 1) > end:
            return None
        try:
            status = os.stat(path)
        except OSError:
            return None
        if (status.st_dev, status.st_ino) != identity:
            return None  # another file now has the path (or the filesystem reports other numbers)
        return FileRegion(path=path, offset=file_offset + address - start, identity=identity)
