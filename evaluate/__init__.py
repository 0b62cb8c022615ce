"""Everything that runs a candidate, one sub-package per concern: ``checking`` (parse, static policy, runtime
checks in the sandbox, profile, fingerprint), ``isolation`` (fork server, lock-down), ``training`` (launcher,
worker, TRL subclass, reference cache), ``llm`` (client, errors, budget, records), ``tasks`` and ``retrain``
(full-scale retraining under ``accelerate launch``); the loss contract itself is ``contract``.

The heavy entry points are imported lazily so that ``import lossforge.evaluate`` stays cheap.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any

from lossforge.evaluate.checking.check_report import CheckReport
from lossforge.evaluate.training.result import RunResult

_LAZY = {
    "check": "lossforge.evaluate.checking.checker",
    "check_many": "lossforge.evaluate.checking.checker",
    "train_candidate": "lossforge.evaluate.training.launcher",
    "TrainConfig": "lossforge.evaluate.training.config",
}


# Module names that earlier releases documented, kept importable: ``import lossforge.evaluate.parse`` gives the
# module that now holds parsing (the same module object, not a copy).
MOVED_MODULES = {
    "lossforge.evaluate.parse": "lossforge.evaluate.checking.parse",
    "lossforge.evaluate.policy": "lossforge.evaluate.checking.policy",
    "lossforge.evaluate.profile": "lossforge.evaluate.checking.profile",
    "lossforge.evaluate.trainer": "lossforge.evaluate.training.candidate_trainer",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module name to the module at its new place, imported on first use."""

    def __init__(self) -> None:
        self._specs: dict[str, Any] = {}  # real name -> the module's own spec

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(MOVED_MODULES[spec.name])
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the alias's spec on the real module; give it back its own.
        module.__spec__ = self._specs[module.__name__]


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lossforge.evaluate' has no attribute {name!r}")


__all__ = ["CheckReport", "RunResult", "TrainConfig", "check", "train_candidate"]
