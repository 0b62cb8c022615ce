"""``noisy_labels``: ``sentiment``'s on-policy pairs with a fixed share of their labels swapped.

Human preference labels agree with each other only part of the time: about 73 % inter-annotator agreement for
InstructGPT (Ouyang et al. 2022, arXiv 2203.02155), about 66 % for AlpacaFarm's human annotators (Dubois et al.
2023, arXiv 2305.14387). Losses robust to such noise are built for it: conservative DPO (cDPO, Mitchell 2023,
label smoothing) and robust DPO (rDPO, Chowdhury et al. 2024, arXiv 2403.00409), which corrects the loss for a
known flip rate. This task models that noise on the ``sentiment`` task:

1. the reference, tokenizer, held-out prompts, held-out pairs and scoring are ``sentiment``'s (its reference is
   loaded from ``SentimentTask``, never retrained);
2. the training pairs are ``sentiment``'s own on-policy pairs (reference samples labelled by the gold reward,
   ``SentimentTask._sample_pairs``), of which a share ``flip_rate`` (default 0.3: labels that agree with the
   gold preference 70 % of the time), picked with the task seed, have chosen and rejected swapped. Each pair
   records whether it was ``flipped``; with ``flip_rate=0`` the training pairs are exactly ``sentiment``'s;
3. the score is ``sentiment``'s: the mean gold reward of completions sampled from the trained policy on the
   held-out prompts (metrics ``reward``, ``kl``, ``pref_accuracy`` on the clean held-out pairs, ``grammatical``,
   ``length``), so a loss is judged by the true preference, not the noisy one.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from lossforge.evaluate.tasks.base import TaskError
from lossforge.evaluate.tasks.derived_sentiment import DerivedSentimentTask
from lossforge.evaluate.tasks.sentiment import DEFAULTS, SentimentTask
from transformers import PreTrainedModel, PreTrainedTokenizerBase

NOISY_LABELS_DEFAULTS: dict[str, Any] = {**DEFAULTS, "flip_rate": 0.3}


def flipped_indices(count: int, flip_rate: float, seed: int) -> set[int]:
    """Exactly ``round(flip_rate * count)`` of ``range(count)``, picked with ``seed``.

    A fixed share rather than a coin per pair: the noise level is what the task states, not a draw around it.
    """
    return set(random.Random(seed).sample(range(count), round(flip_rate * count)))


def swapped(pair: dict[str, Any]) -> dict[str, Any]:
    """The pair with chosen and rejected (and their gold rewards) exchanged."""
    return {
        **pair,
        "chosen": pair["rejected"],
        "rejected": pair["chosen"],
        "chosen_reward": pair["rejected_reward"],
        "rejected_reward": pair["chosen_reward"],
    }


class NoisyLabelsTask(DerivedSentimentTask):
    name: ClassVar[str] = "noisy_labels"
    description: ClassVar[str] = (
        "The sentiment task with noisy preference labels, as human annotators agree only about 65-75 % of the "
        "time: sentiment's on-policy pairs with a fixed share (flip_rate, default 0.3) of chosen and rejected "
        "swapped; reference, held-out data and scoring (by the true gold reward) are sentiment's."
    )
    objective: ClassVar[str] = SentimentTask.objective
    headline_metrics: ClassVar[tuple[str, ...]] = ("reward", "kl", "grammatical")
    OPTIONS: ClassVar[dict[str, Any]] = NOISY_LABELS_DEFAULTS
    # sentiment's budget: the same training on the same pairs, so a score difference is the noise's doing.
    default_steps: ClassVar[int] = SentimentTask.default_steps
    default_beta: ClassVar[float] = SentimentTask.default_beta
    default_learning_rate: ClassVar[float] = SentimentTask.default_learning_rate
    default_batch_size: ClassVar[int] = SentimentTask.default_batch_size
    max_length: ClassVar[int] = SentimentTask.max_length

    def __init__(self, options: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        if not 0.0 <= self.config["flip_rate"] <= 1.0:
            raise TaskError(f"flip_rate must lie in [0, 1], got {self.config['flip_rate']!r}")

    def _sentiment_train_pairs(self) -> int:
        # This task's pairs are the first train_pairs of sentiment's; only a larger count needs more of them.
        return max(DEFAULTS["train_pairs"], self.config["train_pairs"])

    def _train_pairs(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source_data: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        clean = source_data["train"][: self.config["train_pairs"]]
        flips = flipped_indices(len(clean), self.config["flip_rate"], self.task_seed)
        pairs = [{**(swapped(pair) if i in flips else pair), "flipped": i in flips} for i, pair in enumerate(clean)]
        return pairs, {"flipped_share": len(flips) / len(pairs)}
