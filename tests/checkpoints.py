"""A run checkpointed at one point and continued in a fresh loader, for comparing with
an uninterrupted run: shared by the resume matrix tests."""

import json

import torch


def sample_ids(batch):
    """The sample ids of a batch (its first field, for tuple batches)."""
    if isinstance(batch, (list, tuple)):
        batch = batch[0]
    return torch.as_tensor(batch).reshape(-1).tolist()


def epochs(loader, count):
    return [[i for batch in loader for i in sample_ids(batch)] for _ in range(count)]


def checkpointed_run(make, epoch, point, total_epochs):
    """Runs `epoch` epochs, then `point` batches of the next (or all of it, "between"),
    saves the state through JSON and continues to `total_epochs` in a new loader,
    restoring torch's global RNG as a caller restores it from its checkpoint."""
    torch.manual_seed(1)
    loader = make()
    seen = epochs(loader, epoch)
    iterator = iter(loader)
    current = []
    if point == "between":
        current = [i for batch in iterator for i in sample_ids(batch)]
    else:
        for _ in range(point):
            current += sample_ids(next(iterator))
    state = json.loads(json.dumps(loader.state_dict()))
    rng = torch.get_rng_state()
    del iterator, loader
    resumed = make()
    resumed.load_state_dict(state)
    torch.set_rng_state(rng)
    if point != "between":
        current += [i for batch in resumed for i in sample_ids(batch)]
    return seen + [current] + epochs(resumed, total_epochs - epoch - 1)
