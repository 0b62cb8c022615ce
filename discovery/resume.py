"""What a resumed run may and may not change, and the config it continues with.

A resumed run must be the run it continues: the groups that decide what is proposed and how it is scored
(``proposer``, ``search`` apart from ``generations``, ``training``, ``seed``) are fixed; execution and budget
may change (more workers, more money, more generations).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lossforge.discovery.config import RunConfig, build_config
from lossforge.discovery.loop_error import LoopError
from lossforge.discovery.storage.archive import Archive
from lossforge.evaluate.config_error import ConfigError

FIXED_ON_RESUME = ("proposer", "search", "training", "seed")
RESUMABLE = ("search.generations", "execution", "budget")


def stored_config(run_dir: str | Path) -> RunConfig:
    """The resolved config a run stored in its archive (for ``--resume``)."""
    path = Path(run_dir) / "archive.sqlite"
    if not path.is_file():
        raise LoopError(f"{run_dir} holds no run to resume (no archive.sqlite); start one with --out {run_dir}")
    with Archive.open(run_dir) as archive:
        data = archive.get_meta("config")
    if not isinstance(data, dict):
        raise LoopError(f"{run_dir}: the archive has no stored config; it was not written by `lossforge run`")
    try:
        return build_config(data, source=str(path))
    except ConfigError as exc:
        raise LoopError(str(exc)) from None


def check_resume_config(stored: dict[str, Any], given: dict[str, Any]) -> None:
    """Raise ``LoopError`` naming the groups that differ, unless only the resumable ones changed."""
    changed = [key for key in FIXED_ON_RESUME if key != "search" and stored.get(key) != given.get(key)]
    stored_search = {k: v for k, v in stored.get("search", {}).items() if k != "generations"}
    given_search = {k: v for k, v in given.get("search", {}).items() if k != "generations"}
    if stored_search != given_search:
        changed.append("search")
    if changed:
        raise LoopError(
            f"cannot resume with a different {', '.join(changed)} than the run was started with; on resume only "
            f"{', '.join(RESUMABLE)} may change"
        )


__all__ = ["FIXED_ON_RESUME", "RESUMABLE", "check_resume_config", "stored_config"]
