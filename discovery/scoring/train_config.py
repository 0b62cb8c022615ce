"""From a run's configuration to the ``TrainConfig`` each of its trainings gets: the search's candidates and the
confirmation's retrainings on the run's task or another one."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


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
        options=dict(t.options_for(task or t.task) if options is None else options),
        beta=t.beta,
        steps=t.steps,
        seed=config.seed,
        eval_samples=t.eval_samples,
        threads=threads,
        **({"timeout": t.time_limit_s} if t.time_limit_s else {}),
    )


__all__ = ["run_train_config"]
