"""pin_memory handling shared by pyloader's own iterators, with torch's warnings."""

from __future__ import annotations

import warnings
from typing import Any

import torch


def pin_device(loader: Any, stacklevel: int) -> str | None:
    """The accelerator type batches should be pinned for, or None; warns as torch does,
    `stacklevel` frames up from the caller (so the warning points at user code)."""
    if loader.pin_memory and loader.pin_memory_device:
        warnings.warn(
            "pin_memory_device is deprecated, the current accelerator will be used as "
            f"the device,ignore pin_memory_device='{loader.pin_memory_device}'.",
            stacklevel=stacklevel + 1,
        )
    if not loader.pin_memory:
        return None
    if not torch.accelerator.is_available():
        warnings.warn(
            "'pin_memory' argument is set as true but no accelerator is found, "
            "then device pinned memory won't be used.",
            stacklevel=stacklevel + 1,
        )
        return None
    accelerator = torch.accelerator.current_accelerator()
    return None if accelerator is None else accelerator.type
