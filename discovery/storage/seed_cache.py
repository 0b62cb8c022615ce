"""``SeedCache``: results of training the library seeds, reused across runs.

One JSON file per key under ``<cache root>/seed_results`` (default ``$LOSSFORGE_CACHE/seed_results``). A cached
result is only as good as its key, so the key holds everything that decides a score (``budget_key``): the
task's own cache key (data, reference model, task seed), every resolved task option including the defaults
the user did not set (sentiment's ``sample_temperature``), the task's training defaults, every training
setting of ``TrainConfig`` but the seed (a key field of its own) and what only changes speed, and a content
hash of the training and task code (``code_hash``), so an edited trainer or task misses even at the same
version.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lossforge.discovery.storage.provenance import package_versions
from lossforge.evaluate import cache
from lossforge.evaluate.statuses import REUSABLE_STATUSES

# TrainConfig fields that do not change a result (or are keyed separately: seed; or resolved into the task key).
_NOT_KEYED = frozenset({"seed", "timeout", "memory_gb", "threads", "cache_dir", "options", "task"})


def tree_hash(roots: Sequence[Path]) -> str:
    """sha256 over the relative paths and bytes of the source and data files under ``roots``."""
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".py", ".txt", ".json")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


@functools.lru_cache(maxsize=1)
def code_hash() -> str:
    """The content hash of ``lossforge.evaluate.training`` and ``lossforge.evaluate.tasks`` (``tree_hash``)."""
    from lossforge.evaluate import tasks, training

    return tree_hash([Path(package.__file__).parent for package in (training, tasks)])


def budget_key(train_config: Any) -> dict[str, Any]:
    """Everything but (task, fingerprint, beta, seed) that decides a score trained with ``train_config``.

    Raises ``TaskError`` (or whatever the task raises) when the task cannot compute its cache key: such a run
    does not use the cache.
    """
    from lossforge.evaluate.tasks import get_task

    task = get_task(
        train_config.task,
        dict(train_config.options),
        cache_dir=train_config.cache_dir,
        eval_samples=train_config.eval_samples,
    )
    cls = type(task)
    defaults = {
        name: getattr(cls, name, None)
        for name in (
            "default_steps",
            "default_beta",
            "default_learning_rate",
            "default_batch_size",
            "max_length",
            "default_eval_samples",
            "task_seed",
        )
    }
    defaults["task_seed"] = task.task_seed
    training = {
        f.name: getattr(train_config, f.name) for f in dataclasses.fields(train_config) if f.name not in _NOT_KEYED
    }
    return {
        "task_key": task.cache_key(),
        "task_options": {**dict(cls.OPTIONS), **task.options},
        "task_defaults": defaults,
        "training": training,
    }


class SeedCache:
    """Results of training library seeds, shared across runs.

    The key is (task, fingerprint, beta, seed, budget) plus the lossforge version and ``code_hash()``;
    ``budget`` is a mapping of everything else that changes the result (``budget_key``). Only outcomes the same
    inputs reproduce (``REUSABLE_STATUSES``) are stored.
    """

    def __init__(self, cache_root: str | Path | None = None) -> None:
        root = Path(cache_root) if cache_root is not None else cache.cache_root()
        self.directory = root / "seed_results"

    @staticmethod
    def key(task: str, fingerprint: str, beta: float, seed: int, budget: Mapping[str, Any]) -> dict[str, Any]:
        version = package_versions().get("lossforge", "unknown")
        return {
            "task": task,
            "fingerprint": fingerprint,
            "beta": float(beta),
            "seed": int(seed),
            "budget": dict(budget),
            "lossforge": version,
            "code": code_hash(),
        }

    def _path(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]
        return self.directory / f"{digest}.json"

    def get(
        self, task: str, fingerprint: str, beta: float, seed: int, budget: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        key = self.key(task, fingerprint, beta, seed, budget)
        try:
            stored = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        # The stored key guards against a hash collision and against hand-edited files.
        if json.dumps(stored.get("key"), sort_keys=True, default=str) != json.dumps(key, sort_keys=True, default=str):
            return None
        result = stored.get("result")
        return result if isinstance(result, dict) else None

    def put(self, task: str, fingerprint: str, beta: float, seed: int, budget: Mapping[str, Any], result: Any) -> bool:
        """Store ``result`` (a RunResult or its dict); returns False for outcomes not worth caching."""
        data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
        if data.get("status") not in REUSABLE_STATUSES:
            return False
        key = self.key(task, fingerprint, beta, seed, budget)
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"key": key, "result": data}, sort_keys=True, default=str)
        # Write-then-rename: concurrent runs never read a half-written file.
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(payload)
        os.replace(tmp, self._path(key))
        return True


__all__ = ["SeedCache", "budget_key", "code_hash", "tree_hash"]
