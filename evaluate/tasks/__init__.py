"""The task registry: the single source of task names (STYLE.md practice 1).

``TASKS`` maps each name to its Task class, imported on first access, so a task whose optional pieces are
missing (say, ``judge`` without a judge client) never breaks the others. ``get_task`` builds a task from a
registered name or from a user's own class given as ``"package.module:ClassName"`` (docs/ADDING_A_TASK.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lossforge.evaluate.tasks.base import Task, TaskError, TaskScore

# name -> "module:Class"; the order is the order of CLI choices, the default first.
_LOCATIONS: dict[str, str] = {
    "sentiment": "lossforge.evaluate.tasks.sentiment:SentimentTask",
    "arithmetic": "lossforge.evaluate.tasks.arithmetic:ArithmeticTask",
    "off_policy": "lossforge.evaluate.tasks.off_policy:OffPolicyTask",
    "noisy_labels": "lossforge.evaluate.tasks.noisy_labels:NoisyLabelsTask",
    "length_bias": "lossforge.evaluate.tasks.length_bias:LengthBiasTask",
    "overoptimization": "lossforge.evaluate.tasks.overoptimization:OverOptimizationTask",
    "hf": "lossforge.evaluate.tasks.hf:HFTask",
    "reviews": "lossforge.evaluate.tasks.reviews:ReviewsTask",
    "judge": "lossforge.evaluate.tasks.judge:JudgeTask",
}
TASK_NAMES: tuple[str, ...] = tuple(_LOCATIONS)
DEFAULT_TASK = "sentiment"


def load_task_class(location: str) -> type[Task]:
    """Import ``"package.module:ClassName"`` and check that it is a Task subclass."""
    module_name, colon, class_name = location.partition(":")
    if not colon or not module_name or not class_name:
        raise TaskError(f"task class {location!r} must be written 'package.module:ClassName'")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise TaskError(f"cannot load task class {location!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TaskError(f"{location!r} is not a subclass of lossforge.evaluate.tasks.base.Task")
    return cls


class _TaskRegistry(Mapping[str, type[Task]]):
    """Read-only ``name -> Task class``; a class is imported when first looked up."""

    def __getitem__(self, name: str) -> type[Task]:
        if name not in _LOCATIONS:
            raise KeyError(name)
        return load_task_class(_LOCATIONS[name])

    def __iter__(self) -> Iterator[str]:
        return iter(_LOCATIONS)

    def __len__(self) -> int:
        return len(_LOCATIONS)


TASKS: Mapping[str, type[Task]] = _TaskRegistry()


def task_location(name: str) -> str | None:
    """``"package.module:ClassName"`` of a registered task name or of a user task given that way; None when
    the name is unknown. Imports nothing (review commands read a task's attributes from its source)."""
    return name if ":" in name else _LOCATIONS.get(name)


def task_name_problem(name: str) -> str | None:
    """Why ``name`` names no task, or None when it does: a registered name, or a name written
    ``"package.module:ClassName"`` (whether that class loads is ``load_task_class``'s to say). Imports nothing."""
    if ":" in name or name in _LOCATIONS:
        return None
    return f"unknown task {name!r}; known: {', '.join(TASK_NAMES)} (or 'package.module:ClassName')"


def task_class(name: str) -> type[Task]:
    """The Task class called ``name``: a registered name or ``"package.module:ClassName"``."""
    problem = task_name_problem(name)
    if problem is not None:
        raise TaskError(problem)
    return load_task_class(name) if ":" in name else TASKS[name]


def get_task(
    name: str,
    options: dict[str, Any] | None = None,
    *,
    cache_dir: Path | str | None = None,
    eval_samples: int | None = None,
) -> Task:
    """The task called ``name`` (a registered name or ``"package.module:ClassName"``), ready to use."""
    cls = task_class(name)
    return cls(options, cache_dir=Path(cache_dir) if cache_dir is not None else None, eval_samples=eval_samples)


__all__ = [
    "DEFAULT_TASK",
    "TASKS",
    "TASK_NAMES",
    "Task",
    "TaskError",
    "TaskScore",
    "get_task",
    "load_task_class",
    "task_class",
    "task_location",
    "task_name_problem",
]
