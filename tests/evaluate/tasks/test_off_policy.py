"""The off_policy task: generated pairs and their labels, how off-policy they are, sentiment's reference and
held-out data, determinism, options. Fast: the reference is sentiment's shipped one, and building the pairs
takes about a second (64 of them here, in a fresh cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lossforge.evaluate.tasks import grammar
from lossforge.evaluate.tasks.base import TaskError
from lossforge.evaluate.tasks.off_policy import OffPolicyTask, reference_logp_per_token
from lossforge.evaluate.tasks.sentiment import SentimentTask

SMALL = {"train_pairs": 64}


@pytest.fixture(scope="module")
def task(cache: Path) -> OffPolicyTask:
    return OffPolicyTask(SMALL, cache_dir=cache, eval_samples=24)


def test_pairs_have_the_columns_the_size_and_the_gold_label(task: OffPolicyTask) -> None:
    data = task.preference_data()
    assert data.column_names == ["prompt", "chosen", "rejected"] and len(data) == SMALL["train_pairs"]
    heldout = set(task.data()["heldout_prompts"])
    for pair in task.data()["train"]:
        assert pair["prompt"] not in heldout
        chosen = grammar.gold_reward(pair["prompt"] + pair["chosen"])
        rejected = grammar.gold_reward(pair["prompt"] + pair["rejected"])
        assert (chosen, rejected) == (pair["chosen_reward"], pair["rejected_reward"])
        assert chosen - rejected >= task.config["min_reward_gap"]
        assert abs(len(pair["chosen"].split()) - len(pair["rejected"].split())) <= task.config["max_length_gap"]
        assert pair["chosen"].startswith(" ") and {pair["chosen_by"], pair["rejected_by"]} == {"stronger", "weaker"}
    by_stronger = sum(pair["chosen_by"] == "stronger" for pair in task.data()["train"])
    assert SMALL["train_pairs"] / 2 < by_stronger < SMALL["train_pairs"]  # the gold reward, not the writer, labels


def test_completions_are_not_reference_samples(task: OffPolicyTask, cache: Path) -> None:
    """The reference finds the generators' texts far less likely per token than its own on-policy pairs."""
    model, tokenizer = task.reference()
    on_policy = SentimentTask(cache_dir=cache).data()["train"][: SMALL["train_pairs"]]
    generated = reference_logp_per_token(model, tokenizer, task.data()["train"], "chosen")
    sampled = reference_logp_per_token(model, tokenizer, on_policy, "chosen")
    assert generated < sampled - 0.3, (generated, sampled)
    recorded = task.data()
    assert recorded["train_reference_logp"]["chosen"] == pytest.approx(generated)
    assert recorded["train_reference_logp"]["chosen"] < recorded["on_policy_reference_logp"]["chosen"] - 0.3
    assert recorded["train_reference_logp"]["rejected"] < recorded["on_policy_reference_logp"]["rejected"] - 0.3


def test_options_key_the_cache_and_unknown_ones_are_refused(task: OffPolicyTask, cache: Path) -> None:
    assert OffPolicyTask({**SMALL, "second_sentence": 0.2}, cache_dir=cache).cache_key() != task.cache_key()
    assert OffPolicyTask({**SMALL, "sample_temperature": 0.7}, cache_dir=cache).cache_key() == task.cache_key()
    with pytest.raises(TaskError, match="unknown option.*flip_rate"):
        OffPolicyTask({"flip_rate": 0.3}, cache_dir=cache)


def test_score_of_the_reference(task: OffPolicyTask) -> None:
    model, tokenizer = task.reference()
    result = task.score(model, tokenizer, seed=0)
    assert result.score == result.metrics["reward"] and -1.0 <= result.score <= 1.0
    assert result.metrics["kl"] == pytest.approx(0.0, abs=1e-5)
