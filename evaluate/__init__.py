"""Everything that runs a candidate: parsing, static policy, sandboxed checks, profile, training, tasks.

The heavy entry points are imported lazily so that ``import lossforge.evaluate`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from lossforge.evaluate.report import CheckReport
from lossforge.evaluate.results import RunResult

_LAZY = {
    "check": "lossforge.evaluate.checker",
    "train_candidate": "lossforge.evaluate.train",
    "TrainConfig": "lossforge.evaluate.train",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lossforge.evaluate' has no attribute {name!r}")


__all__ = ["CheckReport", "RunResult", "check", "train_candidate", "TrainConfig"]
