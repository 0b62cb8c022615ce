"""A candidate's score over several seeds: train it once per search seed, then aggregate into one archive row.

Every candidate of a run is trained on the same seeds (common random numbers), so ``aggregate`` can store,
beside the per-seed scores and their mean, standard error and 95% interval (``statistics.summarize``), the
per-seed differences to the baseline (``statistics.paired``). The row's ``score`` is what rankings use: the
mean, or its lower confidence bound with ``search.rank_by: lcb``. With one seed the row holds exactly what a
single training gives (status, score, metrics, reason, timings), so single-seed runs are unchanged.

A candidate that is not ``ok`` on every seed takes the first failing seed's status (a loss that diverges on
one seed in five is unstable, not 80% good), with no score and no statistics.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from lossforge.discovery.executors import Executor
from lossforge.discovery.scoring import statistics
from lossforge.evaluate.tasks.base import TaskError
from lossforge.evaluate.training.result import RunResult

TrainFn = Callable[[str, Any], RunResult]


@dataclass(frozen=True)
class SeedRun:
    """One training of a candidate on one seed; ``started`` is None for a result read from the seed cache."""

    seed: int
    result: RunResult
    started: float | None = None
    ended: float | None = None


@dataclass(frozen=True)
class Baseline:
    """The baseline's per-seed scores, for paired differences."""

    name: str
    id: int
    seeds: tuple[int, ...]
    scores: tuple[float, ...]

    @classmethod
    def from_stats(cls, name: str, cid: int, stats: Mapping[str, Any] | None) -> Baseline | None:
        if not stats or not stats.get("scores"):
            return None
        return cls(name, cid, tuple(stats["seeds"]), tuple(stats["scores"]))


@dataclass
class Outcome:
    """The archive fields of an aggregated candidate."""

    status: str
    score: float | None
    metrics: dict[str, float]
    reason: str | None
    timings: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] | None = None


def train_on_seeds(
    executor: Executor,
    train: TrainFn,
    code: str,
    train_config: Any,
    seeds: Sequence[int],
    *,
    earlier: Callable[[int], SeedRun | None] | None = None,
    store: Callable[[SeedRun], None] | None = None,
) -> list[SeedRun]:
    """Train ``code`` on every seed (concurrently, as the executor allows) but those ``earlier`` has a run for (a
    resumed candidate's finished seeds, the seed cache); ``store`` is given each new run as it finishes."""
    runs: dict[int, SeedRun] = {}
    pending: dict[int, tuple[float, Future[RunResult]]] = {}
    for seed in seeds:
        hit = earlier(seed) if earlier is not None else None
        if hit is not None:
            runs[seed] = hit
        else:
            pending[seed] = (time.time(), executor.submit(train, code, replace(train_config, seed=seed)))
    for seed, (started, future) in pending.items():
        try:
            result = future.result()
        except TaskError:
            raise  # bad task input: no candidate could be scored, the run must stop with the message
        except Exception as exc:  # noqa: BLE001 - a dead worker is this candidate's failure, recorded
            result = RunResult(status="failed", error=f"{type(exc).__name__}: {exc}")
        runs[seed] = SeedRun(seed, result, started, time.time())
        if store is not None:
            store(runs[seed])
    return [runs[seed] for seed in seeds]


def busy_seconds(spans: Iterable[tuple[float, float]]) -> float:
    """Wall seconds during which at least one of the ``(start, end)`` spans ran (concurrent ones count once)."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(spans):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def _numeric(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: v for k, v in values.items() if isinstance(v, int | float)}


def _timings(runs: Sequence[SeedRun]) -> dict[str, Any]:
    timings: dict[str, Any] = {}
    spans = [(r.started, r.ended) for r in runs if r.started is not None and r.ended is not None]
    if spans:
        timings.update(train_start=min(s for s, _ in spans), train_end=max(e for _, e in spans))
    if len(spans) < len(runs):
        timings["cached"] = True
    for run in runs:
        for key, seconds in _numeric(run.result.timings).items():
            timings[key] = timings.get(key, 0.0) + seconds
    return timings


def aggregate(
    runs: Sequence[SeedRun],
    *,
    rank_by: statistics.RankBy = "mean",
    baseline: Baseline | None = None,
    rung: int | None = None,
) -> Outcome:
    """One row's fields from its seed runs (see the module docstring)."""
    timings = _timings(runs)
    failed = next((r for r in runs if r.result.status != "ok" or r.result.score is None), None)
    if failed is not None:
        result = failed.result
        reason = result.error or (result.stderr_tail if result.status != "ok" else None)
        if len(runs) > 1 and reason:
            reason = f"seed {failed.seed}: {reason}"
        return Outcome(
            result.status, result.score if len(runs) == 1 else None, _numeric(result.metrics), reason, timings
        )
    seeds = [r.seed for r in runs]
    scores = [float(r.result.score) for r in runs]  # type: ignore[arg-type]
    stats = with_paired(statistics.summarize(seeds, scores), baseline)
    stats["rung"] = rung
    stats["per_seed"] = [{"seed": r.seed, "score": r.result.score, "metrics": _numeric(r.result.metrics)} for r in runs]
    if len(runs) == 1:
        metrics = _numeric(runs[0].result.metrics)
        score = runs[0].result.score
    else:
        shared = set.intersection(*(set(_numeric(r.result.metrics)) for r in runs))
        metrics = {k: statistics.mean([float(r.result.metrics[k]) for r in runs]) for k in sorted(shared)}
        score = statistics.ranking_score(stats, rank_by)
    return Outcome("ok", score, metrics, None, timings, stats)


def with_paired(stats: Mapping[str, Any], baseline: Baseline | None) -> dict[str, Any]:
    """``stats`` with its paired comparison (re)computed against ``baseline`` (None: no comparison)."""
    out = dict(stats)
    out["paired"] = (
        None
        if baseline is None
        else statistics.paired(
            stats["seeds"],
            stats["scores"],
            baseline.seeds,
            baseline.scores,
            baseline=baseline.name,
            baseline_id=baseline.id,
        )
    )
    return out


def run_train_config(config: Any, *, task: str | None = None, options: Mapping[str, Any] | None = None) -> Any:
    """The ``TrainConfig`` a candidate of the run (a ``RunConfig``) is trained with; ``task``/``options`` replace
    the run's (confirmation on another task: that task's own options, the run's budget)."""
    from lossforge.discovery.executors import planned_concurrency
    from lossforge.evaluate.training.config import TrainConfig

    t = config.training
    # Concurrent trainings share the cores (on GPUs too, for the data side): oversubscribed OpenMP threads
    # spin-wait and crawl.
    execution = config.execution
    threads = max(1, (os.cpu_count() or 1) // planned_concurrency(execution.workers, execution.workers_per_gpu))
    return TrainConfig(
        task=task or t.task,
        options=dict(t.task_options if options is None else options),
        beta=t.beta,
        steps=t.steps,
        seed=config.seed,
        eval_samples=t.eval_samples,
        threads=threads,
        **({"timeout": t.time_limit_s} if t.time_limit_s else {}),
    )


def brief_stats(stats: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``stats`` without the per-seed metrics, as summaries show them."""
    return None if stats is None else {k: v for k, v in stats.items() if k != "per_seed"}


def with_interval(row: Any) -> dict[str, Any]:
    """An archive row as a mapping for the proposer's history, its metrics carrying the multi-seed evidence:
    ``score_ci_low``/``score_ci_high`` (95% interval of the mean) and ``vs_<baseline>`` (paired mean difference)
    with its interval, so a proposer can tell what is noise; ``rung<r>_score`` for the low-fidelity rungs of
    successive halving. Rows of single-seed runs without halving are shown as before."""
    data = {
        name: getattr(row, name)
        for name in ("id", "name", "status", "code", "score", "profile", "reason", "thought", "generation")
    }
    metrics = dict(row.metrics or {})
    stats = row.stats or {}
    if stats.get("ci"):
        metrics.update(score_mean=stats["mean"], score_ci_low=stats["ci"][0], score_ci_high=stats["ci"][1])
    paired = stats.get("paired") or {}
    if paired.get("ci") and paired.get("baseline_id") != row.id:
        name = paired["baseline"]
        metrics.update(
            {f"vs_{name}": paired["mean"], f"vs_{name}_ci_low": paired["ci"][0], f"vs_{name}_ci_high": paired["ci"][1]}
        )
    for entry in stats.get("rungs", [])[:-1] if row.score is not None else stats.get("rungs", []):
        metrics[f"rung{entry['rung']}_score"] = entry["mean"]  # successive halving: the low-fidelity results
    data["metrics"] = metrics
    return data


__all__ = [
    "Baseline",
    "Outcome",
    "SeedRun",
    "aggregate",
    "brief_stats",
    "busy_seconds",
    "run_train_config",
    "train_on_seeds",
    "with_interval",
    "with_paired",
]
