"""The task registry: names, lazy classes, user tasks given as package.module:ClassName."""

from __future__ import annotations

import sys
import types

import pytest
from lossforge.evaluate.tasks import TASK_NAMES, TASKS, TaskError, get_task, task_name_problem
from lossforge.evaluate.tasks.arithmetic import ArithmeticTask
from lossforge.evaluate.tasks.base import Task, TaskScore
from lossforge.evaluate.tasks.sentiment import SentimentTask


def test_names_and_default_first() -> None:
    assert TASK_NAMES == (
        "sentiment",
        "arithmetic",
        "off_policy",
        "noisy_labels",
        "length_bias",
        "overoptimization",
        "hf",
        "reviews",
        "judge",
    )
    assert list(TASKS) == list(TASK_NAMES)
    assert TASKS["sentiment"] is SentimentTask and TASKS["arithmetic"] is ArithmeticTask
    assert TASKS.get("nope") is None


def test_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(
        TaskError, match="unknown task 'nope'; known: sentiment, arithmetic, off_policy, noisy_labels, length_bias"
    ):
        get_task("nope")


def test_task_name_problem_accepts_registered_and_module_class_names() -> None:
    assert task_name_problem("judge") is None and task_name_problem("no_such.module:Task") is None
    assert task_name_problem("nope") == (
        "unknown task 'nope'; known: sentiment, arithmetic, off_policy, noisy_labels, length_bias, overoptimization, "
        "hf, reviews, judge (or 'package.module:ClassName')"
    )


def test_get_task_passes_options_cache_and_eval_samples(tmp_path) -> None:
    task = get_task("arithmetic", {"sft_steps": 7}, cache_dir=tmp_path, eval_samples=5)
    assert isinstance(task, ArithmeticTask)
    assert task.config["sft_steps"] == 7 and task.cache_dir == tmp_path and task.eval_samples == 5


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(TaskError, match=r"unknown option\(s\) 'stpes' for task 'sentiment'; valid: sft_reviews, "):
        get_task("sentiment", {"stpes": 3})


class _EchoTask(Task):
    name = "echo"
    default_steps = 1

    def cache_key(self) -> str:
        return "echo"

    def reference(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def preference_data(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def score(self, policy, tokenizer, *, seed: int) -> TaskScore:  # type: ignore[no-untyped-def]
        return TaskScore(score=float(seed))


def test_user_task_by_module_path(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("my_tasks_for_test")
    module.EchoTask = _EchoTask  # type: ignore[attr-defined]
    module.NotATask = dict  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "my_tasks_for_test", module)
    task = get_task("my_tasks_for_test:EchoTask", {"x": 1})
    assert isinstance(task, _EchoTask) and task.options == {"x": 1}
    with pytest.raises(TaskError, match="is not a subclass"):
        get_task("my_tasks_for_test:NotATask")
    with pytest.raises(TaskError, match="cannot load task class"):
        get_task("my_tasks_for_test:Missing")
    with pytest.raises(TaskError, match="cannot load task class"):
        get_task("no_such_module_xyz:Task")
