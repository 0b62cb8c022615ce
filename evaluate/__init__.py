"""Everything that runs a candidate, one sub-package per concern: ``checking`` (parse, static policy, runtime
checks in the sandbox, profile, fingerprint), ``isolation`` (fork server, lock-down), ``training`` (launcher,
worker, TRL subclass, reference cache), ``llm`` (client, errors, budget, records), ``tasks`` and ``retrain``
(full-scale retraining under ``accelerate launch``); the loss contract itself is ``contract``.

The heavy entry points are imported lazily so that ``import lossforge.evaluate`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from lossforge.evaluate.checking.check_report import CheckReport
from lossforge.evaluate.training.result import RunResult

_LAZY = {
    "check": "lossforge.evaluate.checking.checker",
    "check_many": "lossforge.evaluate.checking.checker",
    "train_candidate": "lossforge.evaluate.training.launcher",
    "TrainConfig": "lossforge.evaluate.training.config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lossforge.evaluate' has no attribute {name!r}")


__all__ = ["CheckReport", "RunResult", "TrainConfig", "check", "train_candidate"]
