"""``sentiment``: steer a tiny review generator towards positive, grammatical reviews.

In the spirit of the IMDb positive-review experiments of the DPO paper (arXiv 2305.18290, section 6.1) and
DiscoPOP (arXiv 2406.08414, section 5.1), with a known gold reward instead of a sentiment classifier:

1. a tiny Llama is SFT-trained on reviews of mixed sentiment from :mod:`.grammar` (the reference);
2. for each training prompt ("the plot was"), completions are sampled from the reference and the best and
   worst of a few, by gold reward, form a preference pair when their rewards differ clearly;
3. the score is the mean gold reward of completions sampled from the trained policy on held-out prompts.

Metrics: ``reward`` (= score), ``kl``, ``pref_accuracy`` (held-out pairs whose implied reward margin is
positive), ``grammatical`` (share of samples that parse) and ``length`` (mean tokens per sample, ``</s>`` not
counted).

``kl`` is a Monte-Carlo estimate, in nats per completion, of KL(pi_T || ref_T): the divergence between the
distributions the scoring samples actually come from, the policy's and the reference's next-token
distributions at the sampling temperature T (softmax(logits / T), ``sample_temperature``), over whole
completions (up to ``max_new_tokens``, both models truncated alike). With completions y_i ~ pi_T,
kl = (1/N) sum_i sum_t [log pi_T(y_it | y_i<t) - log ref_T(y_it | y_i<t)], an unbiased estimator of a
divergence, so it is >= 0 in expectation (a single estimate can dip below 0 when the two are close).
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import torch
from lossforge.evaluate.tasks import grammar
from lossforge.evaluate.tasks.base import TaskError, TaskScore
from lossforge.evaluate.tasks.generation import completion_logps, generate, sample_with_log_ratios
from lossforge.evaluate.tasks.tiny import TinyTask, build_model, build_tokenizer, sft
from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

# Resolved option defaults; all but the scoring-only ones (SCORING_OPTIONS) are part of the cache key.
DEFAULTS: dict[str, Any] = {
    "sft_reviews": 4000,  # size of the SFT corpus
    "sft_max_sentences": 1,
    "sft_steps": 300,
    "sft_batch_size": 32,
    "sft_learning_rate": 6e-3,
    "train_pairs": 1024,
    "heldout_prompts": 24,  # of the 120 prompts, never seen in preference training
    "heldout_pairs": 192,
    "samples_per_prompt": 6,  # the pair is the widest reward gap among this many samples
    "min_reward_gap": 0.5,
    "max_length_gap": 1,
    "grammatical_pairs": True,  # tokens between chosen and rejected, see SentimentTask._widest_pair
    "max_new_tokens": 24,
    # Scoring samples at a lowered temperature, as the DPO paper's evaluations sweep it (arXiv 2305.18290,
    # Fig. 2): at temperature 1 the tiny model's tail of stray tokens decides grammaticality, and with it
    # the reward, more than the policy's preferences do. The reference is scored the same way.
    "sample_temperature": 0.4,
}
# Options that change only how a policy is scored, not the data or the reference: kept out of the cache key.
SCORING_OPTIONS = frozenset({"sample_temperature"})


class SentimentTask(TinyTask):
    name: ClassVar[str] = "sentiment"
    description: ClassVar[str] = (
        "A tiny language model, SFT-trained on a grammar of movie reviews, is fine-tuned with LoRA on preference "
        "pairs labelled by a known gold reward (positive sentiment, grammatical text), as in the IMDb "
        "experiments of the DPO and DiscoPOP papers."
    )
    objective_name: ClassVar[str] = "reward"
    objective: ClassVar[str] = (
        "the gold reward of reviews sampled from the trained policy on held-out prompts; the KL to the "
        "reference is reported beside it"
    )
    headline_metrics: ClassVar[tuple[str, ...]] = ("reward", "kl", "grammatical")
    OPTIONS: ClassVar[dict[str, Any]] = DEFAULTS
    # Measured with TRL's sigmoid loss + LoRA r=16 (benchmarks/RESULTS.md): lr 2e-4 for 300 steps raises the
    # reward scored at temperature 0.4 by ~0.2 on seeds 0-2; higher rates or longer runs drift the samples into
    # ungrammatical text. 384 samples: with 192 the mean reward's noise (~0.05) is the size of small effects.
    default_steps: ClassVar[int] = 300
    default_beta: ClassVar[float] = 0.1
    default_learning_rate: ClassVar[float] = 2e-4
    default_batch_size: ClassVar[int] = 16
    max_length: ClassVar[int] = 40
    default_eval_samples: ClassVar[int] = 384  # held-out prompts x 16 samples

    def tokenizer(self) -> PreTrainedTokenizerFast:
        return build_tokenizer(grammar.vocabulary())

    def settings(self) -> dict[str, Any]:
        data_settings = {k: v for k, v in self.config.items() if k not in SCORING_OPTIONS}
        return {"grammar_version": grammar.GRAMMAR_VERSION, **data_settings}

    # --- building the reference and the data (task seed only) ----------------------------------------------

    def _split_prompts(self) -> tuple[list[str], list[str]]:
        prompts = grammar.prompts()
        random.Random(self.task_seed).shuffle(prompts)
        held = self.config["heldout_prompts"]
        return prompts[held:], prompts[:held]

    def build(self, tokenizer: PreTrainedTokenizerFast) -> tuple[PreTrainedModel, dict[str, Any]]:
        rng = random.Random(self.task_seed)
        train_prompts, heldout_prompts = self._split_prompts()
        reviews = [
            grammar.random_review(rng, self.config["sft_max_sentences"]) for _ in range(self.config["sft_reviews"])
        ]
        # The whole review is the SFT target, so the reference models the prompts' distribution as well.
        ids = [tokenizer(review)["input_ids"] + [tokenizer.eos_token_id] for review in reviews]
        model = build_model(self.model_spec, tokenizer, seed=self.task_seed)
        sft(
            model,
            [row[:1] for row in ids],
            [row[1:] for row in ids],
            steps=self.config["sft_steps"],
            batch_size=self.config["sft_batch_size"],
            learning_rate=self.config["sft_learning_rate"],
            seed=self.task_seed,
        )
        generator = torch.Generator().manual_seed(self.task_seed)
        train = self._sample_pairs(model, tokenizer, train_prompts, self.config["train_pairs"], generator)
        heldout = self._sample_pairs(model, tokenizer, heldout_prompts, self.config["heldout_pairs"], generator)
        return model, {"train": train, "heldout_pairs": heldout, "heldout_prompts": heldout_prompts}

    def _sample_pairs(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        prompts: list[str],
        count: int,
        generator: torch.Generator,
    ) -> list[dict[str, Any]]:
        """Pairs (best, worst) of ``samples_per_prompt`` reference samples, kept when the reward gap is clear."""
        k, pairs = self.config["samples_per_prompt"], []
        for _ in range(100):  # rounds over all prompts; a healthy reference fills ``count`` in a few dozen
            prompt_ids = [tokenizer(p)["input_ids"] for p in prompts for _ in range(k)]
            samples = generate(
                model,
                prompt_ids,
                eos_token_id=tokenizer.eos_token_id,
                max_new_tokens=self.config["max_new_tokens"],
                generator=generator,
            )
            for index, prompt in enumerate(prompts):
                group = [s for s in samples[index * k : (index + 1) * k] if self._usable(prompt, s, tokenizer)]
                pair = self._widest_pair([(completion_reward(prompt, s, tokenizer), s) for s in group])
                if pair is not None:
                    (best, chosen), (worst, rejected) = pair
                    pairs.append(
                        {
                            "prompt": prompt,
                            "chosen": completion_text(chosen, tokenizer),
                            "rejected": completion_text(rejected, tokenizer),
                            "chosen_reward": best,
                            "rejected_reward": worst,
                        }
                    )
                    if len(pairs) == count:
                        return pairs
        raise TaskError(f"the SFT reference yielded only {len(pairs)} of {count} preference pairs; raise sft_steps")

    def _usable(self, prompt: str, completion: list[int], tokenizer: PreTrainedTokenizerBase) -> bool:
        if not is_clean(completion, tokenizer):
            return False
        # Pushing down garbage that the reference rarely writes moves probability to other garbage (measured:
        # with such pairs DPO's samples lost grammaticality); pairs of well-formed reviews teach sentiment.
        return not self.config["grammatical_pairs"] or (
            is_finished(completion, tokenizer)
            and grammar.is_grammatical(prompt + completion_text(completion, tokenizer))
        )

    def _widest_pair(
        self, scored: list[tuple[float, list[int]]]
    ) -> tuple[tuple[float, list[int]], tuple[float, list[int]]] | None:
        """The (better, worse) samples with the largest reward gap among those of similar length, if clear enough.

        Length-matched pairs matter: when rejected completions are longer, summed log-probs let a loss raise
        the margin by making every token, "." and "</s>" included, less likely, and the policy stops
        finishing its sentences. Matching lengths leaves only the content to learn from.
        """
        best = None
        for better in scored:
            for worse in scored:
                gap = better[0] - worse[0]
                if abs(len(better[1]) - len(worse[1])) <= self.config["max_length_gap"] and (
                    best is None or gap > best[0][0] - best[1][0]
                ):
                    best = (better, worse)
        if best is None or best[0][0] - best[1][0] < self.config["min_reward_gap"]:
            return None
        return best

    # --- scoring ------------------------------------------------------------------------------------------

    def _score(self, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, seed: int) -> TaskScore:
        data = self.data()
        held = data["heldout_prompts"]
        samples = self.eval_samples or self.default_eval_samples
        prompts = [held[i % len(held)] for i in range(samples)]
        prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
        # At the sampling temperature: the log-probs of the distributions the completions were drawn from.
        sampled = sample_with_log_ratios(
            policy,
            prompt_ids,
            reference=lambda fn: self.reference_logps_for(policy, fn),
            eos_token_id=tokenizer.eos_token_id,
            max_new_tokens=self.config["max_new_tokens"],
            temperature=self.config["sample_temperature"],
            generator=torch.Generator().manual_seed(seed),
        )
        completions, log_ratios = sampled.completions, sampled.log_ratios  # log_ratios (N,), y ~ policy_T
        rewards = [completion_reward(p, c, tokenizer) for p, c in zip(prompts, completions)]
        grammatical = [
            is_finished(c, tokenizer) and grammar.is_grammatical(p + completion_text(c, tokenizer))
            for p, c in zip(prompts, completions)
        ]

        pairs = data["heldout_pairs"]
        pair_prompts = [tokenizer(p["prompt"])["input_ids"] for p in pairs]
        chosen = [tokenizer(p["prompt"] + p["chosen"])["input_ids"][len(q) :] for p, q in zip(pairs, pair_prompts)]
        rejected = [tokenizer(p["prompt"] + p["rejected"])["input_ids"][len(q) :] for p, q in zip(pairs, pair_prompts)]
        eos = [tokenizer.eos_token_id]

        def pair_logps(model: PreTrainedModel) -> torch.Tensor:
            both = completion_logps(model, pair_prompts * 2, [c + eos for c in chosen] + [r + eos for r in rejected])
            return both.view(2, len(pairs))  # (2, P): chosen, rejected

        pair_ratios = pair_logps(policy) - self.reference_logps_for(policy, pair_logps)  # (2, P)
        margins = pair_ratios[0] - pair_ratios[1]  # (P,)

        reward = sum(rewards) / len(rewards)
        lengths = [len(c) - int(is_finished(c, tokenizer)) for c in completions]  # tokens, without </s>
        metrics = {
            "reward": reward,
            "length": sum(lengths) / len(lengths),
            "kl": float(log_ratios.mean()),
            "pref_accuracy": float((margins > 0).float().mean()),
            "grammatical": sum(grammatical) / len(grammatical),
        }
        return TaskScore(score=reward, metrics=metrics)


def completion_text(completion: list[int], tokenizer: PreTrainedTokenizerBase) -> str:
    """Completion text with a leading space (prompt + text is the review), without the final ``</s>``."""
    if completion and completion[-1] == tokenizer.eos_token_id:
        completion = completion[:-1]
    return " " + " ".join(tokenizer.convert_ids_to_tokens(completion))  # special tokens stay visible: ungrammatical


def is_finished(completion: list[int], tokenizer: PreTrainedTokenizerBase) -> bool:
    return bool(completion) and completion[-1] == tokenizer.eos_token_id


def completion_reward(prompt: str, completion: list[int], tokenizer: PreTrainedTokenizerBase) -> float:
    if not is_finished(completion, tokenizer):
        return -1.0  # ran out of tokens without ending: an unfinished review
    return grammar.gold_reward(prompt + completion_text(completion, tokenizer))


def is_clean(completion: list[int], tokenizer: PreTrainedTokenizerBase) -> bool:
    """No special token before the end, so the text round-trips through TRL's tokenization unchanged."""
    return not set(completion[:-1]) & set(tokenizer.all_special_ids)
