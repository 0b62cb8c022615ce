"""The runs under a directory and what each one is: task, proposer, progress, counts, best, cost and state.

State: ``running`` while a live process holds the run's lock (``run_lock.RunLock``: an ``fcntl.flock`` the
kernel drops when its holder dies, so a killed run never looks live); ``finished`` once the loop has written
its final ``state`` (all generations, or a budget that ended it); ``interrupted`` otherwise (killed or
crashed: ``lossforge run --resume DIR`` finishes it).
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from lossforge.discovery.review.snapshot import ReviewError, RunSnapshot, is_run_dir, open_run
from lossforge.discovery.review.summary import run_task, score_of, verdict_of
from lossforge.discovery.search.ranking import best_first
from lossforge.evaluate.statuses import CANDIDATE_STATUSES

RunState = Literal["running", "finished", "interrupted"]
DEFAULT_RUNS_DIR = Path("lossforge-runs")
LOCK_FILE = "lock"  # run_lock.RunLock's file
# Statuses counted as "failed" in the one-line view: the training ran and did not produce a score.
FAILED_STATUSES = ("failed", "diverged", "timeout")


def lock_held(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock. Probes with a non-blocking shared lock, released at once."""
    path = run_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # no lock file: no run has ever held it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def run_state(run_dir: Path, state_meta: dict[str, Any] | None, pending: int) -> RunState:
    if lock_held(run_dir):
        return "running"
    if state_meta and state_meta.get("status") in ("finished", "budget") and not pending:
        return "finished"
    return "interrupted"


def _generations_done(
    generations: list[int], pending: list[int], state_meta: dict[str, Any] | None, state: RunState
) -> int:
    """Proposal generations (after generation 0) completed: the loop's count once finished, else the
    generations before the first one with pending rows."""
    if state == "finished" and state_meta and isinstance(state_meta.get("generations"), int):
        return int(state_meta["generations"])
    first_pending = min(pending, default=None)
    done = [g for g in set(generations) if g >= 1 and (first_pending is None or g < first_pending)]
    return max(done, default=0)


def iso_time(epoch: float | None) -> str | None:
    """UTC ``2026-12-01T21:33:07Z``, or None."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)) if epoch else None


def overview(archive: RunSnapshot) -> dict[str, Any]:
    """What one run is and how far it got (``lossforge runs`` prints one row of this per run)."""
    rows = archive.candidates()
    config = archive.get_meta("config") or {}
    state_meta = archive.get_meta("state")
    counts = Counter(row.status for row in rows)
    pending_generations = [row.generation for row in rows if row.status == "pending"]
    state = run_state(archive.run_dir, state_meta, len(pending_generations))
    proposer = config.get("proposer") or {}
    best = best_first(rows)[:1]
    calls, tokens, cost = archive.llm_totals()
    confirmation = archive.get_meta("confirmation")
    started = archive.get_meta("created")
    updated = max((row.updated for row in rows), default=None)
    return {
        "run_dir": str(archive.run_dir),
        "task": run_task(config),
        "proposer": proposer.get("kind"),
        "model": proposer.get("model"),
        "generations_done": _generations_done([r.generation for r in rows], pending_generations, state_meta, state),
        "generations_asked": (config.get("search") or {}).get("generations"),
        "population": (config.get("search") or {}).get("population"),
        "counts": {status: counts.get(status, 0) for status in CANDIDATE_STATUSES},
        "candidates": len(rows),
        "best": _best(best[0]) if best else None,
        "confirmation": _confirmation(confirmation),
        "llm": {"calls": calls, "tokens": tokens, "cost_usd": cost},
        "state": state,
        "stop_reason": (state_meta or {}).get("stop_reason"),
        "started": iso_time(started),
        "started_epoch": started,
        "wall_s": (updated - started) if started and updated else None,
    }


def _best(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "score": score_of(row),
        "stats": row.stats,
        "verdict": verdict_of(row.stats),
    }


def _confirmation(meta: Any) -> dict[str, Any] | None:
    """The confirmation summary (sentence, winner name, verdict), where the run has been confirmed."""
    if not isinstance(meta, dict):
        return None
    winner = meta.get("winner") or None
    verdict = ((winner or {}).get("paired") or {}).get("verdict") if winner else None
    return {"sentence": meta.get("sentence"), "winner": (winner or {}).get("name"), "verdict": verdict}


def run_overview(run_dir: str | Path) -> dict[str, Any]:
    with open_run(run_dir) as archive:
        return overview(archive)


def find_runs(directory: Path) -> list[Path]:
    """``directory`` itself if it is a run, else the runs directly inside it (oldest name first)."""
    if is_run_dir(directory):
        return [directory]
    return sorted(child for child in directory.iterdir() if child.is_dir() and is_run_dir(child))


def list_runs(directory: str | Path = DEFAULT_RUNS_DIR) -> list[dict[str, Any]]:
    """An overview of every run under ``directory``; a run that cannot be read gets ``error`` instead."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ReviewError(
            f"{directory} is not a directory; pass the folder your runs are in (default ./{DEFAULT_RUNS_DIR})."
        )
    found = []
    for run_dir in find_runs(directory):
        try:
            found.append(run_overview(run_dir))
        except ReviewError as exc:
            found.append({"run_dir": str(run_dir), "error": str(exc)})
    return found


__all__ = [
    "DEFAULT_RUNS_DIR",
    "FAILED_STATUSES",
    "RunState",
    "find_runs",
    "iso_time",
    "list_runs",
    "lock_held",
    "overview",
    "run_overview",
    "run_state",
]
