"""``SeedCache``: results of training the library seeds, reused across runs.

One JSON file per key under ``<cache root>/seed_results`` (default ``$LOSSFORGE_CACHE/seed_results``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lossforge.discovery.provenance import package_versions
from lossforge.evaluate import cache

# Only outcomes that the same inputs reproduce are cached: a timeout or a crash may be the machine's fault.
_CACHEABLE = ("ok", "diverged")


class SeedCache:
    """Results of training library seeds, shared across runs.

    The key is (task, fingerprint, beta, seed, budget) plus the lossforge version; ``budget`` is a mapping of
    everything else that changes the result (steps, eval samples, task options, the task's cache key).
    """

    def __init__(self, cache_root: str | Path | None = None) -> None:
        root = Path(cache_root) if cache_root is not None else cache.cache_root()
        self.directory = root / "seed_results"

    @staticmethod
    def key(task: str, fingerprint: str, beta: float, seed: int, budget: Mapping[str, Any]) -> dict[str, Any]:
        version = package_versions().get("lossforge", "unknown")
        return {
            "task": task, "fingerprint": fingerprint, "beta": float(beta), "seed": int(seed),
            "budget": dict(budget), "lossforge": version,
        }  # fmt: skip

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

    def put(
        self, task: str, fingerprint: str, beta: float, seed: int, budget: Mapping[str, Any], result: Any
    ) -> bool:
        """Store ``result`` (a RunResult or its dict); returns False for outcomes not worth caching."""
        data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
        if data.get("status") not in _CACHEABLE:
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


__all__ = ["SeedCache"]
