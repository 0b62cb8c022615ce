"""The length-aware and reference-free library losses: hand-computed values, the beta mappings, zero lengths.

Known values are computed per pair with ``math`` from each paper's formula (not from the candidate code), on
one 3-pair example with token counts, at the built-in tasks' beta = 0.1:

    pair   log pi(y_w)  log pi(y_l)  log ref(y_w)  log ref(y_l)  |y_w|  |y_l|
    0        -3.0         -4.0         -3.5          -3.0          3      2
    1        -0.5         -2.0         -1.0          -2.5          1      4
    2        -4.0          0.0         -3.0           0.0          2      0    (rejected truncated to 0 tokens)

A completion with 0 tokens has summed log-prob 0; every length is clamped to at least 1 before a division, and
ORPO's average log-prob to at most -1e-6 (its odds would be 1 / 0 at 0): the departures the files state.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

import pytest
import torch
from lossforge.candidates import load_builtin
from lossforge.evaluate.contract import LogpBatch, call_loss

BETA = 0.1
POLICY_CHOSEN = (-3.0, -0.5, -4.0)
POLICY_REJECTED = (-4.0, -2.0, 0.0)
REFERENCE_CHOSEN = (-3.5, -1.0, -3.0)
REFERENCE_REJECTED = (-3.0, -2.5, 0.0)
CHOSEN_LENGTHS = (3.0, 1.0, 2.0)
REJECTED_LENGTHS = (2.0, 4.0, 0.0)

LENGTH_AWARE = ("simpo", "r_dpo", "orpo", "cpo", "rpo", "ln_dpo")
REFERENCE_FREE = ("simpo", "orpo", "cpo")

Pair = tuple[float, float, float, float, float, float]  # pc, pr, rc, rr, |y_w|, |y_l|


def _nll(x: float) -> float:
    """-log sigmoid(x), without overflow for large negative x."""
    return math.log1p(math.exp(-x)) if x > -30 else -x + math.log1p(math.exp(x))


def _per_pair(formula: Callable[[Pair], float]) -> list[float]:
    pairs = zip(
        POLICY_CHOSEN,
        POLICY_REJECTED,
        REFERENCE_CHOSEN,
        REFERENCE_REJECTED,
        CHOSEN_LENGTHS,
        REJECTED_LENGTHS,
        strict=True,
    )
    return [formula(pair) for pair in pairs]


def _simpo(pair: Pair) -> float:
    # SimPO Eq. 6 at beta_s = 20 * 0.1 = 2 and gamma = 0.5 * 2 = 1.
    pc, pr, _, _, chosen_length, rejected_length = pair
    return _nll(2.0 * pc / max(chosen_length, 1) - 2.0 * pr / max(rejected_length, 1) - 1.0)


def _r_dpo(pair: Pair) -> float:
    # R-DPO: the logit gains + alpha * (|y_w| - |y_l|), alpha = 0.05.
    pc, pr, rc, rr, chosen_length, rejected_length = pair
    return _nll(BETA * ((pc - rc) - (pr - rr)) + 0.05 * (chosen_length - rejected_length))


def _log_odds(average: float) -> float:
    average = min(average, -1e-6)
    return average - math.log(1.0 - math.exp(average))


def _orpo(pair: Pair) -> float:
    # ORPO Eq. 6/7 with lambda = beta: the chosen mean NLL plus lambda * -log sigmoid(log odds ratio).
    pc, pr, _, _, chosen_length, rejected_length = pair
    chosen_average, rejected_average = pc / max(chosen_length, 1), pr / max(rejected_length, 1)
    return -chosen_average + BETA * _nll(_log_odds(chosen_average) - _log_odds(rejected_average))


def _cpo(pair: Pair) -> float:
    # CPO Eq. 3 on summed log-probs plus the chosen mean NLL (alpha = 1).
    pc, pr, _, _, chosen_length, _ = pair
    return _nll(BETA * (pc - pr)) - pc / max(chosen_length, 1)


def _rpo(pair: Pair) -> float:
    # DPO plus the chosen mean NLL (alpha = 1).
    pc, pr, rc, rr, chosen_length, _ = pair
    return _nll(BETA * ((pc - rc) - (pr - rr))) - pc / max(chosen_length, 1)


def _ln_dpo(pair: Pair) -> float:
    # DPO on per-token log-ratios at beta_ln = 50 * 0.1 = 5.
    pc, pr, rc, rr, chosen_length, rejected_length = pair
    return _nll(5.0 * ((pc - rc) / max(chosen_length, 1) - (pr - rr) / max(rejected_length, 1)))


LENGTH_EXPECTED: dict[str, list[float]] = {
    "simpo": _per_pair(_simpo),
    "r_dpo": _per_pair(_r_dpo),
    "orpo": _per_pair(_orpo),
    "cpo": _per_pair(_cpo),
    "rpo": _per_pair(_rpo),
    "ln_dpo": _per_pair(_ln_dpo),
}


def _example(dtype: torch.dtype = torch.float64) -> LogpBatch:
    values = (POLICY_CHOSEN, POLICY_REJECTED, REFERENCE_CHOSEN, REFERENCE_REJECTED, CHOSEN_LENGTHS, REJECTED_LENGTHS)
    return LogpBatch(*(torch.tensor(v, dtype=dtype) for v in values))


def _constant(name: str, attribute: str) -> float:
    return float(getattr(importlib.import_module(f"lossforge.candidates.{name}"), attribute))


def test_the_example_visits_every_regime() -> None:
    # Pair 2's rejected completion was truncated away; pair 1's chosen one is a single token.
    assert 0.0 in REJECTED_LENGTHS and 1.0 in CHOSEN_LENGTHS
    # R-DPO's length offset and SimPO's logit (target margin included) take both signs.
    offsets = [w - l for w, l in zip(CHOSEN_LENGTHS, REJECTED_LENGTHS, strict=True)]
    assert min(offsets) < 0 < max(offsets)
    simpo_logits = _per_pair(lambda pair: 2.0 * pair[0] / max(pair[4], 1) - 2.0 * pair[1] / max(pair[5], 1) - 1.0)
    assert simpo_logits == [1.0, -1.0, -5.0]


@pytest.mark.parametrize("name", LENGTH_AWARE)
def test_hand_computed_values(name: str) -> None:
    losses = call_loss(load_builtin(name).fn, _example(), BETA)
    torch.testing.assert_close(losses, torch.tensor(LENGTH_EXPECTED[name], dtype=torch.float64), rtol=1e-7, atol=1e-7)


def test_hyper_parameters_and_the_beta_mapping() -> None:
    # SimPO at the default beta 0.1: beta_s = 2.0 and gamma = 1.0, i.e. gamma / beta_s = 0.5 (arXiv 2405.14734).
    simpo_beta = _constant("simpo", "SCALE") * 0.1
    assert simpo_beta == pytest.approx(2.0) and _constant("simpo", "GAMMA_RATIO") * simpo_beta == pytest.approx(1.0)
    # Length-normalized DPO at beta 0.1: beta_ln = 5, Tulu 3's value.
    assert _constant("ln_dpo", "SCALE") * 0.1 == pytest.approx(5.0)
    assert _constant("r_dpo", "ALPHA") == 0.05
    assert _constant("cpo", "ALPHA") == 1.0 and _constant("rpo", "ALPHA") == 1.0
    assert _constant("orpo", "AVG_LOGP_MAX") == -1e-6


def test_simpo_scales_with_beta_at_a_fixed_margin_ratio() -> None:
    # At every beta the loss is -log sigmoid(beta_s * (gap - GAMMA_RATIO)): zero gap gives -log sigmoid(-beta_s / 2).
    zeros = torch.zeros(1, dtype=torch.float64)
    ones = torch.ones(1, dtype=torch.float64)
    for beta in (0.05, 0.1, 0.5):
        losses = load_builtin("simpo").fn(zeros, zeros, zeros, zeros, beta, chosen_lengths=ones, rejected_lengths=ones)
        torch.testing.assert_close(losses, torch.tensor([_nll(-20.0 * beta / 2)], dtype=torch.float64))


@pytest.mark.parametrize("name", REFERENCE_FREE)
def test_reference_free_losses_ignore_the_reference(name: str) -> None:
    batch = _example()
    moved = LogpBatch(
        batch.policy_chosen,
        batch.policy_rejected,
        batch.reference_chosen + 7.0,
        batch.reference_rejected - 3.0,
        batch.chosen_lengths,
        batch.rejected_lengths,
    )
    fn = load_builtin(name).fn
    torch.testing.assert_close(call_loss(fn, moved, BETA), call_loss(fn, batch, BETA), rtol=0, atol=0)


def test_r_dpo_trains_less_on_pairs_whose_chosen_completion_is_longer() -> None:
    """The length offset's sign: with equal log-probs, a longer chosen completion leaves a smaller loss and a
    smaller gradient (the preference is partly explained by length), a shorter one a larger loss."""
    logps = torch.full((2,), -50.0, dtype=torch.float64)
    policy_chosen = logps.clone().requires_grad_(True)
    chosen_lengths = torch.tensor([60.0, 40.0], dtype=torch.float64)
    rejected_lengths = torch.tensor([40.0, 60.0], dtype=torch.float64)
    losses = load_builtin("r_dpo").fn(
        policy_chosen, logps, logps, logps, BETA, chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths
    )
    losses.sum().backward()
    assert policy_chosen.grad is not None
    assert losses[0] < math.log(2.0) < losses[1]
    assert 0 > policy_chosen.grad[0] > policy_chosen.grad[1]


def test_orpo_log_odds_is_stable_near_certainty() -> None:
    """log(p / (1 - p)) for p = exp(average log-prob), from average -1e-8 to -1e4, with finite gradients."""
    averages = [-1e-8, -1e-6, -1e-3, -0.5, -math.log(2.0), -0.7, -5.0, -50.0, -1e4]
    chosen_average = torch.tensor(averages, dtype=torch.float64)
    rejected_average = torch.full_like(chosen_average, -2.0)
    lengths = torch.ones_like(chosen_average)
    policy_chosen = chosen_average.clone().requires_grad_(True)
    zeros = torch.zeros_like(chosen_average)
    losses = load_builtin("orpo").fn(
        policy_chosen, rejected_average, zeros, zeros, BETA, chosen_lengths=lengths, rejected_lengths=lengths
    )
    losses.sum().backward()
    assert policy_chosen.grad is not None and torch.isfinite(policy_chosen.grad).all()
    expected = [-a + BETA * _nll(_log_odds(a) - _log_odds(-2.0)) for a in averages]
    torch.testing.assert_close(losses, torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", LENGTH_AWARE)
def test_zero_lengths_give_finite_losses_and_gradients(name: str, dtype: torch.dtype) -> None:
    """Both completions truncated to 0 tokens (summed log-prob 0), or one of them, and one-token completions."""
    policy_chosen = torch.tensor([0.0, 0.0, -40.0, -0.2], dtype=dtype).requires_grad_(True)
    policy_rejected = torch.tensor([0.0, -35.0, 0.0, -0.1], dtype=dtype).requires_grad_(True)
    reference_chosen = torch.tensor([0.0, 0.0, -41.0, -0.3], dtype=dtype)
    reference_rejected = torch.tensor([0.0, -34.0, 0.0, -0.1], dtype=dtype)
    chosen_lengths = torch.tensor([0.0, 0.0, 30.0, 1.0], dtype=dtype)
    rejected_lengths = torch.tensor([0.0, 25.0, 0.0, 1.0], dtype=dtype)
    batch = LogpBatch(
        policy_chosen, policy_rejected, reference_chosen, reference_rejected, chosen_lengths, rejected_lengths
    )
    losses = call_loss(load_builtin(name).fn, batch, BETA)
    losses.sum().backward()
    assert torch.isfinite(losses).all(), losses
    assert policy_chosen.grad is not None and policy_rejected.grad is not None
    assert torch.isfinite(policy_chosen.grad).all() and torch.isfinite(policy_rejected.grad).all()


@pytest.mark.parametrize("name", LENGTH_AWARE)
def test_library_file_passes_the_checker(name: str) -> None:
    """The sandboxed checker's synthetic batches hold a one-token and a zero-token completion (synthetic.py)."""
    from lossforge.evaluate import check

    report = check(load_builtin(name).source, fmt="python")
    assert report.passed, report.errors
    assert report.profile is not None and report.profile["length_aware"]
