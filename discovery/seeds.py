"""The seeds of a run, all derived from the run seed: each attempt's proposal seed (``derive_seed``), the search
seeds every candidate is trained on and the held-out seeds the winners are confirmed on. A leaf module: the
config validates with it, the pipeline and the ensemble seed their slots with it, scoring confirms with it.
The search and held-out seeds never meet, by construction:

- search seeds lie below ``HELDOUT_BASE`` (2**30): ``training.seeds: N`` gives ``seed, seed + 1, ...,
  seed + N - 1`` (so ``N = 1`` is the run seed alone, as before multi-seed scoring), an explicit list is used
  as given; the config refuses any search seed at or above ``HELDOUT_BASE``;
- held-out seeds lie in [2**30, 2**31): consecutive values from an offset hashed from the run seed, so two
  runs with different seeds confirm on different held-out seeds, and a resumed confirmation on the same ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HELDOUT_BASE = 1 << 30
_HELDOUT_SPAN = 1 << 30


def derive_seed(run_seed: int, generation: int, index: int, repair_round: int = 0) -> int:
    """The seed of one attempt, a pure function of its coordinates (so a resumed run proposes the same)."""
    digest = hashlib.sha256(f"lossforge:{run_seed}:{generation}:{index}:{repair_round}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def search_seeds(run_seed: int, seeds: int | Sequence[int]) -> tuple[int, ...]:
    """The seeds every candidate of the run is trained on (common random numbers)."""
    if isinstance(seeds, int):
        return tuple(run_seed + i for i in range(seeds))
    return tuple(int(s) for s in seeds)


def heldout_seeds(run_seed: int, count: int) -> tuple[int, ...]:
    """``count`` seeds the search never uses: all in [HELDOUT_BASE, 2 * HELDOUT_BASE), distinct."""
    digest = hashlib.sha256(f"lossforge:heldout:{run_seed}".encode()).digest()
    offset = int.from_bytes(digest[:4], "big") % _HELDOUT_SPAN
    return tuple(HELDOUT_BASE + (offset + i) % _HELDOUT_SPAN for i in range(count))


__all__ = ["HELDOUT_BASE", "derive_seed", "heldout_seeds", "search_seeds"]
