"""pyloader: torch.utils.data, with a native multithreaded path for array datasets.

Replace ``from torch.utils.data import ...`` with ``from pyloader import ...``: every
name below behaves as torch's. :class:`DataLoader` gathers natively when the dataset
is an :class:`ArrayDataset` (numpy arrays, memmaps, CPU tensors, ``.npy`` paths and
shards of them), a :class:`TokenWindows` of a token stream, a :class:`RaggedDataset`
of variable-length records (padded natively by :class:`PadCollate`), a
:class:`MegatronDataset`, an :class:`ArrowDataset` or Hugging Face ``datasets.Dataset``
(Arrow files, tokenized text), or a ``TensorDataset``.
"""

try:
    from . import _core  # noqa: F401  (the compiled extension; imported first for a clear error)
except ImportError as error:
    raise ImportError(
        "pyloader's compiled core (pyloader._core) cannot be imported. Install the package "
        "(pip install .) and, in a source checkout, run `pytest` rather than `python -m pytest`: "
        "the latter puts the uncompiled source tree ahead of the installed package."
    ) from error

from torch.utils.data import (
    BatchSampler,
    ChainDataset,
    ConcatDataset,
    Dataset,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    StackDataset,
    Subset,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
    default_collate,
    default_convert,
    get_worker_info,
    random_split,
)

from .arrow import ArrowDataset
from .block_shuffle import BlockShuffleSampler
from .dataloader import DataLoader, StatefulDataLoader
from .dataset import ArrayDataset
from .distributed import DistributedSampler
from .megatron import MegatronDataset
from .records import PadCollate, PaddedBatch, RaggedDataset, Records
from .stats import LoaderStats
from .tokens import TokenWindows

__version__ = "0.1.0"

__all__ = [
    "ArrayDataset",
    "ArrowDataset",
    "BatchSampler",
    "ChainDataset",
    "ConcatDataset",
    "DataLoader",
    "Dataset",
    "BlockShuffleSampler",
    "DistributedSampler",
    "IterableDataset",
    "LoaderStats",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "StatefulDataLoader",
    "StackDataset",
    "Subset",
    "SubsetRandomSampler",
    "TensorDataset",
    "WeightedRandomSampler",
    "default_collate",
    "default_convert",
    "get_worker_info",
    "random_split",
    "MegatronDataset",
    "PadCollate",
    "PaddedBatch",
    "RaggedDataset",
    "Records",
    "TokenWindows",
]
