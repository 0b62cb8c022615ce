"""The profile's curves: how a loss moves along the margin rho, and along the completions' length difference.

``margin_curves``: loss and dloss/drho along rho for a few betas (float64; the policy log-probs move
symmetrically, pc = rc + rho/2, pr = rr - rho/2, lengths equal), convexity along rho and plain-words notes on the
shape. ``length_curve_of``: loss and dloss/drho against the length difference (chosen - rejected) at fixed
log-probs, and whether the loss depends on the lengths at all (``length_aware``). Both read the loss through an
``Observer`` and never raise because of it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lossforge.evaluate.checking.fingerprint import DEFAULT_BETA, evaluate
from lossforge.evaluate.checking.observation import Observer
from lossforge.evaluate.contract import LogpBatch

CURVE_BETAS: tuple[float, ...] = (0.01, 0.1, 0.5)
CURVE_RHO_MAX = 40.0
CURVE_POINTS = 41
_DENSE_PER_POINT = 4  # convexity is checked on a grid 4x finer than the reported curve
CURVE_LENGTH = 100.0  # tokens per completion where the curves and extremes hold lengths fixed
LENGTH_DIFFERENCES: tuple[float, ...] = (-80.0, -40.0, -20.0, -5.0, 0.0, 5.0, 20.0, 40.0, 80.0)  # chosen - rejected
LENGTH_CURVE_RHOS: tuple[float, ...] = (0.0, 10.0)
_RTOL, _ATOL = 1e-8, 1e-10  # float64 rewrites of the same value agree far better than this


def floats(tensor: torch.Tensor) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in tensor.tolist()]


def same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Equal up to float64 rounding; non-finite values or a missing side count as 'not shown equal'."""
    if a is None or b is None or not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        return False
    return bool(torch.allclose(a, b, rtol=_RTOL, atol=_ATOL))


def margin_curves(observer: Observer, notes: list[str]) -> tuple[dict[str, Any], bool]:
    """Loss and dloss/drho along rho per beta (float64), and whether all are convex in rho."""
    dense = (CURVE_POINTS - 1) * _DENSE_PER_POINT + 1
    rho = torch.linspace(-CURVE_RHO_MAX, CURVE_RHO_MAX, dense, dtype=torch.float64)  # (D,)
    reference_chosen = torch.full_like(rho, -150.0)  # (D,)
    reference_rejected = torch.full_like(rho, -160.0)  # (D,)
    lengths = torch.full_like(rho, CURVE_LENGTH)  # (D,) equal lengths: the curves show the margin alone
    batch = LogpBatch(
        reference_chosen + rho / 2, reference_rejected - rho / 2, reference_chosen, reference_rejected, lengths, lengths
    )
    shown = slice(None, None, _DENSE_PER_POINT)
    curves: dict[str, Any] = {"rho": rho[shown].tolist(), "betas": list(CURVE_BETAS), "loss": {}, "dloss_drho": {}}
    convex = True
    for beta in CURVE_BETAS:
        key = f"{beta:g}"
        result = evaluate(observer, batch, beta)
        if result.loss is None or result.grad_chosen is None or result.grad_rejected is None:
            notes.append(f"curve failed at beta={beta:g}: {result.error}")
            curves["loss"][key] = curves["dloss_drho"][key] = [None] * CURVE_POINTS
            convex = False
            continue
        slope = 0.5 * (result.grad_chosen - result.grad_rejected)  # (D,) d loss / d rho along the path
        curves["loss"][key] = floats(result.loss[shown])
        curves["dloss_drho"][key] = floats(slope[shown])
        convex = _convex_along(result.loss, rho, beta, notes) and convex
        if beta == DEFAULT_BETA:
            _shape_notes(rho, result.loss, slope, beta, notes)
    return curves, convex


def _convex_along(loss: torch.Tensor, rho: torch.Tensor, beta: float, notes: list[str]) -> bool:
    if not bool(torch.isfinite(loss).all()):
        notes.append(f"non-finite loss along rho in [-{CURVE_RHO_MAX:g}, {CURVE_RHO_MAX:g}] at beta={beta:g}")
        return False
    second = loss[:-2] - 2.0 * loss[1:-1] + loss[2:]  # (D-2,) second differences
    tolerance = 1e-9 * max(1.0, float(loss.abs().max()))
    concave = second < -tolerance
    if not bool(concave.any()):
        return True
    where = rho[1:-1][concave]
    notes.append(
        f"not convex in rho at beta={beta:g}: concave for rho in [{float(where.min()):.3g}, {float(where.max()):.3g}]"
    )
    return False


def _shape_notes(rho: torch.Tensor, loss: torch.Tensor, slope: torch.Tensor, beta: float, notes: list[str]) -> None:
    """Plain-words shape of the curve at the default beta: its slope at rho = 0 and where it pulls rho."""
    if not (bool(torch.isfinite(slope).all()) and bool(torch.isfinite(loss).all())):
        return
    at_zero = float(slope[rho.abs().argmin()])
    notes.append(f"dloss/drho at rho=0 is {at_zero:.4g} at beta={beta:g} (DPO: {-beta / 2:.4g})")
    peak = float(slope.abs().max())
    if peak == 0.0:
        return
    lowest = int(loss.argmin())
    rising = slope > 1e-6 * peak
    if not bool(rising.any()):
        notes.append(f"loss never increases with rho on [-{CURVE_RHO_MAX:g}, {CURVE_RHO_MAX:g}] at beta={beta:g}")
    elif lowest == 0:
        notes.append(
            f"loss is lowest at the smallest rho shown ({float(rho[0]):g}) at beta={beta:g}: it pushes the margin down"
        )
    elif lowest < rho.shape[0] - 1:
        notes.append(
            f"loss is minimal near rho={float(rho[lowest]):.3g} at beta={beta:g}: "
            "it pulls the margin toward a target instead of pushing it up without bound"
        )
    else:
        where = rho[rising]
        notes.append(
            f"loss is not monotone: it rises with rho on [{float(where.min()):.3g}, {float(where.max()):.3g}] "
            f"at beta={beta:g}, although it is lowest at large rho"
        )


def length_curve_of(observer: Observer, notes: list[str]) -> tuple[dict[str, Any], bool]:
    """Loss and dloss/drho against the length difference at fixed log-probs (beta 0.1): how the loss moves
    when only the completions' lengths change, and whether it does at all (``length_aware``)."""
    difference = torch.tensor(LENGTH_DIFFERENCES, dtype=torch.float64)  # (L,)
    chosen_lengths, rejected_lengths = CURVE_LENGTH + difference / 2, CURVE_LENGTH - difference / 2  # (L,), (L,)
    curve: dict[str, Any] = {"length_difference": list(LENGTH_DIFFERENCES), "rho": list(LENGTH_CURVE_RHOS)}
    aware = False
    for rho_value in LENGTH_CURVE_RHOS:
        reference_chosen = torch.full_like(difference, -150.0)  # (L,)
        reference_rejected = torch.full_like(difference, -160.0)  # (L,)
        batch = LogpBatch(
            reference_chosen + rho_value / 2,
            reference_rejected - rho_value / 2,
            reference_chosen,
            reference_rejected,
            chosen_lengths,
            rejected_lengths,
        )
        result = evaluate(observer, batch, DEFAULT_BETA)
        key = f"{rho_value:g}"
        if result.loss is None or result.grad_chosen is None or result.grad_rejected is None:
            notes.append(f"length curve failed at rho={rho_value:g}: {result.error}")
            curve.setdefault("loss", {})[key] = curve.setdefault("dloss_drho", {})[key] = None
            continue
        slope = 0.5 * (result.grad_chosen - result.grad_rejected)  # (L,) d loss / d rho along the path
        curve.setdefault("loss", {})[key] = floats(result.loss)
        curve.setdefault("dloss_drho", {})[key] = floats(slope)
        if not bool(torch.isfinite(result.loss).all()):
            notes.append(f"length dependence undetermined at rho={rho_value:g}: non-finite loss")
            continue
        flat = torch.full_like(result.loss, float(result.loss[LENGTH_DIFFERENCES.index(0.0)]))
        aware = aware or not same(result.loss, flat)
    if aware:
        notes.append("loss depends on the completions' lengths, not only on their log-probs")
    return curve, aware


__all__ = ["CURVE_BETAS", "CURVE_LENGTH", "LENGTH_DIFFERENCES", "floats", "length_curve_of", "margin_curves", "same"]
