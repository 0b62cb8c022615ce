"""The token counts a length-aware loss receives during training are the tokenized completions' lengths.

``CandidateDPOTrainer`` passes ``chosen_lengths``/``rejected_lengths`` as the number of completion tokens TRL
scores (the shifted completion mask, after ``max_length`` truncation). Here a recording loss (DPO that appends
what it is called with to a list) trains one epoch on the tiny task's pairs plus a few of other lengths, with a
``max_length`` small enough to truncate some of them, and the recorded lengths are compared with lengths
computed from the text itself: words of the prompt and of the completion (plus the EOS that TRL appends),
truncated as ``truncation_mode`` says, minus the first token of the sequence, which nothing predicts. End to
end, ``ln_dpo`` trained by ``CandidateDPOTrainer`` follows TRL's own length-normalized ``sigmoid_norm`` step for
step on the same truncated data.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import datasets
import pytest
import torch
import torch.nn.functional as F
from lossforge.candidates import load_builtin
from lossforge.evaluate.training.candidate_trainer import CandidateDPOTrainer
from peft import LoraConfig
from trl import DPOConfig, DPOTrainer

from tests.tiny_task import tiny_llama, tiny_pairs, tiny_tokenizer

MAX_LENGTH = 8

# Pairs beyond the tiny task's (4-word prompt, 3-word completions): short and long prompts and completions. With
# MAX_LENGTH = 8, "keep_start" cuts the completions of the long prompts and drops the 8-word prompt (TRL filters
# prompts that fill max_length); "keep_end" keeps every completion end, and an 8-token completion loses its first
# token (it opens the sequence, so nothing predicts it). "keep_end" is deprecated in TRL 1.16 but still accepted.
EXTRA_PAIRS = {
    "prompt": ["w1", "w2 w3 w4 w5 w6 w7", "w8 w9 w10 w11 w12 w13 w14 w15", "w1 w2 w3 w4 w5 w6 w7", "w3 w4"],
    "chosen": [" good nice", " great fine", " nice", " superb lovely good", " fine good nice great superb lovely good"],
    "rejected": [" bad", " awful poor dull", " weak", " ugly", " poor"],
}


def _pairs() -> datasets.Dataset:
    extra = datasets.Dataset.from_dict(EXTRA_PAIRS)
    return datasets.concatenate_datasets([tiny_pairs(4, seed=3), extra])


def _scored_tokens(prompt: str, completion: str, truncation_mode: str) -> int:
    """Completion tokens TRL scores: whitespace words (the tiny tokenizer is word-level) plus the appended EOS,
    truncated to MAX_LENGTH, without the sequence's first token."""
    prompt_tokens, completion_tokens = len(prompt.split()), len(completion.split()) + 1
    if truncation_mode == "keep_start":
        assert 1 <= prompt_tokens < MAX_LENGTH  # TRL drops the pairs whose prompt fills max_length
        return min(prompt_tokens + completion_tokens, MAX_LENGTH) - prompt_tokens
    # keep_end: the last MAX_LENGTH tokens; the first one kept is never scored.
    kept = min(prompt_tokens + completion_tokens, MAX_LENGTH)
    return min(completion_tokens, kept - 1)


def _args(tmp_path: Path, truncation_mode: str, batch_size: int, steps: int, **overrides: object) -> DPOConfig:
    values: dict[str, object] = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": batch_size,
        "max_steps": steps,
        "learning_rate": 5e-3,
        "beta": 0.1,
        "max_length": MAX_LENGTH,
        "truncation_mode": truncation_mode,
        "report_to": "none",
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "seed": 0,
        "logging_steps": 1,
    }
    return DPOConfig(**{**values, **overrides})


def _lora() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=4, target_modules="all-linear", task_type="CAUSAL_LM")


def _trainer(
    tmp_path: Path,
    truncation_mode: str,
    batch_size: int,
    steps: int,
    seen: list[tuple[list[float], list[float], torch.dtype]],
) -> CandidateDPOTrainer:
    def recording_dpo(
        policy_chosen_logps,
        policy_rejected_logps,
        reference_chosen_logps,
        reference_rejected_logps,
        beta,
        chosen_lengths,
        rejected_lengths,
    ):
        seen.append((chosen_lengths.tolist(), rejected_lengths.tolist(), chosen_lengths.dtype))
        margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
        return -F.logsigmoid(beta * margin)

    return CandidateDPOTrainer(
        model=tiny_llama(0),
        args=_args(tmp_path, truncation_mode, batch_size, steps),
        train_dataset=_pairs(),
        processing_class=tiny_tokenizer(),
        peft_config=_lora(),
        loss_fn=recording_dpo,
    )


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Batch size and steps that cover one epoch exactly: 8 pairs kept by "keep_start", all 9 by "keep_end".
@pytest.mark.parametrize(("truncation_mode", "batch_size", "steps"), [("keep_start", 4, 2), ("keep_end", 3, 3)])
@pytest.mark.filterwarnings("ignore:The `'keep_end'` truncation mode is deprecated:FutureWarning")
def test_lengths_passed_during_training_are_the_scored_completion_tokens(
    tmp_path: Path, truncation_mode: str, batch_size: int, steps: int
) -> None:
    seen: list[tuple[list[float], list[float], torch.dtype]] = []
    trainer = _trainer(tmp_path, truncation_mode, batch_size, steps, seen)
    data = _pairs()
    kept = [
        index
        for index, prompt in enumerate(data["prompt"])
        if truncation_mode == "keep_end" or len(prompt.split()) < MAX_LENGTH
    ]
    assert len(trainer.train_dataset) == len(kept) == steps * batch_size  # one epoch, every pair seen once
    # TRL's tokenization is the word count plus EOS (so the expectation below is about truncation, not tokenizing).
    for row, index in zip(trainer.train_dataset, kept, strict=True):
        assert len(row["prompt_ids"]) == len(data["prompt"][index].split())
        assert len(row["chosen_ids"]) == len(data["chosen"][index].split()) + 1
    expected = sorted(
        (
            _scored_tokens(data["prompt"][index], data["chosen"][index], truncation_mode),
            _scored_tokens(data["prompt"][index], data["rejected"][index], truncation_mode),
        )
        for index in kept
    )
    # The expectation covers what the test is about: truncated completions, one-token ones, long and short ones.
    untruncated = [(len(data["chosen"][index].split()) + 1, len(data["rejected"][index].split()) + 1) for index in kept]
    assert sorted(untruncated) != expected and min(min(pair) for pair in expected) >= 1

    trainer.train()

    assert len(seen) == steps and all(dtype == torch.float32 for _, _, dtype in seen)
    received = sorted(
        (int(chosen), int(rejected))
        for chosen_lengths, rejected_lengths, _ in seen
        for chosen, rejected in zip(chosen_lengths, rejected_lengths, strict=True)
    )
    assert all(float(value).is_integer() for chosen, rejected, _ in seen for value in (*chosen, *rejected))
    assert received == expected


def test_ln_dpo_trains_step_for_step_like_trl_sigmoid_norm(tmp_path: Path) -> None:
    """TRL divides each log-ratio by its completion-mask count; the candidate by the lengths our trainer passes.
    Equal losses at every step (with some completions truncated) mean the two counts agree in training."""
    steps, batch_size = 3, 4
    scale = importlib.import_module("lossforge.candidates.ln_dpo").SCALE
    trl_trainer = DPOTrainer(
        model=tiny_llama(0),
        processing_class=tiny_tokenizer(),
        train_dataset=_pairs(),
        peft_config=_lora(),
        args=_args(tmp_path / "trl", "keep_start", batch_size, steps, loss_type="sigmoid_norm", beta=0.1 * scale),
    )
    trl_trainer.train()
    expected = [row["loss"] for row in trl_trainer.state.log_history if "loss" in row]
    candidate = CandidateDPOTrainer(
        model=tiny_llama(0),
        processing_class=tiny_tokenizer(),
        train_dataset=_pairs(),
        peft_config=_lora(),
        args=_args(tmp_path / "ours", "keep_start", batch_size, steps),
        loss_fn=load_builtin("ln_dpo").fn,
    )
    candidate.train()
    assert len(expected) == len(candidate.step_losses) == steps
    assert candidate.step_losses == pytest.approx(expected, abs=1e-5)
    assert expected[-1] != pytest.approx(expected[0], abs=1e-3)  # the runs moved
