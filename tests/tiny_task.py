"""A seconds-sized preference setup for tests: a word-level tokenizer, a tiny Llama and synthetic pairs.

The pairs follow a fixed rule (chosen completions use "good" words, rejected ones "bad" words), so a few
DPO steps move the policy measurably; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import random

import datasets
import torch
from lossforge.evaluate.tasks.base import Task, TaskScore
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]
PROMPT_WORDS = [f"w{i}" for i in range(16)]
GOOD_WORDS = ["great", "fine", "nice", "good", "superb", "lovely"]
BAD_WORDS = ["awful", "poor", "bad", "dull", "weak", "ugly"]
VOCAB = SPECIAL + PROMPT_WORDS + GOOD_WORDS + BAD_WORDS


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Whitespace word-level tokenizer over ``VOCAB``; special tokens are split out before pre-tokenization."""
    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(VOCAB)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    return fast


def tiny_llama(seed: int = 0, hidden: int = 32, layers: int = 2) -> LlamaForCausalLM:
    """A randomly initialised Llama small enough that a DPO step takes milliseconds on one CPU core."""
    config = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).float()


def tiny_pairs(n: int = 32, seed: int = 0) -> datasets.Dataset:
    """``n`` standard-format pairs: a 4-word prompt, a 3-word good (chosen) or bad (rejected) completion."""
    rng = random.Random(seed)
    rows = {"prompt": [], "chosen": [], "rejected": []}
    for _ in range(n):
        rows["prompt"].append(" ".join(rng.choices(PROMPT_WORDS, k=4)))
        rows["chosen"].append(" " + " ".join(rng.choices(GOOD_WORDS, k=3)))
        rows["rejected"].append(" " + " ".join(rng.choices(BAD_WORDS, k=3)))
    return datasets.Dataset.from_dict(rows)


def sequence_logps(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, prompts: list[str], completions: list[str]
) -> torch.Tensor:
    """Summed log-probs of each completion given its prompt, shape (N,)."""
    out = []
    with torch.no_grad():
        for prompt, completion in zip(prompts, completions, strict=True):
            prompt_ids = tokenizer(prompt)["input_ids"]
            ids = torch.tensor([tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]])  # (1, T)
            logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)  # (T-1, V)
            token_logps = logps.gather(1, ids[0, 1:, None])[:, 0]  # (T-1,)
            out.append(token_logps[len(prompt_ids) - 1 :].sum())
    return torch.stack(out)


class TinyTask(Task):
    """Test task: score = mean held-out log-prob margin of good over bad completions under the policy."""

    name = "tiny"
    default_steps = 4
    default_batch_size = 8
    default_learning_rate = 5e-3
    max_length = 32

    def cache_key(self) -> str:
        return hashlib.sha256(f"tiny-{self.task_seed}-{VOCAB}".encode()).hexdigest()[:16]

    def reference(self) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
        return tiny_llama(self.task_seed), tiny_tokenizer()

    def preference_data(self) -> datasets.Dataset:
        return tiny_pairs(32, seed=self.task_seed)

    def score(self, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, *, seed: int) -> TaskScore:
        held_out = tiny_pairs(self.eval_samples or 8, seed=self.task_seed + 1)
        policy.eval()
        chosen = sequence_logps(policy, tokenizer, held_out["prompt"], held_out["chosen"])
        rejected = sequence_logps(policy, tokenizer, held_out["prompt"], held_out["rejected"])
        margin = (chosen - rejected).mean().item()
        return TaskScore(score=margin, metrics={"margin": margin, "chosen_logp": chosen.mean().item()})


class ParentGradedTinyTask(TinyTask):
    """Like the judge task: the worker generates (``collect``), the parent process grades (``grade``)."""

    scores_in_parent = True

    def collect(self, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, *, seed: int) -> dict[str, float]:
        import os

        return {"margin": self.score(policy, tokenizer, seed=seed).score, "worker_pid": float(os.getpid())}

    def grade(self, collected: dict[str, float], *, seed: int) -> TaskScore:
        import os

        metrics = {"worker_pid": collected["worker_pid"], "grader_pid": float(os.getpid())}
        return TaskScore(score=collected["margin"], metrics=metrics)
