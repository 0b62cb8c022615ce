"""The seed-result cache misses whenever something that decides a score changes: a task default the user never
set (sentiment's ``sample_temperature``, outside the task's own cache key), a training setting, the training and
task code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lossforge.discovery.storage import seed_cache
from lossforge.discovery.storage.seed_cache import SeedCache, budget_key, tree_hash
from lossforge.evaluate.tasks import sentiment
from lossforge.evaluate.training.config import TrainConfig
from lossforge.evaluate.training.result import RunResult

RESULT = RunResult(status="ok", score=0.5, metrics={"kl": 1.0})


def test_changing_a_task_default_misses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = SeedCache(tmp_path)
    config = TrainConfig(task="sentiment", steps=2, eval_samples=8)
    budget = budget_key(config)
    assert cache.put("sentiment", "fp", 0.1, 0, budget, RESULT)
    assert cache.get("sentiment", "fp", 0.1, 0, budget_key(config))["score"] == 0.5  # type: ignore[index]

    task_key = budget["task_key"]
    monkeypatch.setitem(sentiment.DEFAULTS, "sample_temperature", 0.7)
    changed = budget_key(config)
    assert changed["task_key"] == task_key  # scoring-only: the task's own key does not see it...
    assert cache.get("sentiment", "fp", 0.1, 0, changed) is None  # ...the seed cache does
    monkeypatch.undo()

    assert (
        cache.get(
            "sentiment", "fp", 0.1, 0, budget_key(TrainConfig(task="sentiment", steps=2, eval_samples=8, lora_r=8))
        )
        is None
    )  # a training setting
    monkeypatch.setattr(sentiment.SentimentTask, "default_learning_rate", 1e-3)  # a task's training default
    assert cache.get("sentiment", "fp", 0.1, 0, budget_key(config)) is None


def test_changing_the_training_or_task_code_misses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lossforge.evaluate import tasks, training

    copies = []
    for package in (training, tasks):
        copy = tmp_path / Path(package.__file__).parent.name
        shutil.copytree(Path(package.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
        copies.append(copy)
    assert tree_hash(copies) == seed_cache.code_hash()  # the hash is of the content, not of where it lives
    with (copies[0] / "worker.py").open("a") as handle:
        handle.write("\n# an edit\n")
    edited = tree_hash(copies)
    assert edited != seed_cache.code_hash()

    cache = SeedCache(tmp_path / "cache")
    budget = {"steps": 2}
    cache.put("sentiment", "fp", 0.1, 0, budget, RESULT)
    monkeypatch.setattr(seed_cache, "code_hash", lambda: edited)
    assert cache.get("sentiment", "fp", 0.1, 0, budget) is None
