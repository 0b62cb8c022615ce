"""``length_bias``: preference labels that favour longer reviews while the gold reward does not.

Real preference data prefers longer answers: human and LLM judges reward verbosity, so the chosen response is
longer on average although length is not what they mean to reward. DPO then learns length as much as quality:
its responses grow without a matching gain in quality (Park et al. 2024, "Disentangling length from quality in
direct preference optimization", arXiv 2403.19159), which is what SimPO's length-normalised reward (arXiv
2405.14734) and AlpacaEval 2's length-controlled win rate are built against. This task models that regime on
the grammar of :mod:`.sentiment`, whose gold reward (the mean of a review's sentence scores) is length-neutral:

1. a tiny Llama is SFT-trained on reviews of one to ``sft_max_sentences`` sentences (the reference), so its
   samples vary in length;
2. for each training prompt, completions are sampled from the reference and labelled by a biased labeller,
   gold reward + ``length_bonus`` x (sentences beyond the first); the pair is the widest labelled gap among
   ``samples_per_prompt`` samples, of any lengths, kept when that gap is at least ``min_reward_gap``. Chosen
   reviews are then longer on average (``data.json`` records the mean chosen and rejected lengths, and the
   share of pairs whose gold reward ranks them the other way);
3. the score is the plain, length-neutral gold reward of completions sampled from the trained policy on
   held-out prompts, as in ``sentiment``.

Metrics: those of ``sentiment``; ``length`` (mean tokens per sample) is a headline metric beside ``reward``: a
loss that resists the bias raises the reward without inflating the length. ``length_bonus=0`` is the unbiased
control on the same reference (pairs of any lengths, labelled by the gold reward alone).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar

from lossforge.evaluate.tasks.sentiment import DEFAULTS as SENTIMENT_DEFAULTS
from lossforge.evaluate.tasks.sentiment import SentimentTask
from transformers import PreTrainedModel, PreTrainedTokenizerFast

DEFAULTS: dict[str, Any] = {
    **SENTIMENT_DEFAULTS,
    # Reviews of 1-3 sentences: completions of 2-35 tokens (99% under 28), so length can vary by a factor 5.
    "sft_max_sentences": 3,
    # The labeller's reward per sentence beyond the first, on the gold reward's scale of [-1, 1]. Measured with
    # DPO at the default budget on development seeds 200-202: 0.5 (chosen 13.6 vs rejected 6.5 tokens) took the
    # samples from 6.8 to 16.3 tokens for a reward gain of ~0.10; 0.25 (10.7 vs 7.2) to 16.0 tokens, gain ~0.15;
    # 0 (8.0 vs 8.6) to 5.3 tokens, gain ~0.37.
    "length_bonus": 0.5,
    # No length matching: sentiment pairs only samples within 1 token of each other, which would rule out the
    # length difference this task is about.
    "max_length_gap": None,
    "max_new_tokens": 36,  # the longest SFT review plus </s>; prompt + completion stays within 64 positions
}


class LengthBiasTask(SentimentTask):
    name: ClassVar[str] = "length_bias"
    description: ClassVar[str] = (
        "A tiny language model, SFT-trained on reviews of one to three sentences, is fine-tuned with LoRA on "
        "preference pairs whose labeller adds a bonus per extra sentence to a length-neutral gold reward, so "
        "chosen reviews are longer, as in real preference data (Park et al. 2024, arXiv 2403.19159)."
    )
    objective_name: ClassVar[str] = "reward"
    objective: ClassVar[str] = (
        "the length-neutral gold reward of reviews sampled from the trained policy on held-out prompts; their "
        "mean length in tokens is reported beside it (the labels' bias pulls it up)"
    )
    headline_metrics: ClassVar[tuple[str, ...]] = ("reward", "length", "kl", "grammatical")
    OPTIONS: ClassVar[dict[str, Any]] = DEFAULTS
    default_steps: ClassVar[int] = 300
    default_beta: ClassVar[float] = 0.1
    default_learning_rate: ClassVar[float] = 2e-4
    max_length: ClassVar[int] = 48  # 4 prompt tokens (<s> and three words) + max_new_tokens, with room to spare

    @cached_property
    def _period_id(self) -> int:
        return int(self.tokenizer().convert_tokens_to_ids("."))

    def extra_sentences(self, completion: list[int]) -> int:
        """Sentences beyond the first: full stops in the completion, less one (the prompt opens the first)."""
        return max(0, completion.count(self._period_id) - 1)

    def labelled_reward(self, gold: float, completion: list[int]) -> float:
        """What the biased labeller sees: the gold reward plus the length bonus."""
        return gold + self.config["length_bonus"] * self.extra_sentences(completion)

    def _widest_pair(
        self, scored: list[tuple[float, list[int]]]
    ) -> tuple[tuple[float, list[int]], tuple[float, list[int]]] | None:
        """The (chosen, rejected) samples with the widest gap in the labeller's reward, of any lengths.

        The returned rewards are the gold ones (recorded as ``chosen_reward``/``rejected_reward``); the pair
        is chosen, and its gap checked, on the labeller's.
        """
        labelled = [(self.labelled_reward(gold, completion), gold, completion) for gold, completion in scored]
        best = None
        for better in labelled:
            for worse in labelled:
                gap = better[0] - worse[0]
                if self._lengths_allowed(better[2], worse[2]) and (best is None or gap > best[0]):
                    best = (gap, better, worse)
        if best is None or best[0] < self.config["min_reward_gap"]:
            return None
        _, (_, chosen_gold, chosen), (_, rejected_gold, rejected) = best
        return (chosen_gold, chosen), (rejected_gold, rejected)

    def _lengths_allowed(self, chosen: list[int], rejected: list[int]) -> bool:
        gap = self.config["max_length_gap"]
        return gap is None or abs(len(chosen) - len(rejected)) <= gap

    def build(self, tokenizer: PreTrainedTokenizerFast) -> tuple[PreTrainedModel, dict[str, Any]]:
        model, data = super().build(tokenizer)
        for pairs in (data["train"], data["heldout_pairs"]):
            self._annotate(pairs, tokenizer)
        data["pair_stats"] = pair_stats(data["train"])
        return model, data

    def _annotate(self, pairs: list[dict[str, Any]], tokenizer: PreTrainedTokenizerFast) -> None:
        """Add each side's length in tokens (without ``</s>``) and the labeller's reward, for data.json."""
        for pair in pairs:
            for side in ("chosen", "rejected"):
                ids = tokenizer(pair[side], add_special_tokens=False)["input_ids"]
                pair[f"{side}_length"] = len(ids)
                pair[f"{side}_labelled_reward"] = self.labelled_reward(pair[f"{side}_reward"], ids)


def pair_stats(pairs: list[dict[str, Any]]) -> dict[str, float]:
    """Mean lengths and gold rewards of the chosen and rejected sides, and how often the gold reward disagrees."""

    def mean(key: str) -> float:
        return sum(pair[key] for pair in pairs) / len(pairs)

    return {
        "chosen_length": mean("chosen_length"),
        "rejected_length": mean("rejected_length"),
        "chosen_reward": mean("chosen_reward"),
        "rejected_reward": mean("rejected_reward"),
        # Pairs the gold reward would have labelled the other way round: the labels' length bias at work.
        "gold_disagrees": sum(pair["chosen_reward"] < pair["rejected_reward"] for pair in pairs) / len(pairs),
    }
