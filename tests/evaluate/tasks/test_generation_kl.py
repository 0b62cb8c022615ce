"""sentiment's ``kl`` is a Monte-Carlo estimate of KL(policy_T || reference_T) at the sampling temperature T:
exactly 0 for identical models, and equal (within its sampling error) to the closed form on a case where the
exact divergence is computable: one-token completions, whose KL is a sum over the vocabulary."""

from __future__ import annotations

import math

import pytest
import torch
from lossforge.evaluate.tasks.generation import completion_logps, generate
from lossforge.evaluate.tasks.grammar import vocabulary
from lossforge.evaluate.tasks.tiny import TinyModelSpec, build_model, build_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEMPERATURE = 0.4
SPEC = TinyModelSpec(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_positions=32)


def _mc_kl(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    prompt: list[int],
    n: int,
    eos: int,
    max_new_tokens: int,
    seed: int,
) -> torch.Tensor:
    """The task's estimator: completions sampled from the tempered policy, summed tempered log-ratios: (n,)."""
    prompts = [prompt] * n
    completions = generate(
        policy,
        prompts,
        eos_token_id=eos,
        max_new_tokens=max_new_tokens,
        generator=torch.Generator().manual_seed(seed),
        temperature=TEMPERATURE,
    )
    return completion_logps(policy, prompts, completions, temperature=TEMPERATURE) - completion_logps(
        reference, prompts, completions, temperature=TEMPERATURE
    )


def test_kl_of_identical_models_is_zero_and_of_different_ones_matches_the_closed_form() -> None:
    tokenizer = build_tokenizer(vocabulary())
    policy, reference = build_model(SPEC, tokenizer, seed=0), build_model(SPEC, tokenizer, seed=1)
    with torch.no_grad():  # sharpen both (the final norm scales the logits) so that they differ clearly
        policy.model.norm.weight.mul_(5.0)
        reference.model.norm.weight.mul_(5.0)
    prompt = tokenizer("the plot was")["input_ids"]
    eos = tokenizer.eos_token_id

    same = _mc_kl(policy, policy, prompt, 64, eos, max_new_tokens=8, seed=3)
    assert torch.allclose(same, torch.zeros_like(same), atol=1e-5)

    # One new token: KL(p_T || q_T) = sum_v p_T(v) (log p_T(v) - log q_T(v)) at the prompt's last position.
    with torch.no_grad():
        ids = torch.tensor([prompt])
        p = torch.log_softmax(policy(input_ids=ids).logits[0, -1] / TEMPERATURE, dim=-1)
        q = torch.log_softmax(reference(input_ids=ids).logits[0, -1] / TEMPERATURE, dim=-1)
    exact = float((p.exp() * (p - q)).sum())
    estimate = _mc_kl(policy, reference, prompt, 4000, eos, max_new_tokens=1, seed=5)
    error = float(estimate.std()) / math.sqrt(len(estimate))
    assert exact > 0.05  # a case where the divergence is not trivially small
    assert abs(float(estimate.mean()) - exact) < 4 * error + 1e-6, (float(estimate.mean()), exact, error)
    assert float(estimate.mean()) > 0
