"""pyloader: torch.utils.data, with a native multithreaded path for array datasets.

Replace ``from torch.utils.data import ...`` with ``from pyloader import ...``: every
name below behaves as torch's. :class:`DataLoader` gathers natively when the dataset
is an :class:`ArrayDataset` (numpy arrays, memmaps, CPU tensors, ``.npy`` paths) or a
``TensorDataset``.
"""

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

from .dataloader import DataLoader
from .dataset import ArrayDataset
from .distributed import DistributedSampler

__version__ = "0.1.0"

__all__ = [
    "ArrayDataset",
    "BatchSampler",
    "ChainDataset",
    "ConcatDataset",
    "DataLoader",
    "Dataset",
    "DistributedSampler",
    "IterableDataset",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "StackDataset",
    "Subset",
    "SubsetRandomSampler",
    "TensorDataset",
    "WeightedRandomSampler",
    "default_collate",
    "default_convert",
    "get_worker_info",
    "random_split",
]
