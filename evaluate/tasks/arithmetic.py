"""``arithmetic``: two-digit addition with low edit-distance preference pairs.

The regime of the DPOP paper (Pal et al., "Smaug: Fixing Failure Modes of Preference Optimisation with
DPO-Positive", arXiv 2402.13228, section 3): when chosen and rejected differ in one token, DPO can raise the
margin while *lowering* the likelihood of the preferred answer. Here the chosen answer of ``"47+38="`` is
``"85"`` and the rejected one the same number with one digit changed (``"75"``, ``"86"``...).

The reference is a tiny character-level Llama SFT-trained on part of the problems with a small budget, so
it is good but imperfect. Score: greedy exact-match accuracy on held-out problems. Metrics: ``accuracy``,
``chosen_logp_change`` (mean over held-out pairs of the chosen answer's summed log-prob, policy minus
reference) and ``margin_change`` (mean change of the chosen-minus-rejected log-prob margin).
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import torch
from lossforge.evaluate.tasks.base import TaskError, TaskScore
from lossforge.evaluate.tasks.generation import completion_logps, generate
from lossforge.evaluate.tasks.tiny import TinyTask, build_model, build_tokenizer, sft
from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

DEFAULTS: dict[str, Any] = {
    "sft_problems": 3000,  # problems seen in SFT (of 8100); the rest are pairs and held-out problems
    "sft_steps": 400,
    "sft_batch_size": 64,
    "sft_learning_rate": 3e-3,
    "train_pairs": 1024,
    "heldout_problems": 256,
}
_VERSION = 1  # bump when problem or pair generation changes


def one_digit_wrong(answer: str, rng: random.Random) -> str:
    """``answer`` with exactly one digit replaced by another (no leading zero): edit distance 1."""
    position = rng.randrange(len(answer))
    choices = [
        d for d in "0123456789" if d != answer[position] and not (position == 0 and d == "0" and len(answer) > 1)
    ]
    return answer[:position] + rng.choice(choices) + answer[position + 1 :]


class ArithmeticTask(TinyTask):
    name: ClassVar[str] = "arithmetic"
    description: ClassVar[str] = (
        "A tiny language model answers arithmetic problems; preference pairs are a correct answer versus a "
        "one-digit-wrong one, the low edit-distance regime where DPO is known to lower the likelihood of the "
        "preferred answer."
    )
    objective_name: ClassVar[str] = "accuracy"
    objective: ClassVar[str] = "exact-match accuracy of greedy answers on held-out problems"
    headline_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "chosen_logp_change")
    OPTIONS: ClassVar[dict[str, Any]] = DEFAULTS
    default_steps: ClassVar[int] = 200
    default_beta: ClassVar[float] = 0.1
    default_learning_rate: ClassVar[float] = 1e-3
    default_batch_size: ClassVar[int] = 16
    max_length: ClassVar[int] = 16
    default_eval_samples: ClassVar[int] = 256  # held-out problems scored

    def tokenizer(self) -> PreTrainedTokenizerFast:
        return build_tokenizer(list("0123456789+="), characters=True)

    def settings(self) -> dict[str, Any]:
        return {"version": _VERSION, **self.config}

    def build(self, tokenizer: PreTrainedTokenizerFast) -> tuple[PreTrainedModel, dict[str, Any]]:
        rng = random.Random(self.task_seed)
        problems = [(a, b) for a in range(10, 100) for b in range(10, 100)]
        rng.shuffle(problems)
        held = self.config["heldout_problems"]
        heldout, rest = problems[:held], problems[held:]
        sft_problems, pair_problems = rest[: self.config["sft_problems"]], rest[self.config["sft_problems"] :]
        prompts = [tokenizer(f"{a}+{b}=")["input_ids"] for a, b in sft_problems]
        answers = [
            tokenizer(str(a + b), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            for a, b in sft_problems
        ]
        model = build_model(self.model_spec, tokenizer, seed=self.task_seed)
        sft(
            model,
            prompts,
            answers,
            steps=self.config["sft_steps"],
            batch_size=self.config["sft_batch_size"],
            learning_rate=self.config["sft_learning_rate"],
            seed=self.task_seed,
            prompt_loss=False,
        )

        def pair(a: int, b: int) -> dict[str, str]:
            return {"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": one_digit_wrong(str(a + b), rng)}

        train = [pair(a, b) for a, b in pair_problems[: self.config["train_pairs"]]]
        if len(train) < self.config["train_pairs"]:
            raise TaskError(
                f"only {len(train)} problems left for {self.config['train_pairs']} pairs; lower sft_problems"
            )
        return model, {"train": train, "heldout_pairs": [pair(a, b) for a, b in heldout]}

    def _score(self, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, seed: int) -> TaskScore:
        """Deterministic whatever ``seed`` is: greedy decoding and exact log-probs draw nothing at random."""
        pairs = self.data()["heldout_pairs"][: self.eval_samples or self.default_eval_samples]
        prompts = [tokenizer(p["prompt"])["input_ids"] for p in pairs]
        eos = tokenizer.eos_token_id
        answers = generate(policy, prompts, eos_token_id=eos, max_new_tokens=4, generator=None)
        correct = [
            tokenizer.decode(a, skip_special_tokens=True) == p["chosen"] and a[-1:] == [eos]
            for a, p in zip(answers, pairs)
        ]

        def digits(text: str) -> list[int]:
            return tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]

        def pair_logps(model: PreTrainedModel) -> torch.Tensor:
            completions = [digits(p["chosen"]) for p in pairs] + [digits(p["rejected"]) for p in pairs]
            return completion_logps(model, prompts * 2, completions).view(2, len(pairs))  # (2, P)

        change = pair_logps(policy) - self.reference_logps_for(policy, pair_logps)  # (2, P): chosen, rejected
        metrics = {
            "accuracy": sum(correct) / len(correct),
            "chosen_logp_change": float(change[0].mean()),
            "margin_change": float((change[0] - change[1]).mean()),
        }
        return TaskScore(score=metrics["accuracy"], metrics=metrics)
