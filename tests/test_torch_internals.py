"""Each private piece of torch's DataLoader that pyloader uses (pyloader/_checkpoint/torch_internals.py)
still exists and still means what pyloader takes it to mean. When torch renames one,
the failure names it."""

import multiprocessing

import pytest
import torch
import torch.utils.data as tud

import pyloader
from pyloader._checkpoint import torch_internals as internals

from conftest import WaitsForRelease


def pinned(owner, attribute):
    assert hasattr(owner, attribute), (
        f"torch no longer has {type(owner).__name__}.{attribute}: "
        "pyloader/_checkpoint/torch_internals.py must follow it"
    )
    return getattr(owner, attribute)


class Rows(tud.Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, index):
        return torch.tensor(index)


class Stream(tud.IterableDataset):
    def __iter__(self):
        return iter(range(5))


def test_dataset_kind_and_auto_collation():
    pinned(tud.DataLoader(Rows()), "_dataset_kind")
    pinned(tud.DataLoader(Rows()), "_auto_collation")
    assert internals.is_map_style(tud.DataLoader(Rows())) is True
    assert internals.is_map_style(tud.DataLoader(Stream())) is False
    assert internals.auto_collation(tud.DataLoader(Rows(), batch_size=2)) is True
    assert internals.auto_collation(tud.DataLoader(Rows(), batch_size=None)) is False


def test_iterators_read_the_index_sampler_the_hook_provides():
    loader = pyloader.DataLoader(Rows(), batch_size=3, native=False)
    assert internals.torch_index_sampler(loader) is loader.batch_sampler
    assert internals.torch_index_sampler(pyloader.DataLoader(Rows(), batch_size=None)) is not None
    loader._resumed_index_sampler = [[5, 1], [0]]
    try:
        assert [b.tolist() for b in loader._torch_path_iterator()] == [[5, 1], [0]]
    finally:
        loader._resumed_index_sampler = None


def test_persistent_iterator_and_worker_shutdown():
    loader = tud.DataLoader(Rows(), batch_size=3, num_workers=2, persistent_workers=True)
    iterator = iter(loader)
    next(iterator)
    pinned(loader, "_iterator")
    assert internals.persistent_iterator(loader) is iterator
    processes = internals.worker_processes(iterator)
    assert len(processes) == 2 and all(process.is_alive() for process in processes)
    internals.shut_down_persistent_workers(loader)
    assert internals.persistent_iterator(loader) is None
    assert not any(process.is_alive() for process in processes)


def test_sent_and_received_of_a_worker_iterator():
    loader = tud.DataLoader(Rows(), batch_size=2, num_workers=2, prefetch_factor=2)
    iterator = iter(loader)
    next(iterator)
    for attribute in ("_rcvd_idx", "_send_idx", "_task_info", "_workers_status"):
        pinned(iterator, attribute)
    received, sent, outstanding = internals.sent_and_received(iterator)
    assert received == 1  # the next batch to deliver
    assert sent == 5  # 4 in flight (2 workers x prefetch 2) and one more sent after the first came back
    assert outstanding <= set(range(received, sent))
    assert internals.worker_may_deliver(iterator, 0) and internals.worker_may_deliver(iterator, 1)
    assert internals.sent_and_received(iter(tud.DataLoader(Rows()))) is None
    del iterator


def test_fetcher_of_a_single_process_iterable_iterator():
    iterator = iter(tud.DataLoader(Stream(), batch_size=2))
    fetcher = internals.dataset_fetcher(iterator)
    assert fetcher is not None, "torch's single-process iterator has no _dataset_fetcher any more"
    pinned(fetcher, "dataset_iter")
    pinned(fetcher, "ended")
    assert next(iter(internals.dataset_iterator_of(iterator))) == 0
    list(iterator)
    assert fetcher.ended is True


@pytest.mark.parametrize("path", ["torch", "pyloader"])
def test_a_positive_timeout_is_recognised(path):
    release = multiprocessing.get_context("fork").Event()
    cls = tud.DataLoader if path == "torch" else pyloader.DataLoader
    loader = cls(WaitsForRelease(release, free=1), batch_size=1, num_workers=1, timeout=0.5)
    iterator = iter(loader)
    assert next(iterator).tolist() == [0]
    try:
        with pytest.raises(RuntimeError) as raised:
            next(iterator)  # the worker waits until released: it cannot make the deadline
        assert internals.is_timeout(raised.value), f"torch's timeout message changed: {raised.value}"
    finally:
        release.set()
    if path == "pyloader":
        # A timeout consumes no batch: the checkpoint still stands at batch 1.
        assert loader.state_dict()["batches_yielded"] == 1
    del iterator


def test_worker_errors_and_pinning_come_from_torch():
    try:
        raise KeyError("inside a worker")
    except KeyError:
        wrapper = internals.ExceptionWrapper(where="in DataLoader worker process 3")
    with pytest.raises(KeyError, match="Caught KeyError in DataLoader worker process 3"):
        wrapper.reraise()
    assert callable(internals.pin_memory)


def test_cuda_stream_hook_exists_where_cuda_is_built():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA build with a device")
    assert callable(internals.current_raw_cuda_stream())
