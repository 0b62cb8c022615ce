"""Running a block of tensor code with a set number of torch intra-op threads, then restoring the old count.

The losses, profiles and tiny task models here work on tensors of a few hundred elements or tiny matrices:
intra-op parallelism gains nothing there, and some CPU kernels (``F.logsigmoid`` in torch 2.x) open a
parallel region even for 16 elements. On a busy 2-core machine that measured 0.3-9 ms per call with two
threads against ~3 us with one, and made tiny-model SFT steps ten times slower.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads; the previous count is restored afterwards."""
    previous = torch.get_num_threads()
    if previous == count:  # nothing to change: skip the set/restore, which is not free
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
