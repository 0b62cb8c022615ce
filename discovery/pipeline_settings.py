"""``PipelineSettings``: what a ``Pipeline`` runs with, taken from the run's config by the loop.

Plain values only (the collaborators, archive, executor, check and train functions, are the pipeline's
constructor arguments): the task and the ``TrainConfig`` every candidate trains with, the seeds, the repair
rounds, the baseline and ranking, successive halving and the near-duplicate distance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lossforge.discovery.config_groups import FidelityConfig
    from lossforge.discovery.stats.multi_task import Aggregate
    from lossforge.discovery.stats.seed_stats import RankBy
    from lossforge.evaluate.training.config import TrainConfig


@dataclass(frozen=True)
class PipelineSettings:
    """Every admitted candidate is trained with ``train_config`` once per seed of ``seeds`` (the run's search
    seeds) and compared, seed by seed, with the ``baseline`` of generation 0 (``scoring.seed_stats``).

    ``threads`` bounds the concurrent proposals and checks; ``fidelity`` (None: off) is successive halving of
    generations >= 1 (``scoring.fidelity``); ``near_duplicates`` (None: exact fingerprints only) the distance of
    gradient directions at or below which a candidate is a duplicate (``search.novelty``). With several tasks,
    ``task_configs`` holds each task's ``TrainConfig`` (``train_config`` is the first's) and ``aggregate`` how the
    normalized task scores make one (``stats.multi_task``).
    """

    task: str
    train_config: TrainConfig
    run_seed: int
    seeds: tuple[int, ...]
    repair_rounds: int
    threads: int = 4
    baseline: str | None = None
    rank_by: RankBy = "mean"
    fidelity: FidelityConfig | None = None
    near_duplicates: float | None = None
    task_configs: tuple[TrainConfig, ...] = ()
    aggregate: Aggregate = "mean"

    @property
    def multi_task(self) -> bool:
        """Whether candidates train on several tasks (``task_configs``, one per task; ``stats.multi_task``)."""
        return len(self.task_configs) >= 2

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("a pipeline needs at least one training seed")
        if self.threads < 1 or self.repair_rounds < 0:
            raise ValueError(f"threads must be >= 1 and repair_rounds >= 0, got {self.threads}, {self.repair_rounds}")


__all__ = ["PipelineSettings"]
