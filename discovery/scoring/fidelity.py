"""Successive halving (Jamieson & Talwalkar 2016, arXiv 1502.07943; Li et al. 2018, Hyperband, arXiv 1603.06560):
pay the full multi-seed budget only for the candidates that look best at a low fidelity.

With ``search.fidelity`` set, each generation's admitted candidates train first at rung 0: a fraction of the
steps (``steps_fractions[0]``) on the first search seed only. Once the generation's rung-0 trainings are done,
the best ``keep`` share of them (at least one; ties: the older id) is promoted to rung 1, and so on; the last
rung is the full budget on every search seed, with the paired comparison to the baseline. A candidate not
promoted keeps its rung results in ``stats.rungs`` and loses its ``score`` (a low-fidelity score is not
comparable with full-budget ones, so it takes no part in rankings); its ``reason`` says where it stopped.
Every step is an archive write, so a killed run resumes the halving where it stopped. Generation 0 (the library
seeds and the baseline) always trains at the full budget.

``SuccessiveHalving`` is the strategy the pipeline holds: ``rung`` says what a rung trains (steps, seeds), ``run``
promotes and demotes after a generation's rung-0 trainings, handing each promotion to the pipeline's
``RungTrainer``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from lossforge.discovery.stats.seed_stats import RungResult, SeedStats
from lossforge.discovery.storage.archive import Archive, CandidateRow
from lossforge.evaluate.statuses import SCORED_STATUS

if TYPE_CHECKING:
    from lossforge.discovery.config_groups import FidelityConfig
    from lossforge.evaluate.training.config import TrainConfig


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


def with_rung(previous: SeedStats | None, stats: SeedStats, rung: int, steps: int | None, status: str) -> SeedStats:
    """``stats`` of the rung just trained, carrying the results of the earlier rungs in ``rungs``."""
    entry = RungResult(rung, steps, status, stats.seeds, stats.scores, stats.mean)
    earlier = previous.rungs if previous is not None else None
    rungs = tuple(r for r in earlier or () if r.rung != rung) + (entry,)
    return replace(stats, rung=rung, rungs=rungs)


def promoted(cohort: Sequence[CandidateRow], rung: int, keep: float) -> list[CandidateRow]:
    """The best ``ceil(keep * n)`` of the rows that finished ``rung`` with a score (best first, ties: lower id)."""
    scored = [(row, _rung_mean(row, rung)) for row in cohort]
    ranked = sorted(((row, mean) for row, mean in scored if mean is not None), key=lambda item: (-item[1], item[0].id))
    return [row for row, _ in ranked[: max(1, math.ceil(keep * len(cohort)))]] if ranked else []


def _rung_mean(row: CandidateRow, rung: int) -> float | None:
    for entry in (row.stats.rungs if row.stats is not None else None) or ():
        if entry.rung == rung and entry.status == SCORED_STATUS and entry.mean is not None:
            return float(entry.mean)
    return None


class RungTrainer(Protocol):
    """What trains a promoted candidate at its next rung (the pipeline's ``CandidateTraining``)."""

    def train_rung(self, row: CandidateRow, rung: int) -> None: ...


@dataclass(frozen=True)
class Rung:
    """What one rung trains: ``config`` on ``seeds``; ``steps`` its step count (a rung of halving resolves the
    task's default; None: the task's default, unresolved); ``last``: the full budget on every seed, compared with
    the baseline."""

    config: TrainConfig
    seeds: tuple[int, ...]
    steps: int | None
    last: bool


@dataclass(frozen=True)
class SuccessiveHalving:
    """Successive halving with ``fractions`` of the full steps per rung, the best ``keep`` share promoted."""

    fractions: tuple[float, ...]
    keep: float
    task: str  # whose default steps are the full budget when the training config sets none

    @classmethod
    def from_config(cls, fidelity: FidelityConfig, task: str) -> SuccessiveHalving:
        return cls(tuple(fidelity.steps_fractions), fidelity.keep, task)

    @property
    def last(self) -> int:
        return len(self.fractions) - 1

    def rung(self, train_config: TrainConfig, seeds: Sequence[int], rung: int) -> Rung:
        """The training of ``rung``: a share of the full steps on the first seed below the last rung."""
        full = full_steps(train_config.steps, self.task)
        if rung >= self.last:
            return Rung(train_config, tuple(seeds), train_config.steps or full, rung == self.last)
        config = replace(train_config, steps=rung_steps(full, self.fractions[rung]))
        return Rung(config, tuple(seeds[:1]), config.steps or full, False)

    def run(self, archive: Archive, generation: int, trainer: RungTrainer, pool: ThreadPoolExecutor) -> None:
        """Promote and train rung by rung until the last; demote the rest (see the module docstring)."""
        for rung in range(self.last):
            cohort = [row for row in archive.candidates(generation=generation) if _rung_mean(row, rung) is not None]
            winners = {row.id for row in promoted(cohort, rung, self.keep)}
            jobs: list[Future[None]] = []
            for row in cohort:
                at = row.stats.rung if row.stats is not None else None
                if row.id in winners and at == rung and row.status == SCORED_STATUS:
                    jobs.append(pool.submit(trainer.train_rung, row, rung + 1))
                elif row.id not in winners and row.score is not None:
                    archive.update_candidate(row.id, score=None, reason=self._demoted(rung, row, len(cohort)))
            for job in jobs:
                job.result()

    def _demoted(self, rung: int, row: CandidateRow, cohort: int) -> str:
        return (
            f"not promoted past rung {rung} of successive halving ({_rung_mean(row, rung):.4g} at "
            f"{self.fractions[rung]:.0%} of the steps on one seed; the best {self.keep:.0%} of {cohort} went on)"
        )


__all__ = [
    "Rung",
    "RungTrainer",
    "SuccessiveHalving",
    "full_steps",
    "merge_timings",
    "promoted",
    "rung_steps",
    "with_rung",
]
