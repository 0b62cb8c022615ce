"""The candidate profile: how a loss behaves along the margin, before any training is spent.

``compute_profile(fn)`` characterises a contract loss ``fn(pc, pr, rc, rr, beta) -> (B,)``, with
rho = (pc - rc) - (pr - rr):

- curves: loss and dloss/drho along rho for a few betas (float64; the policy log-probs move symmetrically,
  pc = rc + rho/2, pr = rr - rho/2, so for losses that are not rho-only the curve is along that path);
- dependence: whether the per-pair loss depends on rho alone, on the two log-ratios, or on raw log-probs;
- batch coupling: whether a pair's loss or gradient changes when the rest of the batch changes (batch
  statistics break the equivalence of gradient accumulation and data parallelism with one big batch);
- convexity along rho (second differences on a dense grid);
- length dependence: how the loss moves when only the completions' lengths change (``length_aware``);
- stability at extreme margins |beta * rho| up to 1000 in float32, the training dtype (the published LRML
  computes exp(-beta * rho) and overflows at beta * rho < -88);
- the behavioural fingerprint and gradient scale (``lossforge.evaluate.checking.fingerprint``).

For untrusted code ``fn`` is the sandbox's ``Observer``: each call runs in the locked-down child that holds the
candidate, and everything computed here (curves, traits, notes, fingerprint) is computed in the caller's
process, which the candidate cannot touch. Nothing here raises because of the loss: failures and non-finite
values become notes and ``None`` in ``to_dict()``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from lossforge.candidates import LossFn
from lossforge.evaluate.checking.curves import CURVE_BETAS, CURVE_LENGTH, length_curve_of, margin_curves, same
from lossforge.evaluate.checking.fingerprint import (
    DEFAULT_BETA,
    FINGERPRINT_VERSION,
    Evaluation,
    compute_fingerprint,
    evaluate,
    fingerprint_batch,
    fingerprint_of,
)
from lossforge.evaluate.checking.observation import Observer, observer_for
from lossforge.evaluate.contract import LogpBatch
from lossforge.evaluate.threads import torch_threads

DEPENDENCE_BETAS: tuple[float, ...] = (0.1, 0.5)
EXTREME_BETAS: tuple[float, ...] = (0.1, 1.0)
EXTREME_BETA_RHO: tuple[float, ...] = (-1000.0, -300.0, -100.0, -50.0, -20.0, 20.0, 50.0, 100.0, 300.0, 1000.0)


@dataclass
class LossProfile:
    """What ``compute_profile`` found. Floats may be nan/inf here; ``to_dict`` turns them into ``None``.

    ``curves`` is ``{"rho": [41 floats], "betas": [0.01, 0.1, 0.5], "loss": {"0.1": [...], ...},
    "dloss_drho": {"0.1": [...], ...}}``; ``extremes`` holds ``{"beta", "beta_rho", "loss", "dloss_drho"}``
    per extreme margin (float32); ``notes`` are short sentences for people and for the LLM's feedback.
    """

    fingerprint: str
    scale: float  # gradient norm of the mean loss at beta=0.1 on the fingerprint set: c * L reports c times L's
    rho_only: bool
    logratio_only: bool  # depends on pc - rc and pr - rr only (implied by rho_only)
    batch_coupled: bool
    convex: bool  # along rho, at every curve beta
    length_aware: bool  # the loss changes when only the completions' lengths change
    stable_extremes: bool  # finite loss and gradient at every extreme margin in float32
    unstable_beta_rho: list[float] = field(default_factory=list)  # beta * rho values where it was not
    extremes: list[dict[str, float | None]] = field(default_factory=list)
    scale_by_beta: dict[str, float] = field(default_factory=dict)
    # Unit gradient directions on the fingerprint set per beta ("0.1": 32 floats, None where it failed),
    # rounded to 1e-9: what ``near_duplicates.direction_distance`` compares.
    directions: dict[str, list[float] | None] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)
    # Loss and dloss/drho against the length difference (chosen - rejected) at rho 0 and 10, beta 0.1.
    length_curve: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fingerprint_version: int = FINGERPRINT_VERSION
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (``json.dumps(..., allow_nan=False)`` works): non-finite floats become ``None``."""
        return _finite_or_none(asdict(self))


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def _finite(result: Evaluation) -> bool:
    parts = (result.loss, result.grad_chosen, result.grad_rejected)
    return all(p is not None and bool(torch.isfinite(p).all()) for p in parts)


def _shifted(batch: LogpBatch, chosen: torch.Tensor, rejected: torch.Tensor, policy: torch.Tensor) -> LogpBatch:
    """Move (pc, rc) by ``chosen``, (pr, rr) by ``rejected`` and (pc, pr) by ``policy``; rho is unchanged."""
    return LogpBatch(
        policy_chosen=batch.policy_chosen + chosen + policy,
        policy_rejected=batch.policy_rejected + rejected + policy,
        reference_chosen=batch.reference_chosen + chosen,
        reference_rejected=batch.reference_rejected + rejected,
        chosen_lengths=batch.chosen_lengths,
        rejected_lengths=batch.rejected_lengths,
    )


def _dependence(observer: Observer, batch: LogpBatch, notes: list[str]) -> tuple[bool, bool]:
    """(logratio_only, rho_only): is the per-pair loss unchanged by moves of the inputs that keep them fixed?"""
    n = batch.size
    ramp = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)  # (n,)
    zero = torch.zeros(n, dtype=torch.float64)
    # Large moves (other pairs' reference values, up to ~280 nats) so that comparisons of raw log-probs such
    # as pc > pr flip for some pairs; every log-prob stays within the set's realistic range (below -6).
    moves = {
        "chosen": (batch.reference_chosen.flip(0) - batch.reference_chosen, zero, zero),  # keeps pc - rc
        "rejected": (zero, batch.reference_rejected.roll(5) - batch.reference_rejected, zero),  # keeps pr - rr
        "policy": (zero, zero, 8.0 * ramp.roll(3)),  # changes both log-ratios, keeps rho
    }
    invariant = {name: True for name in moves}
    for beta in DEPENDENCE_BETAS:
        base = evaluate(observer, batch, beta, with_grad=False)
        if base.loss is None or not bool(torch.isfinite(base.loss).all()):
            problem = base.error or "non-finite loss"
            notes.append(f"dependence on rho undetermined at beta={beta:g}: {problem}")
            return False, False
        for name, (chosen, rejected, policy) in moves.items():
            moved = evaluate(observer, _shifted(batch, chosen, rejected, policy), beta, with_grad=False)
            invariant[name] = invariant[name] and same(base.loss, moved.loss)
    logratio_only = invariant["chosen"] and invariant["rejected"]
    rho_only = logratio_only and invariant["policy"]
    if rho_only:
        notes.append("loss depends on rho alone")
    elif logratio_only:
        notes.append("loss depends on the chosen and rejected log-ratios separately, not on rho alone")
    else:
        notes.append("loss depends on raw log-probs, not only on policy/reference log-ratios")
    return logratio_only, rho_only


_FIELDS = ("loss", "grad_chosen", "grad_rejected")


def _joined(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    return None if any(p is None for p in parts) else torch.cat([p for p in parts if p is not None])


def _reindexed(tensor: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    return None if tensor is None else tensor[index]


def _agree(a: Evaluation, b: Evaluation) -> bool:
    return all(same(getattr(a, name), getattr(b, name)) for name in _FIELDS)


def _coupling(observer: Observer, batch: LogpBatch, full: dict[float, Evaluation], notes: list[str]) -> bool:
    """Does a pair's loss or gradient change when its batch changes? Each fingerprint beta is probed with the
    two halves of the batch (batch statistics can saturate at one beta and show at another), and the
    default beta also with the batch reversed. A repeat of the same call first rules out randomness."""
    half = batch.size // 2
    reverse = torch.arange(batch.size - 1, -1, -1)  # its own inverse
    halves = (batch.take(torch.arange(0, half)), batch.take(torch.arange(half, batch.size)))
    for beta, whole in full.items():
        if not _finite(whole):
            notes.append(f"batch coupling undetermined at beta={beta:g}: {whole.error or 'non-finite values'}")
            return False
    if DEFAULT_BETA in full and not _agree(full[DEFAULT_BETA], evaluate(observer, batch, DEFAULT_BETA)):
        notes.append("non-deterministic: two identical calls differ; batch coupling undetermined")
        return False
    for beta, whole in full.items():
        pieces = [evaluate(observer, part, beta) for part in halves]
        others = [Evaluation(*(_joined([getattr(p, a) for p in pieces]) for a in _FIELDS))]
        if beta == DEFAULT_BETA:
            flipped = evaluate(observer, batch.take(reverse), beta)
            others.append(Evaluation(*(_reindexed(getattr(flipped, a), reverse) for a in _FIELDS)))
        if not all(_agree(whole, other) for other in others):
            notes.append(
                "couples examples through batch statistics: a pair's loss or gradient depends on "
                f"the rest of the batch (seen at beta={beta:g})"
            )
            return True
    return False


def _extreme_batch(beta: float, beta_rhos: tuple[float, ...]) -> LogpBatch:
    """Pairs at margins ``beta_rhos / beta`` followed by three moderate pairs, in float32 (the training dtype).

    A large margin comes from pushing one side down, so policy log-probs only fall below the reference and
    stay negative. The moderate companions keep batch statistics meaningful for batch-coupled losses.
    """
    rho = torch.tensor(beta_rhos, dtype=torch.float64) / beta  # (E,)
    reference = torch.full_like(rho, -200.0)  # (E,)
    lengths = torch.full_like(rho, CURVE_LENGTH)  # (E,)
    extreme = LogpBatch(
        reference + rho.clamp(max=0.0), reference - rho.clamp(min=0.0), reference, reference.clone(), lengths, lengths
    )
    companions = fingerprint_batch().take(torch.arange(3))
    parts = zip(_with_lengths(extreme), _with_lengths(companions), strict=True)
    return LogpBatch(*(torch.cat([e, c]) for e, c in parts)).to(torch.float32)


def _with_lengths(batch: LogpBatch) -> tuple[torch.Tensor, ...]:
    assert batch.chosen_lengths is not None and batch.rejected_lengths is not None
    return (*batch.tensors(), batch.chosen_lengths, batch.rejected_lengths)


def _extremes(observer: Observer, coupled: bool, notes: list[str]) -> tuple[list[dict[str, float | None]], list[float]]:
    """Loss and gradient at |beta * rho| up to 1000 in float32; returns the points and the unstable beta*rho.

    All margins of a beta share one batch. For a batch-coupled loss one overflow can poison every pair
    through the batch statistics, so when that batch is not finite each margin is re-run in its own batch;
    for an uncoupled loss each pair's values are its own and are read off the shared batch.
    """
    points: list[dict[str, float | None]] = []
    unstable: set[float] = set()
    for beta in EXTREME_BETAS:
        together = evaluate(observer, _extreme_batch(beta, EXTREME_BETA_RHO), beta)
        if together.error is None and (not coupled or _finite(together)):
            runs = [(together, i) for i in range(len(EXTREME_BETA_RHO))]
        else:
            runs = [(evaluate(observer, _extreme_batch(beta, (z,)), beta), 0) for z in EXTREME_BETA_RHO]
        bad: list[float] = []
        errors: set[str] = set()
        for beta_rho, (result, i) in zip(EXTREME_BETA_RHO, runs, strict=True):
            if result.loss is None or result.grad_chosen is None or result.grad_rejected is None:
                errors.add(str(result.error))
                bad.append(beta_rho)
                continue
            pair = (result.loss[i], result.grad_chosen[i], result.grad_rejected[i])
            whole = _finite(result) if coupled else all(math.isfinite(float(v)) for v in pair)
            if not whole:
                bad.append(beta_rho)
            slope = 0.5 * (result.grad_chosen[i] - result.grad_rejected[i])  # () d loss / d rho of that pair
            points.append({"beta": beta, "beta_rho": beta_rho, "loss": float(pair[0]), "dloss_drho": float(slope)})
        for error in sorted(errors):
            notes.append(f"extreme margins: call failed in float32 at beta={beta:g}: {error}")
        if bad:
            notes.append(
                f"non-finite loss or gradient in float32 at beta*rho = {', '.join(f'{z:g}' for z in bad)} "
                f"(beta={beta:g})"
            )
        unstable.update(bad)
    if not unstable:
        notes.append(f"finite loss and gradient in float32 up to |beta*rho| = {max(EXTREME_BETA_RHO):g}")
    return points, sorted(unstable)


def _rounded_directions(directions: dict[float, tuple[float, ...] | None]) -> dict[str, list[float] | None]:
    """Directions rounded to 1e-9 (far below any near-duplicate threshold; keeps the archived JSON short)."""
    return {f"{b:g}": None if d is None else [round(v, 9) + 0.0 for v in d] for b, d in directions.items()}


def compute_profile(loss: LossFn | Observer) -> LossProfile:
    """Characterise a loss (see the module docstring): a trusted function, or an ``Observer`` of an untrusted
    one (the sandbox's). Never raises because of the loss."""
    with torch_threads(1):
        return _compute_profile(observer_for(loss))


def _compute_profile(observer: Observer) -> LossProfile:
    start = time.perf_counter()
    notes: list[str] = []
    fingerprint = compute_fingerprint(observer)
    notes.extend(fingerprint.notes)
    scales = fingerprint.scale_by_beta
    if scales and all(s == 0.0 for s in scales.values()):
        notes.append("degenerate: zero gradient w.r.t. policy log-probs at every beta; it cannot train")
    if any(not e.differentiable for e in fingerprint.evaluations.values()):
        notes.append("output does not require grad: no gradient reaches the policy log-probs")
    batch = fingerprint_batch()
    logratio_only, rho_only = _dependence(observer, batch, notes)
    coupled = _coupling(observer, batch, fingerprint.evaluations, notes)
    curves, convex = margin_curves(observer, notes)
    if convex:
        notes.append("convex in rho at beta " + ", ".join(f"{b:g}" for b in CURVE_BETAS))
    extremes, unstable = _extremes(observer, coupled, notes)
    length_curve, length_aware = length_curve_of(observer, notes)
    return LossProfile(
        fingerprint=fingerprint.digest,
        scale=scales.get(DEFAULT_BETA, math.nan),
        rho_only=rho_only,
        logratio_only=logratio_only,
        batch_coupled=coupled,
        convex=convex,
        length_aware=length_aware,
        stable_extremes=not unstable,
        unstable_beta_rho=unstable,
        extremes=extremes,
        scale_by_beta={f"{b:g}": s for b, s in scales.items()},
        directions=_rounded_directions(fingerprint.directions),
        curves=curves,
        length_curve=length_curve,
        notes=notes,
        seconds=time.perf_counter() - start,
    )


__all__ = ["CURVE_BETAS", "LossProfile", "compute_profile", "fingerprint_of"]
