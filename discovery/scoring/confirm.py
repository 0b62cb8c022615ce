"""Confirmation of the winners: retrain them, the baseline and the best library loss on held-out seeds.

A search over tens of candidates crowns noise when it ranks single noisy scores (the winner's curse), and its
own seeds are spent: the best of many candidates on them is biased upwards. So the top-k candidates, the
baseline (``search.baseline``) and the best library loss of generation 0 are retrained on seeds the search
never used (``seeds.heldout_seeds``: disjoint from the search seeds by construction), on the run's task and
optionally on others (transfer) and at other betas (robustness). Every training is one row of the archive's
``confirmations`` table, recorded as it finishes, so a killed confirmation resumes without retraining a
finished seed. The aggregate (per candidate x task x beta: per-seed scores, mean, 95% interval, paired
difference to the baseline and to the best library loss with their intervals and verdicts) and the run's one
sentence go into the archive's meta ``confirmation``.

Used at the end of ``run_discovery`` (``search.confirm``) and by ``lossforge confirm``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from lossforge.discovery.config import RunConfig
from lossforge.discovery.executors import Executor
from lossforge.discovery.scoring.confirm_groups import compare, group_results, group_sentence
from lossforge.discovery.scoring.seed_training import TrainFn, busy_seconds
from lossforge.discovery.scoring.train_config import run_train_config
from lossforge.discovery.search.ranking import best_first
from lossforge.discovery.seeds import heldout_seeds
from lossforge.discovery.stats import statistics
from lossforge.discovery.stats.multi_task import REFERENCE_STEPS, Aggregate
from lossforge.discovery.storage.archive import Archive, CandidateRow
from lossforge.evaluate.statuses import SCORED_STATUS
from lossforge.evaluate.tasks.base import TaskError
from lossforge.evaluate.training.result import RunResult

Role = Literal["candidate", "baseline", "best_library", "reference"]
CONFIRM_OFF = "not confirmed: search.confirm.top_k is 0; `lossforge confirm RUN` retrains the winners on held-out seeds"


class ConfirmError(ValueError):
    """A confirmation that cannot be run as asked (unknown id, untrained candidate, no baseline): one message."""


@dataclass(frozen=True)
class Target:
    """One archived candidate to retrain, with its role in the comparison; the ``reference`` (id None) is the
    baseline's code trained for no step, the untrained policy a multi-task confirmation normalizes by."""

    id: int | None
    name: str
    role: Role
    code: str


@dataclass(frozen=True)
class ConfirmPlan:
    """What to retrain: ``targets`` x ``tasks`` x ``betas`` x ``seeds``; ``configs`` holds each task's TrainConfig."""

    targets: tuple[Target, ...]
    tasks: tuple[str, ...]
    betas: tuple[float, ...]
    seeds: tuple[int, ...]
    baseline: str
    configs: dict[str, Any] = field(default_factory=dict)
    best_library: str | None = None  # the best library loss of generation 0 (a target, or the baseline itself)
    search_tasks: tuple[str, ...] = ()  # the run's own tasks; the others of ``tasks`` are held out
    aggregate: Aggregate = "mean"

    @property
    def grouped(self) -> bool:
        """Whether the verdict is taken on normalized task groups (``confirm_groups``): several tasks."""
        return any(target.role == "reference" for target in self.targets)


def plan_size(plan: ConfirmPlan) -> int:
    """How many trainings the plan holds (those already archived included)."""
    return len(plan.targets) * len(plan.tasks) * len(plan.betas) * len(plan.seeds)


def _target(row: CandidateRow, role: Role) -> Target:
    return Target(row.id, row.name or f"candidate_{row.id}", role, row.code or "")


def select_targets(archive: Archive, *, top_k: int, ids: Sequence[int] = (), baseline: str) -> tuple[Target, ...]:
    """The ``top_k`` best discovered candidates (or exactly ``ids``), the baseline and the best library loss."""
    library_rows = archive.candidates(generation=0)
    base = next((row for row in library_rows if row.name == baseline and row.status == SCORED_STATUS), None)
    if base is None:
        raise ConfirmError(f"the run has no trained baseline {baseline!r} in generation 0 (search.baseline)")
    if ids:
        rows = []
        for cid in ids:
            row = archive.get(cid)
            if row is None:
                raise ConfirmError(f"--ids: the run has no candidate {cid}")
            if row.status != SCORED_STATUS or not row.code:
                raise ConfirmError(
                    f"--ids: candidate {cid} has status {row.status!r}; only trained (ok) ones can be confirmed"
                )
            rows.append(row)
    else:
        rows = best_first(r for r in archive.candidates(status=SCORED_STATUS) if r.generation >= 1)[:top_k]
    targets = [_target(row, "candidate") for row in rows if row.id != base.id]
    library = best_first(library_rows)
    if library and library[0].id != base.id and all(library[0].id != t.id for t in targets):
        targets.append(_target(library[0], "best_library"))
    targets.append(_target(base, "baseline"))
    return tuple(targets)


def plan_from_config(
    config: RunConfig,
    archive: Archive,
    *,
    top_k: int | None = None,
    ids: Sequence[int] = (),
    seeds: int | None = None,
    tasks: Sequence[str] | None = None,
    betas: Sequence[float] | None = None,
    options: dict[str, Any] | None = None,
) -> ConfirmPlan:
    """The plan of a run's confirmation: ``search.confirm`` with any of its settings replaced by the arguments.

    ``tasks``: the tasks to confirm on (default: the run's, then ``search.confirm.tasks``); ``options``: task
    options for the tasks other than the run's (the run's tasks keep the run's options). With several tasks the
    untrained reference is a target too (``Target``), and the verdict is ``confirm_groups``'.
    """
    settings = config.search.confirm
    run_tasks = config.training.run_tasks
    chosen_tasks = tuple(dict.fromkeys(tasks if tasks else (*run_tasks, *settings.tasks)))
    chosen_betas = tuple(betas if betas else settings.betas or (config.training.beta,))
    targets = select_targets(
        archive, top_k=settings.top_k if top_k is None else top_k, ids=ids, baseline=config.search.baseline
    )
    configs = {
        task: run_train_config(config, task=task, options=None if task in run_tasks else dict(options or {}))
        for task in chosen_tasks
    }
    if len(chosen_tasks) >= 2:
        base = next(target for target in targets if target.role == "baseline")
        targets = (*targets, Target(None, "reference", "reference", base.code))
    library = best_first(archive.candidates(generation=0))
    return ConfirmPlan(
        targets=targets,
        search_tasks=tuple(task for task in run_tasks if task in chosen_tasks),
        aggregate=config.search.aggregate,
        tasks=chosen_tasks,
        betas=chosen_betas,
        seeds=heldout_seeds(config.seed, settings.seeds if seeds is None else seeds),
        baseline=config.search.baseline,
        configs=configs,
        best_library=library[0].name if library else None,
    )


def _timed(train: TrainFn, code: str, config: Any) -> tuple[RunResult, float, float]:
    started = time.time()
    result = train(code, config)
    return result, started, time.time()


def run_trainings(
    archive: Archive,
    plan: ConfirmPlan,
    *,
    executor: Executor,
    train: TrainFn,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[int, float]:
    """Train every (target, task, beta, seed) of the plan that the archive has no result for.

    ``on_done`` gets each finished training, in order: ``candidate_id``, ``name``, ``task``, ``beta``, ``seed``,
    ``status``, ``score``, ``done`` of ``total`` (this call's trainings), ``multi`` (several tasks or betas) and
    ``left_s`` (the time left at the pace so far; None after the last). Returns how many were trained and the
    wall seconds during which at least one of them ran.
    """
    pending: list[tuple[Target, str, float, int, Future[tuple[RunResult, float, float]]]] = []
    spans: list[tuple[float, float]] = []
    for task in plan.tasks:
        for beta in plan.betas:
            for target in plan.targets:
                for seed in plan.seeds:
                    if archive.confirmation(target.id, task, beta, seed) is None:
                        config = replace(plan.configs[task], beta=beta, seed=seed)
                        if target.role == "reference":
                            config = replace(config, steps=REFERENCE_STEPS)
                        pending.append((target, task, beta, seed, executor.submit(_timed, train, target.code, config)))
    error: TaskError | None = None
    began = time.monotonic()
    for done, (target, task, beta, seed, future) in enumerate(pending, start=1):
        try:
            result, started, ended = future.result()
            spans.append((started, ended))
        except TaskError as exc:  # bad task input: nothing can be confirmed on that task; stop after the others
            error = error or exc
            continue
        except Exception as exc:  # noqa: BLE001 - a dead worker is this training's failure, recorded
            result = RunResult(status="failed", error=f"{type(exc).__name__}: {exc}")
        metrics = {k: v for k, v in result.metrics.items() if isinstance(v, int | float)}
        archive.record_confirmation(
            candidate_id=target.id,
            task=task,
            beta=beta,
            seed=seed,
            status=result.status,
            score=result.score,
            metrics=metrics,
            error=result.error,
        )
        if on_done is not None:
            left = len(pending) - done
            on_done(
                {
                    "candidate_id": target.id,
                    "name": target.name,
                    "task": task,
                    "beta": beta,
                    "seed": seed,
                    "status": result.status,
                    "score": result.score,
                    "done": done,
                    "total": len(pending),
                    "multi": len(plan.tasks) * len(plan.betas) > 1,
                    "left_s": (time.monotonic() - began) / done * left if left else None,
                }
            )
    if error is not None:
        raise error
    return len(pending), busy_seconds(spans)


def _scores(
    archive: Archive, target: Target, task: str, beta: float, seeds: Sequence[int]
) -> tuple[list[int], list[float], list[str]]:
    ok_seeds, scores, failures = [], [], []
    for seed in seeds:
        row = archive.confirmation(target.id, task, beta, seed)
        if row is None:
            failures.append(f"seed {seed}: not run")
        elif row["status"] != SCORED_STATUS or row["score"] is None:
            failures.append(f"seed {seed}: {row['status']}" + (f" ({row['error']})" if row.get("error") else ""))
        else:
            ok_seeds.append(seed)
            scores.append(float(row["score"]))
    return ok_seeds, scores, failures


def results(archive: Archive, plan: ConfirmPlan) -> list[dict[str, Any]]:
    """One object per target x task x beta: per-seed scores, mean, interval, paired differences (see module doc)."""
    out: list[dict[str, Any]] = []
    for task in plan.tasks:
        for beta in plan.betas:
            group = []
            for target in plan.targets:
                seeds, scores, failures = _scores(archive, target, task, beta, plan.seeds)
                entry: dict[str, Any] = {
                    "candidate_id": target.id,
                    "name": target.name,
                    "role": target.role,
                    "task": task,
                    "beta": beta,
                    "seeds": seeds,
                    "scores": scores,
                    "mean": statistics.mean(scores) if scores else None,
                    "stderr": statistics.stderr(scores),
                    "ci": statistics.confidence_interval(scores),
                    "failures": failures,
                }
                group.append(entry)
            base = next(e for e in group if e["role"] == "baseline")
            library = next((e for e in group if e["role"] == "best_library"), base)
            for entry in group:
                entry["paired"] = None if entry is base else compare(entry, base)
                entry["vs_best_library"] = None if entry["role"] != "candidate" else compare(entry, library)
            out.extend(group)
    return out


def _interval(comparison: dict[str, Any]) -> str:
    ci = comparison["ci"]
    if not ci:
        return statistics.signed(comparison["mean"])
    return f"{statistics.signed(comparison['mean'])} [{statistics.signed(ci[0])}, {statistics.signed(ci[1])}]"


def _named(entry: dict[str, Any]) -> str:
    return f"#{entry['candidate_id']} {entry['name']}"


def _unpaired(entry: dict[str, Any]) -> str:
    failed = len(entry["failures"])
    return f"{_named(entry)} (no paired result{f'; {failed} training(s) failed' if failed else ''})"


def _versus(entry: dict[str, Any]) -> str:
    """``#5 evo_g1_i0 -0.021 [-0.090, +0.048] inconclusive``: one confirmed candidate against the baseline."""
    paired = entry["paired"]
    return f"{_named(entry)} {_interval(paired)} {paired['verdict']}" if paired else _unpaired(entry)


def _library(entry: dict[str, Any] | None, plan: ConfirmPlan) -> str:
    """How the best library loss did against the baseline on the same held-out seeds."""
    if entry is None:
        return f"{plan.baseline} was also the best library loss" if plan.best_library == plan.baseline else ""
    paired, named = entry["paired"], f"the best library loss {_named(entry)}"
    if not paired:
        return f"the best library loss {_unpaired(entry)}"
    if paired["verdict"] == "better":
        return f"{named} beats {plan.baseline} by {_interval(paired)}"
    if paired["verdict"] == "worse":
        return f"{named} does worse than {plan.baseline}: {_interval(paired)}"
    return f"{named} is within the noise of {plan.baseline}: {_interval(paired)}"


def sentence(entries: Sequence[dict[str, Any]], plan: ConfirmPlan) -> tuple[str, dict[str, Any] | None]:
    """The run's verdict on its own task at its first beta, and the winner's result (None when nothing won).

    It names every confirmed candidate with its paired difference to the baseline, and says how the best library
    loss did against the baseline: a discovery that beats DPO matters less where the library already does.
    """
    task, beta = plan.tasks[0], plan.betas[0]
    group = [e for e in entries if e["task"] == task and e["beta"] == beta]
    candidates = [e for e in group if e["role"] == "candidate"]
    better = [e for e in candidates if e["paired"] and e["paired"]["verdict"] == "better"]
    winner = max(better, key=lambda e: (e["paired"]["mean"], -e["candidate_id"])) if better else None
    seeds = f"{len(plan.seeds)} held-out seeds"
    if winner is not None:
        text = (
            f"{_named(winner)} beats {plan.baseline} on {task} by {_interval(winner['paired'])} over "
            f"{len(winner['paired']['diffs'])} held-out seeds"
        )
        others = [e for e in candidates if e is not winner]
        text += f" (also confirmed: {', '.join(map(_versus, others))})" if others else ""
    elif candidates:
        text = (
            f"no candidate beats {plan.baseline} outside the noise on {task} over {seeds} "
            f"(confirmed: {', '.join(map(_versus, candidates))})"
        )
    else:
        text = f"no candidate beats {plan.baseline} outside the noise on {task}: no discovered candidate was trained"
    library = next((e for e in group if e["role"] == "best_library"), None)
    parts = [text, _library(library, plan)]
    against = winner.get("vs_best_library") if winner is not None else None
    if winner is not None and against and against["baseline"] != plan.baseline:
        parts.append(f"#{winner['candidate_id']} against it: {_interval(against)}, {against['verdict']}")
    return "; ".join(part for part in parts if part), winner


def confirm(
    archive: Archive,
    plan: ConfirmPlan,
    *,
    executor: Executor,
    train: TrainFn,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the plan's trainings, aggregate, store meta ``confirmation`` and return it.

    The caller holds the run's lock (``run_discovery`` does; ``lossforge confirm`` takes it).
    """
    started = time.monotonic()
    trained, busy = run_trainings(archive, plan, executor=executor, train=train, on_done=on_done)
    entries = results(archive, plan)
    groups: list[dict[str, Any]] = []
    if plan.grouped:
        groups = group_results(entries, plan.search_tasks, plan.tasks, plan.betas[0], plan.aggregate)
    text, winner = group_sentence(groups, plan.baseline, len(plan.seeds)) if groups else sentence(entries, plan)
    report = {
        "sentence": text,
        "winner": winner,
        "results": entries,
        "groups": groups,
        "seeds": list(plan.seeds),
        "tasks": list(plan.tasks),
        "betas": list(plan.betas),
        "baseline": plan.baseline,
        "trained": trained,
        "train_busy_s": round(busy, 3),
        "wall_s": round(time.monotonic() - started, 3),
    }
    archive.set_meta("confirmation", report)
    return report


__all__ = [
    "CONFIRM_OFF",
    "ConfirmError",
    "ConfirmPlan",
    "Target",
    "confirm",
    "plan_from_config",
    "plan_size",
    "results",
    "run_trainings",
    "select_targets",
    "sentence",
]
