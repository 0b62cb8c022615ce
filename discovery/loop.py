"""The discovery loop: generation 0 scores the library seeds, then G generations of P proposals each.

``run_discovery(config, run_dir, resume=...)`` is the library entry point (``lossforge run`` is a thin layer
on it). A run owns its directory: ``RunLock`` for its whole life, the SQLite archive (every proposal, every
LLM call, the resolved config), candidate files. Generation g is shown the bounded history of generations
< g only, and each attempt's seed is ``scoring.seeds.derive_seed(seed, g, index, round)``; together with the archive's
per-attempt rows this makes a resumed run propose exactly what an uninterrupted one would have, while
finished rows are never redone and archived LLM replies never re-requested.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lossforge.discovery.config import ConfigError, RunConfig, build_config, default_out
from lossforge.discovery.executors import Executor, ExecutorError, make_executor
from lossforge.discovery.loop_error import LoopError
from lossforge.discovery.pipeline import CheckFn, Pipeline, SeedSpec, StopSignal, TrainFn
from lossforge.discovery.progress import Cost, Progress, RichProgress, confirm_line
from lossforge.discovery.prompting import history_from_rows, select_history
from lossforge.discovery.proposers.base import HistoryEntry, Proposer
from lossforge.discovery.proposers.build import build_proposer, preflight
from lossforge.discovery.resume import check_resume_config
from lossforge.discovery.review.report import BackgroundRefresh, refresh_report
from lossforge.discovery.scoring.confirm import CONFIRM_OFF, ConfirmError, confirm, plan_from_config, plan_size
from lossforge.discovery.scoring.multi_seed import brief_stats, busy_seconds, run_train_config, with_interval
from lossforge.discovery.search.lessons import lessons_for
from lossforge.discovery.storage.archive import Archive
from lossforge.discovery.storage.run_lock import RunLock, RunLockError
from lossforge.discovery.storage.seed_cache import SeedCache, budget_key
from lossforge.evaluate.llm import LLMError
from lossforge.evaluate.tasks.base import TaskError


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
    startup_s: float = 0.0  # one-off: everything before generation 0 (imports of torch/TRL, the fork server)
    resumed: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    # Held-out confirmation of the winners (``lossforge.discovery.scoring.confirm``): its sentence, winner and results.
    confirmation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["confirmed"] = (self.confirmation or {}).get("sentence")  # last: what the run's evidence says
        return data


def _seed_specs(config: RunConfig) -> list[SeedSpec]:
    from lossforge.candidates import load_builtin

    specs = []
    for name in config.search.seed_candidates:
        candidate = load_builtin(name)
        specs.append(
            SeedSpec(
                name=candidate.name, code=candidate.source, description=candidate.description, origin=candidate.origin
            )
        )
    return specs


def _history(
    archive: Archive,
    generation: int,
    best_k: int,
    recent_m: int,
    *,
    niches: tuple[str, ...] = (),
    explore: float | None = None,
) -> tuple[HistoryEntry, ...]:
    # Only earlier generations: they are complete, so the history is the same in a resumed run.
    rows = [row for row in archive.candidates() if row.generation < generation]
    entries = history_from_rows([with_interval(row) for row in rows], niche_axes=niches)
    best, recent = select_history(entries, best_k, recent_m, explore=explore if niches else None)
    return best + recent


def _train_busy(archive: Archive) -> float:
    """Union of the training intervals recorded on rows (concurrent trainings count once)."""
    return busy_seconds(
        (float(r.timings["train_start"]), float(r.timings["train_end"]))
        for r in archive.candidates()
        if "train_start" in r.timings and "train_end" in r.timings
    )


def _summary(
    archive: Archive,
    run_dir: Path,
    status: Literal["finished", "budget"],
    reason: str | None,
    generations: int,
    wall: float,
    resumed: bool,
    config: RunConfig,
) -> RunSummary:
    rows = archive.candidates()
    counts = Counter(r.status for r in rows)
    best_rows = archive.best(1)
    best = None
    if best_rows:
        b = best_rows[0]
        path = archive.code_path(b.id)
        best = {
            "id": b.id,
            "name": b.name,
            "score": b.score,
            "generation": b.generation,
            "metrics": b.metrics,
            "path": str(path) if path else None,
            "stats": brief_stats(b.stats),
        }
    calls, tokens, cost = archive.llm_totals()
    return RunSummary(
        run_dir=str(run_dir),
        status=status,
        stop_reason=reason,
        generations=generations,
        counts=dict(counts),
        best=best,
        llm={"calls": calls, "tokens": tokens, "cost_usd": cost},
        wall_s=wall,
        train_busy_s=_train_busy(archive),
        resumed=resumed,
        config=config.resolved(),
    )


class _Components:
    """What one run builds and must close: proposer (and its LLM client), executor, the report's rewrites."""

    def __init__(self) -> None:
        self.proposer: Proposer | None = None
        self.executor: Executor | None = None
        self.owns_executor = False
        self.reports: BackgroundRefresh | None = None

    def close(self) -> None:
        if self.reports is not None:
            self.reports.close()
        closer = getattr(self.proposer, "close", None)
        if callable(closer):
            closer()
        if self.executor is not None and self.owns_executor:
            self.executor.shutdown()


def _train_setup(config: RunConfig) -> tuple[Any, dict[str, Any] | None]:
    """The ``TrainConfig`` every candidate of the run is trained with, and the seed-cache budget key."""
    train_config = run_train_config(config)
    try:  # imports the task (torch, transformers): called inside the timed start-up
        budget: dict[str, Any] | None = budget_key(train_config)
    except Exception:  # noqa: BLE001 - a task that cannot compute its key (say, an unreachable hub model) is not cached
        budget = None
    return train_config, budget


def _with_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored config with the defaults of fields added since it was written (a run from an older version
    resumes: its missing ``training.seeds`` is the 1 it ran with)."""
    try:
        return build_config(stored).resolved()
    except ConfigError:
        return stored


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
    _check_task(config)  # a missing or invalid task option fails here, before the run's directory exists
    _make_run_dir(run_dir)
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
                    check_resume_config(_with_defaults(stored), config.resolved())
                spent = archive.llm_totals()
        parts.proposer = proposer or build_proposer(config, spent)
        preflight(parts.proposer)  # a bad endpoint, key or model fails here, before anything is written
        if config.proposer.kind != "evolve":
            sink.llm(*spent)  # a resumed run shows what it already spent
        with Archive.open(run_dir) as archive:
            if resume:
                archive.reset_pending()
            archive.write_provenance(config.resolved())
            return _run(config, run_dir, archive, sink, parts, started, resume, executor, check, train)
    finally:
        parts.close()
        sink.stop()
        lock.release()


def _check_task(config: RunConfig) -> None:
    """Build the run's task from its options (cheap: tasks load models and data lazily); ``LoopError`` if it cannot."""
    from lossforge.evaluate.tasks import get_task

    try:
        get_task(config.training.task, dict(config.training.task_options), eval_samples=config.training.eval_samples)
    except TaskError as exc:
        raise LoopError(str(exc)) from None


def _make_run_dir(run_dir: Path) -> None:
    """Create the run's directory, or say in one sentence why it cannot be (``LoopError``)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise LoopError(f"--out {run_dir} is a file, not a directory; a run needs a directory of its own")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocking = next((parent for parent in run_dir.parents if parent.is_file()), None)
        if blocking is not None:
            raise LoopError(f"--out {run_dir} cannot be created: {blocking} is a file, not a directory") from None
        reason = (exc.strerror or str(exc)).lower()
        raise LoopError(f"--out {run_dir} cannot be created ({reason}); choose a directory you can write to") from None


def _run(
    config: RunConfig,
    run_dir: Path,
    archive: Archive,
    sink: Progress,
    parts: _Components,
    started: float,
    resume: bool,
    executor: Executor | None,
    check: CheckFn | None,
    train: TrainFn | None,
) -> RunSummary:
    search = config.search
    assert parts.proposer is not None
    if executor is None:
        try:
            execution = config.execution
            executor = make_executor(
                execution.executor,
                execution.workers,
                workers_per_gpu=execution.workers_per_gpu,
                gpu_memory_per_worker_gb=execution.gpu_memory_per_worker_gb,
            )
        except ExecutorError as exc:
            raise LoopError(str(exc)) from None
        parts.owns_executor = True
    parts.executor = executor
    sink.start(search.generations, search.population, len(search.seed_candidates), cost=Cost.of(config))
    sink.use_archive(lambda generation: archive.candidates(generation=generation))  # progress names archive ids
    if check is None:
        from lossforge.evaluate.checking.checker import check as check_parsed

        check = check_parsed  # the pipeline hands it proposals the proposer already parsed
    if train is None:
        from lossforge.evaluate.training.launcher import train_candidate

        # The pipeline has just checked the source in the sandbox; checking again would only cost time.
        train = functools.partial(train_candidate, check=False)
    _warm_up()
    try:
        train_config, cache_budget = _train_setup(config)
    except ValueError as exc:  # the training config refuses the task or a budget value
        raise LoopError(str(exc)) from None
    # Start-up, timed apart: everything before generation 0 (lock, archive, proposer and its preflight, importing
    # the checker and the trainer with torch and TRL, the fork server, the task for the seed-cache key); a
    # one-off per run, whatever the number of candidates.
    startup_s = time.monotonic() - started
    stop = StopSignal()
    pipeline = Pipeline(
        archive,
        executor,
        check=check,
        train=train,
        train_config=train_config,
        task=config.training.task,
        repair_rounds=search.repair_rounds,
        run_seed=config.seed,
        progress=sink,
        stop=stop,
        seed_cache=SeedCache() if cache_budget is not None else None,
        seed_cache_budget=cache_budget,
        beta=config.training.beta,
        seeds=config.search_seeds(),
        baseline=search.baseline,
        rank_by=search.rank_by,
        fidelity=search.fidelity,
        near_duplicates=search.near_duplicates,
        # The proposals of a generation are requested concurrently (bounded by the proposer's concurrency).
        threads=max(1, min(search.population, config.proposer.concurrency)),
    )
    parts.reports = BackgroundRefresh(archive.run_dir, sink.note)
    try:
        done = _generations(config, archive, pipeline, parts.proposer, sink, stop, parts.reports)
    except (LLMError, TaskError) as exc:  # a key revoked mid-run, a task that cannot load: the user must act
        raise LoopError(str(exc)) from None
    status: Literal["finished", "budget"] = "budget" if stop.is_set() else "finished"
    if stop.reason:
        sink.note(f"stopped: {stop.reason}")
    archive.set_meta("state", {"status": status, "stop_reason": stop.reason, "generations": done})
    confirmation = _confirm(config, archive, executor, train, sink)
    summary = _summary(archive, run_dir, status, stop.reason, done, time.monotonic() - started, resume, config)
    summary.startup_s = startup_s
    summary.confirmation = confirmation
    summary.train_busy_s += float(confirmation.get("train_busy_s", 0.0))  # confirmation trainings are training too
    parts.reports.close()  # a rewrite in progress ends (one not begun is dropped); then the last, here
    if problem := refresh_report(archive.run_dir):  # the final report: finished state and confirmed winner
        sink.note(problem)
    return summary


def _confirm(config: RunConfig, archive: Archive, executor: Executor, train: TrainFn, sink: Progress) -> dict[str, Any]:
    """The end-of-run confirmation (``search.confirm``); with ``top_k: 0`` only the sentence saying it is off. Each
    finished training is a progress line; the verdict is not: the caller says it, once, at the end."""
    settings = config.search.confirm
    if settings.top_k == 0:
        return {"sentence": CONFIRM_OFF, "winner": None, "results": []}
    try:
        plan = plan_from_config(config, archive)
    except ConfirmError as exc:  # e.g. the baseline diverged: there is nothing to compare with
        return {"sentence": f"not confirmed: {exc}", "winner": None, "results": []}
    size = plan_size(plan)
    sink.note(f"confirming {len(plan.targets)} candidate(s) on {len(plan.seeds)} held-out seeds ({size} trainings)")

    def on_done(done: dict[str, Any]) -> None:
        sink.note(confirm_line(done))

    try:
        return confirm(archive, plan, executor=executor, train=train, on_done=on_done)
    except TaskError as exc:
        raise LoopError(str(exc)) from None


def _warm_up() -> float:
    """Start the fork server that checks and trainings fork from; timed apart, it is a one-off per process."""
    from lossforge.evaluate.isolation import warm_up

    began = time.monotonic()
    warm_up()
    return time.monotonic() - began


def _generations(
    config: RunConfig,
    archive: Archive,
    pipeline: Pipeline,
    proposer: Proposer,
    sink: Progress,
    stop: StopSignal,
    reports: BackgroundRefresh,
) -> int:
    """Generation 0 (seeds), then the proposal generations; returns how many of those completed. After each,
    ``RUN/report.html`` is rewritten (in the background: for a browser kept open on it)."""
    search = config.search
    sink.generation(0)
    pipeline.run_seeds(_seed_specs(config))
    reports.request()
    done = 0
    for generation in range(1, search.generations + 1):
        if stop.is_set():
            break
        sink.generation(generation)
        history = _history(
            archive,
            generation,
            search.history_best_k,
            search.history_recent_m,
            niches=search.niches or (),
            explore=search.niches_explore,
        )
        pipeline.lessons = lessons_for(
            archive, generation, every=search.lessons_every, max_chars=search.lessons_max_chars, writer=proposer
        )
        if callable(prepare := getattr(proposer, "prepare_generation", None)):  # an LLM ensemble's bandit
            prepare(archive, generation)
        pipeline.run_generation(proposer, generation, search.population, history)
        reports.request()
        if not stop.is_set():
            done = generation
    return done


__all__ = ["LoopError", "RunSummary", "run_discovery"]
