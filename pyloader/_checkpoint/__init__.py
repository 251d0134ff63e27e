"""Checkpointing: the saved state's schema, replaying an epoch to a saved position, the
Stateful protocol for iterable datasets, elastic N -> M resume, and torch's private
DataLoader machinery (each use pinned by tests/test_torch_internals.py)."""
