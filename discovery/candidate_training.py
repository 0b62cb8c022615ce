"""Training an admitted candidate and storing its aggregate on its archive row.

A candidate trains once per search seed (``scoring.seed_training``; the aggregate: ``scoring.seed_stats``), or
at a rung of successive halving (``scoring.fidelity``), with the run's ``TrainConfig``. Each finished seed is an
archive ``seed_runs`` entry, so a killed run resumes a candidate seed by seed; the library seeds of generation 0
also reuse results across runs through the seed cache (``CachedResults``). Paired differences to the baseline
are taken at the full budget only: the baseline was trained at it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lossforge.discovery.candidate_rows import store_outcome
from lossforge.discovery.executors import Executor
from lossforge.discovery.pipeline_settings import PipelineSettings
from lossforge.discovery.progress import Progress
from lossforge.discovery.scoring.fidelity import Rung, SuccessiveHalving
from lossforge.discovery.scoring.seed_training import TrainFn, train_on_seeds
from lossforge.discovery.stats.seed_stats import Baseline, SeedRun, aggregate
from lossforge.discovery.storage.archive import Archive, CandidateRow
from lossforge.discovery.storage.seed_cache import SeedCache
from lossforge.discovery.task_training import TaskTraining
from lossforge.evaluate.training.result import RunResult


@dataclass(frozen=True)
class CachedResults:
    """The seed cache bound to the run's task, beta and budget key (``storage.seed_cache.budget_key``)."""

    cache: SeedCache
    task: str
    beta: float
    budget: dict[str, Any]

    def get(self, fingerprint: str, seed: int) -> RunResult | None:
        stored = self.cache.get(self.task, fingerprint, self.beta, seed, self.budget)
        return None if stored is None else RunResult.from_dict(stored)

    def put(self, fingerprint: str, seed: int, result: RunResult) -> None:
        self.cache.put(self.task, fingerprint, self.beta, seed, self.budget, result)


class CandidateTraining:
    """Trains admitted rows (``train``) and promoted ones (``train_rung``: the ``RungTrainer`` of ``halving``)."""

    def __init__(
        self,
        settings: PipelineSettings,
        archive: Archive,
        executor: Executor,
        train: TrainFn,
        progress: Progress,
        *,
        cached: CachedResults | None = None,
        halving: SuccessiveHalving | None = None,
    ) -> None:
        self.settings = settings
        self.archive = archive
        self.executor = executor
        self._train_fn = train
        self.progress = progress
        self.cached = cached
        self.halving = halving
        self.tasks = (
            TaskTraining(settings, archive, executor, train, progress, self.baseline_scores)
            if settings.multi_task
            else None
        )

    def baseline_scores(self) -> Baseline | None:
        """The baseline's per-seed scores (generation 0, by name), or None before or without it."""
        if self.settings.baseline is None:
            return None
        for row in self.archive.candidates(generation=0):
            if row.name == self.settings.baseline and row.status == "ok":
                return Baseline.from_stats(row.name, row.id, row.stats)
        return None

    def train_rung(self, row: CandidateRow, rung: int) -> None:
        self.train(row, rung=rung)

    def train(self, row: CandidateRow, *, cache: bool = False, rung: int | None = None) -> None:
        """Train on the run's seeds (or at ``rung`` of successive halving) and store the aggregate on the row;
        with ``cache``, seeds the seed cache holds for the row's fingerprint are not trained again. A multi-task run
        trains on every task instead (``task_training``; no seed cache), but for the low-fidelity rungs of
        successive halving, which train on its first task."""
        if self.tasks is not None and (rung is None or self._rung(rung).last):
            self.tasks.train(row, rung=rung, steps=self._rung(rung).steps if rung is not None else None)
            return
        self.progress.stage(row.generation, row.idx, "training", name=row.name or "", round=row.repair_round)
        cached = self.cached if cache else None
        fingerprint = row.fingerprint if cached is not None else None
        plan = self._rung(rung)
        config = plan.config
        finished = self.archive.seed_runs(row.id, config.steps)  # a killed run's finished seeds of this candidate

        def earlier(seed: int) -> SeedRun | None:
            if seed in finished:
                return SeedRun.stored(seed, finished[seed])
            hit = cached.get(fingerprint, seed) if cached is not None and fingerprint else None
            return None if hit is None else SeedRun(seed, hit)

        def store(run: SeedRun) -> None:  # each store keeps only what a rerun reproduces
            self.archive.record_seed_run(row.id, config.steps, run.seed, run.result.to_dict(), run.started, run.ended)
            if cached is not None and fingerprint:
                cached.put(fingerprint, run.seed, run.result)

        code = row.code or ""
        runs = train_on_seeds(self.executor, self._train_fn, code, config, plan.seeds, earlier=earlier, store=store)
        baseline = self.baseline_scores() if plan.last else None
        outcome = aggregate(runs, rank_by=self.settings.rank_by, baseline=baseline, rung=rung)
        store_outcome(self.archive, self.progress, row, outcome, rung=rung, steps=plan.steps)

    def _rung(self, rung: int | None) -> Rung:
        """What to train: the full budget on every seed, or ``rung`` of successive halving."""
        settings = self.settings
        if rung is None:
            return Rung(settings.train_config, settings.seeds, settings.train_config.steps, last=True)
        if self.halving is None:
            raise ValueError(f"rung {rung} asked for, but this pipeline has no successive halving (search.fidelity)")
        return self.halving.rung(settings.train_config, settings.seeds, rung)


__all__ = ["CachedResults", "CandidateTraining"]
