"""Training an admitted candidate on every task of a multi-task run and storing its one score (issue 19).

Each task trains on the run's seeds like a one-task run (``scoring.seed_training``), each finished training an
archive ``seed_runs`` entry named by its task, so a killed run resumes seed by seed and task by task. The
baseline of generation 0 also trains at 0 steps on every task: the untrained reference, which with the trained
baseline sets each task's scale (``stats.multi_task.TaskScale``). A candidate's score needs those scales, so a
library candidate of generation 0 that finishes before the baseline stays ``pending`` (stage ``trained``) until
``Pipeline.run_seeds`` aggregates it again once the baseline is done (its trainings are then read back, not
repeated). A baseline that fails on a task leaves nothing to normalize by: the run stops and says so. Under
successive halving the low-fidelity rungs train on the first task only (``candidate_training``); the last rung
trains here, on every task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from lossforge.discovery.candidate_rows import store_outcome
from lossforge.discovery.executors import Executor
from lossforge.discovery.pipeline_settings import PipelineSettings
from lossforge.discovery.progress import Progress
from lossforge.discovery.scoring.seed_training import TrainFn, train_on_seeds
from lossforge.discovery.stats.multi_task import REFERENCE_STEPS, TaskScale, aggregate_tasks, task_failure
from lossforge.discovery.stats.seed_stats import Baseline, SeedRun
from lossforge.discovery.storage.archive import Archive, CandidateRow
from lossforge.evaluate.statuses import SCORED_STATUS
from lossforge.evaluate.tasks.base import TaskError

if TYPE_CHECKING:
    from lossforge.evaluate.training.config import TrainConfig

# The stage of a generation-0 row whose trainings are done but whose score waits for the baseline's scales.
AWAITING_BASELINE = "trained"


class TaskTraining:
    """Trains rows on every task of ``settings.task_configs`` and aggregates them (``stats.multi_task``)."""

    def __init__(
        self,
        settings: PipelineSettings,
        archive: Archive,
        executor: Executor,
        train: TrainFn,
        progress: Progress,
        baseline_scores: Callable[[], Baseline | None],
    ) -> None:
        self.settings = settings
        self.archive = archive
        self.executor = executor
        self._train_fn = train
        self.progress = progress
        self._baseline_scores = baseline_scores
        self._scales: dict[str, TaskScale] | None = None

    def _baseline_row(self) -> CandidateRow | None:
        for row in self.archive.candidates(generation=0):
            if row.name == self.settings.baseline:
                return row
        return None

    def scales(self) -> dict[str, TaskScale] | None:
        """Each task's scale from the baseline's stored trainings; None until it has scored on every task and seed.
        Read once: the baseline's trainings never change after that."""
        if self._scales is None:
            self._scales = self._read_scales()
        return self._scales

    def _read_scales(self) -> dict[str, TaskScale] | None:
        base = self._baseline_row()
        if base is None:
            return None
        scales = {}
        for config in self.settings.task_configs:
            trained = self._scores(base.id, config.steps, config.task)
            untrained = self._scores(base.id, REFERENCE_STEPS, config.task)
            if trained is None or untrained is None:
                return None
            scales[config.task] = TaskScale.of(config.task, untrained, trained)
        return scales

    def _scores(self, cid: int, steps: int | None, task: str) -> list[float] | None:
        stored = self.archive.seed_runs(cid, steps, task)
        results = [stored[seed]["result"] if seed in stored else None for seed in self.settings.seeds]
        if any(r is None or r.get("status") != SCORED_STATUS or r.get("score") is None for r in results):
            return None
        return [float(r["score"]) for r in results]  # type: ignore[index]

    def _runs(self, row: CandidateRow, config: TrainConfig) -> list[SeedRun]:
        finished = self.archive.seed_runs(row.id, config.steps, config.task)

        def earlier(seed: int) -> SeedRun | None:
            return SeedRun.stored(seed, finished[seed]) if seed in finished else None

        def store(run: SeedRun) -> None:
            self.archive.record_seed_run(
                row.id, config.steps, run.seed, run.result.to_dict(), run.started, run.ended, task=config.task
            )

        code = row.code or ""
        return train_on_seeds(
            self.executor, self._train_fn, code, config, self.settings.seeds, earlier=earlier, store=store
        )

    def train(self, row: CandidateRow, *, rung: int | None = None, steps: int | None = None) -> None:
        """Train ``row`` on every task and seed (the baseline also untrained), then store its aggregate, or leave a
        generation-0 row ``pending`` until the baseline's scales exist. ``rung``: the last rung of successive
        halving (at ``steps``), whose statistics carry the earlier rungs' (``scoring.fidelity.with_rung``)."""
        settings = self.settings
        self.progress.stage(row.generation, row.idx, "training", name=row.name or "", round=row.repair_round)
        runs = {config.task: self._runs(row, config) for config in settings.task_configs}
        is_baseline = row.generation == 0 and row.name == settings.baseline
        if is_baseline:
            for config in settings.task_configs:
                self._runs(row, replace(config, steps=REFERENCE_STEPS))
        scales = self.scales()
        if scales is None:
            failed = task_failure(runs)
            if failed is None and row.generation == 0 and not is_baseline:
                self.archive.update_candidate(row.id, stage=AWAITING_BASELINE)
                return
            if failed is None:
                raise TaskError(self.no_scales_message())
            outcome = failed
        else:
            outcome = aggregate_tasks(
                runs,
                scales,
                how=settings.aggregate,
                rank_by=settings.rank_by,
                baseline=self._baseline_scores(),
            )
        store_outcome(self.archive, self.progress, row, outcome, rung=rung, steps=steps)

    def no_scales_message(self) -> str:
        base = self._baseline_row()
        why = f": {base.reason}" if base is not None and base.reason else ""
        return (
            f"the baseline {self.settings.baseline!r} did not score on every task and seed{why}; a multi-task score "
            "is normalized by its gain over the untrained reference on each task, so choose another "
            "search.baseline (one of search.seed_candidates)"
        )


__all__ = ["AWAITING_BASELINE", "TaskTraining"]
