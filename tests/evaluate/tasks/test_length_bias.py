"""The length_bias task: biased labels make chosen reviews longer; data, cache key and options (smoke budgets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lossforge.evaluate.tasks import grammar
from lossforge.evaluate.tasks.base import TaskError
from lossforge.evaluate.tasks.length_bias import LengthBiasTask

# A smoke SFT budget, part of the cache key, so it never stands in for the default reference.
SMOKE = {"sft_steps": 120, "sft_reviews": 1000, "train_pairs": 64, "heldout_pairs": 16}


@pytest.fixture(scope="module")
def task(cache: Path) -> LengthBiasTask:
    return LengthBiasTask(SMOKE, cache_dir=cache, eval_samples=24)


def test_data_columns_and_sizes(task: LengthBiasTask) -> None:
    data = task.preference_data()
    assert data.column_names == ["prompt", "chosen", "rejected"] and len(data) == SMOKE["train_pairs"]
    assert len(task.data()["heldout_pairs"]) == SMOKE["heldout_pairs"]
    heldout = set(task.data()["heldout_prompts"])
    assert not heldout & set(data["prompt"])
    assert task.max_length >= 4 + task.config["max_new_tokens"] and task.max_length <= task.model_spec.max_positions


def test_chosen_is_longer_while_the_labeller_adds_its_bonus(task: LengthBiasTask) -> None:
    pairs = task.data()["train"]
    bonus = task.config["length_bonus"]
    for pair in pairs:
        for side in ("chosen", "rejected"):
            text = pair["prompt"] + pair[side]
            gold = grammar.gold_reward(text)
            assert gold == pytest.approx(pair[f"{side}_reward"])
            extra = text.split().count(".") - 1  # sentences beyond the first
            assert pair[f"{side}_labelled_reward"] == pytest.approx(gold + bonus * extra)
            assert pair[f"{side}_length"] == len(pair[side].split())
        # The labeller, not the gold reward, decides: its gap is clear, the gold one need not be.
        assert pair["chosen_labelled_reward"] - pair["rejected_labelled_reward"] >= task.config["min_reward_gap"]
    stats = task.data()["pair_stats"]
    assert stats["chosen_length"] >= stats["rejected_length"] + 3, stats  # a clear length bias
    assert stats["chosen_length"] == pytest.approx(sum(p["chosen_length"] for p in pairs) / len(pairs))


def test_without_bonus_the_lengths_are_balanced(cache: Path) -> None:
    stats = LengthBiasTask({**SMOKE, "length_bonus": 0}, cache_dir=cache).data()["pair_stats"]
    assert abs(stats["chosen_length"] - stats["rejected_length"]) < 2, stats
    assert stats["gold_disagrees"] == 0.0


def test_same_task_seed_same_data_other_seed_other_data(task: LengthBiasTask, cache: Path) -> None:
    again = LengthBiasTask(SMOKE, cache_dir=cache)
    assert again.cache_key() == task.cache_key() and again.data()["train"] == task.data()["train"]
    other = LengthBiasTask(SMOKE, cache_dir=cache, task_seed=7)
    assert other.cache_key() != task.cache_key()
    assert other.data()["train"] != task.data()["train"]
    assert LengthBiasTask({**SMOKE, "length_bonus": 0.3}, cache_dir=cache).cache_key() != task.cache_key()


def test_unknown_option_is_refused() -> None:
    with pytest.raises(TaskError, match="unknown option.*'bonus'.*length_bonus"):
        LengthBiasTask({"bonus": 1.0})


def test_score_reports_length(task: LengthBiasTask) -> None:
    model, tokenizer = task.reference()
    result = task.score(model, tokenizer, seed=0)
    assert set(result.metrics) >= {"reward", "length", "kl"} and result.score == result.metrics["reward"]
    assert result.metrics["length"] > 0 and "length" in task.headline_metrics
