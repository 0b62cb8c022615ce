"""The behavioural checks of a candidate ``loss`` on synthetic log-probs, judged in the parent process.

float32, batch sizes 2, 8 and 64: a tensor of shape ``(batch,)``, finite values, finite non-None gradients for
both policy inputs, inputs left untouched, bounded time per call, the same result for the same inputs, a
result that changes with the inputs, and a learning signal at initialization (at policy == reference a
gradient-descent step must raise the chosen-over-rejected margin rho; see ``_learning_signal`` for the
one tolerated exception). bfloat16: shape, finiteness and
gradients only, since bf16 cannot resolve half-nat differences between log-probs in the hundreds. Batch
size 1 only warns: losses built on batch statistics cannot work there, which matters for per-device batch 1.

Every finding is a sentence an LLM can act on. The checks read the loss only through an ``Observer``
(``lossforge.evaluate.checking.observation``): for untrusted code each call runs in the sandbox's child and
every judgement here is made in the caller's process, which the candidate never ran in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from lossforge.evaluate.checking.observation import CallRequest, Observation, Observer, observer_for
from lossforge.evaluate.checking.synthetic import synthetic_batch
from lossforge.evaluate.contract import INPUT_NAMES, NO_LOSS, LogpBatch, margin_push

CHECK_BATCH_SIZES: tuple[int, ...] = (2, 8, 64)
CHECK_BETA = 0.1
PER_CALL_SECONDS = 1.0  # the contract losses take microseconds; a second means a Python loop or worse
LEARNING_SIGNAL_MIN = 1e-8  # sum over pairs of d(loss)/d(pr) - d(loss)/d(pc) must exceed this
POSITIVE_BETA_RHOS = (1.0, 2.0)  # margins at which a loss with a bump at rho = 0 must already be lower
LENGTHS_HINT = (
    "; completions can have 1 or even 0 tokens (a prompt that fills max_length), so guard every division by a "
    "length (e.g. chosen_lengths.clamp(min=1))"
)


@dataclass
class Findings:
    """``bump_at_zero``: the gradient at policy == reference lowers the margin although the loss is lower at
    larger margins (LRML's shape), which is a warning here; ``evolve`` refuses to render such losses."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    bump_at_zero: bool = False


@dataclass
class _Call:
    """One evaluated call: the output and the gradients of its mean w.r.t. the policy inputs."""

    output: torch.Tensor
    grad_chosen: torch.Tensor
    grad_rejected: torch.Tensor
    seconds: float


class _Reject(Exception):
    """Internal: a check failed; carries the sentence for the report."""


def _is_out_of_memory(observation: Observation) -> bool:
    text = observation.error or ""
    return observation.error_type in ("MemoryError", "OutOfMemoryError") or (
        observation.error_type == "RuntimeError" and "allocate" in text
    )


def _raised(observation: Observation, where: str, limit: float | None) -> _Reject:
    """The sentence for a call that raised, overran its time or could not be made."""
    error = observation.error
    if observation.error_type == "timeout":
        return _Reject(
            f"a call {where} did not return within {limit:g} s: remove endless or per-element Python loops "
            "and use vectorised tensor operations."
        )
    if observation.error_type == "stopped":
        return _Reject(f"calling loss {where} failed: {error}.")
    if _is_out_of_memory(observation):
        return _Reject(
            f"a call {where} ran out of memory ({error}): do not build large intermediate "
            "tensors; the loss needs only element-wise operations on the (batch,) inputs."
        )
    if "in-place operation" in str(error):  # autograd refuses in-place changes of leaves that require grad
        return _Reject(
            f"loss modifies its inputs in place {where} ({error}); use out-of-place operations "
            "(`x = x * 2`, not `x.mul_(2)`)."
        )
    return _Reject(f"calling loss {where} raised {error}; fix the code so that it runs on these inputs.")


def _evaluate(observer: Observer, batch: LogpBatch, beta: float, where: str) -> _Call:
    """Ask for one call, then judge what it did: it ran, its result's shape, the inputs left untouched,
    finiteness, differentiability and the gradients of its mean."""
    observation = observer.observe(CallRequest(batch, beta))
    size = batch.size
    if observation.error is not None:
        raise _raised(observation, where, observer.per_call_seconds)
    problem = observation.output_problem(size, f" {where}")
    if problem is not None:
        raise _Reject(f"loss {problem}.")
    for name in INPUT_NAMES:
        if name in observation.modified:
            raise _Reject(
                f"loss modified its input `{name}` in place {where}; use out-of-place operations "
                "(`x = x * 2`, not `x.mul_(2)` or `x[...] = ...`)."
            )
    output = observation.values
    assert output is not None  # a floating tensor of shape (size,) always carries its values
    lengths_hint = LENGTHS_HINT if observation.took_lengths else ""
    bad = int((~torch.isfinite(output)).sum())
    if bad:
        raise _Reject(
            f"loss returned non-finite values (nan or inf) for {bad} of {size} pairs {where}; guard exp/log/"
            f"division against overflow (e.g. use F.logsigmoid instead of log(sigmoid(x))){lengths_hint}."
        )
    if not observation.has_grad_fn:
        raise _Reject(
            f"loss is not differentiable {where} (the result has no gradient): do not detach it, "
            "wrap it in torch.no_grad() or build it from Python numbers."
        )
    if observation.backward_error is not None:
        raise _Reject(f"back-propagating through loss {where} raised {observation.backward_error}.")
    grads: list[torch.Tensor] = []
    for name, grad in zip(INPUT_NAMES[:2], (observation.grad_chosen, observation.grad_rejected), strict=True):
        if grad is None:
            raise _Reject(
                f"the gradient w.r.t. `{name}` is None {where}: the loss must depend differentiably on both "
                "policy log-probs."
            )
        if tuple(grad.shape) != (size,):
            raise _Reject(f"calling loss {where} failed: the sandbox reported a gradient of shape {tuple(grad.shape)}.")
        if not bool(torch.isfinite(grad).all()):
            raise _Reject(
                f"the gradient w.r.t. `{name}` is not finite {where}; guard the operations that overflow{lengths_hint}."
            )
        grads.append(grad / size)  # d mean(loss): the trainer optimises the mean
    return _Call(output, grads[0], grads[1], observation.seconds)


def _float32_checks(observer: Observer, size: int, beta: float, findings: Findings) -> None:
    where = f"on a float32 batch of {size} pairs"
    batch = synthetic_batch(size)
    limit = observer.per_call_seconds
    first = _evaluate(observer, batch.to(torch.float32), beta, where)
    if limit is not None and first.seconds > limit:
        raise _Reject(
            f"one call {where} took {first.seconds:.2f} s (limit {limit:g} s); use vectorised tensor operations."
        )
    second = _evaluate(observer, batch.to(torch.float32), beta, where)
    if not torch.equal(first.output, second.output):
        difference = float((first.output - second.output).abs().max())
        raise _Reject(
            f"loss returned different values for the same inputs {where} (max difference {difference:.3g}); "
            "remove randomness (torch.rand, dropout, sampling) so that it is deterministic."
        )
    other = _evaluate(observer, synthetic_batch(size, seed=1).to(torch.float32), beta, where)
    if torch.equal(first.output, other.output):
        raise _Reject(
            f"loss returned the same values for two different batches {where}; it must depend on the log-probs."
        )
    _learning_signal(observer, batch, beta, where, findings)


def _learning_signal(observer: Observer, batch: LogpBatch, beta: float, where: str, findings: Findings) -> None:
    """At policy == reference a gradient step must raise rho; a bump around rho = 0 only warns.

    LRML and AQL (DiscoPOP) blend a logistic loss below rho = 0 with a larger exponential/hinge loss above
    it, so their slope at exactly rho = 0 is positive although the loss falls at larger margins. They train
    (the margins spread out of the bump), so that shape is a warning; a zero gradient, or a loss that is
    not lower at any positive margin, has no learning signal and is rejected.
    """
    start = _evaluate(observer, batch.at_initialization().to(torch.float32), beta, f"{where} at policy == reference")
    # A gradient-descent step moves pc by -g_pc and pr by -g_pr, so rho changes by sum(g_pr - g_pc).
    strength = float(margin_push(start.grad_chosen, start.grad_rejected).sum())
    if strength > LEARNING_SIGNAL_MIN:
        return
    if strength < -LEARNING_SIGNAL_MIN and _lower_at_positive_margin(observer, batch, beta, where, start):
        if not findings.bump_at_zero:
            findings.bump_at_zero = True
            findings.warnings.append(
                f"at initialization (policy == reference) the gradient lowers the chosen-over-rejected margin "
                f"(sum of dL/d(rejected) - dL/d(chosen) is {strength:.3g}) although the loss is lower at larger "
                "margins: the loss has a bump around rho = 0 (as LRML does), so the first steps move the wrong way."
            )
        return
    direction = "leave it unchanged" if abs(strength) <= LEARNING_SIGNAL_MIN else "lower it"
    raise _Reject(
        f"no learning signal at initialization (policy == reference, batch of {batch.size}): for the "
        f"chosen-over-rejected margin, a gradient step would {direction}; "
        "minimizing the loss must raise policy_chosen_logps relative to policy_rejected_logps "
        f"(sum of dL/d(rejected) - dL/d(chosen) is {strength:.3g}, it must be positive)."
    )


def _lower_at_positive_margin(observer: Observer, batch: LogpBatch, beta: float, where: str, start: _Call) -> bool:
    """Whether the mean loss is lower than at rho = 0 for beta * rho = 1 or 2 (policy moved symmetrically)."""
    initial = batch.at_initialization()
    for beta_rho in POSITIVE_BETA_RHOS:
        half = beta_rho / (2 * beta)
        moved = LogpBatch(
            initial.policy_chosen + half,
            initial.policy_rejected - half,
            initial.reference_chosen,
            initial.reference_rejected,
            initial.chosen_lengths,
            initial.rejected_lengths,
        )
        shifted = _evaluate(observer, moved.to(torch.float32), beta, f"{where} at beta * rho = {beta_rho:g}")
        if float(shifted.output.mean()) < float(start.output.mean()):
            return True
    return False


def _bfloat16_checks(observer: Observer, size: int, beta: float) -> None:
    where = f"on a bfloat16 batch of {size} pairs"
    _evaluate(observer, synthetic_batch(size).to(torch.bfloat16), beta, where)


def run_runtime_checks(
    loss: Callable[..., Any] | Observer, *, beta: float = CHECK_BETA, per_call_seconds: float | None = PER_CALL_SECONDS
) -> Findings:
    """Run every check; stop at the first error (later checks would only repeat it).

    ``loss``: an ``Observer`` (the sandbox's, for untrusted code: each call runs in the locked-down child and
    every verdict is made here) or a trusted function, called in this process. For a function,
    ``per_call_seconds`` bounds each call with SIGALRM, which only the main thread can set; ``None`` (for
    trusted code checked from another thread, such as ``evolve``'s own renderings) leaves calls unbounded.
    """
    findings = Findings()
    if not isinstance(loss, Observer) and not callable(loss):
        findings.errors.append(NO_LOSS)
        return findings
    observer = observer_for(loss, per_call_seconds)
    try:
        for size in CHECK_BATCH_SIZES:
            _float32_checks(observer, size, beta, findings)
        for size in CHECK_BATCH_SIZES:
            _bfloat16_checks(observer, size, beta)
    except _Reject as reject:
        findings.errors.append(str(reject))
        return findings
    try:
        _evaluate(observer, synthetic_batch(1).to(torch.float32), beta, "on a float32 batch of 1 pair")
    except _Reject as reject:
        findings.warnings.append(
            f"{reject} Batch size 1 is allowed, but this loss cannot train with one pair per device and step "
            "(it likely uses batch statistics such as std)."
        )
    return findings


__all__ = ["CHECK_BATCH_SIZES", "CHECK_BETA", "PER_CALL_SECONDS", "Findings", "run_runtime_checks"]
