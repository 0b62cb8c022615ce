"""Successive halving (Jamieson & Talwalkar 2016, arXiv 1502.07943; Li et al. 2018, Hyperband, arXiv 1603.06560):
pay the full multi-seed budget only for the candidates that look best at a low fidelity.

With ``search.fidelity`` set, each generation's admitted candidates train first at rung 0: a fraction of the
steps (``steps_fractions[0]``) on the first search seed only. Once the generation's rung-0 trainings are done,
the best ``keep`` share of them (at least one; ties: the older id) is promoted to rung 1, and so on; the last
rung is the full budget on every search seed, with the paired comparison to the baseline. A candidate not
promoted keeps its rung results in ``stats["rungs"]`` and loses its ``score`` (a low-fidelity score is not
comparable with full-budget ones, so it takes no part in rankings); its ``reason`` says where it stopped.
Every step is an archive write, so a killed run resumes the halving where it stopped. Generation 0 (the library
seeds and the baseline) always trains at the full budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from lossforge.discovery.storage.archive import Archive, CandidateRow
from lossforge.evaluate.statuses import SCORED_STATUS


def rung_steps(full_steps: int, fraction: float) -> int:
    return max(1, round(full_steps * fraction))


def full_steps(steps: int | None, task: str) -> int:
    """The last rung's steps: the run's ``training.steps``, else the task's default."""
    if steps is not None:
        return int(steps)
    from lossforge.evaluate.tasks import task_class

    return int(task_class(task).default_steps)


def merge_timings(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A later rung's timings added to the earlier ones: phase seconds summed, the first start, the last end."""
    out = dict(previous)
    for key, value in new.items():
        if key == "train_start":
            out.setdefault(key, value)
        elif key in ("reference", "training", "evaluation", "total") and isinstance(value, int | float):
            out[key] = float(out.get(key, 0.0)) + value
        else:
            out[key] = value
    return out


def rung_setup(
    train_config: Any, seeds: Sequence[int], fractions: Sequence[float], rung: int, full_steps: int
) -> tuple[Any, tuple[int, ...]]:
    """The training config and seeds of ``rung``: a share of the steps on one seed below the last rung."""
    if rung >= len(fractions) - 1:
        return train_config, tuple(seeds)
    return replace(train_config, steps=rung_steps(full_steps, fractions[rung])), tuple(seeds[:1])


def with_rung(
    previous: dict[str, Any] | None, stats: dict[str, Any], rung: int, steps: int | None, status: str
) -> dict[str, Any]:
    """``stats`` of the rung just trained, carrying the results of the earlier rungs in ``rungs``."""
    entry = {
        "rung": rung,
        "steps": steps,
        "status": status,
        "seeds": stats["seeds"],
        "scores": stats["scores"],
        "mean": stats["mean"],
    }
    rungs = [r for r in (previous or {}).get("rungs", []) if r["rung"] != rung] + [entry]
    return {**stats, "rung": rung, "rungs": rungs}


def promoted(cohort: Sequence[CandidateRow], rung: int, keep: float) -> list[CandidateRow]:
    """The best ``ceil(keep * n)`` of the rows that finished ``rung`` with a score (best first, ties: lower id)."""
    scored = [(row, _rung_mean(row, rung)) for row in cohort]
    ranked = sorted(((row, mean) for row, mean in scored if mean is not None), key=lambda item: (-item[1], item[0].id))
    return [row for row, _ in ranked[: max(1, math.ceil(keep * len(cohort)))]] if ranked else []


def _rung_mean(row: CandidateRow, rung: int) -> float | None:
    for entry in (row.stats or {}).get("rungs", []):
        if entry["rung"] == rung and entry["status"] == SCORED_STATUS and entry.get("mean") is not None:
            return float(entry["mean"])
    return None


def halve(
    archive: Archive,
    generation: int,
    fractions: Sequence[float],
    keep: float,
    train: Callable[[CandidateRow, int], None],
    trainers: ThreadPoolExecutor,
) -> None:
    """Promote and train rung by rung until the last; demote the rest (see the module docstring)."""
    last = len(fractions) - 1
    for rung in range(last):
        cohort = [row for row in archive.candidates(generation=generation) if _rung_mean(row, rung) is not None]
        winners = {row.id for row in promoted(cohort, rung, keep)}
        jobs: list[Future[None]] = []
        for row in cohort:
            at = (row.stats or {}).get("rung")
            if row.id in winners and at == rung and row.status == SCORED_STATUS:
                jobs.append(trainers.submit(train, row, rung + 1))
            elif row.id not in winners and row.score is not None:
                archive.update_candidate(
                    row.id,
                    score=None,
                    reason=(
                        f"not promoted past rung {rung} of successive halving ({_rung_mean(row, rung):.4g} at "
                        f"{fractions[rung]:.0%} of the steps on one seed; the best {keep:.0%} of {len(cohort)} went on)"
                    ),
                )
        for job in jobs:
            job.result()


__all__ = ["full_steps", "halve", "merge_timings", "promoted", "rung_setup", "rung_steps", "with_rung"]
