"""The hf task's ``score: reward``: sampled completions scored by a reward, win rate, KL and length, on a tiny Llama."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from lossforge.evaluate.tasks import rewards
from lossforge.evaluate.tasks.base import TaskError
from lossforge.evaluate.tasks.generation import generate, win_rate
from lossforge.evaluate.tasks.hf import HFTask

from tests.paths import ROOT
from tests.tiny_hf import build_tiny_model, nudge, standard_rows, write_jsonl

REWARD = {"score": "reward", "reward": "liked_words", "max_new_tokens": 8, "samples": 2, "eval_fraction": 0.3}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Words the test reward counts: about a third of the tiny vocabulary, so rewards vary from sample to sample.
LIKED = ("good", "fine", "one", "two", "three", "a", "b", "c")


class LikedWords:
    """How many liked words the completion says: a reward whose value the sampled tokens give in closed form."""

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str]) -> list[float]:
        return [float(sum(word in LIKED for word in text.split())) for text in completions]


@pytest.fixture(autouse=True)
def _good_count_reward(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(rewards.REWARDS, "liked_words", LikedWords)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", standard_rows(10))


def make_task(model: Path, dataset: Path, **options: Any) -> HFTask:
    return HFTask({"model": str(model), "dataset": str(dataset), **REWARD, **options})


def random_adapter(model: torch.nn.Module) -> Any:
    """The model under a LoRA adapter with random B: a policy that differs from its reference."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    policy = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 2.0)
    return policy


def test_policy_equal_to_reference_has_zero_kl_and_even_win_rate(tiny_model: Path, dataset: Path) -> None:
    task = make_task(tiny_model, dataset)
    model, tokenizer = task.reference()
    result = task.score(model, tokenizer, seed=0)  # not a PEFT model: the reference is reloaded, same weights
    metrics = result.metrics
    # The same seed for both: the reference writes exactly the policy's samples.
    assert metrics["kl"] == 0.0 and metrics["win_rate"] == 0.5
    assert result.score == metrics["reward"] == metrics["reference_reward"]
    assert metrics["n_eval"] == 3.0 and metrics["n_samples"] == 6.0
    assert 1.0 <= metrics["length"] <= 8.0


def test_reward_win_rate_and_kl_match_closed_form(tiny_model: Path, dataset: Path) -> None:
    temperature, seed = 0.7, 3
    task = make_task(tiny_model, dataset, temperature=temperature)
    model, tokenizer = task.reference()
    # Trained towards liked words, so its samples differ from the reference's and win more often. Not a PEFT
    # model: the task reloads the reference from disk.
    policy, reference = model, task.reference()[0]
    nudge(policy, tokenizer, [row["prompt"] + " good fine one two three a b c" for row in standard_rows(10)])
    metrics = task.score(policy, tokenizer, seed=seed).metrics

    prompt_ids = [tokenizer(row["prompt"])["input_ids"] for row in task.eval_rows() for _ in range(2)]
    liked = set(tokenizer.convert_tokens_to_ids(list(LIKED)))

    def samples(model: Any) -> list[list[int]]:
        generator = torch.Generator().manual_seed(seed)
        return generate(
            model,
            prompt_ids,
            eos_token_id=tokenizer.eos_token_id,
            max_new_tokens=8,
            generator=generator,
            temperature=temperature,
            batch_size=task.eval_batch_size,  # the batch decides the order of the draws
        )

    policy.eval()
    policy_samples, reference_samples = samples(policy), samples(reference)
    assert policy_samples != reference_samples  # the training changed what is written
    policy_rewards = [float(sum(token in liked for token in s)) for s in policy_samples]
    reference_rewards = [float(sum(token in liked for token in s)) for s in reference_samples]
    assert len(set(policy_rewards + reference_rewards)) > 2 and metrics["win_rate"] > 0.5  # rewards that discriminate
    assert metrics["reward"] == pytest.approx(sum(policy_rewards) / len(policy_rewards))
    assert metrics["reference_reward"] == pytest.approx(sum(reference_rewards) / len(reference_rewards))
    wins = [1.0 if p > r else 0.5 if p == r else 0.0 for p, r in zip(policy_rewards, reference_rewards)]
    assert (
        metrics["win_rate"]
        == pytest.approx(sum(wins) / len(wins))
        == pytest.approx(win_rate(policy_rewards, reference_rewards))
    )
    assert metrics["length"] == pytest.approx(sum(map(len, policy_samples)) / len(policy_samples))

    def sequence_logp(model: Any, prompt: list[int], completion: list[int]) -> float:
        """Sum over the sampled tokens of log softmax(logits / T), one unpadded sequence at a time, float64."""
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].double() / temperature
        logps = torch.log_softmax(logits, dim=-1)
        positions = torch.arange(len(prompt) - 1, ids.shape[1] - 1)
        return float(logps[positions, ids[0, len(prompt) :]].sum())

    policy_logps = [sequence_logp(policy, p, c) for p, c in zip(prompt_ids, policy_samples)]
    reference_logps = [sequence_logp(reference, p, c) for p, c in zip(prompt_ids, policy_samples)]
    expected_kl = sum(a - b for a, b in zip(policy_logps, reference_logps)) / len(policy_logps)
    assert metrics["kl"] == pytest.approx(expected_kl, abs=1e-4)
    assert expected_kl > 0.5  # the comparison is not between two zeros


def test_same_seed_same_score_other_seed_differs(tiny_model: Path, dataset: Path) -> None:
    task = make_task(tiny_model, dataset, temperature=1.5)
    model, tokenizer = task.reference()
    policy = random_adapter(model)
    first = task.score(policy, tokenizer, seed=5)
    assert task.score(policy, tokenizer, seed=5) == first
    assert task.score(policy, tokenizer, seed=6).metrics != first.metrics


def test_cache_key_follows_the_score_settings(tiny_model: Path, dataset: Path) -> None:
    plain = HFTask({"model": str(tiny_model), "dataset": str(dataset)})
    explicit = HFTask({"model": str(tiny_model), "dataset": str(dataset), "score": "pref_accuracy"})
    assert plain.cache_key() == explicit.cache_key()
    keys = {
        plain.cache_key(),
        make_task(tiny_model, dataset).cache_key(),
        make_task(tiny_model, dataset, temperature=0.5).cache_key(),
        make_task(tiny_model, dataset, max_new_tokens=9).cache_key(),
        make_task(tiny_model, dataset, samples=3).cache_key(),
        make_task(tiny_model, dataset, reward="vader").cache_key(),
    }
    assert len(keys) == 6


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"score": "rewards"}, "option score must be one of pref_accuracy, reward, got 'rewards'"),
        (
            {"score": "reward"},
            (
                "score=reward needs exactly one of the options reward (built-in: vader, liked_words) and "
                "reward_model (a sequence-classification model)"
            ),
        ),
        ({"reward": "vader"}, "option(s) reward apply only with score=reward"),
        ({"temperature": 0.7, "samples": 2}, "option(s) temperature, samples apply only with score=reward"),
        ({"score": "reward", "reward": "vader", "temperature": 0}, "option temperature must be > 0, got 0.0"),
        ({"score": "reward", "reward": "vader", "samples": 0}, "option samples must be a positive integer, got 0"),
        (
            {"score": "reward", "reward": "vader", "max_new_tokens": 64, "max_length": 64},
            "option max_new_tokens must be in [1, 64) (max_length), got 64",
        ),
    ],
)
def test_bad_score_options_are_one_clear_error(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(TaskError) as info:
        HFTask({"model": "m", "dataset": "d", **options})
    assert str(info.value) == message


def test_judge_refuses_the_hf_score_options() -> None:
    from lossforge.evaluate.tasks.judge import JudgeTask

    # The judge grades answers: hf's score options are not among its options, so they are refused by name.
    with pytest.raises(TaskError, match=r"unknown option\(s\) 'reward', 'score' for task 'judge'; valid: "):
        JudgeTask(
            {
                "model": "m",
                "dataset": "d",
                "questions": "q.jsonl",
                "judge_model": "j",
                "score": "reward",
                "reward": "vader",
            }
        )


def test_train_cli_scores_by_vader_end_to_end(tiny_model: Path, dataset: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from lossforge.discovery.cli import main; main()",
            "train",
            "dpo",
            "--task",
            "hf",
            "--model",
            str(tiny_model),
            "--dataset",
            str(dataset),
            "--steps",
            "2",
            "--option",
            "score=reward",
            "--option",
            "reward=vader",
            "--option",
            "max_new_tokens=8",
            "--option",
            "eval_fraction=0.3",
            "--threads",
            "1",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    payload = json.loads(completed.stdout)
    assert payload["status"] == "ok"
    assert math.isfinite(payload["score"]) and -1.0 <= payload["score"] <= 1.0
    metrics = payload["metrics"]
    assert payload["score"] == metrics["reward"] and metrics["n_eval"] == 3.0
    assert 0.0 <= metrics["win_rate"] <= 1.0 and math.isfinite(metrics["kl"]) and 1.0 <= metrics["length"] <= 8.0
