"""``off_policy``: ``sentiment`` trained on preference pairs that other models wrote.

In UltraFeedback-style data (Cui et al. 2023, arXiv 2310.01377) the chosen and rejected responses come from a
pool of other models, not from the policy being trained; on-policy pairs, sampled from the policy itself, train
better (Tajwar et al. 2024, arXiv 2404.14367; Xu et al. 2024, "Is DPO superior to PPO", arXiv 2404.10719, which
traces DPO's weaker results partly to the distribution shift between the data and the reference). This task
models that shift on the ``sentiment`` task:

1. the reference is ``sentiment``'s own SFT model (loaded from ``SentimentTask``, never retrained), and so are
   the tokenizer, the held-out prompts, the held-out pairs and the scoring;
2. the training pairs are written by two generators over :mod:`.grammar`, not by the reference: a stronger
   one (mostly positive, often intensified reviews, often two sentences where the reference writes one) and a
   weaker one (mostly negative, and now and then an ungrammatical or unfinished review). Per training prompt
   each writes one completion; the gold reward labels them (chosen = higher), and a pair is kept when the gap
   is at least ``min_reward_gap`` and the lengths differ by at most ``max_length_gap`` words, as in
   ``sentiment``;
3. the score is ``sentiment``'s: the mean gold reward of completions sampled from the trained policy on the
   held-out prompts, with the same metrics (``reward``, ``kl``, ``pref_accuracy`` on ``sentiment``'s on-policy
   held-out pairs, ``grammatical``, ``length``).

How far off-policy the data is, a property of the data rather than of a policy, is recorded in ``data.json``:
``train_reference_logp`` holds the reference's mean log-prob per token of the training chosen and rejected
texts (``</s>`` included), and ``on_policy_reference_logp`` the same for ``sentiment``'s on-policy pairs.

"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

from lossforge.evaluate.tasks import grammar
from lossforge.evaluate.tasks.base import TaskError
from lossforge.evaluate.tasks.derived_sentiment import DerivedSentimentTask
from lossforge.evaluate.tasks.generation import completion_logps
from lossforge.evaluate.tasks.sentiment import DEFAULTS, SentimentTask
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def reference_logp_per_token(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[dict[str, Any]], column: str
) -> float:
    """Mean over ``pairs`` of the model's log-prob per token of ``pair[column]`` (with ``</s>``, as DPO trains)."""
    prompts = [tokenizer(p["prompt"])["input_ids"] for p in pairs]
    texts = [
        tokenizer(p["prompt"] + p[column])["input_ids"][len(q) :] + [tokenizer.eos_token_id]
        for p, q in zip(pairs, prompts)
    ]
    logps = completion_logps(model, prompts, texts)  # (N,) summed
    return float(sum(lp / len(t) for lp, t in zip(logps.tolist(), texts)) / len(pairs))


@dataclass(frozen=True)
class Generator:
    """A writer of review completions over the grammar, with its own sentiment mix and style."""

    name: str
    sentiment_weights: tuple[float, float, float]  # positive, negative, neutral
    intensified: float  # share of clauses with "very"/"really"...
    conjoined: float  # share of sentences with a second clause
    second_sentence: float  # share of completions that go on to a second sentence
    broken: float  # share of completions left ungrammatical or unfinished

    def complete(self, rng: random.Random) -> str:
        """A completion of a ``det noun copula`` prompt: text with a leading space, as ``sentiment``'s pairs."""
        words = self._adjective_tail(rng) + self._more(rng) + ["."]
        if rng.random() < self.second_sentence:
            second = self._clause(rng) + self._more(rng) + ["."]
            if second != words:  # a repeated sentence is not what this generator means to write
                words += second
        if rng.random() < self.broken:
            words = _break(words, rng)
        return " " + " ".join(words)

    def _polarity(self, rng: random.Random) -> int:
        return rng.choices((1, -1, 0), weights=self.sentiment_weights)[0]

    def _adjective_tail(self, rng: random.Random) -> list[str]:
        intensifier = [rng.choice(grammar.INTENSIFIERS)] if rng.random() < self.intensified else []
        pool = {1: grammar.POSITIVE, -1: grammar.NEGATIVE, 0: grammar.NEUTRAL}[self._polarity(rng)]
        return intensifier + [rng.choice(pool)]

    def _clause(self, rng: random.Random) -> list[str]:
        kind = rng.choices(("adjective", "opinion"), weights=(2, 1))[0]
        if kind == "adjective":
            return [rng.choice(grammar.DETS), rng.choice(grammar.NOUNS), rng.choice(grammar.COPULAS)] + (
                self._adjective_tail(rng)
            )
        polarity = self._polarity(rng)
        if polarity == 0:
            return ["i", "would", "recommend", "it"] if rng.random() < 0.5 else ["i", "would", "not", "recommend", "it"]
        opinions = grammar.OPINION_POSITIVE if polarity > 0 else grammar.OPINION_NEGATIVE
        really = ["really"] if rng.random() < self.intensified else []
        return ["i", *really, rng.choice(opinions), rng.choice(grammar.DETS), rng.choice(grammar.NOUNS)]

    def _more(self, rng: random.Random) -> list[str]:
        return [rng.choice(grammar.CONJUNCTIONS), *self._clause(rng)] if rng.random() < self.conjoined else []


def _break(words: list[str], rng: random.Random) -> list[str]:
    """Spoil a completion the ways weak writers do: stop mid-sentence, or stutter a word."""
    if rng.random() < 0.5:
        return words[: rng.randint(1, len(words) - 1)]  # unfinished: no final full stop
    at = rng.randrange(len(words) - 1)
    return words[: at + 1] + words[at:]  # "great great": the sentence no longer parses


# Two fixed writers, set by hand rather than tuned: a stronger, mostly positive one and a weaker, mostly negative
# one that also spoils a quarter of its reviews (ungrammatical or unfinished text, as weak models write). Their
# second sentences (``second_sentence``), which the reference (SFT on one-sentence reviews) almost never writes,
# and their mixes are what make the data off-policy.
STRONGER = Generator("stronger", (0.65, 0.25, 0.10), intensified=0.6, conjoined=0.3, second_sentence=0.5, broken=0.0)
WEAKER = Generator("weaker", (0.30, 0.60, 0.10), intensified=0.3, conjoined=0.3, second_sentence=0.5, broken=0.25)

OFF_POLICY_DEFAULTS: dict[str, Any] = {
    **DEFAULTS,
    # Share of the generators' completions that go on to a second sentence: the main dial of how far off-policy
    # the pairs are. Tried with DPO at sentiment's budget on development seed 200: 0 (one-sentence pairs, only
    # the mixes off-policy) drove the policy into ungrammatical text (reward -0.12, 82 % grammatical, kl 3.9);
    # 0.2 and 0.5 kept it grammatical (reward +0.07 and +0.03, reference +0.04). 0.5: the further off-policy.
    "second_sentence": 0.5,
}


class OffPolicyTask(DerivedSentimentTask):
    name: ClassVar[str] = "off_policy"
    description: ClassVar[str] = (
        "The sentiment task with off-policy preference pairs, as in UltraFeedback-style data: chosen and "
        "rejected reviews are written by a stronger and a weaker generator over the grammar, not sampled from "
        "the reference, and labelled by the gold reward; reference, held-out data and scoring are sentiment's."
    )
    objective: ClassVar[str] = SentimentTask.objective
    headline_metrics: ClassVar[tuple[str, ...]] = ("reward", "kl", "grammatical")
    OPTIONS: ClassVar[dict[str, Any]] = OFF_POLICY_DEFAULTS
    # sentiment's steps, beta and batch, a higher learning rate. Measured with DPO on development seeds 200-202
    # (tests/evaluate/tasks/test_off_policy_claim.py): at sentiment's 2e-4 the off-policy pairs barely move the
    # policy (reward gains -0.01, +0.09, -0.02 over the reference, where sentiment's pairs gain +0.21 to +0.32);
    # 4e-4 gains +0.01 to +0.15; 6e-4 +0.27 to +0.29 with 98-99 % grammatical samples and kl 1.3-1.7; 1e-3
    # +0.44, +0.30, -0.02 with 97, 86, 69 % grammatical (kl 2-6): drift. 6e-4 learns from this data without it.
    default_steps: ClassVar[int] = SentimentTask.default_steps
    default_beta: ClassVar[float] = SentimentTask.default_beta
    default_learning_rate: ClassVar[float] = 6e-4
    default_batch_size: ClassVar[int] = SentimentTask.default_batch_size
    max_length: ClassVar[int] = SentimentTask.max_length

    def settings(self) -> dict[str, Any]:
        # The generators are code, not options: their specs key the cache, so changing one rebuilds the data.
        return {**super().settings(), "generators": [asdict(g) for g in self.generators()]}

    def generators(self) -> tuple[Generator, Generator]:
        """The stronger and the weaker generator, with this task's ``second_sentence``."""
        share = self.config["second_sentence"]
        return replace(STRONGER, second_sentence=share), replace(WEAKER, second_sentence=share)

    def _train_pairs(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source_data: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        train_prompts, _ = self._split_prompts()
        pairs = self._generated_pairs(train_prompts, random.Random(self.task_seed))
        logp = {column: reference_logp_per_token(model, tokenizer, pairs, column) for column in ("chosen", "rejected")}
        on_policy = source_data["train"]
        on_policy_logp = {c: reference_logp_per_token(model, tokenizer, on_policy, c) for c in ("chosen", "rejected")}
        return pairs, {"train_reference_logp": logp, "on_policy_reference_logp": on_policy_logp}

    def _generated_pairs(self, prompts: list[str], rng: random.Random) -> list[dict[str, Any]]:
        """One completion per generator per prompt, in rounds over the prompts, until ``train_pairs`` are kept."""
        count, pairs = self.config["train_pairs"], []
        for _ in range(100):  # each round keeps roughly half the prompts' pairs
            for prompt in prompts:
                pair = self._labelled_pair(prompt, [(g.name, g.complete(rng)) for g in self.generators()])
                if pair is not None:
                    pairs.append(pair)
                    if len(pairs) == count:
                        return pairs
        raise TaskError(f"the generators yielded only {len(pairs)} of {count} pairs; lower min_reward_gap")

    def _labelled_pair(self, prompt: str, written: list[tuple[str, str]]) -> dict[str, Any] | None:
        """The gold reward's label (chosen = higher), or None when the gap is unclear or the lengths differ."""
        scored = sorted(((grammar.gold_reward(prompt + text), name, text) for name, text in written), reverse=True)
        (best, chosen_by, chosen), (worst, rejected_by, rejected) = scored[0], scored[-1]
        if best - worst < self.config["min_reward_gap"]:
            return None
        if abs(len(chosen.split()) - len(rejected.split())) > self.config["max_length_gap"]:
            return None  # length-matched, as sentiment's pairs (SentimentTask._widest_pair says why)
        return {
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "chosen_reward": best,
            "rejected_reward": worst,
            "chosen_by": chosen_by,
            "rejected_by": rejected_by,
        }
