"""The leaderboard of a run: trained candidates best first (``ranking.best_first``, the one ranking), with
their profile tags, multi-seed statistics where they exist, and the task's headline metrics as columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossforge.discovery.review.snapshot import ReviewError, open_run
from lossforge.discovery.review.summary import candidate_summary, multi_seed, run_task
from lossforge.discovery.review.task_info import headline_metrics
from lossforge.discovery.search.ranking import best_first
from lossforge.discovery.storage.archive import CandidateRow


@dataclass(frozen=True)
class Leaderboard:
    """``entries`` (``summary.candidate_summary`` dicts, best first) and the metric columns to show."""

    run_dir: Path
    task: str | None
    metric_columns: tuple[str, ...]
    entries: list[dict[str, Any]]
    has_stats: bool


def ranked_rows(rows: list[CandidateRow], include_all: bool) -> list[tuple[int | None, CandidateRow]]:
    """(rank, row): trained rows best first; with ``include_all`` every other row after them, by id."""
    trained = best_first(rows)
    ranked = [(i + 1, row) for i, row in enumerate(trained)]
    if include_all:
        ids = {row.id for row in trained}
        ranked += [(None, row) for row in rows if row.id not in ids]
    return ranked


def metric_names(rows: list[CandidateRow]) -> list[str]:
    """Every metric name the rows report, in first-seen order, training-log metrics (``train/*``) last."""
    names = list(dict.fromkeys(name for row in rows for name in row.metrics))
    return [n for n in names if not n.startswith("train/")] + [n for n in names if n.startswith("train/")]


def choose_metrics(spec: str | None, task: str | None, rows: list[CandidateRow]) -> tuple[str, ...]:
    """The metric columns: the task's headline metrics (``spec`` None), every metric (``"all"``) or a
    comma-separated list of names the run has."""
    available = metric_names(rows)
    if spec is None:
        return headline_metrics(task, available)
    if spec.strip() == "all":
        return tuple(available)
    wanted = tuple(name.strip() for name in spec.split(",") if name.strip())
    unknown = [name for name in wanted if name not in available]
    if unknown and available:
        raise ReviewError(
            f"--metrics: this run has no metric {', '.join(map(repr, unknown))}; "
            f"it has: {', '.join(available)} (or pass --metrics all)."
        )
    return wanted


def read_leaderboard(
    run_dir: str | Path, *, top: int | None = None, include_all: bool = False, metrics: str | None = None
) -> Leaderboard:
    """The leaderboard of ``run_dir``; ``top`` keeps the first N entries, ``include_all`` adds the rejected,
    duplicate, failed and pending proposals after the trained ones."""
    with open_run(run_dir) as archive:
        rows = archive.candidates()
        task = run_task(archive.get_meta("config"))
    ranked = ranked_rows(rows, include_all)
    if top is not None:
        ranked = ranked[:top]
    entries = [candidate_summary(row, rank) for rank, row in ranked]
    columns = choose_metrics(metrics, task, rows)
    return Leaderboard(Path(run_dir), task, columns, entries, any(multi_seed(row.stats) for _, row in ranked))


def leaderboard(run_dir: str | Path, *, top: int | None = None, include_all: bool = False) -> list[dict[str, Any]]:
    """Candidates ranked by score (best first). By default only trained (``ok``) ones; ``include_all`` adds
    every other proposal after them, by id, with its status and reason."""
    return read_leaderboard(run_dir, top=top, include_all=include_all).entries


__all__ = ["Leaderboard", "choose_metrics", "leaderboard", "metric_names", "ranked_rows", "read_leaderboard"]
