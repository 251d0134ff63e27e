"""Subprocess half of test_resume.py: run part of a training loop, checkpoint, die; or resume.

Usage: python resume_worker.py save STATE_PATH STOP_EPOCH STOP_BATCH   (past the end: no stop)
       python resume_worker.py resume STATE_PATH
Prints one JSON list of the batches' id lists it consumed.
"""

import json
import os
import signal
import sys

import numpy as np
import torch

import pyloader

EPOCHS = 3


def make_loader():
    ds = pyloader.ArrayDataset(np.arange(1000, dtype=np.int64), np.random.default_rng(0).random((1000, 4)))
    return pyloader.DataLoader(ds, batch_size=32, shuffle=True, num_threads=2)


def main() -> None:
    mode, path = sys.argv[1], sys.argv[2]
    loader = make_loader()
    consumed = []
    if mode == "save":
        stop_epoch, stop_batch = int(sys.argv[3]), int(sys.argv[4])
        torch.manual_seed(0)
        for epoch in range(EPOCHS):
            for step, (ids, _) in enumerate(loader):
                consumed.append(ids.tolist())
                if epoch == stop_epoch and step + 1 == stop_batch:
                    torch.save({"loader": loader.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch}, path)
                    print(json.dumps(consumed), flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)  # no clean shutdown of anything
        print(json.dumps(consumed), flush=True)  # never stopped: the uninterrupted reference
    else:
        checkpoint = torch.load(path, weights_only=False)
        torch.manual_seed(12345)  # a fresh process starts from some unrelated RNG state
        torch.set_rng_state(checkpoint["rng"])
        loader.load_state_dict(checkpoint["loader"])
        for _ in range(checkpoint["epoch"], EPOCHS):
            for ids, _ in loader:
                consumed.append(ids.tolist())
        print(json.dumps(consumed), flush=True)


if __name__ == "__main__":
    main()
