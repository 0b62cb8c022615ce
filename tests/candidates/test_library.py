"""The built-in loss library: loading, the contract, hand-computed values, stability, and the user library.

Known values are computed per pair with ``math`` from each paper's formula (not from the candidate code),
on one 3-pair example chosen so every branch is visited: chosen log-ratios (0, 1, -1), rejected log-ratios
(0, -1, 1), so rho = (0, 2, -2) and, with beta = 0.5, beta * rho = (0, 1, -1). The length-aware losses have
their own example, with token counts, in ``test_library_lengths.py``; the generic tests here call every loss
the way the trainer does (``call_loss``: with the lengths where the loss takes them).
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lossforge.candidates import (
    BUILTIN_NAMES,
    Candidate,
    load_builtin,
    load_library,
    read_metadata,
)
from lossforge.evaluate.checking.policy import check_policy
from lossforge.evaluate.contract import LogpBatch, call_loss, takes_lengths

from tests.candidates.test_library_lengths import LENGTH_AWARE, LENGTH_EXPECTED
from tests.paths import ROOT

LN2 = math.log(2.0)
BETA = 0.5
CHOSEN_LOGRATIOS = (0.0, 1.0, -1.0)
REJECTED_LOGRATIOS = (0.0, -1.0, 1.0)
REFERENCE_CHOSEN = (-10.0, -12.0, -9.0)
REFERENCE_REJECTED = (-11.0, -11.0, -11.0)
# policy = reference + log-ratio: (-10, -11, -10) chosen and (-11, -12, -10) rejected, so the policy itself
# prefers the chosen response in pairs 0 and 1 only (PFL branches on that).


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _nll(x: float) -> float:
    """-log sigmoid(x), the DPO per-pair loss of the scaled margin x."""
    return math.log1p(math.exp(-x))


def _example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    reference_chosen = torch.tensor(REFERENCE_CHOSEN, dtype=torch.float64)
    reference_rejected = torch.tensor(REFERENCE_REJECTED, dtype=torch.float64)
    policy_chosen = reference_chosen + torch.tensor(CHOSEN_LOGRATIOS, dtype=torch.float64)
    policy_rejected = reference_rejected + torch.tensor(REJECTED_LOGRATIOS, dtype=torch.float64)
    return policy_chosen, policy_rejected, reference_chosen, reference_rejected


def _per_pair(formula: Callable[[float, float, float], float]) -> list[float]:
    """Apply ``formula(chosen_logratio, rejected_logratio, beta * rho)`` to each pair of the example."""
    return [formula(w, l, BETA * (w - l)) for w, l in zip(CHOSEN_LOGRATIOS, REJECTED_LOGRATIOS, strict=True)]


def _aql_expected() -> list[float]:
    scaled = [BETA * (w - l) / 0.05 for w, l in zip(CHOSEN_LOGRATIOS, REJECTED_LOGRATIOS, strict=True)]
    quantile = 0.5 + 0.01 * (_sigmoid(sum(scaled) / 3) - 0.5)
    weights = [_sigmoid(-(z - quantile)) for z in scaled]
    return [k * _nll(z * 0.05) + (1 - k) * max(0.0, 1 - z * 0.05) for k, z in zip(weights, scaled, strict=True)]


def _aqfl_expected() -> list[float]:
    scaled = [BETA * (w - l) / 0.05 for w, l in zip(CHOSEN_LOGRATIOS, REJECTED_LOGRATIOS, strict=True)]  # 0, 20, -20
    mean = sum(scaled) / 3
    std = math.sqrt(sum((z - mean) ** 2 for z in scaled) / 2)  # unbiased: 20
    base = std * sum(_sigmoid(-z) for z in scaled) / 3  # 20 * 0.5 = 10
    quantile = base + 0.05 * (_sigmoid(mean) - base)  # 9.525
    weights = [_sigmoid(0.1 * abs(z - quantile)) for z in scaled]
    return [k * _nll(z * 0.05) + (1 - k) * max(0.0, 1 - z * 0.05) for k, z in zip(weights, scaled, strict=True)]


def _aot_expected() -> list[float]:
    # Policy gaps pc - pr = (1, 1, 0) and reference gaps rc - rr = (1, -1, 2), each sorted: (0, 1, 1) - (-1, 1, 2).
    policy_gaps = sorted(
        w - l + rc - rr
        for w, l, rc, rr in zip(CHOSEN_LOGRATIOS, REJECTED_LOGRATIOS, REFERENCE_CHOSEN, REFERENCE_REJECTED, strict=True)
    )
    reference_gaps = sorted(rc - rr for rc, rr in zip(REFERENCE_CHOSEN, REFERENCE_REJECTED, strict=True))
    assert (policy_gaps, reference_gaps) == ([0.0, 1.0, 1.0], [-1.0, 1.0, 2.0])
    return [_nll(BETA * (a - b)) for a, b in zip(policy_gaps, reference_gaps, strict=True)]  # nll(0.5), ln 2, nll(-0.5)


def _dbaql_expected() -> list[float]:
    # var(beta * rho / 0.05) = var(0, 20, -20) = 400, so the blend is sigmoid(400) = 1: pure logistic at T = 0.9.
    return _per_pair(lambda w, l, x: _nll(x / 0.9))


def _kto_expected() -> list[float]:
    # Both batch means of the log-ratios are 0, so both KL reference points are 0.
    return _per_pair(lambda w, l, x: (1 - _sigmoid(BETA * w)) + (1 - _sigmoid(-BETA * l)))


def _exo_expected() -> list[float]:
    eps = 1e-3
    return _per_pair(
        lambda w, l, x: (
            _sigmoid(x) * (math.log(_sigmoid(x)) - math.log(1 - eps))
            + _sigmoid(-x) * (math.log(_sigmoid(-x)) - math.log(eps))
        )
    )


EXPECTED: dict[str, list[float]] = {
    "dpo": [LN2, _nll(1.0), _nll(-1.0)],
    "hinge": [1.0, 0.0, 2.0],
    "ipo": [1.0, 1.0, 9.0],  # (rho - 1 / (2 * 0.5)) ** 2 with rho = 0, 2, -2
    "robust_dpo": _per_pair(lambda w, l, x: (0.9 * _nll(x) - 0.1 * _nll(-x)) / 0.8),
    "kto_pair": _kto_expected(),
    # Pair 2's chosen log-ratio is -1: penalty 50 * 1 inside the bracket, 0.5 * (-2 - 50) = -26.
    "dpop": [LN2, _nll(1.0), _nll(-26.0)],
    "lrml": _per_pair(lambda w, l, x: (1 - _sigmoid(x / 0.05)) * _nll(x) + _sigmoid(x / 0.05) * math.exp(-x)),
    "padll": [0.9 * LN2, 0.9 * _nll(1.0), 0.45 * _nll(-1.0)],
    "aqfl": _aqfl_expected(),
    "aql": _aql_expected(),
    "cell": _per_pair(lambda w, l, x: 0.5 * math.exp(-x) + 0.5 * _nll(x)),
    "dbaql": _dbaql_expected(),
    "pfl": [LN2 / 2, _nll(1.0) / 2, 2.0 * 2.0],  # pair 2: the policy does not prefer chosen -> 2 * relu(1 + 1)
    "exo_pair": _exo_expected(),
    "nca_pair": _per_pair(lambda w, l, x: _nll(BETA * w) + 0.5 * _nll(-BETA * w) + 0.5 * _nll(-BETA * l)),
    "bco_pair": _per_pair(lambda w, l, x: _nll(BETA * w) + _nll(-BETA * l)),
    "sppo_hard": [2.0, 0.0, 8.0],  # (w - 1) ** 2 + (l + 1) ** 2
    "apo_zero": _per_pair(lambda w, l, x: (1 - _sigmoid(BETA * w)) + _sigmoid(BETA * l)),
    "apo_down": _per_pair(lambda w, l, x: _sigmoid(BETA * w) + (1 - _sigmoid(x))),
    "aot": _aot_expected(),
    # Sorted chosen log-ratios (-1, 0, 1) minus sorted rejected ones (-1, 0, 1): see the test below for an
    # example where the sorting changes the values.
    "aot_unpaired": [LN2, LN2, LN2],
}
BATCH_COUPLED = ("kto_pair", "aql", "aqfl", "dbaql", "aot", "aot_unpaired")


@pytest.fixture(scope="module")
def library() -> dict[str, Candidate]:
    return load_library(include_user=False)


def _realistic_lengths(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Completion token counts (B,), (B,); the first chosen completion has 1 token, the last rejected one 0."""
    generator = torch.Generator().manual_seed(1000 + seed)
    chosen_lengths = torch.randint(20, 301, (size,), generator=generator).float()  # (B,)
    rejected_lengths = torch.randint(20, 301, (size,), generator=generator).float()  # (B,)
    if size >= 2:
        chosen_lengths = torch.cat([torch.ones(1), chosen_lengths[1:]])
        rejected_lengths = torch.cat([rejected_lengths[:-1], torch.zeros(1)])
    return chosen_lengths, rejected_lengths


def _call(
    candidate: Candidate, batch: list[torch.Tensor] | tuple[torch.Tensor, ...], beta: float, seed: int = 0
) -> torch.Tensor:
    """The candidate's per-pair losses, called as the trainer calls it (realistic lengths where it takes them)."""
    lengths = _realistic_lengths(len(batch[0]), seed)
    logp_batch = LogpBatch(*batch, *(t.to(batch[0].dtype) for t in lengths))
    return call_loss(candidate.fn, logp_batch, beta)


def _realistic_batch(size: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Summed log-probs in the hundreds of nats, policy within a few nats of the reference."""
    generator = torch.Generator().manual_seed(seed)
    reference_chosen = -50 - 250 * torch.rand(size, generator=generator)  # (B,)
    reference_rejected = -50 - 250 * torch.rand(size, generator=generator)  # (B,)
    policy_chosen = reference_chosen + 2 * torch.randn(size, generator=generator)  # (B,)
    policy_rejected = reference_rejected + 2 * torch.randn(size, generator=generator)  # (B,)
    return policy_chosen, policy_rejected, reference_chosen, reference_rejected


def test_library_holds_every_builtin_with_metadata(library: dict[str, Candidate]) -> None:
    assert tuple(library) == BUILTIN_NAMES
    assert len(library) == 27
    assert {name for name, candidate in library.items() if takes_lengths(candidate.fn)} == set(LENGTH_AWARE)
    for name, candidate in library.items():
        assert candidate.name == name
        assert candidate.description and candidate.origin.startswith("arXiv:"), name
        assert set(candidate.parents) <= set(BUILTIN_NAMES), name
        assert "def loss(" in candidate.source and callable(candidate.fn), name
        assert candidate.builtin and candidate.path is not None and candidate.path.stem == name


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_file_follows_the_contract(name: str) -> None:
    source = load_builtin(name).source
    result = check_policy(source)
    assert result.passed, result.errors
    metadata = read_metadata(source)
    assert metadata["NAME"] == name
    assert isinstance(metadata["PARENTS"], list)


@pytest.mark.parametrize("size", [1, 2, 8])
@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_shape_finite_and_differentiable(name: str, size: int, library: dict[str, Candidate]) -> None:
    policy_chosen, policy_rejected, reference_chosen, reference_rejected = _realistic_batch(size, seed=size)
    policy_chosen.requires_grad_(True)
    policy_rejected.requires_grad_(True)
    losses = _call(library[name], (policy_chosen, policy_rejected, reference_chosen, reference_rejected), 0.1, size)
    assert losses.shape == (size,)
    assert torch.isfinite(losses).all()
    losses.mean().backward()
    assert policy_chosen.grad is not None and policy_rejected.grad is not None
    assert torch.isfinite(policy_chosen.grad).all() and torch.isfinite(policy_rejected.grad).all()
    assert (policy_chosen.grad.abs().sum() + policy_rejected.grad.abs().sum()) > 0


def test_every_builtin_has_hand_computed_values() -> None:
    assert set(EXPECTED) | set(LENGTH_EXPECTED) == set(BUILTIN_NAMES)
    assert not set(EXPECTED) & set(LENGTH_EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hand_computed_values(name: str, library: dict[str, Candidate]) -> None:
    losses = library[name].fn(*_example(), BETA)
    torch.testing.assert_close(losses, torch.tensor(EXPECTED[name], dtype=torch.float64), rtol=1e-7, atol=1e-7)


def test_dpo_at_policy_equal_reference_is_ln2(library: dict[str, Candidate]) -> None:
    _, _, reference_chosen, reference_rejected = _realistic_batch(3, seed=0)
    losses = library["dpo"].fn(reference_chosen, reference_rejected, reference_chosen, reference_rejected, 0.1)
    torch.testing.assert_close(losses, torch.full((3,), LN2))


def test_hyper_parameters_are_the_published_ones() -> None:
    def constant(name: str, attribute: str) -> float:
        return float(getattr(importlib.import_module(f"lossforge.candidates.{name}"), attribute))

    assert constant("robust_dpo", "EPSILON") == 0.1
    assert constant("exo_pair", "EPSILON") == 1e-3
    assert constant("lrml", "TAU") == 0.05
    assert constant("dpop", "LAMBDA") == 50.0
    assert (constant("padll", "BASE_DECAY"), constant("padll", "MISMATCH_PENALTY")) == (0.9, 0.5)
    assert constant("cell", "ALPHA") == 0.5
    assert constant("pfl", "FOCUS_SCALE") == 2.0
    assert (constant("dbaql", "TEMPERATURE"), constant("dbaql", "TAU")) == (0.9, 0.05)


def _published_lrml(logits: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
    """LRML exactly as arXiv 2406.08414 Eq. 5 / TRL's "discopop" write it (overflows at large negative x)."""
    modulation = torch.sigmoid(logits / tau)
    return -torch.nn.functional.logsigmoid(logits) * (1 - modulation) + torch.exp(-logits) * modulation


def test_lrml_equals_published_formula_where_that_is_finite(library: dict[str, Candidate]) -> None:
    margins = torch.linspace(-60, 60, 241, dtype=torch.float64)  # (B,); beta * rho in [-30, 30]
    zeros = torch.zeros_like(margins)
    ours = library["lrml"].fn(margins, zeros, zeros, zeros, BETA)
    torch.testing.assert_close(ours, _published_lrml(BETA * margins), rtol=1e-10, atol=1e-12)


def test_lrml_is_finite_at_extreme_margins(library: dict[str, Candidate]) -> None:
    margins = torch.tensor([-1e4, -1e3, -100.0, -1.0, 0.0, 1.0, 100.0, 1e3, 1e4])  # (B,) float32
    assert not torch.isfinite(_published_lrml(margins)).all()  # the published form breaks here
    policy_chosen = margins.clone().requires_grad_(True)
    zeros = torch.zeros_like(margins)
    losses = library["lrml"].fn(policy_chosen, zeros, zeros, zeros, 1.0)
    losses.sum().backward()
    assert torch.isfinite(losses).all() and torch.isfinite(policy_chosen.grad).all()
    # Far below zero it is the logistic loss (about -beta * rho); far above zero it vanishes.
    torch.testing.assert_close(losses[0], torch.tensor(1e4))
    assert losses[-1] == 0


def test_kto_pair_sums_the_two_halves_of_the_old_trl_loss(library: dict[str, Candidate]) -> None:
    policy_chosen, policy_rejected, reference_chosen, reference_rejected = (
        t.double() for t in _realistic_batch(8, seed=3)
    )
    chosen_logratios = policy_chosen - reference_chosen
    rejected_logratios = policy_rejected - reference_rejected
    chosen_kl = chosen_logratios.mean().clamp(min=0)
    rejected_kl = rejected_logratios.mean().clamp(min=0)
    old_trl = torch.cat(
        (
            1 - torch.sigmoid(0.1 * (chosen_logratios - rejected_kl)),
            1 - torch.sigmoid(0.1 * (chosen_kl - rejected_logratios)),
        )
    )  # (2B,) as TRL < 0.9 returned it
    ours = library["kto_pair"].fn(policy_chosen, policy_rejected, reference_chosen, reference_rejected, 0.1)
    torch.testing.assert_close(ours, old_trl[:8] + old_trl[8:])
    assert max(float(chosen_kl), float(rejected_kl)) > 0  # the example exercises the KL reference point


@pytest.mark.parametrize("name", ["aot", "aot_unpaired"])
def test_aot_losses_are_dpo_alone_and_coupled_in_a_batch(name: str, library: dict[str, Candidate]) -> None:
    """AOT's entries are sorted quantiles, not pairs: a batch of one is DPO; a batch whose sorting pairs other
    samples than the data does is not the sum of its pairs (one whose sorting keeps the pairing would be)."""
    reference_chosen = torch.tensor([-50.0, -60.0, -70.0], dtype=torch.float64)
    reference_rejected = reference_chosen - torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)  # gaps 0, 1, 2
    policy_chosen = reference_chosen + torch.tensor([2.0, 0.0, -2.0], dtype=torch.float64)
    policy_rejected = reference_rejected - torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)  # gaps 3, 1, -1
    batch = [policy_chosen, policy_rejected, reference_chosen, reference_rejected]
    alone = torch.cat([library[name].fn(*(t[i : i + 1] for t in batch), 0.1) for i in range(3)])  # (B,)
    torch.testing.assert_close(alone, library["dpo"].fn(*batch, 0.1))
    together = library[name].fn(*batch, 0.1)  # (B,)
    assert not torch.isclose(together.sum(), alone.sum())


def test_aot_unpaired_sorts_chosen_and_rejected_log_ratios_apart(library: dict[str, Candidate]) -> None:
    chosen_logratios, rejected_logratios = (2.0, -1.0, 0.5), (0.0, 1.0, -3.0)
    reference = torch.tensor([-20.0, -30.0, -40.0], dtype=torch.float64)
    policy_chosen = reference + torch.tensor(chosen_logratios, dtype=torch.float64)
    policy_rejected = reference + torch.tensor(rejected_logratios, dtype=torch.float64)
    # Sorted: (-1, 0.5, 2) against (-3, 0, 1), so the quantile gaps are (2, 0.5, 1); the paired ones (2, -2, 3.5).
    expected = [_nll(BETA * gap) for gap in (2.0, 0.5, 1.0)]
    losses = library["aot_unpaired"].fn(policy_chosen, policy_rejected, reference, reference, BETA)
    torch.testing.assert_close(losses, torch.tensor(expected, dtype=torch.float64), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", ["kto_pair", "aql", "aqfl", "dbaql"])
def test_batch_coupled_losses_depend_on_the_other_pairs(name: str, library: dict[str, Candidate]) -> None:
    # Margins near zero, where none of the batch statistics saturate (DBAQL's sigmoid of a variance would).
    _, _, reference_chosen, reference_rejected = (t.double() for t in _realistic_batch(4, seed=5))
    noise = torch.linspace(-0.03, 0.03, 4, dtype=torch.float64)  # (B,)
    batch = [reference_chosen + noise, reference_rejected - noise, reference_chosen, reference_rejected]
    before = library[name].fn(*batch, 0.1)[0]
    batch[0] = batch[0].clone()
    batch[0][1:] += 1.0  # move the other pairs' chosen log-probs only
    after = library[name].fn(*batch, 0.1)[0]
    assert not torch.isclose(before, after)


@pytest.mark.parametrize("name", [n for n in BUILTIN_NAMES if n not in BATCH_COUPLED])
def test_per_pair_losses_do_not_couple_the_batch(name: str, library: dict[str, Candidate]) -> None:
    batch = [t.double() for t in _realistic_batch(4, seed=5)]
    lengths = [t.double() for t in _realistic_lengths(4, seed=5)]
    together = call_loss(library[name].fn, LogpBatch(*batch, *lengths), 0.1)[:1]
    alone = call_loss(library[name].fn, LogpBatch(*(t[:1] for t in batch), *(t[:1] for t in lengths)), 0.1)
    torch.testing.assert_close(alone, together)


def test_aqfl_and_dbaql_equal_the_shipped_code_for_batches_of_two_or_more(library: dict[str, Candidate]) -> None:
    batch = [t.double() for t in _realistic_batch(8, seed=7)]
    logits = 0.1 * ((batch[0] - batch[2]) - (batch[1] - batch[3]))
    scaled = logits / 0.05
    # The shipped code's statistics use torch's unbiased std / var; our helpers are only special at B = 1.
    quantile = scaled.std() * torch.sigmoid(-scaled).mean()
    quantile = quantile + 0.05 * (torch.sigmoid(scaled.mean()) - quantile)
    blend = torch.sigmoid(0.1 * (scaled - quantile).abs())
    aqfl = blend * -torch.nn.functional.logsigmoid(logits) + (1 - blend) * torch.relu(1 - logits)
    torch.testing.assert_close(library["aqfl"].fn(*batch, 0.1), aqfl)
    coefficient = torch.sigmoid(scaled.var())
    dbaql = coefficient * -torch.nn.functional.logsigmoid(logits / 0.9) + (1 - coefficient) * torch.exp(-logits * 0.9)
    torch.testing.assert_close(library["dbaql"].fn(*batch, 0.1), dbaql)


def test_dbaql_tight_batch_blends_half_and_half(library: dict[str, Candidate]) -> None:
    # Equal margins: zero variance, blend sigmoid(0) = 1/2 of logistic (T = 0.9) and exponential (T = 0.9).
    margins = torch.full((3,), 1.0, dtype=torch.float64)
    zeros = torch.zeros_like(margins)
    expected = 0.5 * _nll(0.5 / 0.9) + 0.5 * math.exp(-0.5 * 0.9)
    torch.testing.assert_close(
        library["dbaql"].fn(margins, zeros, zeros, zeros, BETA), torch.full((3,), expected, dtype=torch.float64)
    )


def test_dpop_is_dpo_while_the_chosen_likelihood_does_not_drop(library: dict[str, Candidate]) -> None:
    policy_chosen, policy_rejected, reference_chosen, reference_rejected = _realistic_batch(8, seed=9)
    policy_chosen = torch.maximum(policy_chosen, reference_chosen)  # no drop below the reference
    batch = (policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    torch.testing.assert_close(library["dpop"].fn(*batch, 0.1), library["dpo"].fn(*batch, 0.1))


USER_LOSS = '''"""A user's own loss: DPO with a margin of one nat."""

import torch.nn.functional as F

NAME = "{name}"
DESCRIPTION = "DPO with a unit target margin."
ORIGIN = "user"
PARENTS = ["dpo"]


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * (margin - 1.0))
'''


def test_user_library_is_loaded_beside_the_builtins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOSSFORGE_HOME", str(tmp_path))
    user_dir = tmp_path / "candidates"
    user_dir.mkdir()
    (user_dir / "margin_dpo.py").write_text(USER_LOSS.format(name="margin_dpo"), encoding="utf-8")
    library = load_library()
    assert set(BUILTIN_NAMES) < set(library)
    candidate = library["margin_dpo"]
    assert not candidate.builtin and candidate.parents == ("dpo",) and candidate.origin == "user"
    zeros = torch.zeros(2)
    torch.testing.assert_close(candidate.fn(zeros, zeros, zeros, zeros, 1.0), torch.full((2,), _nll(-1.0)))


def test_user_file_cannot_replace_a_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOSSFORGE_HOME", str(tmp_path))
    user_dir = tmp_path / "candidates"
    user_dir.mkdir()
    (user_dir / "my_dpo.py").write_text(USER_LOSS.format(name="dpo"), encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        library = load_library()
    assert any("'dpo'" in str(warning.message) and "my_dpo.py" in str(warning.message) for warning in caught)
    assert library["dpo"].builtin and library["dpo"].path is not None and library["dpo"].path.name == "dpo.py"
    zeros = torch.zeros(2)
    torch.testing.assert_close(library["dpo"].fn(zeros, zeros, zeros, zeros, 1.0), torch.full((2,), LN2))


def test_the_docs_list_the_library_as_the_registry_generates_it() -> None:
    from lossforge.candidates import library_table

    page = (ROOT / "docs" / "LIBRARY.md").read_text(encoding="utf-8")
    block = page.split("<!-- library:start -->\n", 1)[1].split("<!-- library:end -->", 1)[0]
    assert block == library_table(), (
        "docs/LIBRARY.md's library table is stale: run `python docs/generate_reference.py`, which rewrites the "
        "block between the library markers with `lossforge.candidates.library_table()`"
    )
