"""The discovery loop: generation 0 scores the library seeds, then G generations of P proposals each.

``run_discovery(config, run_dir, resume=...)`` is the library entry point (``lossforge run`` is a thin layer
on it). A run owns its directory: ``RunLock`` for its whole life, the SQLite archive (every proposal, every
LLM call, the resolved config), candidate files. Generation g is shown the bounded history of generations
< g only, and each attempt's seed is ``seeds.derive_seed(seed, g, index, round)``; together with the archive's
per-attempt rows this makes a resumed run propose exactly what an uninterrupted one would have, while
finished rows are never redone and archived LLM replies never re-requested. What happens after each generation
besides (``lossforge run`` rewrites the HTML report) is the ``on_generation_end`` callback's.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossforge.discovery.candidate_training import CachedResults
from lossforge.discovery.config import ConfigError, RunConfig, build_config, default_out
from lossforge.discovery.executors import Executor, ExecutorError, make_executor
from lossforge.discovery.generation_end import GenerationEnd, OnGenerationEnd, RunEnd
from lossforge.discovery.loop_error import LoopError
from lossforge.discovery.pipeline import CheckFn, Pipeline, SeedSpec, StopSignal
from lossforge.discovery.pipeline_settings import PipelineSettings
from lossforge.discovery.progress import Cost, Progress, RichProgress, confirm_line
from lossforge.discovery.proposers.base import HistoryEntry, ProposerBase
from lossforge.discovery.proposers.build import build_proposer, preflight
from lossforge.discovery.proposers.history import history_from_rows, select_history
from lossforge.discovery.resume import check_resume_config
from lossforge.discovery.run_summary import RunStatus, RunSummary, summarize
from lossforge.discovery.scoring.confirm import CONFIRM_OFF, ConfirmError, confirm, plan_from_config, plan_size
from lossforge.discovery.scoring.seed_training import TrainFn
from lossforge.discovery.scoring.stats_views import with_interval
from lossforge.discovery.scoring.train_config import run_train_config
from lossforge.discovery.search.lessons import lessons_for
from lossforge.discovery.storage.archive import Archive
from lossforge.discovery.storage.run_lock import holding_run
from lossforge.discovery.storage.seed_cache import SeedCache, budget_key
from lossforge.evaluate.llm import LLMError
from lossforge.evaluate.tasks.base import TaskError
from lossforge.evaluate.training.config import TrainConfig


@dataclass(frozen=True)
class _RunInputs:
    """What ``run_discovery`` was given: the config, the run's directory, whether it resumes and when it started;
    the executor, check and train stand-ins (None: the configured ones) and the generation-end callback."""

    config: RunConfig
    run_dir: Path
    resume: bool
    started: float
    executor: Executor | None
    check: CheckFn | None
    train: TrainFn | None
    on_generation_end: OnGenerationEnd | None


class _GenerationEnds:
    """Calls the run's ``on_generation_end`` after each generation and, once, when the run ends."""

    def __init__(self, callback: OnGenerationEnd, run_dir: Path, note: Callable[[str], None]) -> None:
        self._callback = callback
        self._run_dir = run_dir
        self._note = note
        self._started = time.monotonic()
        self._generation = 0
        self._ended = False

    def generation(self, generation: int) -> None:
        self._generation = generation
        self._callback(GenerationEnd(self._run_dir, generation, self._note, self._started))

    def end(self, how: RunEnd) -> None:
        if not self._ended:
            self._ended = True
            self._callback(GenerationEnd(self._run_dir, self._generation, self._note, self._started, how))


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


class _Components:
    """What one run builds and must close: the proposer (and its LLM client), the executor, the generation ends."""

    def __init__(self, proposer: ProposerBase) -> None:
        self.proposer = proposer
        self.executor: Executor | None = None
        self.owns_executor = False
        self.ends: _GenerationEnds | None = None

    def close(self) -> None:
        if self.ends is not None:
            self.ends.end("aborted")  # a no-op once the run has finished
        self.proposer.close()
        if self.executor is not None and self.owns_executor:
            self.executor.shutdown()


def _train_setup(config: RunConfig) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The ``TrainConfig`` every candidate of the run is trained with, and the seed-cache budget key."""
    train_config = run_train_config(config)
    try:  # imports the task (torch, transformers): called inside the timed start-up
        budget: dict[str, Any] | None = budget_key(train_config)
    except Exception:  # noqa: BLE001 - a task that cannot compute its key (say, an unreachable hub model) is not cached
        budget = None
    return train_config, budget


def _task_configs(config: RunConfig) -> tuple[TrainConfig, ...]:
    """Each task's ``TrainConfig`` when the run trains on several (``training.tasks``); () with one task."""
    tasks = config.training.run_tasks
    return tuple(run_train_config(config, task=task) for task in tasks) if len(tasks) >= 2 else ()


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
    proposer: ProposerBase | None = None,
    check: CheckFn | None = None,
    train: TrainFn | None = None,
    on_generation_end: OnGenerationEnd | None = None,
) -> RunSummary:
    """Run (or resume) a discovery run in ``run_dir`` (default ``config.out``) and return its summary.

    Raises ``LoopError`` for anything the user must fix (a live run in the directory, a resume with a
    changed config, an unreachable endpoint, a bad key or model). ``executor``/``proposer``/``check``/
    ``train`` replace the configured ones (the benchmark and tests use this); the defaults are the real ones.
    ``on_generation_end`` is called after each generation and when the run ends (``generation_end``).
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
    with holding_run(run_dir, LoopError):
        inputs = _RunInputs(config, run_dir, resume, started, executor, check, train, on_generation_end)
        parts: _Components | None = None
        try:
            spent = (0, 0, 0.0)
            if resume:
                with Archive.open(run_dir) as archive:
                    stored = archive.get_meta("config")
                    if isinstance(stored, dict):
                        check_resume_config(_with_defaults(stored), config.resolved())
                    spent = archive.llm_totals()
            parts = _Components(proposer or build_proposer(config, spent))
            preflight(parts.proposer)  # a bad endpoint, key or model fails here, before anything is written
            if config.proposer.kind != "evolve":
                sink.llm(*spent)  # a resumed run shows what it already spent
            with Archive.open(run_dir) as archive:
                if resume:
                    archive.reset_pending()
                archive.write_provenance(config.resolved())
                return _run(inputs, archive, sink, parts)
        finally:
            if parts is not None:
                parts.close()
            sink.stop()


def _check_task(config: RunConfig) -> None:
    """Build the run's task from its options (cheap: tasks load models and data lazily); ``LoopError`` if it cannot."""
    from lossforge.evaluate.tasks import get_task

    training = config.training
    try:
        for task in training.run_tasks:
            get_task(task, training.options_for(task), eval_samples=training.eval_samples)
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


def _executor(inputs: _RunInputs, parts: _Components) -> Executor:
    """The stand-in executor, or the configured one (then the run owns it and shuts it down)."""
    if inputs.executor is not None:
        parts.executor = inputs.executor
        return inputs.executor
    execution = inputs.config.execution
    try:
        executor = make_executor(
            execution.executor,
            execution.workers,
            workers_per_gpu=execution.workers_per_gpu,
            gpu_memory_per_worker_gb=execution.gpu_memory_per_worker_gb,
        )
    except ExecutorError as exc:
        raise LoopError(str(exc)) from None
    parts.executor, parts.owns_executor = executor, True
    return executor


def _run(inputs: _RunInputs, archive: Archive, sink: Progress, parts: _Components) -> RunSummary:
    config = inputs.config
    search = config.search
    executor = _executor(inputs, parts)
    sink.start(search.generations, search.population, len(search.seed_candidates), cost=Cost.of(config))
    sink.use_archive(lambda generation: archive.candidates(generation=generation))  # progress names archive ids
    check = inputs.check
    if check is None:
        from lossforge.evaluate.checking.checker import check as check_parsed

        check = check_parsed  # the pipeline hands it proposals the proposer already parsed
    train = inputs.train
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
    startup_s = time.monotonic() - inputs.started
    stop = StopSignal()
    task, beta = config.training.task, config.training.beta
    settings = PipelineSettings(
        task=task,
        train_config=train_config,
        run_seed=config.seed,
        seeds=config.search_seeds(),
        repair_rounds=search.repair_rounds,
        # The proposals of a generation are requested concurrently (bounded by the proposer's concurrency).
        threads=max(1, min(search.population, config.proposer.concurrency)),
        baseline=search.baseline,
        rank_by=search.rank_by,
        fidelity=search.fidelity,
        near_duplicates=search.near_duplicates,
        task_configs=_task_configs(config),
        aggregate=search.aggregate,
    )
    # The seed cache holds one task's results; a multi-task run trains its library seeds itself.
    cached = None
    if cache_budget is not None and not settings.multi_task:
        cached = CachedResults(SeedCache(), task, beta, cache_budget)
    pipeline = Pipeline(
        settings, archive, executor, check=check, train=train, progress=sink, stop=stop, seed_cache=cached
    )
    if inputs.on_generation_end is not None:
        parts.ends = _GenerationEnds(inputs.on_generation_end, archive.run_dir, sink.note)
    try:
        done = _generations(config, archive, pipeline, parts, sink)
    except (LLMError, TaskError) as exc:  # a key revoked mid-run, a task that cannot load: the user must act
        raise LoopError(str(exc)) from None
    status: RunStatus = "budget" if stop.is_set() else "finished"
    if stop.reason:
        sink.note(f"stopped: {stop.reason}")
    archive.set_meta("state", {"status": status, "stop_reason": stop.reason, "generations": done})
    confirmation = _confirm(config, archive, executor, train, sink)
    summary = summarize(
        archive,
        config,
        run_dir=inputs.run_dir,
        status=status,
        reason=stop.reason,
        generations=done,
        wall_s=time.monotonic() - inputs.started,
        resumed=inputs.resume,
    )
    summary.startup_s = startup_s
    summary.confirmation = confirmation
    summary.train_busy_s += float(confirmation.get("train_busy_s", 0.0))  # confirmation trainings are training too
    if parts.ends is not None:
        parts.ends.end("finished")  # after the confirmation: the finished state and the confirmed winner
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


def _generations(config: RunConfig, archive: Archive, pipeline: Pipeline, parts: _Components, sink: Progress) -> int:
    """Generation 0 (seeds), then the proposal generations until the pipeline's stop signal; returns how many of
    those completed. After each, the run's ``on_generation_end`` is called."""
    search, proposer, ends, stop = config.search, parts.proposer, parts.ends, pipeline.stop
    sink.generation(0)
    pipeline.run_seeds(_seed_specs(config))
    if ends is not None:
        ends.generation(0)
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
        lessons = lessons_for(
            archive, generation, every=search.lessons_every, max_chars=search.lessons_max_chars, writer=proposer
        )
        proposer.prepare_generation(archive, generation)  # an LLM ensemble's bandit plans its models
        pipeline.run_generation(proposer, generation, search.population, history, lessons)
        if ends is not None:
            ends.generation(generation)
        if not stop.is_set():
            done = generation
    return done


__all__ = ["LoopError", "run_discovery"]
