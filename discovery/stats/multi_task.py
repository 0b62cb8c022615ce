"""The multi-task fitness: a candidate trained on several tasks gets one score (issue 19).

Tasks score on different scales (a gold reward in [-1, 1], an accuracy in [0, 1]), so each task's score is first
normalized by how far the baseline (DPO by default) moves it from the untrained reference on that task::

    normalized_t(seed) = (score_t(seed) - reference_t) / |baseline_t - reference_t|

where ``reference_t`` and ``baseline_t`` are the means over the run's seeds of the reference policy's score
(the baseline at 0 steps) and of the trained baseline's (``TaskScale``): 0 is "no better than not training",
1 is "as good as the baseline" (its own normalized mean is exactly 1, the reference's 0). The means, not each
seed's own pair, set the scale: a seed where the baseline happens to barely move would otherwise divide by
almost nothing. The absolute value keeps "higher is better" on a task where the baseline falls below the
reference (then it sits at -1).

A row's score on a seed is the ``mean`` of its normalized task scores on that seed, or their ``min`` (the
worst task: a loss must not buy one task with another); its statistics, paired differences to the baseline
and ranking then work on these per-seed values exactly as on one task's scores (``seed_stats``). Each task's
raw scores, normalized scores and raw paired differences stay in ``SeedStats.tasks``; the row's metrics carry
``<task>`` (the normalized mean) and ``<task>.<metric>`` (each task metric's mean over seeds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from lossforge.discovery.stats import statistics
from lossforge.discovery.stats.seed_stats import (
    Baseline,
    Outcome,
    RankBy,
    SeedRun,
    SeedScore,
    SeedStats,
    TaskStats,
    aggregate,
)
from lossforge.evaluate.statuses import SCORED_STATUS
from lossforge.evaluate.training.combine import mean_metrics, summed_timings

Aggregate = Literal["mean", "min"]
# The reference every task is scaled by: the baseline trained for no step, scored like any candidate.
REFERENCE_STEPS = 0
# Below this the baseline did not move the task at all: normalizing would divide by rounding noise.
_FLAT_GAIN = 1e-12


@dataclass(frozen=True)
class TaskScale:
    """One task's normalization: the mean scores of the untrained reference and of the baseline on the run's seeds."""

    task: str
    reference: float
    baseline: float

    @classmethod
    def of(cls, task: str, reference_scores: Sequence[float], baseline_scores: Sequence[float]) -> TaskScale:
        return cls(task, statistics.mean(reference_scores), statistics.mean(baseline_scores))

    @property
    def gain(self) -> float:
        """How far the baseline moves the task from the reference (its normalized distance is 1)."""
        return self.baseline - self.reference

    def normalize(self, score: float) -> float:
        """``score`` as a multiple of the baseline's gain over the reference (the raw difference when it has none)."""
        gain = abs(self.gain)
        return (score - self.reference) / (gain if gain > _FLAT_GAIN else 1.0)


def _interval(values: Sequence[float]) -> tuple[float, ...] | None:
    ci = statistics.confidence_interval(values)
    return None if ci is None else tuple(ci)


def combine(normalized: Mapping[str, Mapping[int, float]], how: Aggregate) -> dict[int, float]:
    """Per seed, the ``mean`` or ``min`` of the tasks' normalized scores, on the seeds every task has."""
    common = set.intersection(*(set(scores) for scores in normalized.values())) if normalized else set()
    pick = min if how == "min" else statistics.mean
    return {seed: float(pick([scores[seed] for scores in normalized.values()])) for seed in sorted(common)}


def task_failure(runs: Mapping[str, Sequence[SeedRun]]) -> Outcome | None:
    """The first failing task's outcome (its reason naming the task, the timings of every run), or None when every
    run scored: a failure needs no scale."""
    for task, task_runs in runs.items():
        outcome = aggregate(task_runs)
        if outcome.status != SCORED_STATUS:
            reason = f"task {task}: {outcome.reason}" if outcome.reason else f"task {task}"
            return Outcome(outcome.status, None, outcome.metrics, reason, _timings(runs))
    return None


def _timings(runs: Mapping[str, Sequence[SeedRun]]) -> dict[str, Any]:
    return summed_timings((run.result for task_runs in runs.values() for run in task_runs), into={})


def _task_metrics(runs: Mapping[str, Sequence[SeedRun]], normalized: Mapping[str, float]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for task, task_runs in runs.items():
        metrics[task] = normalized[task]
        for name, value in mean_metrics([run.result for run in task_runs]).items():
            metrics[f"{task}.{name}"] = value
    return metrics


def aggregate_tasks(
    runs: Mapping[str, Sequence[SeedRun]],
    scales: Mapping[str, TaskScale],
    *,
    how: Aggregate = "mean",
    rank_by: RankBy = "mean",
    baseline: Baseline | None = None,
) -> Outcome:
    """One row's fields from its seed runs on every task (see the module docstring); a row that fails on any
    task takes that task's first failing status, with the task named in its reason."""
    failed = task_failure(runs)
    if failed is not None:
        return failed
    tasks: list[TaskStats] = []
    normalized: dict[str, dict[int, float]] = {}
    for task, task_runs in runs.items():
        raw = {run.seed: float(run.result.score) for run in task_runs}  # type: ignore[arg-type]
        normalized[task] = {seed: scales[task].normalize(score) for seed, score in raw.items()}
        values = list(normalized[task].values())
        scores = list(raw.values())
        tasks.append(
            TaskStats(
                task=task,
                seeds=tuple(raw),
                scores=tuple(scores),
                mean=statistics.mean(scores),
                ci=_interval(scores),
                normalized=tuple(values),
                normalized_mean=statistics.mean(values),
            )
        )
    combined = combine(normalized, how)
    per_seed = [SeedScore(seed, score) for seed, score in combined.items()]
    stats = SeedStats.of(list(combined), list(combined.values()), per_seed=per_seed)
    stats = replace(stats, tasks=tuple(tasks)).with_paired(baseline)
    metrics = _task_metrics(runs, {entry.task: entry.normalized_mean for entry in tasks})  # type: ignore[misc]
    return Outcome(SCORED_STATUS, stats.ranking_score(rank_by), metrics, None, _timings(runs), stats)


__all__ = ["REFERENCE_STEPS", "Aggregate", "TaskScale", "aggregate_tasks", "combine", "task_failure"]
