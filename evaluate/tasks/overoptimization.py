"""``overoptimization``: a small preference set trained long, where the gold reward rises, then falls.

Direct alignment algorithms over-optimise as RLHF does: as training goes on and the policy drifts from the
reference (its KL grows), the gold reward first rises and then falls, the more so with little preference data
and a high learning rate (Rafailov et al. 2024, "Scaling laws for reward model overoptimization in direct
alignment algorithms", arXiv 2406.02900; Gao et al. 2022, arXiv 2210.10760, for RLHF with a learned reward
model). The implicit reward model a DAA fits from a few pairs is a proxy of the gold reward, and pushing the
policy far along it leaves the region where the two agree. This task models that on the grammar of
:mod:`.sentiment`:

1. the reference, the held-out prompts and pairs and the scoring are ``sentiment``'s
   (``derived_sentiment``; its shipped reference in the default configuration), so nothing is trained to build
   the task;
2. the training pairs are only the first ``train_pairs`` (96) of ``sentiment``'s on-policy pairs, labelled by
   the gold reward;
3. the default budget is ``sentiment``'s 300 steps of 16 pairs (50 epochs of the 96 pairs) at five times its
   learning rate: DPO is then far past its peak (on development seeds 200-202 the gold reward rose from ~0.05
   to ~0.25 at 50 steps, and by 150 steps had collapsed to ~-0.95, its samples ungrammatical, as at 300);
4. the score is the mean gold reward of completions sampled from the trained policy on held-out prompts, as in
   ``sentiment``, with the KL to the reference as a headline metric: a loss that resists over-optimisation keeps
   its reward at the default budget, or trades less of it for its KL.

Metrics: those of ``sentiment`` (``reward``, ``kl``, ``pref_accuracy``, ``grammatical``, ``length``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from lossforge.evaluate.tasks.derived_sentiment import DerivedSentimentTask
from lossforge.evaluate.tasks.sentiment import DEFAULTS as SENTIMENT_DEFAULTS
from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULTS: dict[str, Any] = {
    **SENTIMENT_DEFAULTS,
    "train_pairs": 96,  # a small preference set: the default budget revisits each pair 50 times
}


class OverOptimizationTask(DerivedSentimentTask):
    name: ClassVar[str] = "overoptimization"
    description: ClassVar[str] = (
        "The tiny review model of the sentiment task is fine-tuned with LoRA on only 96 preference pairs "
        "(labelled by a known gold reward) for 50 epochs at a high learning rate, so that DPO's gold reward "
        "rises and then falls as the policy drifts from the reference (Rafailov et al. 2024, arXiv 2406.02900)."
    )
    objective_name: ClassVar[str] = "reward"
    objective: ClassVar[str] = (
        "the gold reward of reviews sampled from the trained policy on held-out prompts after a long training "
        "on few pairs; the KL to the reference is reported beside it"
    )
    headline_metrics: ClassVar[tuple[str, ...]] = ("reward", "kl", "grammatical")
    OPTIONS: ClassVar[dict[str, Any]] = DEFAULTS
    # Chosen on development seeds 200-202 with DPO (sigmoid), 96 pairs. At lr 5e-4 the reward peaked near
    # 100-200 steps and fell steeply between 250 and 300 steps: 300 steps collapsed on those seeds but not on
    # two others, a knife edge. At 1e-3 the reward peaks near 50-80 steps and has collapsed on every development
    # seed by 150, half the default budget, so the default lies well past the peak. Same cost per step as
    # sentiment.
    default_steps: ClassVar[int] = 300
    default_beta: ClassVar[float] = 0.1
    default_learning_rate: ClassVar[float] = 1e-3
    max_length: ClassVar[int] = 40

    def _train_pairs(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source_data: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        # The first train_pairs of sentiment's on-policy pairs: the same data, only far less of it.
        return source_data["train"][: self.config["train_pairs"]], {}
