"""Tokenized text in a Hugging Face dataset: pyloader vs datasets + torch's DataLoader.

Builds (np.random, no download) a tokenized dataset with ``datasets``
(``Dataset.from_dict`` + ``save_to_disk``): ``input_ids`` list<int32> of 16..512 tokens,
an ``attention_mask`` list<int8> of ones, an int64 ``label``; reopens it with
``load_from_disk`` (memory-mapped) and measures samples/s for shuffled batches of 64,
padded, int64:

  torch w0/w2      torch DataLoader(ds.with_format("torch"), shuffle=True) with a collate
                   equivalent to transformers' DataCollatorWithPadding (pad_sequence per
                   field, labels stacked); 0 and 2 worker processes
  pyloader         pyloader.DataLoader(ds.with_format("torch"), shuffle=True,
                   collate_fn=PadCollate(...)): the same dataset object, padded natively
  pyloader npy     pyloader over the same tokens as .npy values + offsets
                   (ArrayDataset of Records), the same padding: Arrow must not be a slow path

The batches of pyloader and torch are checked equal for one fixed sampler before timing.
Each contender yields --batches batches per round after an untimed first batch; one
warm-up round, then --rounds interleaved rounds; each contender's median counts.

With --cold the dataset is larger (--cold-gib GiB of tokens, default 2, in 4 shards) and
its files are evicted from the page cache before every round (the pages mapped by this
process are let go first), so rows come from storage: torch w0/w2 against pyloader
(io="auto", what a user gets).

    python bench/bench_arrow.py [--rows 20000] [--batches 200] [--rounds 5]
    python bench/bench_arrow.py --cold [--cold-gib 2] [--batches 100] [--rounds 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time

import _rounds as rounds
import numpy as np
import torch
import torch.utils.data as tud
from torch.nn.utils.rnn import pad_sequence

import pyloader

from _cold import evict_mapped

try:
    import datasets
    import pyarrow as pa
except ImportError:  # pragma: no cover
    raise SystemExit("bench_arrow needs datasets and pyarrow: pip install 'pyloader-native[datasets]'") from None

BATCH = 64
MIN_LENGTH, MAX_LENGTH = 16, 512
VOCAB = 50_257
PAD_ID = 0


def build(folder: str, rows: int, shards: int = 1) -> None:
    """The tokenized dataset, saved with datasets (kept for later runs)."""
    if os.path.exists(os.path.join(folder, "state.json")):
        return
    rng = np.random.default_rng(0)
    lengths = rng.integers(MIN_LENGTH, MAX_LENGTH + 1, rows)
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = rng.integers(1, VOCAB, int(offsets[-1]), dtype=np.int32)
    list_type = pa.LargeListArray if offsets[-1] > np.iinfo(np.int32).max else pa.ListArray
    dataset = datasets.Dataset.from_dict(
        {
            "input_ids": list_type.from_arrays(pa.array(offsets), pa.array(tokens)),
            "attention_mask": list_type.from_arrays(pa.array(offsets), pa.array(np.ones(len(tokens), np.int8))),
            "label": rng.integers(0, 2, rows),
        }
    )
    dataset.save_to_disk(folder, num_shards=shards)


def padding_collate(samples: list[dict]) -> dict:
    """What transformers' DataCollatorWithPadding returns for these fields, written out."""
    return {
        "input_ids": pad_sequence([s["input_ids"] for s in samples], batch_first=True, padding_value=PAD_ID),
        "attention_mask": pad_sequence([s["attention_mask"] for s in samples], batch_first=True, padding_value=0),
        "labels": torch.stack([s["label"] for s in samples]),
    }


def native_collate() -> pyloader.PadCollate:
    return pyloader.PadCollate({"input_ids": PAD_ID, "attention_mask": 0})


def first_tensor(batch):
    """(input_ids padded, labels) of either contender's batch."""
    if "labels" in batch:
        return batch["input_ids"], batch["labels"]
    return batch["input_ids"].padded, batch["label"]


def consume(batch) -> tuple[int, int]:
    padded, labels = first_tensor(batch)
    return len(labels), int(padded[0, 0]) + int(labels[-1])


def round_rate(make_iterator, batches: int) -> float:
    return rounds.round_rate(make_iterator, batches, BATCH, consume)


def check_same_batches(dataset, batches: int = 4) -> None:
    sampler = lambda: tud.RandomSampler(dataset, generator=torch.Generator().manual_seed(1))  # noqa: E731
    ours = pyloader.DataLoader(dataset, batch_size=BATCH, sampler=sampler(), collate_fn=native_collate())
    theirs = tud.DataLoader(dataset, batch_size=BATCH, sampler=sampler(), collate_fn=padding_collate)
    assert ours.uses_native_path
    for _, (a, b) in zip(range(batches), zip(ours, theirs)):
        assert a["input_ids"].padded.dtype == b["input_ids"].dtype == torch.int64
        assert torch.equal(a["input_ids"].padded, b["input_ids"])
        assert torch.equal(a["attention_mask"].padded, b["attention_mask"])
        assert torch.equal(a["label"], b["labels"])


def torch_loaders(dataset) -> dict:
    return {
        f"torch w{workers}": tud.DataLoader(
            dataset, batch_size=BATCH, shuffle=True, collate_fn=padding_collate, num_workers=workers
        )
        for workers in (0, 2)
    }


def ours(dataset, threads, **options) -> pyloader.DataLoader:
    loader = pyloader.DataLoader(
        dataset, batch_size=BATCH, shuffle=True, collate_fn=native_collate(), num_threads=threads, **options
    )
    assert loader.uses_native_path
    return loader


def as_npy(dataset, directory: str) -> pyloader.ArrayDataset:
    """The same columns as .npy files: values + int64 offsets, labels."""
    table = dataset.data.table
    paths = {}
    for name in ("input_ids", "attention_mask"):
        column = table.column(name).combine_chunks()
        paths[name] = (os.path.join(directory, f"{name}.npy"), os.path.join(directory, f"{name}-offsets.npy"))
        np.save(paths[name][0], column.values.to_numpy())
        np.save(paths[name][1], column.offsets.to_numpy().astype(np.int64))
    np.save(os.path.join(directory, "label.npy"), table.column("label").to_numpy())
    return pyloader.ArrayDataset(
        input_ids=pyloader.Records(*paths["input_ids"], dtype=torch.int64),
        attention_mask=pyloader.Records(*paths["attention_mask"], dtype=torch.int64),
        label=os.path.join(directory, "label.npy"),
    )


def interleaved_rounds(loaders: dict, count: int, batches: int, before_each=lambda: None) -> tuple[dict, dict]:
    return rounds.interleaved_rounds(loaders, count, lambda make: round_rate(make, batches), before_each)


def report(title: str, rates: dict, median: dict, threads: int) -> None:
    print(
        f"pyloader {pyloader.__version__}, torch {torch.__version__}, datasets {datasets.__version__}, "
        f"pyarrow {pa.__version__}, {os.cpu_count()} CPUs, pyloader num_threads {threads}"
    )
    print(title)
    for name, values in rates.items():
        print(f"  {name:<14} {median[name]:>10,.0f}   (rounds {min(values):,.0f}-{max(values):,.0f})")


def warm(args) -> None:
    folder = os.path.join(args.dir, f"tokenized_{args.rows}")
    build(folder, args.rows)
    dataset = datasets.load_from_disk(folder).with_format("torch")
    check_same_batches(dataset)
    with tempfile.TemporaryDirectory() as npy_dir:
        loaders = {
            **torch_loaders(dataset),
            "pyloader": ours(dataset, args.threads),
            "pyloader npy": ours(as_npy(dataset, npy_dir), args.threads),
        }
        torch.manual_seed(0)
        for loader in loaders.values():
            round_rate(loader.__iter__, max(1, args.batches // 10))
        rates, median = interleaved_rounds(loaders, args.rounds, args.batches)
    report(
        f"tokenized dataset: {args.rows:,} rows of {MIN_LENGTH}-{MAX_LENGTH} int32 tokens + mask + label "
        f"(load_from_disk, warm), shuffled int64 padded batches of {BATCH}, {args.batches} batches per round, "
        f"median of {args.rounds} interleaved rounds: samples/s",
        rates,
        median,
        loaders["pyloader"].num_threads,
    )
    best_torch = max(median["torch w0"], median["torch w2"])
    print("\nratios (same run)")
    print(f"ratio arrow: pyloader / torch best = {median['pyloader'] / best_torch:.1f}x")
    print(f"ratio arrow: pyloader over Arrow / pyloader over .npy = {median['pyloader'] / median['pyloader npy']:.2f}x")


def cold(args) -> None:
    mean_bytes = 4 * (MIN_LENGTH + MAX_LENGTH) / 2
    rows = int(args.cold_gib * (1 << 30) / mean_bytes)
    folder = os.path.join(args.dir, f"tokenized_cold_{args.cold_gib:g}gib")
    start = time.perf_counter()
    build(folder, rows, shards=4)
    prepared = time.perf_counter() - start
    dataset = datasets.load_from_disk(folder).with_format("torch")
    files = sorted(glob.glob(os.path.join(folder, "data-*.arrow")))
    check_same_batches(dataset)
    loaders = {**torch_loaders(dataset), "pyloader": ours(dataset, args.threads, io="auto")}

    def evict_all() -> None:
        for path in files:
            evict_mapped(path)

    torch.manual_seed(0)
    rates, median = interleaved_rounds(loaders, args.rounds, args.batches, before_each=evict_all)
    size = sum(os.path.getsize(path) for path in files) / 2**30
    report(
        f"tokenized dataset, cold: {rows:,} rows in {len(files)} shards ({size:.2f} GiB, prepared in "
        f"{prepared:.1f} s), evicted before every round, shuffled int64 padded batches of {BATCH}, "
        f"{args.batches} batches per round, median of {args.rounds} interleaved rounds: samples/s",
        rates,
        median,
        loaders["pyloader"].num_threads,
    )
    best_torch = max(median["torch w0"], median["torch w2"])
    print("\nratios (same run)")
    print(f"ratio cold arrow: pyloader / torch best = {median['pyloader'] / best_torch:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument(
        "--batches", type=int, default=None, help="timed batches per contender and round (default: 200, --cold 100)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each contender's median counts")
    parser.add_argument("--threads", type=int, default=None, help="pyloader num_threads (default: its own)")
    parser.add_argument("--cold", action="store_true", help="rows read from storage (see above)")
    parser.add_argument("--cold-gib", type=float, default=2.0, help="tokens in the --cold dataset, GiB")
    parser.add_argument(
        "--dir",
        default=os.path.join(tempfile.gettempdir(), "pyloader-bench-arrow"),
        help="where the datasets are saved (kept for later runs)",
    )
    args = parser.parse_args()
    if args.batches is None:
        args.batches = 100 if args.cold else 200
    datasets.disable_progress_bars()
    (cold if args.cold else warm)(args)


if __name__ == "__main__":
    main()
