"""Candidate profile and behavioural fingerprint (docs/DESIGN.md, "Checking a candidate", item 4)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from lossforge.candidates import BUILTIN_DIR, BUILTIN_NAMES, load_builtin
from lossforge.evaluate.checking.fingerprint import FINGERPRINT_BETAS, fingerprint_of
from lossforge.evaluate.checking.profile import LossProfile, compute_profile
from lossforge.evaluate.contract import takes_lengths

dpo = load_builtin("dpo").fn


# --- rewrites of DPO that compute the same function, or train the same under Adam -------------------------


def dpo_renamed(a, b, c, d, beta):
    lhs = a - c
    rhs = b - d
    return -F.logsigmoid(beta * (lhs - rhs))


def dpo_softplus(pc, pr, rc, rr, beta):
    return F.softplus(-beta * ((pc - rc) - (pr - rr)))


def dpo_reordered(pc, pr, rc, rr, beta):
    logits = (beta * pc - beta * pr) + (beta * rr - beta * rc)  # policy margin minus reference margin
    return -F.logsigmoid(logits)


def dpo_log_of_sigmoid(pc, pr, rc, rr, beta):
    return -torch.log(torch.sigmoid(beta * ((pc - pr) - (rc - rr))))


def dpo_plus_constant(pc, pr, rc, rr, beta):
    return dpo(pc, pr, rc, rr, beta) + 3.0


def dpo_scaled(pc, pr, rc, rr, beta):
    return 2.5 * dpo(pc, pr, rc, rr, beta)


def dpo_over_beta(pc, pr, rc, rr, beta):
    # A beta-dependent positive factor: at any one beta (and training uses one) Adam cannot tell.
    return dpo(pc, pr, rc, rr, beta) / beta


def robust_dpo(pc, pr, rc, rr, beta, epsilon=0.0):
    logits = beta * ((pc - rc) - (pr - rr))
    return (-(1 - epsilon) * F.logsigmoid(logits) + epsilon * F.logsigmoid(-logits)) / (1 - 2 * epsilon)


# --- losses with known profile properties -------------------------------------------------------------


def batch_centred(pc, pr, rc, rr, beta):
    margin = (pc - rc) - (pr - rr)  # (B,)
    return -F.logsigmoid(beta * (margin - margin.mean()))


def dpop_like(pc, pr, rc, rr, beta, lam=5.0):
    # Penalises the chosen log-ratio falling below 0: depends on the log-ratios, not on rho alone.
    margin = (pc - rc) - (pr - rr)
    return -F.logsigmoid(beta * (margin - lam * torch.relu(rc - pc)))


def raw_logprob_gate(pc, pr, rc, rr, beta):
    # Branches on the raw log-probs (as PFL does): not a function of the log-ratios.
    logits = beta * ((pc - rc) - (pr - rr))
    return torch.where(pc > pr, -F.logsigmoid(logits), 2.0 * torch.relu(1 - logits))


def lrml_published(pc, pr, rc, rr, beta, tau=0.05):
    # DiscoPOP's formula as published: exp(-x) overflows for x < -88 in float32, and inf * 0 = nan.
    logits = beta * ((pc - pr) - (rc - rr))
    modulation = torch.sigmoid(logits / tau)
    return -F.logsigmoid(logits) * (1 - modulation) + torch.exp(-logits) * modulation


def lrml_stable(pc, pr, rc, rr, beta, tau=0.05):
    logits = beta * ((pc - rc) - (pr - rr))
    weighted_exp = torch.exp(F.logsigmoid(logits / tau) - logits)  # sigmoid(x / tau) * exp(-x) in log space
    return torch.sigmoid(-logits / tau) * F.softplus(-logits) + weighted_exp


@pytest.fixture(scope="module")
def dpo_profile() -> LossProfile:
    return compute_profile(dpo)


@pytest.mark.parametrize(
    "variant",
    [dpo_renamed, dpo_softplus, dpo_reordered, dpo_log_of_sigmoid, dpo_plus_constant, dpo_scaled, dpo_over_beta],
)
def test_rewrites_of_dpo_share_its_fingerprint(variant, dpo_profile: LossProfile) -> None:
    assert fingerprint_of(variant) == dpo_profile.fingerprint


def test_fingerprint_is_short_hex_and_deterministic(dpo_profile: LossProfile) -> None:
    assert len(dpo_profile.fingerprint) == 16
    int(dpo_profile.fingerprint, 16)
    assert fingerprint_of(dpo) == dpo_profile.fingerprint


def test_rounding_absorbs_float_noise_but_not_real_changes(dpo_profile: LossProfile) -> None:
    def perturbed(size: float):
        def loss(pc, pr, rc, rr, beta):
            margin = (pc - rc) - (pr - rr)
            return dpo(pc, pr, rc, rr, beta) + size * margin**2

        return loss

    assert fingerprint_of(perturbed(1e-14)) == dpo_profile.fingerprint  # gradient moves ~1e-12 relative
    assert fingerprint_of(perturbed(1e-4)) != dpo_profile.fingerprint


def test_negative_factor_is_a_different_loss(dpo_profile: LossProfile) -> None:
    assert fingerprint_of(lambda *args: -dpo(*args)) != dpo_profile.fingerprint


def test_robust_dpo_with_zero_epsilon_is_dpo(dpo_profile: LossProfile) -> None:
    assert fingerprint_of(robust_dpo) == dpo_profile.fingerprint
    assert fingerprint_of(lambda *args: robust_dpo(*args, epsilon=0.1)) != dpo_profile.fingerprint


def test_a_difference_at_one_beta_only_changes_the_fingerprint(dpo_profile: LossProfile) -> None:
    def dpo_except_at_large_beta(pc, pr, rc, rr, beta):
        if beta < max(FINGERPRINT_BETAS):
            return dpo(pc, pr, rc, rr, beta)
        return torch.relu(1 - beta * ((pc - rc) - (pr - rr)))

    assert fingerprint_of(dpo_except_at_large_beta) != dpo_profile.fingerprint


def rescaled(fn):  # type: ignore[no-untyped-def]
    """``1.0000001 * fn - 7`` with fn's own signature (a length-aware loss keeps receiving its lengths)."""
    if takes_lengths(fn):
        return lambda pc, pr, rc, rr, beta, chosen_lengths, rejected_lengths: (
            1.0000001 * fn(pc, pr, rc, rr, beta, chosen_lengths, rejected_lengths) - 7.0
        )
    return lambda *args: 1.0000001 * fn(*args) - 7.0


def test_library_losses_have_pairwise_distinct_fingerprints() -> None:
    names = list(BUILTIN_NAMES)
    assert [name for name in names if not (BUILTIN_DIR / f"{name}.py").exists()] == []
    by_fingerprint: dict[str, list[str]] = {}
    for name in names:
        fn = load_builtin(name).fn
        fingerprint = fingerprint_of(fn)
        # Rescaling adds float noise to every gradient component; the rounding must absorb it for every loss.
        assert fingerprint_of(rescaled(fn)) == fingerprint, name
        by_fingerprint.setdefault(fingerprint, []).append(name)
    assert [group for group in by_fingerprint.values() if len(group) > 1] == []


def test_dpo_profile(dpo_profile: LossProfile) -> None:
    assert dpo_profile.rho_only and dpo_profile.logratio_only
    assert not dpo_profile.batch_coupled
    assert dpo_profile.convex
    assert dpo_profile.stable_extremes and dpo_profile.unstable_beta_rho == []
    assert "loss depends on rho alone" in dpo_profile.notes
    curve = dpo_profile.curves
    assert len(curve["rho"]) == 41 and set(curve["loss"]) == {"0.01", "0.1", "0.5"}
    middle = curve["rho"].index(0.0)
    assert curve["loss"]["0.1"][middle] == pytest.approx(math.log(2.0))  # -log sigmoid(0)
    assert curve["dloss_drho"]["0.1"][middle] == pytest.approx(-0.05)  # -beta * sigmoid(0)
    assert curve["dloss_drho"]["0.5"][0] == pytest.approx(-0.5 / (1 + math.exp(-0.5 * 40.0)))


def test_scale_follows_a_positive_factor(dpo_profile: LossProfile) -> None:
    assert dpo_profile.scale > 0
    assert compute_profile(dpo_scaled).scale == pytest.approx(2.5 * dpo_profile.scale, rel=1e-9)
    assert compute_profile(dpo_plus_constant).scale == pytest.approx(dpo_profile.scale, rel=1e-9)


def test_batch_centred_loss_is_coupled() -> None:
    profile = compute_profile(batch_centred)
    assert profile.batch_coupled
    assert any("couples examples" in note for note in profile.notes)


def test_dependence_on_log_ratios_and_raw_log_probs() -> None:
    dpop = compute_profile(dpop_like)
    assert dpop.logratio_only and not dpop.rho_only
    gated = compute_profile(raw_logprob_gate)
    assert not gated.logratio_only and not gated.rho_only
    assert not gated.convex  # the gate is a jump along the curve


def test_published_lrml_overflows_at_extreme_margins_and_the_stable_form_does_not() -> None:
    published, stable = compute_profile(lrml_published), compute_profile(lrml_stable)
    assert not published.stable_extremes
    assert -100.0 in published.unstable_beta_rho and all(z < 0 for z in published.unstable_beta_rho)
    assert any("non-finite" in note for note in published.notes)
    assert stable.stable_extremes and stable.unstable_beta_rho == []
    assert published.fingerprint == stable.fingerprint  # the same function where float64 does not overflow
    assert not stable.convex  # LRML is not convex in rho


def test_overflow_of_a_coupled_loss_is_located_per_margin() -> None:
    def coupled_exponential(pc, pr, rc, rr, beta):
        # DBAQL-like: the blend weight is a batch statistic, so one overflow (inf * 0) turns every
        # pair's gradient into nan; only per-margin batches tell which margins are at fault.
        logits = beta * ((pc - rc) - (pr - rr))  # (B,)
        blend = torch.sigmoid(logits.var())  # ()
        return blend * F.softplus(-logits) + (1 - blend) * torch.exp(-logits)

    profile = compute_profile(coupled_exponential)
    assert profile.batch_coupled
    assert profile.unstable_beta_rho == [-1000.0, -300.0, -100.0]  # exp(100) overflows float32; +100 does not


def test_to_dict_is_strict_json(dpo_profile: LossProfile) -> None:
    data = json.loads(json.dumps(compute_profile(lrml_published).to_dict(), allow_nan=False))
    assert data["fingerprint"] and isinstance(data["notes"], list)
    assert any(point["loss"] is None for point in data["extremes"])
    json.dumps(dpo_profile.to_dict(), allow_nan=False)


def raises(pc, pr, rc, rr, beta):
    raise ValueError("broken proposal")


def returns_nan(pc, pr, rc, rr, beta):
    return (pc - pr) * float("nan")


def returns_scalar(pc, pr, rc, rr, beta):
    return dpo(pc, pr, rc, rr, beta).mean()


@pytest.mark.parametrize(
    ("fn", "expected"),
    [(raises, "ValueError: broken proposal"), (returns_nan, "non-finite"), (returns_scalar, "returned shape ()")],
)
def test_misbehaving_functions_yield_notes_not_exceptions(fn, expected: str) -> None:
    profile = compute_profile(fn)
    assert any(expected in note for note in profile.notes), profile.notes
    assert not profile.stable_extremes and not profile.convex
    assert not profile.batch_coupled and not profile.rho_only
    assert not any("couples" in note or "depends on" in note for note in profile.notes)  # undetermined, not claimed
    assert len(profile.fingerprint) == 16
    json.dumps(profile.to_dict(), allow_nan=False)


def test_zero_gradient_function_is_fingerprinted_and_noted() -> None:
    constant = compute_profile(lambda pc, pr, rc, rr, beta: 0.0 * pc + 1.0)
    detached = compute_profile(lambda pc, pr, rc, rr, beta: dpo(pc.detach(), pr.detach(), rc, rr, beta))
    for profile in (constant, detached):
        assert profile.scale == 0.0
        assert any("zero gradient" in note for note in profile.notes)
    assert constant.fingerprint == detached.fingerprint  # neither can train; they behave alike
    assert any("does not require grad" in note for note in detached.notes)


def test_random_loss_is_reported_as_non_deterministic_not_as_coupled() -> None:
    generator = torch.Generator().manual_seed(0)  # local, so the test leaves the global RNG alone

    def noisy(pc, pr, rc, rr, beta):
        noise = torch.rand(pc.shape, generator=generator, dtype=pc.dtype)
        return dpo(pc, pr, rc, rr, beta) * (1 + noise)

    profile = compute_profile(noisy)
    assert any("non-deterministic" in note for note in profile.notes)
    assert not profile.batch_coupled


def test_profile_leaves_torch_state_as_it_found_it() -> None:
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    with torch.no_grad():
        fingerprint = fingerprint_of(dpo)  # needs autograd inside, whatever the caller's mode
        assert not torch.is_grad_enabled()
    assert fingerprint == fingerprint_of(dpo)
    assert (torch.get_num_threads(), torch.get_default_dtype()) == (threads, dtype)


# The fingerprints every five-parameter library loss had on main 8d4392a, before the contract carried lengths:
# archived digests must keep matching (the dedup of a resumed or compared run depends on it).
MAIN_8D4392A_FINGERPRINTS = {
    "apo_down": "970466b49d911e43",
    "apo_zero": "1a65cf38ead05122",
    "aqfl": "0f32b6b98498fdc0",
    "aql": "200037b582823708",
    "bco_pair": "755578e6127ab5b9",
    "cell": "3f029629abb2b82d",
    "dbaql": "31915b69658e7d50",
    "dpo": "7bae5243bc8b88c5",
    "dpop": "dadc2e03163411a1",
    "exo_pair": "b8641c0b2f11da4a",
    "hinge": "509372f25874a702",
    "ipo": "25c0dcc9550d315c",
    "kto_pair": "53cd7659cd472b3b",
    "lrml": "727b206126775c63",
    "nca_pair": "53a0629678b32f01",
    "padll": "9b50ca3c4d4d0f79",
    "pfl": "e60c969de2d518e3",
    "robust_dpo": "f0bee8ec3867f44d",
    "sppo_hard": "41053ce0b4f3045e",
}


def test_five_parameter_fingerprints_are_unchanged_by_the_length_aware_contract() -> None:
    now = {name: fingerprint_of(load_builtin(name).fn) for name in MAIN_8D4392A_FINGERPRINTS}
    assert now == MAIN_8D4392A_FINGERPRINTS
