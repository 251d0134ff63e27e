"""The command line: ``python -m pyloader inspect`` and ``python -m pyloader bench``.

``inspect PATH ...`` says what each path holds as pyloader would read it: a ``.npy``
array, ``.npy`` shards (a glob pattern or a directory), a raw token file (``--token-dtype``,
as nanoGPT's ``train.bin`` is ``uint16``), a Megatron-LM ``.bin``/``.idx`` pair, or an
Arrow file or Hugging Face ``save_to_disk`` folder (its columns, and which are read
natively). It reads
headers and file sizes only (the files are memory-mapped, never loaded), so it answers at
once and in O(1) memory for files of any size; the Megatron sequence-length statistics are
one numpy pass over the memory-mapped index.

``bench PATH ...`` times :class:`pyloader.DataLoader` on the user's own files against
``torch.utils.data.DataLoader`` over the plain ``Dataset`` one writes without pyloader
(``np.load(mmap_mode="r")`` and a copy per sample; nanoGPT-style ``(x, y)`` slices for
tokens). A speed-up measured on one's own data, disk and CPUs is the one that matters, and
a synthetic benchmark cannot show it.

Errors about the data (a missing file, a bad header, a truncated index) are reported as one
line on stderr with exit status 2, as argparse reports a bad command line.
"""

from __future__ import annotations

import argparse
import bisect
import glob
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
import torch.utils.data

from ._native.columns import _is_pattern, open_npy, shard_paths

PROG = "python -m pyloader"
_TOKEN_DTYPES = ("uint8", "uint16", "uint32", "int32", "int64")
_EXIT_DATA_ERROR = 2  # argparse's status for a bad command line; a bad path is one too


class DataError(ValueError):
    """A path that cannot be read as the data it was named as; reported in one line."""


# --- what a path holds -------------------------------------------------------------------


@dataclass
class Source:
    """One PATH argument, opened memory-mapped (nothing read but headers)."""

    path: str  # as the user gave it
    kind: str  # "array", "shards", "tokens", "megatron" or "arrow"
    files: list[str]  # every file the data lives in
    dtype: np.dtype | None  # None for Arrow data (a dtype per column)
    rows: int | None = None  # arrays and shards
    row_shape: tuple | None = None
    tokens: int | None = None  # token files and Megatron pairs
    token_dtype: np.dtype | None = None  # raw token files: the dtype they were named with
    index: Any = field(default=None, repr=False)  # MegatronIndex
    arrow_columns: list[tuple[str, str, bool]] | None = None  # (name, Arrow type, read natively)

    @property
    def size(self) -> int:
        return sum(os.path.getsize(file) for file in self.files)


def _npy_files(path: str, files: list[str]) -> Source:
    """A .npy array or shards of one: dtype and trailing shape must agree, as
    ArrayDataset requires of the shards of a column."""
    for file in files:
        # numpy reads a file without the .npy magic as a pickle and says so, which
        # misleads about what is wrong with it.
        with open(file, "rb") as stream:
            if stream.read(6) != b"\x93NUMPY":
                raise DataError(f"{file!r} is not a .npy file (it does not start with the .npy magic)")
    arrays = [open_npy(file) for file in files]
    first = arrays[0]
    for file, array in zip(files[1:], arrays[1:]):
        if array.dtype != first.dtype or array.shape[1:] != first.shape[1:]:
            raise DataError(
                f"shard {file!r} holds {array.dtype} rows of shape {array.shape[1:]}, but "
                f"{files[0]!r} holds {first.dtype} rows of shape {first.shape[1:]}"
            )
    if first.ndim == 0:
        raise DataError(f"{files[0]!r} holds a 0-d array; a dataset needs a first (row) dimension")
    kind = "array" if len(files) == 1 and not _names_several(path) else "shards"
    return Source(
        path, kind, list(files), first.dtype, rows=sum(len(a) for a in arrays), row_shape=tuple(first.shape[1:])
    )


def _names_several(path: str) -> bool:
    return os.path.isdir(path) or _is_pattern(path)


def _megatron_prefix(path: str) -> str | None:
    """The prefix when `path` names a Megatron pair (PREFIX, PREFIX.bin or PREFIX.idx).

    A ``.bin`` without an ``.idx`` beside it is a raw token file (nanoGPT's train.bin)."""
    if path.endswith(".idx"):
        return path[: -len(".idx")]
    if path.endswith(".bin"):
        stem = path[: -len(".bin")]
        return stem if os.path.exists(stem + ".idx") else None
    if not os.path.exists(path) and (os.path.exists(path + ".idx") or os.path.exists(path + ".bin")):
        return path
    return None


def _is_arrow(path: str) -> bool:
    """An Arrow IPC file or stream, by name or magic, or a datasets save_to_disk folder."""
    if os.path.isdir(path):
        return any(os.path.exists(os.path.join(path, name)) for name in ("state.json", "dataset_dict.json"))
    if path.endswith((".arrow", ".feather", ".ipc")):
        return True
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as stream:
        head = stream.read(8)
    return head.startswith(b"ARROW1") or head.startswith(b"\xff\xff\xff\xff")


def _arrow_source(path: str) -> Source:
    from ._native.arrow_columns import _layout
    from .arrow import _table_of, read_arrow_file

    if os.path.isdir(path):
        from .arrow import _saved_dataset_files

        files = _saved_dataset_files(path)
    else:
        files = [path]
    table = _table_of(path)[0] if len(files) > 1 else read_arrow_file(files[0])
    columns = [
        (name, str(column.type), _layout(column.type) is not None and column.null_count == 0)
        for name, column in zip(table.column_names, table.columns)
    ]
    return Source(path, "arrow", files, None, rows=table.num_rows, arrow_columns=columns)


def open_source(path: str, token_dtype: str | None = None) -> Source:
    """Opens one PATH argument; raises OSError, ValueError or TypeError for bad data."""
    if _is_arrow(path):
        return _arrow_source(path)
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(glob.escape(path), "*.npy")))
        if not files:
            raise DataError(f"{path!r} is a directory with no .npy files in it")
        return _npy_files(path, files)
    if _is_pattern(path):
        return _npy_files(path, shard_paths(path))
    prefix = _megatron_prefix(path)
    if prefix is not None:
        from ._native.megatron_format import read_megatron_index

        index = read_megatron_index(prefix)
        return Source(
            path, "megatron", [index.bin_path, index.idx_path], index.dtype, tokens=len(index.tokens), index=index
        )
    if not os.path.exists(path):
        raise DataError(f"{path!r}: no such file, directory, glob match or Megatron prefix")
    if not os.path.isfile(path):
        raise DataError(f"{path!r} is not a regular file")
    if path.endswith(".npy"):
        return _npy_files(path, [path])
    if token_dtype is None:
        raise DataError(
            f"{path!r} is neither a .npy file nor a Megatron .bin/.idx pair; if it holds "
            "raw tokens, say their dtype with --token-dtype (nanoGPT's train.bin is uint16)"
        )
    dtype = np.dtype(token_dtype)
    size = os.path.getsize(path)
    if size % dtype.itemsize:
        raise DataError(f"{path!r} has {size} bytes, not a whole number of {dtype} tokens")
    return Source(path, "tokens", [path], dtype, tokens=size // dtype.itemsize, token_dtype=dtype)


def human_bytes(size: int) -> str:
    """``1536`` -> ``1.5 KiB``: binary units, as file managers and ``ls -h`` show sizes."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def describe(source: Source) -> list[str]:
    """The `inspect` lines of one source: ``key: value``, easy to read and to grep."""
    lines = [source.path, f"  kind: {source.kind}"]
    if source.arrow_columns is not None:
        lines.append(f"  rows: {source.rows}")
        for name, arrow_type, native in source.arrow_columns:
            lines.append(f"  column {name}: {arrow_type}{'' if native else ' (torch path only)'}")
    else:
        lines.append(f"  dtype: {source.dtype}")
    if source.rows is not None and source.arrow_columns is None:
        lines += [f"  rows: {source.rows}", f"  row shape: {source.row_shape}"]
    if source.tokens is not None:
        lines.append(f"  tokens: {source.tokens}")
    if source.kind == "megatron":
        index = source.index
        lines += [f"  sequences: {index.sequences}", f"  documents: {index.documents}"]
        if index.sequences:
            lengths = index.sequence_lengths
            # int64 sum: an int32 accumulator would wrap past 2**31 tokens.
            mean = int(lengths.sum(dtype=np.int64)) / index.sequences
            lines.append(f"  sequence length: min {int(lengths.min())}, mean {mean:.1f}, max {int(lengths.max())}")
        else:
            lines.append("  sequence length: no sequences")
    size = source.size
    lines += [f"  size: {size} bytes ({human_bytes(size)})", f"  files: {len(source.files)}"]
    return lines


def error_text(path: str, error: BaseException) -> str:
    """One line naming `path` (unless the message already does) and what is wrong."""
    if isinstance(error, OSError) and error.strerror:
        where = error.filename if error.filename is not None else path
        text = f"{where}: {error.strerror}"
    else:
        text = str(error)
    text = " ".join(text.split())  # one line, whatever the message held
    return text if path in text else f"{path}: {text}"


def _report(command: str, text: str) -> None:
    print(f"{PROG} {command}: error: {text}", file=sys.stderr)


def _inspect(arguments) -> int:
    status = 0
    for k, path in enumerate(arguments.paths):
        try:
            lines = describe(open_source(path, arguments.token_dtype))
        except (OSError, ValueError, TypeError) as error:
            _report("inspect", error_text(path, error))
            status = _EXIT_DATA_ERROR
            continue
        if k:
            print()
        print("\n".join(lines))
    return status


# --- the torch baseline: the Dataset one writes without pyloader --------------------------


def _open_stream(spec):
    """A memory map of one (path, raw dtype or None for .npy) token or array file."""
    path, raw_dtype = spec
    if raw_dtype is None:
        return np.load(path, mmap_mode="r")
    return np.memmap(path, dtype=raw_dtype, mode="r")


class _Lazy(torch.utils.data.Dataset):
    """Maps its files in each process on first use: a pickled np.memmap carries its whole
    contents, so torch's workers (under spawn) must get paths, not maps."""

    def __init__(self, specs) -> None:
        self._specs = list(specs)
        self._maps = None

    def _streams(self):
        if self._maps is None:
            self._maps = [_open_stream(spec) for spec in self._specs]
        return self._maps

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_maps"] = None
        return state


class TorchArrays(_Lazy):
    """``(col0[i], col1[i], ...)`` from memory-mapped .npy files, one row copied per call;
    a column of several files (shards) is read as their concatenation."""

    def __init__(self, columns: Sequence[Sequence[str]]) -> None:
        self._widths = [len(files) for files in columns]
        super().__init__((file, None) for files in columns for file in files)
        maps = self._streams()
        self._ends, start = [], 0
        for width in self._widths:
            self._ends.append(list(np.cumsum([len(m) for m in maps[start : start + width]])))
            start += width
        self._maps = None  # reopened on first use, in whichever process that is

    def __len__(self) -> int:
        return int(self._ends[0][-1])

    def __getitem__(self, index: int):
        maps, rows, start = self._streams(), [], 0
        for width, ends in zip(self._widths, self._ends):
            piece = bisect.bisect_right(ends, index)
            local = index - (int(ends[piece - 1]) if piece else 0)
            rows.append(torch.from_numpy(np.array(maps[start + piece][local])))
            start += width
        return tuple(rows)


class TorchArrowRows(torch.utils.data.Dataset):
    """``{column: tensor}`` rows of Arrow data through pyarrow, one row converted to
    Python and back per call, as a Dataset written without pyloader does."""

    def __init__(self, path: str, columns: Sequence[str]) -> None:
        from ._native.arrow_columns import _layout
        from .arrow import _table_of

        self._path = path
        self._columns = list(columns)
        table = _table_of(path)[0]
        self._rows = table.num_rows
        # Only natively readable columns are benchmarked: each has a layout.
        self._dtypes = [cast(tuple, _layout(table.schema.field(name).type))[1] for name in self._columns]
        self._table: Any = None  # opened on first use, in whichever process that is

    def __getstate__(self):
        return {**self.__dict__, "_table": None}

    def __len__(self) -> int:
        return self._rows

    def __getitem__(self, index: int):
        from .arrow import _table_of

        if self._table is None:
            self._table = _table_of(self._path)[0].select(self._columns)
        row = self._table.slice(index, 1).to_pylist()[0]
        return {
            name: torch.from_numpy(np.asarray(row[name], dtype)) for name, dtype in zip(self._columns, self._dtypes)
        }


class TorchWindows(_Lazy):
    """nanoGPT's ``(x, y)``: ``block_size`` tokens as int64 and the same shifted by one,
    from non-overlapping windows of each memory-mapped shard (none crosses a shard end)."""

    def __init__(self, specs, block_size: int) -> None:
        super().__init__(specs)
        self.block_size = block_size
        counts = [max(0, (len(m) - block_size - 1) // block_size + 1) for m in self._streams()]
        self._ends = list(np.cumsum(counts))
        self._maps = None

    def __len__(self) -> int:
        return int(self._ends[-1])

    def __getitem__(self, index: int):
        piece = bisect.bisect_right(self._ends, index)
        local = index - (int(self._ends[piece - 1]) if piece else 0)
        start = local * self.block_size
        chunk = self._streams()[piece][start : start + self.block_size + 1]
        return (torch.from_numpy(chunk[:-1].astype(np.int64)), torch.from_numpy(chunk[1:].astype(np.int64)))


# --- bench ---------------------------------------------------------------------------------


@dataclass
class BenchCase:
    name: str  # "array", "shards", "tokens" or "megatron"
    pyloader_dataset: Any  # a sized map-style dataset
    torch_dataset: Any
    batch_size: int
    what: str  # one line saying what is read
    collate_fn: object = None  # both loaders' (None: torch's default)


def build_case(arguments) -> BenchCase:
    """The two datasets over the same files. Arrays: each PATH is a column (``x.npy
    y.npy``). Tokens and Megatron pairs: the PATHs are shards of one token stream."""
    import pyloader

    sources = []
    for path in arguments.paths:
        try:
            sources.append(open_source(path, arguments.token_dtype))
        except (OSError, ValueError, TypeError) as error:
            raise DataError(error_text(path, error)) from error
    kinds = {source.kind for source in sources}
    if "arrow" in kinds:
        return _arrow_case(sources, arguments)
    as_tokens = arguments.tokens or bool(kinds & {"tokens", "megatron"})
    if not as_tokens:
        columns = [source.files for source in sources]
        pattern_or_files = [
            source.path if source.kind == "array" or _is_pattern(source.path) else source.files for source in sources
        ]
        name = "shards" if "shards" in kinds else "array"
        batch_size = arguments.batch_size or 256
        shapes = ", ".join(f"{s.rows} rows of {s.dtype} {s.row_shape}" for s in sources)
        return BenchCase(
            name, pyloader.ArrayDataset(*pattern_or_files), TorchArrays(columns), batch_size, f"{name}: {shapes}"
        )
    if "megatron" in kinds and len(kinds) > 1:
        raise DataError("a Megatron pair cannot be benchmarked together with other kinds of files")
    specs, streams = [], []
    for source in sources:
        if source.kind == "megatron":
            specs.append((source.index.bin_path, source.index.dtype))
            streams.append(source.index.tokens)
        elif source.kind == "tokens":
            specs.append((source.path, source.token_dtype))
            streams.append(source.path)
        else:
            specs += [(file, None) for file in source.files]
            streams += source.files
    block_size = arguments.block_size
    name = "megatron" if "megatron" in kinds else "tokens"
    ours = pyloader.TokenWindows(streams, block_size, token_dtype=arguments.token_dtype)
    tokens = sum(len(stream) for stream in ours.tokens)
    return BenchCase(
        name,
        ours,
        TorchWindows(specs, block_size),
        arguments.batch_size or 32,
        f"{name}: {tokens} {ours.tokens[0].dtype} tokens in {len(specs)} file(s), {len(ours)} windows of {block_size}",
    )


def _arrow_case(sources: list[Source], arguments) -> BenchCase:
    """The native columns of one Arrow source (records padded by PadCollate)."""
    import pyloader

    if len(sources) > 1:
        raise DataError("give one Arrow file or save_to_disk folder (its shards are found from it)")
    source = sources[0]
    columns = [name for name, _, native in source.arrow_columns or [] if native]
    if not columns:
        raise DataError(f"{source.path!r} has no column pyloader reads natively (numbers, and lists of them)")
    ours = pyloader.ArrowDataset(source.path, columns=columns)
    ragged = any(column.pieces[0].ragged for column in ours.columns)
    return BenchCase(
        "arrow",
        ours,
        TorchArrowRows(source.path, columns),
        arguments.batch_size or 64,
        f"arrow: {source.rows} rows of {', '.join(columns)} in {len(source.files)} file(s)",
        collate_fn=pyloader.PadCollate() if ragged else None,
    )


def _rows_in(batch) -> int:
    while isinstance(batch, (list, tuple)):
        batch = batch[0]
    if isinstance(batch, dict):
        return _rows_in(next(iter(batch.values())))
    if isinstance(batch, tuple) and hasattr(batch, "lengths"):  # a PaddedBatch
        return len(batch.lengths)
    return len(batch)


def samples_per_second(loader, batches: int, rounds: int) -> float:
    """Median over `rounds` of samples/s over `batches` batches.

    Each round's first batch is fetched before the clock starts: it pays for starting
    workers or native threads, a one-off cost that a training run amortises over an
    epoch. An epoch that ends mid-round is restarted and its restart is timed."""
    rates = []
    for _ in range(rounds):
        iterator = iter(loader)
        next(iterator)
        samples, started = 0, time.perf_counter()
        for _ in range(batches):
            try:
                batch = next(iterator)
            except StopIteration:
                iterator = iter(loader)
                batch = next(iterator)
            samples += _rows_in(batch)
        rates.append(samples / max(time.perf_counter() - started, 1e-9))
        del iterator
    return statistics.median(rates)


def _bench(arguments) -> int:
    import pyloader

    for name in ("batches", "rounds", "block_size", "batch_size"):
        value = getattr(arguments, name)
        if value is not None and value < 1:
            _report("bench", f"--{name.replace('_', '-')} must be at least 1, not {value}")
            return _EXIT_DATA_ERROR
    if any(workers < 0 for workers in arguments.workers):
        _report("bench", "--workers must be 0 or more")
        return _EXIT_DATA_ERROR
    try:
        case = build_case(arguments)
    except DataError as error:
        _report("bench", str(error))
        return _EXIT_DATA_ERROR
    except (OSError, ValueError, TypeError) as error:  # from the datasets, about all the paths
        _report("bench", error_text(" ".join(arguments.paths), error))
        return _EXIT_DATA_ERROR
    if len(case.pyloader_dataset) == 0:
        _report("bench", f"{' '.join(arguments.paths)}: no samples to load")
        return _EXIT_DATA_ERROR

    shuffle = arguments.shuffle
    print(case.what)
    print(
        f"batch size {case.batch_size}, {'shuffled' if shuffle else 'in order'}, "
        f"{arguments.batches} batches a round, median of {arguments.rounds} round(s)"
    )

    def generator():
        # Same seed for both: the same order of files touched, as far as the samplers agree.
        return torch.Generator().manual_seed(0)

    # pyloader runs first: a cold page cache costs it, not torch.
    collate: dict[str, Any] = {} if case.collate_fn is None else {"collate_fn": case.collate_fn}
    ours: pyloader.DataLoader = pyloader.DataLoader(
        case.pyloader_dataset, batch_size=case.batch_size, shuffle=shuffle, generator=generator(), **collate
    )
    rate = samples_per_second(ours, arguments.batches, arguments.rounds)
    label = f"pyloader DataLoader (num_threads={ours.num_threads})"
    results = []
    for workers in arguments.workers:
        # persistent_workers: an epoch restart inside a round would otherwise respawn torch's
        # workers; keeping them favours torch, so the ratio errs on the modest side.
        theirs = torch.utils.data.DataLoader(
            case.torch_dataset,
            batch_size=case.batch_size,
            shuffle=shuffle,
            generator=generator(),
            num_workers=workers,
            persistent_workers=workers > 0,
            **collate,
        )
        results.append((workers, samples_per_second(theirs, arguments.batches, arguments.rounds)))
        del theirs
    width = max([len(label)] + [len(f"torch DataLoader w{w}") for w, _ in results])
    print(f"  {label:<{width}}  {rate:12,.0f} samples/s")
    for workers, their_rate in results:
        print(f"  {f'torch DataLoader w{workers}':<{width}}  {their_rate:12,.0f} samples/s")
    for workers, their_rate in results:
        print(f"ratio {case.name}: pyloader / torch DataLoader w{workers} = {rate / their_rate:.1f}x")
    return 0


# --- entry point ---------------------------------------------------------------------------


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog=PROG, description="Inspect data files and benchmark pyloader on them.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspect = commands.add_parser(
        "inspect",
        help="say what data files hold",
        description="Say what each PATH holds: a .npy file, a glob pattern or directory of .npy "
        "shards, a Megatron-LM prefix (or its .bin/.idx), a raw token file "
        "(with --token-dtype), or an Arrow file or datasets save_to_disk folder. Reads headers only.",
    )
    inspect.add_argument("paths", nargs="+", metavar="PATH")
    inspect.add_argument(
        "--token-dtype", choices=_TOKEN_DTYPES, help="dtype of raw token files (nanoGPT's train.bin: uint16)"
    )
    inspect.set_defaults(run=_inspect)

    bench = commands.add_parser(
        "bench",
        help="time pyloader against torch's DataLoader on these files",
        description="Time pyloader.DataLoader against torch.utils.data.DataLoader over a plain "
        "Dataset reading the same files. Arrays: each PATH is a column (.npy, glob or "
        "directory of shards). Token files and Megatron pairs (or .npy files with "
        "--tokens): the PATHs are shards of one token stream, cut into (x, y) windows. "
        "An Arrow file or datasets save_to_disk folder: its numeric and list columns, "
        "lists padded by PadCollate.",
    )
    bench.add_argument("paths", nargs="+", metavar="PATH")
    bench.add_argument(
        "--token-dtype", choices=_TOKEN_DTYPES, help="dtype of raw token files (nanoGPT's train.bin: uint16)"
    )
    bench.add_argument(
        "--tokens", action="store_true", help="read 1-D .npy files as a token stream rather than as arrays"
    )
    bench.add_argument(
        "--batch-size", type=int, default=None, help="samples per batch (default: 256 for arrays, 32 for token windows)"
    )
    bench.add_argument("--block-size", type=int, default=1024, help="tokens per window (default: 1024)")
    bench.add_argument("--batches", type=int, default=100, help="batches timed per round (default: 100)")
    bench.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported (default: 3)")
    bench.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[0, 2],
        metavar="K",
        help="torch DataLoader num_workers to compare with, one line each (default: 0 2)",
    )
    bench.add_argument(
        "--shuffle",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="shuffle, as training does (default: --shuffle)",
    )
    bench.set_defaults(run=_bench)
    return parser, {"inspect": inspect, "bench": bench}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (argparse exits 2 on a bad command line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, commands = _parser()
    if argv and argv[0] in commands:
        # Intermixed, so that options may come before, between or after the paths
        # (`inspect train.bin --token-dtype uint16 val.bin`); argparse cannot do that
        # through a subparser, so the command's own parser is called.
        arguments = commands[argv[0]].parse_intermixed_args(argv[1:])
    else:
        arguments = parser.parse_args(argv)  # --help, or the error for a missing/unknown command
    try:
        return arguments.run(arguments)
    except KeyboardInterrupt:
        return 130
