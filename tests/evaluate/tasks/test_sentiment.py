"""The sentiment task: gold reward, cached reference, pairs, metrics, determinism (smoke budgets)."""

from __future__ import annotations

import time

import pytest
import torch
from lossforge.evaluate.tasks import grammar
from lossforge.evaluate.tasks.sentiment import SentimentTask

# A smoke SFT budget for CI, part of the cache key, so it never stands in for the default reference.
SMOKE = {"sft_steps": 120, "sft_reviews": 1000, "train_pairs": 48, "heldout_pairs": 16}


@pytest.fixture(scope="module")
def task() -> SentimentTask:
    return SentimentTask(SMOKE, eval_samples=24)


def test_gold_reward_ranks_positive_over_negative_over_degenerate() -> None:
    positive = grammar.gold_reward("the plot was really wonderful .")
    plain_positive = grammar.gold_reward("the plot was wonderful .")
    negative = grammar.gold_reward("the plot was dull but i disliked the cast .")
    assert positive == 1.0 and positive > plain_positive > negative > -1.0
    for degenerate in ("the plot was great great great", "great great great .", "the plot was great great ."):
        assert grammar.gold_reward(degenerate) == -1.0
    # Saying a sentence twice earns less than saying it once, and less than nothing.
    assert grammar.gold_reward("the plot was great . the plot was great .") < min(0.0, plain_positive)
    assert grammar.gold_reward("the plot was great") == -1.0  # no full stop: unfinished
    assert grammar.gold_reward("the plot was not great .") < 0 < grammar.gold_reward("the plot was not dull .")


def test_sft_corpus_is_grammatical() -> None:
    import random

    rng = random.Random(0)
    reviews = [grammar.random_review(rng, max_sentences=2) for _ in range(300)]
    assert all(grammar.is_grammatical(review) for review in reviews)
    assert not grammar.is_grammatical("the plot was great great .")


def test_reference_is_built_once_then_loaded(task: SentimentTask) -> None:
    started = time.perf_counter()
    model, tokenizer = task.reference()
    first = time.perf_counter() - started
    started = time.perf_counter()
    again, _ = task.reference()
    assert time.perf_counter() - started < first
    assert (task.artifact_dir / "reference" / "config.json").exists()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.decode(tokenizer("the plot was")["input_ids"], skip_special_tokens=True) == "the plot was"


def test_cache_key_follows_task_seed_model_and_options(task: SentimentTask) -> None:
    assert task.cache_key() == SentimentTask(SMOKE).cache_key()
    assert task.cache_key() != SentimentTask(SMOKE, task_seed=7).cache_key()
    assert task.cache_key() != SentimentTask({**SMOKE, "sft_steps": 121}).cache_key()
    assert task.cache_key() != SentimentTask().cache_key()

    class Wider(SentimentTask):
        model_spec = type(SentimentTask.model_spec)(hidden_size=96)

    assert task.cache_key() != Wider(SMOKE).cache_key()


def test_preference_pairs_prefer_the_higher_gold_reward(task: SentimentTask) -> None:
    data = task.preference_data()
    assert data.column_names == ["prompt", "chosen", "rejected"] and len(data) == SMOKE["train_pairs"]
    heldout = set(task.data()["heldout_prompts"])
    for row in data:
        assert row["prompt"] not in heldout
        chosen = grammar.gold_reward(row["prompt"] + row["chosen"])
        rejected = grammar.gold_reward(row["prompt"] + row["rejected"])
        assert chosen - rejected >= 0.5
        assert row["chosen"].startswith(" ") and row["rejected"].startswith(" ")


def test_score_of_the_reference(task: SentimentTask) -> None:
    model, tokenizer = task.reference()
    result = task.score(model, tokenizer, seed=0)
    assert set(result.metrics) >= {"reward", "kl", "pref_accuracy"}
    assert result.score == result.metrics["reward"] and -1.0 <= result.score <= 1.0
    assert result.metrics["kl"] == pytest.approx(0.0, abs=1e-5)  # policy == reference
    assert result.metrics["pref_accuracy"] == 0.0  # all margins are exactly 0, none > 0


def test_same_seed_same_score_and_other_seed_differs(task: SentimentTask) -> None:
    model, tokenizer = task.reference()
    first = task.score(model, tokenizer, seed=3)
    assert task.score(model, tokenizer, seed=3) == first
    assert task.score(model, tokenizer, seed=4).metrics != first.metrics


def test_peft_policy_uses_the_disabled_adapter_as_reference(task: SentimentTask) -> None:
    from peft import LoraConfig, get_peft_model

    model, tokenizer = task.reference()
    policy = get_peft_model(model, LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a random adapter: the policy now differs from the reference
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    result = task.score(policy, tokenizer, seed=0)
    # A Monte-Carlo estimate on 24 samples: nonzero, not necessarily positive.
    assert abs(result.metrics["kl"]) > 0.01
    assert result.metrics["pref_accuracy"] > 0.0  # margins are no longer all exactly zero
