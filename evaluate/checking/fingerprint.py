"""Behavioural fingerprint of a candidate loss: what it makes Adam do, hashed.

Two proposals that compute the same function (renamed variables, ``F.softplus(-x)`` for ``-F.logsigmoid(x)``,
reordered sums), or that differ only by an additive constant or a positive factor, train the same way under
Adam: the additive constant has no gradient, and Adam's update is invariant to a positive rescaling of the
gradient. So the fingerprint is built from *normalised gradient directions* on a fixed float64 input set:

1. a deterministic batch of 16 pairs with realistic summed log-probs (-300..-20 nats) and varied, small
   policy/reference differences (log-ratios within +-6 nats, so beta * rho stays within +-12);
2. for each beta of ``FINGERPRINT_BETAS``: the gradient of the mean loss w.r.t. the policy log-probs
   (chosen and rejected), a (32,) vector, divided by its own norm. Each beta is normalised on its own because
   training happens at one beta: ``L / beta`` trains like ``L``. Keeping all betas in the key still separates
   losses that differ only at some betas;
3. each component of the unit vector rounded to a multiple of 1e-6, then everything hashed with SHA-256.

The rounding is absolute on the unit vector, not per-component significant digits: float64 noise of a
rewrite is relative to the largest terms (batch sums, cancellations), so a small component can carry a large
*relative* error, while its error relative to the norm stays ~1e-13. Boundaries are 1e-6 apart, so a
rewrite whose noise is 1e-13 of the norm flips one of the 128 components with probability ~3e-5. Measured
on the library: a term that moves the gradient by ~1e-11 of its norm leaves every fingerprint unchanged.
Components below 5e-7 of the norm (saturated pairs) round to 0, where one rewrite gives exactly 0 and
another 1e-18.

The input set avoids kinks (rho = 0, beta * rho = 1, ...) because subgradients at a kink depend on how
the kink was written (``relu`` vs ``clamp``).

``evaluate`` asks an ``Observer`` for one call and turns the observation into an ``Evaluation`` (never raising);
``profile.py`` uses it. For untrusted code the observer is the sandbox's: the call runs in the locked-down
child, the hashing and every judgement here.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import torch
from lossforge.candidates import LossFn
from lossforge.evaluate.checking.observation import CallRequest, Observer, observer_for
from lossforge.evaluate.contract import LogpBatch
from lossforge.evaluate.threads import torch_threads

# Part of every digest: bump it whenever the input set, the betas or the rounding change, so that digests
# archived under the old scheme never match new ones by accident.
FINGERPRINT_VERSION = 1
FINGERPRINT_BETAS: tuple[float, ...] = (0.01, 0.1, 0.5, 1.0)
FINGERPRINT_BATCH = 16
DEFAULT_BETA = 0.1  # the beta whose gradient norm is reported as the loss's scale
QUANTUM = 1e-6  # unit-norm directions are rounded to multiples of this (6 decimals)
FINGERPRINT_HEX_CHARS = 16


@dataclass(frozen=True)
class Evaluation:
    """One call of a candidate: per-pair losses and d sum(loss) / d policy inputs, or the error it hit."""

    loss: torch.Tensor | None = None  # (B,)
    grad_chosen: torch.Tensor | None = None  # (B,)
    grad_rejected: torch.Tensor | None = None  # (B,)
    error: str | None = None
    differentiable: bool = True


def _weyl(count: int, step: float, offset: float) -> torch.Tensor:
    """Low-discrepancy points in [0, 1): frac(offset + k * step) for an irrational step; no RNG involved,
    so the set is identical on every machine and torch version."""
    return torch.tensor([math.modf(offset + k * step)[0] for k in range(count)], dtype=torch.float64)  # (n,)


def fingerprint_batch() -> LogpBatch:
    """The fixed float64 input set (fresh tensors each call, so a function that mutates them harms nothing).

    The lengths (for losses that take them) are the token counts of about 1.25 nats per token that such
    summed log-probs come from, and differ between chosen and rejected; a five-parameter loss never sees them.
    """
    n = FINGERPRINT_BATCH
    reference_chosen = -20.0 - 280.0 * _weyl(n, math.sqrt(2.0) - 1.0, 0.17)  # (n,) in (-300, -20)
    reference_rejected = -20.0 - 280.0 * _weyl(n, math.sqrt(3.0) - 1.0, 0.61)  # (n,)
    chosen_logratio = 12.0 * _weyl(n, math.sqrt(5.0) - 2.0, 0.29) - 6.0  # (n,) in (-6, 6)
    rejected_logratio = 12.0 * _weyl(n, math.pi - 3.0, 0.83) - 6.0  # (n,)
    return LogpBatch(
        policy_chosen=reference_chosen + chosen_logratio,
        policy_rejected=reference_rejected + rejected_logratio,
        reference_chosen=reference_chosen,
        reference_rejected=reference_rejected,
        chosen_lengths=torch.round(-reference_chosen / 1.25),  # (n,) 16 to 240 tokens
        rejected_lengths=torch.round(-reference_rejected / 1.25),  # (n,)
    )


def evaluate(observer: Observer, batch: LogpBatch, beta: float, *, with_grad: bool = True) -> Evaluation:
    """One call of the observed loss on ``batch``; never raises (the problem is returned in ``error``)."""
    observation = observer.observe(CallRequest(batch, beta, with_grad))
    if observation.error is not None:
        text = observation.error
        return Evaluation(error=text if len(text) <= 200 else text[:197] + "...")
    problem = observation.output_problem(batch.size)
    if problem is not None:
        return Evaluation(error=f"loss {problem}.")
    assert observation.values is not None  # a floating tensor of shape (B,) always carries its values
    loss = observation.values.to(torch.float64)
    if not with_grad:
        return Evaluation(loss=loss)
    if not observation.requires_grad:
        zeros = torch.zeros(batch.size, dtype=torch.float64)
        return Evaluation(loss=loss, grad_chosen=zeros, grad_rejected=zeros.clone(), differentiable=False)
    if observation.backward_error is not None:
        return Evaluation(error=observation.backward_error[:200])
    chosen, rejected = (
        g.to(torch.float64) if g is not None else torch.zeros(batch.size, dtype=torch.float64)
        for g in (observation.grad_chosen, observation.grad_rejected)
    )
    if chosen.shape != loss.shape or rejected.shape != loss.shape:
        return Evaluation(error="the sandbox reported gradients of the wrong shape")
    return Evaluation(loss=loss, grad_chosen=chosen, grad_rejected=rejected)


def _round_component(value: float) -> str:
    return str(round(value / QUANTUM) or 0)  # `or 0` folds -0 into 0


@dataclass(frozen=True)
class Fingerprint:
    """The hash plus what the profile reports beside it."""

    digest: str
    scale_by_beta: dict[float, float]  # gradient norm of the mean loss per beta (nan where it failed)
    notes: tuple[str, ...]
    evaluations: dict[float, Evaluation]  # per beta, reused by the profile's batch-coupling probe
    # The unit gradient direction per beta (None where the call failed or was not finite): the vectors the
    # digest hashes, kept for the near-duplicate distance (``near_duplicates.direction_distance``).
    directions: dict[float, tuple[float, ...] | None] = field(default_factory=dict)


def compute_fingerprint(loss: LossFn | Observer) -> Fingerprint:
    """Fingerprint a loss (see the module docstring): a trusted function, or an ``Observer`` of an untrusted one.
    Never raises; failures hash as their own tokens."""
    observer = observer_for(loss)
    batch = fingerprint_batch()
    keys: list[str] = [f"v{FINGERPRINT_VERSION}"]
    scales: dict[float, float] = {}
    notes: list[str] = []
    evaluations: dict[float, Evaluation] = {}
    directions: dict[float, tuple[float, ...] | None] = {beta: None for beta in FINGERPRINT_BETAS}
    for beta in FINGERPRINT_BETAS:
        with torch_threads(1):
            result = evaluate(observer, batch, beta)
        evaluations[beta] = result
        if result.error is not None or result.grad_chosen is None or result.grad_rejected is None:
            scales[beta] = math.nan
            keys.append(f"{beta!r}:error")
            notes.append(f"fingerprint: call failed at beta={beta:g}: {result.error}")
            continue
        # d mean(loss) / d policy = d sum(loss) / d policy / B; the mean is what the trainer optimises.
        gradient = torch.cat([result.grad_chosen, result.grad_rejected]) / batch.size  # (2B,)
        norm = float(torch.linalg.vector_norm(gradient))
        scales[beta] = norm
        if not math.isfinite(norm):
            keys.append(f"{beta!r}:nonfinite")
            notes.append(f"fingerprint: non-finite gradient at beta={beta:g}")
            continue
        if norm == 0.0:
            notes.append(f"fingerprint: zero gradient w.r.t. policy log-probs at beta={beta:g}")
        direction = gradient / norm if norm > 0.0 else gradient  # (2B,), unit length unless all zero
        directions[beta] = tuple(direction.tolist())
        keys.append(f"{beta!r}:" + ",".join(_round_component(v) for v in direction.tolist()))
    digest = hashlib.sha256(";".join(keys).encode("ascii")).hexdigest()[:FINGERPRINT_HEX_CHARS]
    return Fingerprint(
        digest=digest, scale_by_beta=scales, notes=tuple(notes), evaluations=evaluations, directions=directions
    )


def fingerprint_of(loss: LossFn | Observer) -> str:
    """Short hex fingerprint: equal for losses that train alike under Adam (same function up to L + k, c * L)."""
    return compute_fingerprint(loss).digest


__all__ = [
    "DEFAULT_BETA",
    "FINGERPRINT_BETAS",
    "FINGERPRINT_VERSION",
    "Evaluation",
    "Fingerprint",
    "compute_fingerprint",
    "evaluate",
    "fingerprint_batch",
    "fingerprint_of",
]
