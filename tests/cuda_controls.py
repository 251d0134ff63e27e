"""Negative controls for the ordering tests of test_cuda.py (needs a CUDA device).

Each check runs with the loader handed an idle side stream instead of the stream that
consumes the batches, so the consumer neither waits for the copies nor has its work
fenced before blocks are reused. The checks must then see wrong bytes: that is what
shows they can fail. Prints one line per check; exits non-zero if a control passed.

    python tests/cuda_controls.py
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import test_cuda  # noqa: E402


def main() -> int:
    unrelated = torch.cuda.Stream()
    wrong = lambda: unrelated.cuda_stream  # noqa: E731
    failed_as_expected = True
    for name, check in (
        ("late copies", test_cuda.mismatches_with_late_copies),
        ("slow consumer", test_cuda.mismatches_with_a_slow_consumer),
    ):
        loader, expected = test_cuda.delayed_stream_loader()
        right = check(loader, expected)
        loader, expected = test_cuda.delayed_stream_loader()
        wrong_count = check(loader, expected, stream_for=wrong)
        print(
            f"[control] {name}: {right} mismatches with the consumer's stream, {wrong_count} with an unrelated stream"
        )
        failed_as_expected &= right == 0 and wrong_count > 0
    return 0 if failed_as_expected else 1


if __name__ == "__main__":
    sys.exit(main())
