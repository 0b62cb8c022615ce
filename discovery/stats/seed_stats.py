"""A candidate's statistics over its search seeds (``SeedStats``, the archive row's ``stats``) and their
aggregation from its seed runs into one archive row (``aggregate``).

Every candidate of a run is trained on the same seeds (common random numbers), so ``aggregate`` can store,
beside the per-seed scores and their mean, standard error and 95% interval, the per-seed differences to the
baseline (``PairedStats``). The row's ``score`` is what rankings use: the mean, or its lower confidence bound
with ``search.rank_by: lcb``. With one seed the row holds exactly what a single training gives (status, score,
metrics, reason, timings), so single-seed runs are unchanged.

A candidate that is not ``ok`` on every seed takes the first failing seed's status (a loss that diverges on
one seed in five is unstable, not 80% good), with no score and no statistics.

The JSON of these types (``to_json``/``from_json``) is what the archive stores: ``n, seeds, scores, mean,
stderr, ci, paired{baseline, baseline_id, diffs, mean, ci, verdict}, rung, per_seed[{seed, score, metrics}]``
and, under successive halving, ``rungs[{rung, steps, status, seeds, scores, mean}]``; with several tasks,
``tasks[{task, seeds, scores, mean, ci, normalized, normalized_mean, paired}]`` (``stats.multi_task``). A key an
older archive lacks reads as its default (None, or nothing), as the readers of the untyped JSON took it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from lossforge.discovery.stats import statistics
from lossforge.evaluate.statuses import SCORED_STATUS
from lossforge.evaluate.training.combine import mean_metrics, numeric, summed_timings
from lossforge.evaluate.training.result import RunResult

RankBy = Literal["mean", "lcb"]


def _floats(values: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(values)


def _listed(values: Sequence[float] | None) -> list[float] | None:
    return None if values is None else list(values)


def _sorted_keys(value: Any) -> Any:
    """``value`` with the keys of every mapping in it sorted, as ``json.dumps(sort_keys=True)`` writes them."""
    if isinstance(value, dict):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value


@dataclass(frozen=True)
class PairedStats:
    """Per-seed differences to the baseline on the seeds both were scored on, their mean, 95% interval and
    verdict (``statistics.verdict``)."""

    baseline: str | None
    baseline_id: int | None
    diffs: tuple[float, ...]
    mean: float | None
    ci: tuple[float, ...] | None
    verdict: statistics.Verdict | None

    @classmethod
    def between(
        cls,
        seeds: Sequence[int],
        scores: Sequence[float],
        baseline_seeds: Sequence[int],
        baseline_scores: Sequence[float],
        *,
        baseline: str,
        baseline_id: int,
    ) -> PairedStats | None:
        """The paired comparison of ``scores`` with the baseline's; None when they share no seed."""
        theirs = dict(zip(baseline_seeds, baseline_scores))
        common = [(s, x) for s, x in zip(seeds, scores) if s in theirs]
        if not common:
            return None
        diffs = [float(x - theirs[s]) for s, x in common]
        ci = statistics.confidence_interval(diffs)
        return cls(
            baseline, int(baseline_id), tuple(diffs), statistics.mean(diffs), _floats(ci), statistics.verdict(ci)
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PairedStats:
        return cls(
            baseline=data.get("baseline"),
            baseline_id=data.get("baseline_id"),
            diffs=tuple(data.get("diffs") or ()),
            mean=data.get("mean"),
            ci=_floats(data.get("ci")),
            verdict=data.get("verdict"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "baseline_id": self.baseline_id,
            "diffs": list(self.diffs),
            "mean": self.mean,
            "ci": _listed(self.ci),
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class SeedScore:
    """One seed's score and numeric metrics."""

    seed: int
    score: float | None
    metrics: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SeedScore:
        return cls(seed=data.get("seed"), score=data.get("score"), metrics=dict(data.get("metrics") or {}))  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "score": self.score, "metrics": dict(self.metrics)}


@dataclass(frozen=True)
class RungResult:
    """What one rung of successive halving gave (``scoring.fidelity``): its steps, status, seeds and scores."""

    rung: int
    steps: int | None
    status: str | None
    seeds: tuple[int, ...]
    scores: tuple[float, ...]
    mean: float | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RungResult:
        return cls(
            rung=data.get("rung"),  # type: ignore[arg-type]
            steps=data.get("steps"),
            status=data.get("status"),
            seeds=tuple(data.get("seeds") or ()),
            scores=tuple(data.get("scores") or ()),
            mean=data.get("mean"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "rung": self.rung,
            "steps": self.steps,
            "status": self.status,
            "seeds": list(self.seeds),
            "scores": list(self.scores),
            "mean": self.mean,
        }


@dataclass(frozen=True)
class TaskStats:
    """One task's part of a multi-task row (``stats.multi_task``): its raw per-seed scores with their mean and
    interval, the same scores normalized by the run's ``TaskScale`` of that task, and the paired raw differences
    to the baseline on that task."""

    task: str
    seeds: tuple[int, ...]
    scores: tuple[float, ...]
    mean: float | None
    ci: tuple[float, ...] | None
    normalized: tuple[float, ...]
    normalized_mean: float | None
    paired: PairedStats | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskStats:
        paired = data.get("paired")
        return cls(
            task=str(data.get("task")),
            seeds=tuple(data.get("seeds") or ()),
            scores=tuple(data.get("scores") or ()),
            mean=data.get("mean"),
            ci=_floats(data.get("ci")),
            normalized=tuple(data.get("normalized") or ()),
            normalized_mean=data.get("normalized_mean"),
            paired=PairedStats.from_json(paired) if paired else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "seeds": list(self.seeds),
            "scores": list(self.scores),
            "mean": self.mean,
            "ci": _listed(self.ci),
            "normalized": list(self.normalized),
            "normalized_mean": self.normalized_mean,
            "paired": None if self.paired is None else self.paired.to_json(),
        }

    def with_paired(self, baseline: Baseline | None) -> TaskStats:
        """These statistics paired with the baseline's raw scores on the same task (None: no comparison)."""
        theirs = None if baseline is None else baseline.per_task.get(self.task)
        if baseline is None or theirs is None:
            return replace(self, paired=None)
        paired = PairedStats.between(
            self.seeds, self.scores, theirs[0], theirs[1], baseline=baseline.name, baseline_id=baseline.id
        )
        return replace(self, paired=paired)


@dataclass(frozen=True)
class SeedStats:
    """The stored statistics of a candidate's per-seed scores (see the module docstring). ``rung`` is the rung
    of successive halving they come from (None: no halving); ``rungs`` is None unless the run halves."""

    n: int
    seeds: tuple[int, ...]
    scores: tuple[float, ...]
    mean: float | None
    stderr: float | None
    ci: tuple[float, ...] | None
    paired: PairedStats | None = None
    rung: int | None = None
    per_seed: tuple[SeedScore, ...] = ()
    rungs: tuple[RungResult, ...] | None = None
    tasks: tuple[TaskStats, ...] | None = None  # None unless the run trains on several tasks

    @classmethod
    def of(
        cls,
        seeds: Sequence[int],
        scores: Sequence[float],
        *,
        rung: int | None = None,
        per_seed: Sequence[SeedScore] = (),
    ) -> SeedStats:
        """The mean, standard error and 95% interval of ``scores`` (one per seed of ``seeds``); no comparison."""
        return cls(
            n=len(scores),
            seeds=tuple(int(s) for s in seeds),
            scores=tuple(float(x) for x in scores),
            mean=statistics.mean(scores),
            stderr=statistics.stderr(scores),
            ci=_floats(statistics.confidence_interval(scores)),
            rung=rung,
            per_seed=tuple(per_seed),
        )

    def with_paired(self, baseline: Baseline | None) -> SeedStats:
        """These statistics with their paired comparison (re)computed against ``baseline`` (None: no comparison)."""
        tasks = None if self.tasks is None else tuple(entry.with_paired(baseline) for entry in self.tasks)
        if baseline is None:
            return replace(self, paired=None, tasks=tasks)
        paired = PairedStats.between(
            self.seeds, self.scores, baseline.seeds, baseline.scores, baseline=baseline.name, baseline_id=baseline.id
        )
        return replace(self, paired=paired, tasks=tasks)

    def ranking_score(self, rank_by: RankBy) -> float:
        """The value rankings use: the mean, or the lower 95% confidence bound (the mean when n = 1)."""
        if rank_by == "lcb" and self.ci:
            return float(self.ci[0])
        return float(self.mean)  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SeedStats:
        """The statistics of an archive row's ``stats`` JSON, of this version or an older one."""
        paired, rungs, tasks = data.get("paired"), data.get("rungs"), data.get("tasks")
        return cls(
            n=int(data.get("n") or 0),
            seeds=tuple(data.get("seeds") or ()),
            scores=tuple(data.get("scores") or ()),
            mean=data.get("mean"),
            stderr=data.get("stderr"),
            ci=_floats(data.get("ci")),
            paired=PairedStats.from_json(paired) if paired else None,
            rung=data.get("rung"),
            per_seed=tuple(SeedScore.from_json(entry) for entry in data.get("per_seed") or ()),
            rungs=None if rungs is None else tuple(RungResult.from_json(entry) for entry in rungs),
            tasks=None if tasks is None else tuple(TaskStats.from_json(entry) for entry in tasks),
        )

    def to_json(self, *, sort_keys: bool = False) -> dict[str, Any]:
        """The JSON the archive stores (``rungs`` only under halving); ``sort_keys``: every mapping's keys in
        order, as the archive writes them and as review commands print a stored row."""
        data: dict[str, Any] = {
            "n": self.n,
            "seeds": list(self.seeds),
            "scores": list(self.scores),
            "mean": self.mean,
            "stderr": self.stderr,
            "ci": _listed(self.ci),
            "paired": None if self.paired is None else self.paired.to_json(),
            "rung": self.rung,
            "per_seed": [entry.to_json() for entry in self.per_seed],
        }
        if self.rungs is not None:
            data["rungs"] = [entry.to_json() for entry in self.rungs]
        if self.tasks is not None:
            data["tasks"] = [entry.to_json() for entry in self.tasks]
        return _sorted_keys(data) if sort_keys else data


@dataclass(frozen=True)
class Baseline:
    """The baseline's per-seed scores, for paired differences; ``per_task``: its raw ``(seeds, scores)`` on each
    task of a multi-task run."""

    name: str
    id: int
    seeds: tuple[int, ...]
    scores: tuple[float, ...]
    per_task: Mapping[str, tuple[tuple[int, ...], tuple[float, ...]]] = field(default_factory=dict)

    @classmethod
    def from_stats(cls, name: str, cid: int, stats: SeedStats | None) -> Baseline | None:
        if stats is None or not stats.scores:
            return None
        per_task = {entry.task: (entry.seeds, entry.scores) for entry in stats.tasks or ()}
        return cls(name, cid, stats.seeds, stats.scores, per_task)


@dataclass(frozen=True)
class SeedRun:
    """One training of a candidate on one seed; ``started`` is None for a result read from the seed cache."""

    seed: int
    result: RunResult
    started: float | None = None
    ended: float | None = None

    @classmethod
    def stored(cls, seed: int, record: Mapping[str, Any]) -> SeedRun:
        """The run an archive ``seed_runs`` record holds (``{result, started, ended}``)."""
        return cls(seed, RunResult.from_dict(record["result"]), record["started"], record["ended"])


@dataclass
class Outcome:
    """The archive fields of an aggregated candidate."""

    status: str
    score: float | None
    metrics: dict[str, float]
    reason: str | None
    timings: dict[str, Any] = field(default_factory=dict)
    stats: SeedStats | None = None


def _timings(runs: Sequence[SeedRun]) -> dict[str, Any]:
    timings: dict[str, Any] = {}
    spans = [(r.started, r.ended) for r in runs if r.started is not None and r.ended is not None]
    if spans:
        timings.update(train_start=min(s for s, _ in spans), train_end=max(e for _, e in spans))
    if len(spans) < len(runs):
        timings["cached"] = True
    return summed_timings((run.result for run in runs), into=timings)


def aggregate(
    runs: Sequence[SeedRun],
    *,
    rank_by: RankBy = "mean",
    baseline: Baseline | None = None,
    rung: int | None = None,
) -> Outcome:
    """One row's fields from its seed runs (see the module docstring)."""
    timings = _timings(runs)
    failed = next((r for r in runs if r.result.status != SCORED_STATUS or r.result.score is None), None)
    if failed is not None:
        result = failed.result
        reason = result.error or (result.stderr_tail if result.status != SCORED_STATUS else None)
        if len(runs) > 1 and reason:
            reason = f"seed {failed.seed}: {reason}"
        return Outcome(
            result.status, result.score if len(runs) == 1 else None, numeric(result.metrics), reason, timings
        )
    per_seed = [SeedScore(r.seed, r.result.score, numeric(r.result.metrics)) for r in runs]
    scores = [float(r.result.score) for r in runs]  # type: ignore[arg-type]
    stats = SeedStats.of([r.seed for r in runs], scores, rung=rung, per_seed=per_seed).with_paired(baseline)
    if len(runs) == 1:
        metrics = numeric(runs[0].result.metrics)
        score = runs[0].result.score
    else:
        metrics = mean_metrics([r.result for r in runs])
        score = stats.ranking_score(rank_by)
    return Outcome(SCORED_STATUS, score, metrics, None, timings, stats)


__all__ = [
    "Baseline",
    "Outcome",
    "PairedStats",
    "RankBy",
    "RungResult",
    "SeedRun",
    "SeedScore",
    "SeedStats",
    "TaskStats",
    "aggregate",
]
