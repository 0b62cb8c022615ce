"""The overoptimization task: the first few of sentiment's pairs on sentiment's reference; data, cache key, options."""

from __future__ import annotations

from pathlib import Path

import pytest
from lossforge.evaluate.tasks import grammar
from lossforge.evaluate.tasks.base import TaskError
from lossforge.evaluate.tasks.overoptimization import OverOptimizationTask
from lossforge.evaluate.tasks.sentiment import SentimentTask

SMALL = {"train_pairs": 32, "heldout_pairs": 16}


@pytest.fixture(scope="module")
def task(cache: Path) -> OverOptimizationTask:
    return OverOptimizationTask(SMALL, cache_dir=cache, eval_samples=24)


def test_default_is_a_small_preference_set() -> None:
    assert OverOptimizationTask.OPTIONS["train_pairs"] < SentimentTask.OPTIONS["train_pairs"] // 4
    assert OverOptimizationTask.default_learning_rate > SentimentTask.default_learning_rate
    assert "kl" in OverOptimizationTask.headline_metrics


def test_pair_count_and_columns(task: OverOptimizationTask) -> None:
    data = task.preference_data()
    assert data.column_names == ["prompt", "chosen", "rejected"] and len(data) == SMALL["train_pairs"]
    assert len(task.data()["heldout_pairs"]) == SMALL["heldout_pairs"]
    assert not set(task.data()["heldout_prompts"]) & set(data["prompt"])
    for row in data:  # labelled by the gold reward, as in sentiment
        chosen = grammar.gold_reward(row["prompt"] + row["chosen"])
        assert chosen - grammar.gold_reward(row["prompt"] + row["rejected"]) >= task.config["min_reward_gap"]


def test_the_pairs_are_the_first_of_sentiments(task: OverOptimizationTask) -> None:
    assert task.data()["train"] == task.sentiment().data()["train"][: SMALL["train_pairs"]]
    assert OverOptimizationTask({**SMALL, "train_pairs": 33}, cache_dir=task.cache_dir).cache_key() != task.cache_key()


def test_unknown_options_are_refused_and_sft_options_reach_the_reference(cache: Path) -> None:
    with pytest.raises(TaskError, match="unknown option.*'pairs'.*train_pairs"):
        OverOptimizationTask({"pairs": 64})
    # The reference is sentiment's: its SFT options are handed on, so they change that reference and this key.
    other = OverOptimizationTask({**SMALL, "sft_steps": 10}, cache_dir=cache)
    assert other.sentiment().config["sft_steps"] == 10
    assert other.cache_key() != OverOptimizationTask(SMALL, cache_dir=cache).cache_key()


def test_score_of_the_reference(task: OverOptimizationTask) -> None:
    model, tokenizer = task.reference()
    result = task.score(model, tokenizer, seed=0)
    assert result.score == result.metrics["reward"] and result.metrics["kl"] == pytest.approx(0.0, abs=1e-5)
