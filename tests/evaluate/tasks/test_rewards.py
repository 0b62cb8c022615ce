"""Rewards of generated text: VADER, a sequence classifier as reward model, and the refusals of bad reward models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lossforge.evaluate.tasks.base import TaskError
from lossforge.evaluate.tasks.hf import HFTask
from lossforge.evaluate.tasks.rewards import ClassifierReward, RewardSpec, VaderReward, reward_by_name
from transformers import AutoTokenizer, LlamaForSequenceClassification

from tests.tiny_hf import build_tiny_model, standard_rows, tiny_llama_config, write_jsonl

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build_classifier(directory: Path, *, num_labels: int, id2label: dict[int, str] | None = None) -> Path:
    """A 2-layer Llama sequence classifier with the tiny word-level tokenizer, written with save_pretrained."""
    build_tiny_model(directory)  # writes the tokenizer (and a causal LM, replaced below)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    config = tiny_llama_config(
        len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        num_labels=num_labels,
        **({"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}),
    )
    torch.manual_seed(0)
    for stale in directory.glob("*.safetensors"):
        stale.unlink()
    LlamaForSequenceClassification(config).save_pretrained(directory)
    return directory


def direct_logits(directory: Path, text: str) -> torch.Tensor:
    """The classifier's logits for one unpadded text: the closed-form value a batched reward must equal."""
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = LlamaForSequenceClassification.from_pretrained(directory, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits[0]


def test_vader_scores_positive_above_zero_above_negative() -> None:
    reward = reward_by_name("vader")
    positive, neutral, negative = reward(
        ["The film was", "The film was", "The film was"],
        [" wonderful, I loved every minute of it.", " ninety minutes long.", " a terrible, boring waste of time."],
    )
    assert positive > 0.5 and neutral == 0.0 and negative < -0.5
    assert VaderReward()(["awful prompt"], [" great"]) == reward([""], [" great"])  # the prompt is not scored


def test_unknown_builtin_reward_names_the_known_ones() -> None:
    with pytest.raises(TaskError, match=r"unknown reward 'sentiment'; built-in rewards: vader"):
        reward_by_name("sentiment")


def test_single_logit_classifier_reward_equals_the_logit_of_each_text(tmp_path: Path) -> None:
    directory = build_classifier(tmp_path / "rm", num_labels=1)
    reward = ClassifierReward(str(directory), batch_size=3)
    prompts = ["a b", "what is the answer", "c"]
    completions = [" good good", " one two three fine", " bad"]  # different lengths: the batch is padded
    rewards = reward(prompts, completions)
    expected = [direct_logits(directory, p + c)[0].item() for p, c in zip(prompts, completions)]
    assert rewards == pytest.approx(expected, abs=1e-5)
    assert len(set(rewards)) == 3


def test_several_labels_need_reward_label_and_use_its_logit(tmp_path: Path) -> None:
    directory = build_classifier(tmp_path / "cls", num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"})
    with pytest.raises(TaskError) as info:
        ClassifierReward(str(directory))
    assert str(info.value) == (
        f"reward_model '{directory}' has 3 labels (negative, neutral, positive); say which one is good with the "
        "option reward_label"
    )
    with pytest.raises(
        TaskError, match=r"reward_label 'great' is not a label .*\(labels: negative, neutral, positive\)"
    ):
        ClassifierReward(str(directory), label="great")
    by_name = ClassifierReward(str(directory), label="positive")(["a b"], [" good"])
    by_index = ClassifierReward(str(directory), label=2)(["a b"], [" good"])
    assert by_name == by_index == pytest.approx([direct_logits(directory, "a b good")[2].item()], abs=1e-5)


def test_causal_lm_as_reward_model_is_one_clear_error(tmp_path: Path) -> None:
    causal = build_tiny_model(tmp_path / "causal")
    expected = (
        f"reward_model '{causal}' is LlamaForCausalLM, not a sequence classifier (AutoModelForSequenceClassification); "
        "give a reward or classification model, or a built-in reward with the option reward"
    )
    with pytest.raises(TaskError) as info:
        ClassifierReward(str(causal))
    assert str(info.value) == expected
    # Through the hf task: refused when its cache key is computed, before any training is spent.
    task = HFTask(
        {
            "model": str(causal),
            "dataset": str(write_jsonl(tmp_path / "p.jsonl", standard_rows())),
            "score": "reward",
            "reward_model": str(causal),
        }
    )
    with pytest.raises(TaskError) as info:
        task.cache_key()
    assert str(info.value) == expected


def test_reward_spec_refuses_contradictions() -> None:
    with pytest.raises(TaskError, match="needs exactly one of the options reward .* and reward_model"):
        RewardSpec()
    with pytest.raises(TaskError, match="needs exactly one"):
        RewardSpec("vader", "some/model")
    with pytest.raises(TaskError, match=r"option reward must be one of vader, got 'vadr'"):
        RewardSpec("vadr")
    with pytest.raises(TaskError, match="reward_label .* needs the option reward_model"):
        RewardSpec("vader", label="positive")


def test_missing_reward_model_directory(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match=r"reward_model '.*nowhere' not found"):
        RewardSpec(model=str(tmp_path / "nowhere")).identity()
