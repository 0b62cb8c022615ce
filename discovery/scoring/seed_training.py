"""Training one candidate across seeds: concurrently on an executor, resuming finished seeds (the search,
``train_on_seeds``), or one seed after another (``lossforge train --seeds N``, ``train_candidate_on_seeds``).
What the runs add up to is ``seed_stats.aggregate``'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from lossforge.discovery.executors import Executor
from lossforge.discovery.seeds import search_seeds
from lossforge.discovery.stats.seed_stats import SeedRun, SeedStats, aggregate
from lossforge.evaluate.statuses import SCORED_STATUS
from lossforge.evaluate.tasks.base import TaskError
from lossforge.evaluate.training.result import RunResult

if TYPE_CHECKING:
    from lossforge.evaluate.training.config import TrainConfig

# What trains one candidate once: source text and a TrainConfig in, a RunResult out (``train_candidate``).
TrainFn = Callable[[str, "TrainConfig"], RunResult]


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


@dataclass(frozen=True)
class SeedsResult:
    """One candidate trained on several seeds by ``train_candidate_on_seeds``: the aggregate (``score`` as the
    run's rows hold it, with its ``stats``), the failing seed's reason as ``error`` and its output's tail."""

    status: str
    score: float | None
    metrics: dict[str, float]
    timings: dict[str, Any]
    error: str | None
    stderr_tail: str | None
    stats: SeedStats | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "score": self.score,
            "metrics": dict(self.metrics),
            "timings": dict(self.timings),
            "error": self.error,
            "stderr_tail": self.stderr_tail,
            "stats": None if self.stats is None else self.stats.to_json(),
        }


def train_candidate_on_seeds(candidate: Any, config: Any, count: int, *, static_policy: bool = True) -> SeedsResult:
    """Train ``candidate`` (source text or a library ``Candidate``) with the ``TrainConfig`` ``config`` on its
    seed and the ``count - 1`` after it (``seeds.search_seeds``), one after another (``launcher.train_candidate``),
    and aggregate the runs (``seed_stats.aggregate``: the score is the mean)."""
    from lossforge.evaluate.training.launcher import train_candidate

    runs = [
        SeedRun(seed, train_candidate(candidate, replace(config, seed=seed), static_policy=static_policy))
        for seed in search_seeds(config.seed, count)
    ]
    outcome = aggregate(runs)
    first = next((r.result for r in runs if r.result.status != SCORED_STATUS), runs[0].result)
    return SeedsResult(
        status=outcome.status,
        score=outcome.score,
        metrics=outcome.metrics,
        timings=outcome.timings,
        error=outcome.reason if outcome.status != SCORED_STATUS else None,
        stderr_tail=first.stderr_tail,
        stats=outcome.stats,
    )


__all__ = ["SeedsResult", "TrainFn", "busy_seconds", "train_candidate_on_seeds", "train_on_seeds"]
