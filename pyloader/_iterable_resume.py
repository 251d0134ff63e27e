"""Resuming an IterableDataset mid-epoch.

An iterable dataset's position lives in the dataset and its iterator, so the loader
saves what they can tell it, following the Stateful protocol (an object with
``state_dict()`` and ``load_state_dict(state)``), as torchdata's StatefulDataLoader
does:

* ``iterator_state``: the state of the iterator ``iter(dataset)`` returned, when that
  iterator is Stateful (``num_workers=0``). Resuming creates a new iterator and loads it.
* ``dataset_state``: the dataset's own state, when the dataset is Stateful
  (``num_workers=0``). It is loaded before ``iter(dataset)`` is called again, so the
  dataset continues from it.
* Otherwise (neither is Stateful, or worker processes hold the datasets): the epoch is
  replayed from the RNG states it started with and the batches already delivered are
  skipped. That is exact when the dataset's stream depends only on torch's RNG and its
  worker seeds, and costs the work of the skipped batches; a warning says so.

A state taken between epochs restores nothing of the dataset: the next epoch calls
``iter(dataset)`` afresh, as an uninterrupted run would.
"""

from __future__ import annotations

import warnings

from ._resume import sampler_generators


def is_stateful(obj) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


def _dataset_iterator(torch_iterator):
    fetcher = getattr(torch_iterator, "_dataset_fetcher", None)
    return getattr(fetcher, "dataset_iter", None)


def iterable_state(loader) -> dict:
    """The dataset's and its iterator's states, where they are Stateful."""
    if loader._resume_state is not None:  # loaded, not started: what was loaded stands
        return {"dataset_state": loader._resume_state.get("dataset_state"),
                "iterator_state": loader._resume_state.get("iterator_state")}
    progress = loader._progress
    dataset_state = iterator_state = None
    if progress is not None and not progress.finished and loader.num_workers == 0:
        if is_stateful(loader.dataset):
            dataset_state = loader.dataset.state_dict()
        source = progress.source() if progress.source is not None else None
        dataset_iterator = _dataset_iterator(source)
        if is_stateful(dataset_iterator):
            iterator_state = dataset_iterator.state_dict()
    return {"dataset_state": dataset_state, "iterator_state": iterator_state}


def resume_iterable(loader, resume: dict, progress):
    """torch's iterator for the rest of a saved epoch of an IterableDataset."""
    skip = resume["batches_yielded"]
    progress.batches_yielded = skip
    dataset_state, iterator_state = resume.get("dataset_state"), resume.get("iterator_state")
    if dataset_state is not None:
        if not is_stateful(loader.dataset):
            raise ValueError("cannot resume: the state holds a dataset state, but this dataset has no "
                             "load_state_dict()")
        loader.dataset.load_state_dict(dataset_state)
    # The iterator's creation draws its base seed (and a dataset may draw in __iter__)
    # as the saved epoch's did; replayed batches are drawn as they were the first time.
    with progress.snapshot.replaying(sampler_generators(loader)):
        iterator = loader._torch_path_iterator()
        if iterator_state is not None:
            dataset_iterator = _dataset_iterator(iterator)
            if not is_stateful(dataset_iterator):
                raise ValueError("cannot resume: the state holds an iterator state, but iter(dataset) "
                                 "now returns an iterator without load_state_dict()")
            dataset_iterator.load_state_dict(iterator_state)
            return iterator
        if dataset_state is not None or skip == 0:
            return iterator
        warnings.warn(
            f"resuming an IterableDataset by replaying {skip} batch(es) of its epoch: exact only if its "
            "stream depends on nothing but torch's RNG and worker seeds; give the dataset (num_workers=0) "
            "or its iterator state_dict()/load_state_dict() to resume without replaying",
            UserWarning, stacklevel=4)
        for _ in range(skip):
            try:
                next(iterator)
            except StopIteration:
                break
    return iterator
