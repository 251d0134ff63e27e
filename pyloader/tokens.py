"""Token windows: training samples cut from a 1-D token stream (LLM pretraining).

``TokenWindows(tokens, block_size)`` yields ``(x, y)``: ``block_size`` consecutive
tokens and the same window shifted by one (the next-token targets), as nanoGPT-style
loops build them. Window ``i`` starts at token ``i * stride`` (``stride`` defaults to
``block_size``: non-overlapping windows, each exactly once per epoch under
``shuffle=True``). ``stride=1`` makes every offset a window: with ``shuffle=True`` an
epoch visits the offsets in a native O(1)-memory random order, each at most once, so
training on random offsets is iterating it for as many steps as wanted (and resuming
is exact). ``RandomSampler(ds, num_samples=n)`` reproduces torch's draws instead, at
the cost of torch's ``randperm`` over every offset each epoch. Either way a window is a
row of a strided view of the token file: no index of windows is ever built.

The stream may be one file or several shards. Windows never cross a shard boundary:
each shard contributes its own windows and the few tokens left at its end (fewer than
``block_size + 1`` past its last window start) are not used. Shards of pretraining
corpora end at document boundaries, so a window stitched across two would join
unrelated text; skipping costs at most ``block_size`` tokens per shard.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch

from ._native.columns import (
    Column,
    PiecedColumn,
    _is_pattern,
    _torch_dtype_of,
    file_backing,
    file_identity,
    file_position,
    open_npy,
    shard_paths,
)
from .dataset import ArrayDataset

_TOKEN_DTYPES = (np.uint8, np.uint16, np.uint32, np.int32, np.int64)
_OUTPUT_DTYPES: dict[torch.dtype, np.dtype] = {torch.int64: np.dtype(np.int64), torch.int32: np.dtype(np.int32)}

TokenSource = Union[str, os.PathLike, np.ndarray, torch.Tensor]


def _open_tokens(source, token_dtype, what: str) -> np.ndarray:
    if isinstance(source, torch.Tensor):
        if source.device.type != "cpu":
            raise ValueError(f"{what} is a tensor on {source.device}; tokens are read on the CPU")
        source = source.detach().numpy()
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.endswith(".npy"):
            source = open_npy(path)
        else:
            if token_dtype is None:
                raise ValueError(
                    f"{what} ({path!r}) is a raw token file: say its dtype with token_dtype= "
                    "(e.g. numpy.uint16), or store it as .npy"
                )
            dtype = np.dtype(token_dtype)
            size = os.path.getsize(path)
            if size % dtype.itemsize:
                raise ValueError(f"{what} ({path!r}) has {size} bytes, not a whole number of {dtype} tokens")
            source = np.memmap(path, dtype=dtype, mode="r") if size else np.empty(0, dtype=dtype)
    if not isinstance(source, np.ndarray):
        raise TypeError(f"{what} must be a path, a numpy array or a CPU tensor, not {type(source).__name__}")
    if source.ndim != 1:
        raise ValueError(f"{what} must be a 1-D token stream, not of shape {source.shape}")
    if source.dtype.type not in _TOKEN_DTYPES:
        raise TypeError(f"{what} holds {source.dtype}; token streams are uint8, uint16, uint32, int32 or int64")
    if not source.dtype.isnative:
        raise TypeError(f"{what} has non-native byte order ({source.dtype})")
    return source


# Tokens a window or a stride may span at most: of up to 8 bytes each, within int64 bytes.
_LARGEST_SPAN = (2**63 - 1) // 8


def _windows(tokens: np.ndarray, shift: int, windows: int, block_size: int, stride: int) -> np.ndarray:
    """Rows of `block_size` tokens starting at shift + k * stride, k < windows: a view."""
    item = tokens.itemsize
    return np.lib.stride_tricks.as_strided(
        tokens[shift:], shape=(windows, block_size), strides=(stride * tokens.strides[0], item), writeable=False
    )


class TokenWindows(ArrayDataset):
    """``(x, y)`` windows of a token stream; see the module docstring.

    ``tokens``: a 1-D ``.npy`` file, a raw token file (``token_dtype=`` says its dtype,
    as nanoGPT's ``train.bin`` is ``uint16``), a 1-D array or CPU tensor, a list of any
    of these (shards), or a glob pattern of shard files. ``dtype``: the samples' dtype,
    ``torch.int64`` (what ``nn.Embedding`` and ``cross_entropy`` take) or
    ``torch.int32``, or ``None`` to keep the tokens' own dtype.
    """

    def __init__(
        self,
        tokens: TokenSource | Sequence[TokenSource],
        block_size: int,
        *,
        stride: int | None = None,
        dtype: torch.dtype | None = torch.int64,
        token_dtype=None,
    ) -> None:
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive integer, not {block_size!r}")
        stride = block_size if stride is None else stride
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be a positive integer, not {stride!r}")
        for name, value in (("block_size", block_size), ("stride", stride)):
            if value > _LARGEST_SPAN:
                raise ValueError(
                    f"{name} {value} is too large: windows are addressed in bytes, and {value} "
                    f"tokens of up to 8 bytes exceed the 2**63 - 1 bytes any file or array can span"
                )
        if dtype is not None and dtype not in _OUTPUT_DTYPES:
            raise TypeError(f"dtype must be torch.int64, torch.int32 or None, not {dtype}")
        if isinstance(tokens, (str, os.PathLike)) and _is_pattern(os.fspath(tokens)):
            tokens = shard_paths(os.fspath(tokens))
        sources = list(tokens) if isinstance(tokens, (list, tuple)) else [tokens]
        if not sources:
            raise ValueError("TokenWindows needs at least one token shard")
        streams = []
        for k, source in enumerate(sources):
            what = f"token shard #{k}" if len(sources) > 1 else "tokens"
            streams.append(_open_tokens(source, token_dtype, what))
        if len({stream.dtype for stream in streams}) > 1:
            described = ", ".join(f"#{k}: {stream.dtype}" for k, stream in enumerate(streams))
            raise ValueError(f"token shards differ in dtype ({described})")
        self.block_size = block_size
        self.stride = stride
        self.tokens = tuple(streams)
        self._arguments = (sources, block_size, {"stride": stride, "dtype": dtype, "token_dtype": token_dtype})
        cast = None if dtype is None or _OUTPUT_DTYPES[dtype] == streams[0].dtype else _OUTPUT_DTYPES[dtype]
        out_dtype = _torch_dtype_of(streams[0].dtype, "tokens") if dtype is None else dtype
        inputs: list[Column] = []
        targets: list[Column] = []
        for stream in streams:
            windows = max(0, (len(stream) - block_size - 1) // stride + 1)
            file, file_bytes = file_backing(stream)
            # Windows are strided views, which numpy cannot trace to the mapping: where
            # their rows lie in the file is recorded here, for explicit reads.
            position = file_position(stream) if file is not None else None
            identity = file_identity(file) if position is not None else None
            for shift, pieces in ((0, inputs), (1, targets)):
                view = _windows(stream, shift, windows, block_size, stride)
                offset = None if position is None else position[1] + shift * stream.itemsize
                pieces.append(
                    Column(
                        array=view,
                        dtype=out_dtype,
                        needs_view=False,
                        file=file,
                        file_bytes=file_bytes,
                        cast=cast,
                        file_identity=identity,
                        file_offset=offset,
                    )
                )
        if sum(len(piece) for piece in inputs) == 0:
            longest = max(len(stream) for stream in streams)
            raise ValueError(
                f"block_size {block_size} needs at least {block_size + 1} tokens in a shard "
                f"(x and its shifted target); the longest shard holds {longest}"
            )
        # ArrayDataset gathers native columns too; its annotation names the public kinds.
        super().__init__(PiecedColumn(inputs), PiecedColumn(targets))

    @classmethod
    def from_megatron(cls, path_prefix, block_size: int, **options) -> TokenWindows:
        """Windows over the token stream of a Megatron-LM ``.bin``/``.idx`` pair (its
        documents back to back, as Megatron's GPT dataset reads them)."""
        from ._native.megatron_format import read_megatron_index

        index = read_megatron_index(path_prefix)
        return cls(index.tokens, block_size, **options)

    def __reduce__(self):
        # Rebuilt from its sources: pickling the strided window views would write out
        # every window (block_size times the tokens when stride=1).
        return _rebuild, (type(self), self._arguments)

    def __repr__(self) -> str:
        tokens = sum(len(stream) for stream in self.tokens)
        return (
            f"TokenWindows({len(self)} windows of {self.block_size} tokens, stride {self.stride}, "
            f"{tokens} {self.tokens[0].dtype} tokens in {len(self.tokens)} shard(s))"
        )


def _rebuild(cls, arguments):
    sources, block_size, options = arguments
    return cls(sources, block_size, **options)
