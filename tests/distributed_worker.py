"""Run under torchrun by test_distributed.py: each rank records the samples it loads.

Usage: torchrun --nproc_per_node=N distributed_worker.py OUTPUT_DIR ROWS EPOCHS
"""

import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

import pyloader


def main() -> None:
    output_dir, rows, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    dist.init_process_group("gloo")
    dataset = pyloader.ArrayDataset(np.arange(rows, dtype=np.int64))
    sampler = pyloader.DistributedSampler(dataset, seed=7)  # rank and world size from dist
    loader = pyloader.DataLoader(dataset, batch_size=4, sampler=sampler)
    assert loader.uses_native_path
    record = {"rank": dist.get_rank(), "world_size": dist.get_world_size(), "epochs": []}
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        samples = torch.cat([batch[0] for batch in loader]).tolist()
        record["epochs"].append(samples)
        # Every rank must have drawn the same number of samples (DDP needs equal steps).
        count = torch.tensor([len(samples)])
        counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
        dist.all_gather(counts, count)
        assert len({int(c) for c in counts}) == 1
    with open(os.path.join(output_dir, f"rank{dist.get_rank()}.json"), "w") as handle:
        json.dump(record, handle)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
