"""What reproduces a run, stored beside its results: package versions and the git commit of the source."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

_VERSIONED = ("lossforge", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "openai", "pydantic")


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


__all__ = ["git_sha", "package_versions"]
