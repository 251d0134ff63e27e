"""Run under torchrun by test_distributed.py: one leg of an elastic run.

Usage: torchrun --nproc_per_node=N elastic_worker.py DIR ROWS save|resume
  save:   each rank loads part of epoch 1 (rank r stops after 3 + 2r batches, so the
          ranks stop at different steps), records its samples and saves its state;
  resume: every rank merges all saved states and loads the rest of epoch 1, then
          epoch 2 in full, recording both.
"""

import glob
import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

import pyloader


def main() -> None:
    directory, rows, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    dataset = pyloader.ArrayDataset(np.arange(rows, dtype=np.int64))
    sampler = pyloader.DistributedSampler(dataset, seed=11)
    loader = pyloader.DataLoader(dataset, batch_size=5, sampler=sampler)
    sampler.set_epoch(1)
    record = {"rank": rank, "world_size": world}
    if mode == "save":
        samples = []
        for step, (batch,) in enumerate(loader, start=1):
            samples += batch.tolist()
            if step == 3 + 2 * rank:
                break
        record["epoch1"] = samples
        with open(os.path.join(directory, f"state{rank}.json"), "w") as handle:
            json.dump(loader.state_dict(), handle)
    else:
        states = [json.load(open(path)) for path in sorted(glob.glob(os.path.join(directory, "state*.json")))]
        loader.load_state_dict(pyloader.DistributedSampler.merge_states(states))
        record["epoch1"] = torch.cat([batch for (batch,) in loader]).tolist()
        count = torch.tensor([len(record["epoch1"])])
        counts = [torch.zeros_like(count) for _ in range(world)]
        dist.all_gather(counts, count)
        assert len({int(c) for c in counts}) == 1, counts  # equal steps on every rank
        sampler.set_epoch(2)
        record["epoch2"] = torch.cat([batch for (batch,) in loader]).tolist()
    with open(os.path.join(directory, f"{mode}{rank}.json"), "w") as handle:
        json.dump(record, handle)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
