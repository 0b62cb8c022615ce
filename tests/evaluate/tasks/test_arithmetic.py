"""The arithmetic task: one-digit-wrong pairs, greedy accuracy, log-prob change metrics (smoke budgets)."""

from __future__ import annotations

import random

import pytest
import torch
from lossforge.evaluate.tasks.arithmetic import ArithmeticTask, one_digit_wrong

SMOKE = {"sft_steps": 80, "sft_problems": 600, "train_pairs": 64, "heldout_problems": 32}


@pytest.fixture(scope="module")
def task() -> ArithmeticTask:
    return ArithmeticTask(SMOKE)


def test_one_digit_wrong_has_edit_distance_one() -> None:
    rng = random.Random(0)
    for answer in ("7", "47", "100", "198"):
        for _ in range(50):
            wrong = one_digit_wrong(answer, rng)
            assert len(wrong) == len(answer) and sum(a != b for a, b in zip(answer, wrong)) == 1
            assert len(wrong) == 1 or wrong[0] != "0"


def test_pairs_are_correct_versus_one_digit_wrong(task: ArithmeticTask) -> None:
    data = task.preference_data()
    assert data.column_names == ["prompt", "chosen", "rejected"] and len(data) == SMOKE["train_pairs"]
    heldout = {pair["prompt"] for pair in task.data()["heldout_pairs"]}
    for row in data:
        a, b = row["prompt"].removesuffix("=").split("+")
        assert row["chosen"] == str(int(a) + int(b)) and row["prompt"] not in heldout
        assert sum(x != y for x, y in zip(row["chosen"], row["rejected"])) == 1


def test_cache_key_and_reload(task: ArithmeticTask) -> None:
    _model, tokenizer = task.reference()
    assert tokenizer.decode(tokenizer("12+35=")["input_ids"], skip_special_tokens=True) == "12+35="
    assert task.cache_key() != ArithmeticTask(SMOKE, task_seed=5).cache_key()
    assert ArithmeticTask(SMOKE).preference_data()[:] == task.preference_data()[:]  # loaded, not rebuilt


def test_reference_score_and_metric_names(task: ArithmeticTask) -> None:
    model, tokenizer = task.reference()
    result = task.score(model, tokenizer, seed=0)
    assert set(result.metrics) == {"accuracy", "chosen_logp_change", "margin_change"}
    assert result.score == result.metrics["accuracy"] and 0.0 <= result.score <= 1.0
    assert result.metrics["chosen_logp_change"] == pytest.approx(0.0, abs=1e-5)
    assert task.score(model, tokenizer, seed=1) == result  # greedy: no randomness at all


def test_metrics_see_a_changed_policy(task: ArithmeticTask) -> None:
    from peft import LoraConfig, get_peft_model

    model, tokenizer = task.reference()
    policy = get_peft_model(model, LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    result = task.score(policy, tokenizer, seed=0)
    assert result.metrics["chosen_logp_change"] != pytest.approx(0.0, abs=1e-4)
