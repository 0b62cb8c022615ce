"""Files around the archive: contract-format candidate files, the run-directory lock, the seed-result cache.

- ``contract_file_text(code, ...)`` adds or rewrites ``NAME``/``DESCRIPTION``/``ORIGIN``/``PARENTS`` so a
  discovered candidate has the library's file format and can be promoted by copying.
- ``RunLock(run_dir)``: ``fcntl.flock`` on ``run_dir/lock`` for the life of a run; a second run on the same
  directory fails fast instead of interleaving writes with the first. The kernel drops the lock when the
  holder dies, so a ``kill -9`` never leaves a stale lock behind.
- ``SeedCache(cache_root)``: ``RunResult`` dicts of library seeds, reused across runs, one JSON file per key
  under ``cache_root/seed_results`` (default ``$LOSSFORGE_CACHE/seed_results``).
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

_METADATA = ("NAME", "DESCRIPTION", "ORIGIN", "PARENTS")
_VERSIONED = ("lossforge", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "openai", "pydantic")


def contract_file_text(code: str, *, name: str, description: str, origin: str, parents: list[str]) -> str:
    """``code`` with its metadata constants replaced by the given values (inserted after the imports).

    Code that does not parse is kept verbatim below the constants: the file then records what was proposed
    even though it cannot be promoted.
    """
    block = [
        f"NAME = {json.dumps(name)}",
        f"DESCRIPTION = {json.dumps(description)}",
        f"ORIGIN = {json.dumps(origin)}",
        f"PARENTS = {json.dumps([str(p) for p in parents])}",
    ]
    lines = code.splitlines()
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return "\n".join(["# This proposal does not parse; kept as proposed.", *block, "", *lines]) + "\n"
    removed: set[int] = set()  # 0-based line numbers of the old metadata assignments
    insert_at = 0  # after the leading docstring and imports
    leading = True
    for node in tree.body:
        is_header = isinstance(node, ast.Import | ast.ImportFrom) or (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        )
        if leading and is_header:
            insert_at = node.end_lineno or node.lineno
        else:
            leading = False
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id in _METADATA for t in targets):
            removed.update(range(node.lineno - 1, node.end_lineno or node.lineno))
    out: list[str] = []
    for number, line in enumerate(lines):
        if number == insert_at:
            out.extend(["", *block, ""] if out else [*block, ""])
        if number not in removed:
            out.append(line)
    if insert_at >= len(lines):
        out.extend(["", *block])
    text = "\n".join(out)
    while "\n\n\n\n" in text:  # removing old constants can leave runs of blank lines
        text = text.replace("\n\n\n\n", "\n\n\n")
    return text.rstrip("\n") + "\n"


class RunLockError(RuntimeError):
    """The run directory is held by another live run."""


class RunLock:
    """Exclusive lock on a run directory, held from ``acquire()`` (or ``with``) until ``release()``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockError(
                f"run directory {self.run_dir} is in use by a live run (pid {holder}); "
                "wait for it to finish or pass another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        # The file stays: unlinking a lock file races with a process that has just opened it.
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for package in _VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_sha() -> str | None:
    """The lossforge source checkout's commit (with ``-dirty`` if modified), or None outside a checkout."""
    source = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=source, capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha or None


# Only outcomes that the same inputs reproduce are cached: a timeout or a crash may be the machine's fault.
_CACHEABLE = ("ok", "diverged")


class SeedCache:
    """Results of training library seeds, shared across runs.

    The key is (task, fingerprint, beta, seed, budget) plus the lossforge version; ``budget`` is a mapping of
    everything else that changes the result (steps, eval samples, task options, the task's cache key).
    """

    def __init__(self, cache_root: str | Path | None = None) -> None:
        root = Path(cache_root) if cache_root is not None else _default_cache_root()
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


def _default_cache_root() -> Path:
    return Path(os.environ.get("LOSSFORGE_CACHE", Path.home() / ".cache" / "lossforge"))


__all__ = ["RunLock", "RunLockError", "SeedCache", "contract_file_text", "git_sha", "package_versions"]
