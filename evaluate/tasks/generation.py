"""Scoring by generation: seeded sampling, summed log-probs of the samples, and a Monte-Carlo KL to the reference.

Shared by the tasks that score what a policy writes (``sentiment``, ``hf`` with ``score: reward``, ``reviews``):

- :func:`generate` samples completions with a KV cache, drawing from one seeded ``torch.Generator`` only, so a
  seed fixes the samples (on one machine and device);
- :func:`completion_logps` sums the log-probs of given completions under softmax(logits / T);
- :func:`sample_with_log_ratios` does both for a policy and its reference: the per-sample
  ``log pi_T(y) - log ref_T(y)`` of completions ``y ~ pi_T``, whose mean is an unbiased Monte-Carlo estimate
  of KL(pi_T || ref_T) over whole completions (>= 0 in expectation; one estimate can dip below 0);
- :func:`reward_scores` is the reward-scored evaluation of ``hf`` and ``reviews``: mean reward of policy
  samples, win rate against the reference's samples, KL and length.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from lossforge.evaluate.tasks.base import TaskError

if TYPE_CHECKING:
    from lossforge.evaluate.tasks.rewards import Prompt, Reward
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

T = TypeVar("T")
# Evaluates a function of a model on the reference model (see :func:`on_reference`).
OnReference = Callable[[Callable[[Any], torch.Tensor]], torch.Tensor]


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def pad_rows(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Token rows right-padded with ``value`` to the longest: (N, T)."""
    width = max(len(row) for row in rows)
    return torch.tensor([list(row) + [value] * (width - len(row)) for row in rows])


def sampling_generator(seed: int, model: Any) -> torch.Generator:
    """A generator seeded with ``seed`` on the model's device (sampling draws where the logits are)."""
    return torch.Generator(device=_device(model)).manual_seed(seed)


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    *,
    eos_token_id: int | Sequence[int],
    max_new_tokens: int,
    generator: torch.Generator | None,
    batch_size: int = 256,
    temperature: float = 1.0,
) -> list[list[int]]:
    """Sample (``generator`` given, at ``temperature``) or decode greedily (``generator=None``) each completion.

    Prompts are batched by length, so no left padding is needed; a completion ends with the first of its stop
    ids (``eos_token_id``: one id or several, e.g. Gemma's ``<eos>`` and ``<end_of_turn>``; included) or at
    ``max_new_tokens``. Sampling draws from ``generator`` only, on the generator's device, so a seed fixes the
    result.
    """
    stops = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    device = _device(model)
    stop_ids = torch.tensor(stops, device=device)
    results: list[list[int]] = [[] for _ in prompts]
    by_length: dict[int, list[int]] = {}
    for index, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(index)
    for length in sorted(by_length):
        indices = by_length[length]
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            input_ids = torch.tensor([list(prompts[i]) for i in chunk], device=device)  # (B, P)
            outputs = model(input_ids=input_ids, use_cache=True)
            done = torch.zeros(len(chunk), dtype=torch.bool, device=device)
            new_tokens = []
            for _ in range(max_new_tokens):
                logits = outputs.logits[:, -1].float()  # (B, V)
                if generator is None:
                    token = logits.argmax(dim=-1)
                else:
                    probs = torch.softmax(logits / temperature, dim=-1).to(generator.device)  # (B, V)
                    token = torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(device)
                token = torch.where(done, stops[0], token)  # (B,): finished rows repeat a stop id
                new_tokens.append(token)
                done |= torch.isin(token, stop_ids)
                if bool(done.all()):
                    break
                outputs = model(input_ids=token[:, None], past_key_values=outputs.past_key_values, use_cache=True)
            tokens = torch.stack(new_tokens, dim=1).tolist()  # (B, new)
            for i, row in zip(chunk, tokens):
                end = next((t for t, token_id in enumerate(row) if token_id in stops), None)
                results[i] = row if end is None else row[: end + 1]
    return results


@torch.no_grad()
def completion_logps(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    *,
    batch_size: int = 256,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Summed log-prob of each completion given its prompt (token ids): (N,), on CPU.

    ``temperature``: log-probs of the tempered distribution softmax(logits / T), the one ``generate`` samples
    from at that temperature (what a Monte-Carlo KL of the sampled distributions needs).
    """
    device = _device(model)
    out: list[torch.Tensor] = []
    for start in range(0, len(prompts), batch_size):
        rows = range(start, min(start + batch_size, len(prompts)))
        input_ids = pad_rows([list(prompts[i]) + list(completions[i]) for i in rows], 0).to(device)  # (B, T)
        mask = pad_rows([[0] * len(prompts[i]) + [1] * len(completions[i]) for i in rows], 0).to(device)  # completion
        attention = pad_rows([[1] * (len(prompts[i]) + len(completions[i])) for i in rows], 0).to(device)
        logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()  # (B, T-1, V)
        logits = logits / temperature
        token_logps = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
        out.append((token_logps * mask[:, 1:]).sum(dim=-1).cpu())
    return torch.cat(out)


def on_reference(policy: PreTrainedModel, fn: Callable[[Any], T], load_reference: Callable[[], Any]) -> T:
    """``fn`` evaluated on the reference: the policy with its adapter disabled (PEFT: the base weights are the
    reference, no second model in memory), else ``load_reference()`` placed on the policy's device."""
    disable_adapter = getattr(policy, "disable_adapter", None)
    if callable(disable_adapter):
        with disable_adapter():
            return fn(policy)
    reference = load_reference()
    reference.to(_device(policy)).eval()
    return fn(reference)


@dataclass(frozen=True)
class Samples:
    """Completions sampled from a policy, with ``log_ratios`` (N,): log pi_T(y) - log ref_T(y) of each."""

    completions: list[list[int]]
    log_ratios: torch.Tensor


def sample_with_log_ratios(
    policy: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    *,
    reference: OnReference,
    eos_token_id: int | Sequence[int],
    max_new_tokens: int,
    temperature: float,
    generator: torch.Generator,
    batch_size: int = 256,
) -> Samples:
    """Sample one completion per prompt from ``policy`` at ``temperature`` and score it under both models.

    Both log-probs are at the sampling temperature: the distributions the samples come from. Both models see
    the same (possibly truncated) completions, so the estimate covers the first ``max_new_tokens`` tokens.
    """
    completions = generate(
        policy,
        prompt_ids,
        eos_token_id=eos_token_id,
        max_new_tokens=max_new_tokens,
        generator=generator,
        batch_size=batch_size,
        temperature=temperature,
    )

    def sample_logps(model: Any) -> torch.Tensor:
        return completion_logps(model, prompt_ids, completions, batch_size=batch_size, temperature=temperature)

    return Samples(completions, sample_logps(policy) - reference(sample_logps))  # (N,)


def stop_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokenizer's eos id first, then the model's other end ids (generation_config may list several)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    config_ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for token_id in [config_ids] if isinstance(config_ids, int) else list(config_ids or []):
        if token_id not in ids:
            ids.append(token_id)
    if not ids:
        raise TaskError("the tokenizer and the model name no end-of-sequence token; generation could not stop")
    return ids


def completion_texts(
    tokenizer: PreTrainedTokenizerBase, prompt_ids: Sequence[Sequence[int]], completions: Sequence[Sequence[int]]
) -> list[str]:
    """Each completion as text, special tokens dropped, such that prompt text + completion text is the whole.

    Decoding the completion alone can lose the space that joins it to the prompt (SentencePiece decoders strip
    a leading one); the difference of the two decodings keeps it.
    """
    texts = []
    for prompt, completion in zip(prompt_ids, completions):
        head = tokenizer.decode(list(prompt), skip_special_tokens=True)
        whole = tokenizer.decode(list(prompt) + list(completion), skip_special_tokens=True)
        if not whole.startswith(head):  # the decoder rewrote the prompt's text: take the completion alone
            head, whole = "", tokenizer.decode(list(completion), skip_special_tokens=True)
        texts.append(whole[len(head) :])
    return texts


@dataclass(frozen=True)
class GenerationSettings:
    """How reward scoring samples: ``samples`` completions per prompt of at most ``max_new_tokens`` tokens at
    ``temperature``; ``batch_size`` sequences per forward pass."""

    temperature: float = 1.0
    max_new_tokens: int = 48
    samples: int = 1
    batch_size: int = 8

    def check(self, max_length: int) -> None:
        """Refuse a setting that cannot sample, naming the task option that holds it (``batch_size`` is
        ``eval_batch_size``); ``max_length`` bounds prompt + completion, so a completion must leave room."""
        if not self.temperature > 0:
            raise TaskError(f"option temperature must be > 0, got {self.temperature}")
        if not 1 <= self.max_new_tokens < max_length:
            raise TaskError(
                f"option max_new_tokens must be in [1, {max_length}) (max_length), got {self.max_new_tokens}"
            )
        for option, value in (("samples", self.samples), ("eval_batch_size", self.batch_size)):
            if value < 1:
                raise TaskError(f"option {option} must be a positive integer, got {value}")


def win_rate(policy_rewards: Sequence[float], reference_rewards: Sequence[float]) -> float:
    """Share of paired samples whose policy reward beats the reference's; a tie counts 0.5."""
    wins = [1.0 if p > r else 0.5 if p == r else 0.0 for p, r in zip(policy_rewards, reference_rewards, strict=True)]
    return sum(wins) / len(wins)


def reward_scores(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    prompt_ids: Sequence[Sequence[int]],
    reward: Reward,
    settings: GenerationSettings,
    *,
    seed: int,
    load_reference: Callable[[], Any],
) -> dict[str, float]:
    """Reward-scored generation: ``reward`` (mean over policy samples), ``win_rate``, ``kl``, ``length``...

    Each prompt gets ``settings.samples`` policy samples and as many reference samples. Both are drawn with
    generators seeded by ``seed`` (common random numbers: a policy equal to the reference writes exactly the
    reference's samples, so its ``kl`` is 0 and its ``win_rate`` 0.5). ``win_rate`` pairs the j-th policy sample
    of a prompt with the j-th reference sample. ``length``: mean sampled tokens per policy completion, end
    token included (the tokens the KL sums over). Also ``reference_reward`` and ``n_samples``.
    """
    expanded = [i for i in range(len(prompts)) for _ in range(settings.samples)]
    ids = [prompt_ids[i] for i in expanded]
    stops = stop_ids(policy, tokenizer)
    load_once = functools.cache(load_reference)  # a non-PEFT policy's reference is loaded once, not per use

    def reference(fn: Callable[[Any], T]) -> T:
        return on_reference(policy, fn, load_once)

    def reference_samples(model: Any) -> list[list[int]]:
        return generate(
            model,
            ids,
            eos_token_id=stops,
            max_new_tokens=settings.max_new_tokens,
            generator=sampling_generator(seed, model),  # the policy's seed: common random numbers
            batch_size=settings.batch_size,
            temperature=settings.temperature,
        )

    was_training = policy.training
    policy.eval()  # no dropout while sampling and scoring: the same seed gives the same result
    try:
        sampled = sample_with_log_ratios(
            policy,
            ids,
            reference=reference,
            eos_token_id=stops,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            generator=sampling_generator(seed, policy),
            batch_size=settings.batch_size,
        )
        reference_completions = reference(reference_samples)
    finally:
        policy.train(was_training)
    sample_prompts = [prompts[i] for i in expanded]
    policy_rewards = reward(sample_prompts, completion_texts(tokenizer, ids, sampled.completions))
    reference_rewards = reward(sample_prompts, completion_texts(tokenizer, ids, reference_completions))
    return {
        "reward": sum(policy_rewards) / len(policy_rewards),
        "win_rate": win_rate(policy_rewards, reference_rewards),
        "kl": float(sampled.log_ratios.mean()),  # y ~ pi_T: an estimate of KL(pi_T || ref_T)
        "length": sum(len(c) for c in sampled.completions) / len(sampled.completions),
        "reference_reward": sum(reference_rewards) / len(reference_rewards),
        "n_samples": float(len(ids)),
    }


__all__ = [
    "GenerationSettings",
    "OnReference",
    "Samples",
    "completion_logps",
    "completion_texts",
    "generate",
    "on_reference",
    "pad_rows",
    "reward_scores",
    "sample_with_log_ratios",
    "sampling_generator",
    "stop_ids",
    "win_rate",
]
