"""The discovery loop: generation 0 scores the library seeds, then G generations of P proposals each.

``run_discovery(config, run_dir, resume=...)`` is the library entry point (``lossforge run`` is a thin layer
on it). A run owns its directory: ``RunLock`` for its whole life, the SQLite archive (every proposal, every
LLM call, the resolved config), candidate files. Generation g is shown the bounded history of generations
< g only, and each attempt's seed is ``derive_seed(seed, g, index, round)``; together with the archive's
per-attempt rows this makes a resumed run propose exactly what an uninterrupted one would have, while
finished rows are never redone and archived LLM replies never re-requested.
"""

from __future__ import annotations

import functools
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lossforge.discovery.archive import Archive, RunLock, RunLockError, SeedCache
from lossforge.discovery.config import ConfigError, RunConfig, build_config, default_out
from lossforge.discovery.executors import Executor, ExecutorError, make_executor, visible_gpus
from lossforge.discovery.pipeline import CheckFn, Pipeline, SeedSpec, StopSignal, TrainFn
from lossforge.discovery.progress import Progress, RichProgress
from lossforge.discovery.prompting import PromptRenderer, PromptSettings, history_from_rows, select_history, task_brief
from lossforge.discovery.proposals import HistoryEntry, Proposer
from lossforge.evaluate.tasks.base import TaskError

# Config groups that decide what is proposed and how it is scored: a resume must not change them, or the
# resumed run would not be the run it continues. Execution and budget may change (more workers, more money).
_FIXED_ON_RESUME = ("proposer", "search", "training", "seed")
_RESUMABLE = ("search.generations", "execution", "budget")


class LoopError(ValueError):
    """A run that cannot start as asked (bad directory, live lock, changed config, bad endpoint): exit 2."""


@dataclass
class RunSummary:
    """What a run did. ``status``: ``finished`` (all generations) or ``budget`` (stopped by an LLM cap)."""

    run_dir: str
    status: Literal["finished", "budget"]
    stop_reason: str | None
    generations: int  # completed after generation 0
    counts: dict[str, int]
    best: dict[str, Any] | None
    llm: dict[str, float]
    wall_s: float
    train_busy_s: float  # wall time during which at least one training ran (union of intervals)
    startup_s: float = 0.0  # starting the isolation fork server (imports torch/TRL once for checks and training)
    resumed: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _check_resume_config(stored: dict[str, Any], given: dict[str, Any]) -> None:
    changed = [key for key in _FIXED_ON_RESUME if key != "search" and stored.get(key) != given.get(key)]
    stored_search = {k: v for k, v in stored.get("search", {}).items() if k != "generations"}
    given_search = {k: v for k, v in given.get("search", {}).items() if k != "generations"}
    if stored_search != given_search:
        changed.append("search")
    if changed:
        raise LoopError(
            f"cannot resume with a different {', '.join(changed)} than the run was started with; on resume only "
            f"{', '.join(_RESUMABLE)} may change"
        )


def _seed_specs(config: RunConfig) -> list[SeedSpec]:
    from lossforge.candidates import load_builtin

    specs = []
    for name in config.search.seed_candidates:
        candidate = load_builtin(name)
        specs.append(SeedSpec(name=candidate.name, code=candidate.source, description=candidate.description,
                              origin=candidate.origin))  # fmt: skip
    return specs


def _history(archive: Archive, generation: int, best_k: int, recent_m: int) -> tuple[HistoryEntry, ...]:
    # Only earlier generations: they are complete, so the history is the same in a resumed run.
    rows = [row for row in archive.candidates() if row.generation < generation]
    best, recent = select_history(history_from_rows(rows), best_k, recent_m)
    return best + recent


def _train_busy(archive: Archive) -> float:
    """Union of the training intervals recorded on rows (concurrent trainings count once)."""
    spans = sorted(
        (float(r.timings["train_start"]), float(r.timings["train_end"]))
        for r in archive.candidates()
        if "train_start" in r.timings and "train_end" in r.timings
    )
    total, end = 0.0, float("-inf")
    for start, stop in spans:
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def _summary(archive: Archive, run_dir: Path, status: Literal["finished", "budget"], reason: str | None,
             generations: int, wall: float, resumed: bool, config: RunConfig) -> RunSummary:  # fmt: skip
    rows = archive.candidates()
    counts = Counter(r.status for r in rows)
    best_rows = archive.best(1)
    best = None
    if best_rows:
        b = best_rows[0]
        path = archive.code_path(b.id)
        best = {"id": b.id, "name": b.name, "score": b.score, "generation": b.generation,
                "metrics": b.metrics, "path": str(path) if path else None}  # fmt: skip
    calls, tokens, cost = archive.llm_totals()
    return RunSummary(
        run_dir=str(run_dir), status=status, stop_reason=reason, generations=generations, counts=dict(counts),
        best=best, llm={"calls": calls, "tokens": tokens, "cost_usd": cost}, wall_s=wall,
        train_busy_s=_train_busy(archive), resumed=resumed, config=config.resolved(),
    )  # fmt: skip


class _Components:
    """What one run builds and must close: proposer (and its LLM client), executor."""

    def __init__(self) -> None:
        self.proposer: Proposer | None = None
        self.executor: Executor | None = None
        self.owns_executor = False

    def close(self) -> None:
        closer = getattr(self.proposer, "close", None)
        if callable(closer):
            closer()
        if self.executor is not None and self.owns_executor:
            self.executor.shutdown()


class _ArchiveRef:
    """The archive a proposer records its calls into; set once the run's archive is open (after preflight)."""

    archive: Archive | None = None


def _build_proposer(config: RunConfig, ref: _ArchiveRef, spent: tuple[int, int, float], progress: Progress) -> Proposer:
    search = config.search
    if config.proposer.kind == "evolve":
        from lossforge.discovery.evolve import EvolveProposer

        return EvolveProposer.from_config(config)  # type: ignore[no-any-return]
    from lossforge.discovery.openai_proposer import OpenAIProposer
    from lossforge.evaluate.llm import Budget, LLMCall, LLMError

    calls, tokens, cost = spent  # a resumed run continues its spending
    limits = config.budget
    budget = Budget(limits.max_llm_calls, limits.max_tokens, limits.max_cost_usd,
                    calls=calls, tokens=tokens, cost_usd=cost)  # fmt: skip

    def record(call: LLMCall) -> int:
        assert ref.archive is not None, "no LLM call is made before the archive is open"
        call_id = ref.archive.record_llm_call({
            "model": call.model, "messages": [dict(m) for m in call.messages], "reply": call.reply,
            "prompt_tokens": call.prompt_tokens, "completion_tokens": call.completion_tokens,
            "latency_s": call.latency_s, "cost_usd": call.cost_usd or 0.0, "error": call.error,
            "attempts": call.attempts,
        })  # fmt: skip
        snap = budget.snapshot()
        progress.llm(int(snap["calls"] or 0), int(snap["tokens"] or 0), float(snap["cost_usd"] or 0.0))
        return call_id

    brief = task_brief(config.training.task, config.training.beta)
    renderer = PromptRenderer(brief, PromptSettings(best_k=search.history_best_k, recent_m=search.history_recent_m,
                                                    json_hint=not config.proposer.json_mode))  # fmt: skip
    try:
        proposer = OpenAIProposer.from_config(config.proposer, renderer, budget=budget,
                                              repair_rounds=search.repair_rounds, record_call=record)  # fmt: skip
    except (ValueError, LLMError) as exc:
        raise LoopError(str(exc)) from None
    progress.llm(calls, tokens, cost)
    return proposer


def _train_setup(config: RunConfig) -> tuple[Any, dict[str, Any]]:
    """The ``TrainConfig`` every candidate of the run is trained with, and the seed-cache budget key."""
    from lossforge.evaluate.train import TrainConfig

    t = config.training
    # Concurrent CPU trainings share the cores: oversubscribed OpenMP threads spin-wait and crawl.
    threads = None if visible_gpus() else max(1, (os.cpu_count() or 1) // config.execution.workers)
    # One training seed for every candidate: scores are compared under common random numbers.
    train_config = TrainConfig(
        task=t.task, options=dict(t.task_options), beta=t.beta, steps=t.steps, seed=config.seed,
        eval_samples=t.eval_samples, threads=threads, **({"timeout": t.time_limit_s} if t.time_limit_s else {}),
    )  # fmt: skip
    budget = {"steps": t.steps, "eval_samples": t.eval_samples, "task_options": dict(t.task_options)}
    return train_config, budget


def run_discovery(
    config: RunConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool | Progress = True,
    executor: Executor | None = None,
    proposer: Proposer | None = None,
    check: CheckFn | None = None,
    train: TrainFn | None = None,
) -> RunSummary:
    """Run (or resume) a discovery run in ``run_dir`` (default ``config.out``) and return its summary.

    Raises ``LoopError`` for anything the user must fix (a live run in the directory, a resume with a
    changed config, an unreachable endpoint, a bad key or model). ``executor``/``proposer``/``check``/
    ``train`` replace the configured ones (the benchmark and tests use this); the defaults are the real ones.
    """
    started = time.monotonic()
    run_dir = Path(run_dir if run_dir is not None else config.out or default_out())
    sink = progress if isinstance(progress, Progress) else RichProgress() if progress else Progress()
    has_archive = (run_dir / "archive.sqlite").is_file()
    if resume and not has_archive:
        raise LoopError(f"{run_dir} holds no run to resume (no archive.sqlite); start one with --out {run_dir}")
    if not resume and has_archive:
        raise LoopError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or choose another --out")
    lock = RunLock(run_dir)
    try:
        lock.acquire()
    except RunLockError as exc:
        raise LoopError(str(exc)) from None
    parts = _Components()
    try:
        spent = (0, 0, 0.0)
        if resume:
            with Archive.open(run_dir) as archive:
                stored = archive.get_meta("config")
                if isinstance(stored, dict):
                    _check_resume_config(stored, config.resolved())
                spent = archive.llm_totals()
        ref = _ArchiveRef()
        parts.proposer = proposer or _build_proposer(config, ref, spent, sink)
        _preflight(parts.proposer)  # a bad endpoint, key or model fails here, before anything is written
        with Archive.open(run_dir) as archive:
            ref.archive = archive
            if resume:
                archive.reset_pending()
            archive.write_provenance(config.resolved())
            return _run(config, run_dir, archive, sink, parts, started, resume, executor, check, train)
    finally:
        parts.close()
        sink.stop()
        lock.release()


def _preflight(proposer: Proposer) -> None:
    from lossforge.evaluate.llm import LLMError

    preflight = getattr(proposer, "preflight", None)
    if callable(preflight):
        try:
            preflight()
        except LLMError as exc:
            raise LoopError(str(exc)) from None


def _run(config: RunConfig, run_dir: Path, archive: Archive, sink: Progress, parts: _Components, started: float,
         resume: bool, executor: Executor | None, check: CheckFn | None,
         train: TrainFn | None) -> RunSummary:  # fmt: skip
    from lossforge.evaluate.llm import LLMError

    search = config.search
    assert parts.proposer is not None
    if executor is None:
        try:
            executor = make_executor(config.execution.executor, config.execution.workers)
        except ExecutorError as exc:
            raise LoopError(str(exc)) from None
        parts.owns_executor = True
    parts.executor = executor
    if check is None:
        from lossforge.evaluate.checker import check as check_source

        # The pipeline passes bare source (the proposer already parsed any LLM reply).
        check = functools.partial(check_source, fmt="python")
    if train is None:
        from lossforge.evaluate.train import train_candidate

        # The pipeline has just checked the source in the sandbox; checking again would only cost time.
        train = functools.partial(train_candidate, check=False)
    try:
        train_config, cache_budget = _train_setup(config)
    except ValueError as exc:  # the training config refuses the task or a budget value
        raise LoopError(str(exc)) from None
    stop = StopSignal()
    pipeline = Pipeline(
        archive, executor, check=check, train=train, train_config=train_config, task=config.training.task,
        repair_rounds=search.repair_rounds, run_seed=config.seed, progress=sink, stop=stop,
        seed_cache=SeedCache(), seed_cache_budget=cache_budget, beta=config.training.beta,
        # The proposals of a generation are requested concurrently (bounded by the proposer's concurrency).
        threads=max(1, min(search.population, config.proposer.concurrency)),
    )  # fmt: skip
    sink.start(search.generations, search.population, len(search.seed_candidates))
    startup_s = _warm_up()
    try:
        done = _generations(config, archive, pipeline, parts.proposer, sink, stop)
    except (LLMError, TaskError) as exc:  # a key revoked mid-run, a task that cannot load: the user must act
        raise LoopError(str(exc)) from None
    status: Literal["finished", "budget"] = "budget" if stop.is_set() else "finished"
    if stop.reason:
        sink.note(f"stopped: {stop.reason}")
    archive.set_meta("state", {"status": status, "stop_reason": stop.reason, "generations": done})
    summary = _summary(archive, run_dir, status, stop.reason, done, time.monotonic() - started, resume, config)
    summary.startup_s = startup_s
    return summary


def _warm_up() -> float:
    """Start the fork server that checks and trainings fork from; timed apart, it is a one-off per process."""
    from lossforge.evaluate.isolation import warm_up

    began = time.monotonic()
    warm_up()
    return time.monotonic() - began


def _generations(config: RunConfig, archive: Archive, pipeline: Pipeline, proposer: Proposer, sink: Progress,
                 stop: StopSignal) -> int:  # fmt: skip
    """Generation 0 (seeds), then the proposal generations; returns how many of those completed."""
    search = config.search
    sink.generation(0)
    pipeline.run_seeds(_seed_specs(config))
    done = 0
    for generation in range(1, search.generations + 1):
        if stop.is_set():
            break
        sink.generation(generation)
        history = _history(archive, generation, search.history_best_k, search.history_recent_m)
        pipeline.run_generation(proposer, generation, search.population, history)
        if not stop.is_set():
            done = generation
    return done
