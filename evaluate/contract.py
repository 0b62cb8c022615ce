"""The loss contract, in one place: what a candidate is called with, how its source becomes a callable, and
what a call must return.

A candidate is one module defining
``loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta)``
that returns per-pair losses of shape ``(batch,)``, differentiable w.r.t. the two policy inputs (docs/DESIGN.md,
"The loss contract"). A loss that names ``chosen_lengths`` and ``rejected_lengths`` after ``beta`` also receives
the completions' token counts (float tensors, ``(batch,)``, in the dtype of the log-probs): length-normalized
and reference-free losses (SimPO, R-DPO, ORPO, CPO) need them. A five-parameter loss is called exactly as
before; a reference-free loss simply ignores the reference log-probs. Everything that executes or calls candidate code
goes through this module: the sandbox's runtime checks and profile, the training worker's ``CandidateDPOTrainer``, and
``evolve``'s self-check of the code it renders.

- ``LogpBatch``: the four contract inputs, each ``(B,)``, in the order ``loss`` takes them, and the lengths;
- ``takes_lengths(fn)``: whether ``fn`` names the two length parameters;
- ``compile_loss(source)``: execute the module in a fresh namespace and return its ``loss`` (only inside an
  isolated child for untrusted text);
- ``output_problem(output, size)`` / ``call_loss(fn, batch, beta)``: call it and refuse anything that is not a
  floating-point tensor of shape ``(B,)``;
- ``policy_gradients(losses, batch)``: d sum(losses) / d (policy_chosen, policy_rejected), the per-pair
  derivatives for a loss that does not couple pairs.
"""

from __future__ import annotations

import builtins
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported by the callers; the names stay importable without it
    import torch
    from lossforge.candidates import LossFn

INPUT_NAMES: tuple[str, ...] = (
    "policy_chosen_logps",
    "policy_rejected_logps",
    "reference_chosen_logps",
    "reference_rejected_logps",
)
CONTRACT_PARAMETERS: tuple[str, ...] = (*INPUT_NAMES, "beta")
LENGTH_NAMES: tuple[str, ...] = ("chosen_lengths", "rejected_lengths")
LENGTH_AWARE_PARAMETERS: tuple[str, ...] = (*CONTRACT_PARAMETERS, *LENGTH_NAMES)
CANDIDATE_MODULE = "lossforge_candidate"
MAX_MESSAGE_CHARS = 300
NO_LOSS = "the module defines no callable `loss`; define `def loss(...)` at module level."


class CandidateError(RuntimeError):
    """The candidate's code broke the contract: its module raised, it defines no ``loss``, a call raised, or a
    call returned something that is not a floating-point tensor of shape ``(B,)``. The message is a sentence
    that says what to fix."""


def describe_error(exc: BaseException, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``"TypeError: ..."``, clipped to ``limit`` characters."""
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class LogpBatch:
    """The four contract inputs, each (B,), in the order ``loss`` takes them, and the completions' token counts
    (``chosen_lengths``, ``rejected_lengths``, each (B,); None where the caller has none)."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    reference_chosen: torch.Tensor
    reference_rejected: torch.Tensor
    chosen_lengths: torch.Tensor | None = None
    rejected_lengths: torch.Tensor | None = None

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self.policy_chosen, self.policy_rejected, self.reference_chosen, self.reference_rejected)

    @property
    def size(self) -> int:
        return int(self.policy_chosen.shape[0])

    def _lengths_mapped(self, change: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor | None]:
        return {
            "chosen_lengths": None if self.chosen_lengths is None else change(self.chosen_lengths),
            "rejected_lengths": None if self.rejected_lengths is None else change(self.rejected_lengths),
        }

    def to(self, dtype: torch.dtype) -> LogpBatch:
        return LogpBatch(*(t.to(dtype) for t in self.tensors()), **self._lengths_mapped(lambda t: t.to(dtype)))

    def take(self, index: torch.Tensor) -> LogpBatch:
        return LogpBatch(*(t[index] for t in self.tensors()), **self._lengths_mapped(lambda t: t[index]))

    def with_lengths(self, chosen_lengths: torch.Tensor, rejected_lengths: torch.Tensor) -> LogpBatch:
        return LogpBatch(*self.tensors(), chosen_lengths, rejected_lengths)

    def at_initialization(self) -> LogpBatch:
        """Policy equal to the reference (rho = 0), as at the first training step."""
        return LogpBatch(
            self.reference_chosen.clone(),
            self.reference_rejected.clone(),
            self.reference_chosen,
            self.reference_rejected,
            self.chosen_lengths,
            self.rejected_lengths,
        )

    def leaves(self, dtype: torch.dtype | None = None, *, requires_grad: bool = True) -> LogpBatch:
        """Fresh leaf tensors in ``dtype`` (None: as they are); the policy inputs require grad (unless told
        not to), the reference inputs and lengths never do. Copies, so a candidate that mutates its inputs
        harms nothing."""
        policy = [t.detach().to(dtype).clone().requires_grad_(requires_grad) for t in self.tensors()[:2]]
        reference = [t.detach().to(dtype).clone() for t in self.tensors()[2:]]
        return LogpBatch(*policy, *reference, **self._lengths_mapped(lambda t: t.detach().to(dtype).clone()))

    def length_arguments(self) -> dict[str, torch.Tensor]:
        """``{"chosen_lengths": ..., "rejected_lengths": ...}`` for a loss that takes them."""
        if self.chosen_lengths is None or self.rejected_lengths is None:
            raise ValueError("this loss takes chosen_lengths and rejected_lengths, but the batch has no lengths")
        return {"chosen_lengths": self.chosen_lengths, "rejected_lengths": self.rejected_lengths}


def takes_lengths(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` names both ``chosen_lengths`` and ``rejected_lengths`` (then it is called with them)."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return all(name in parameters for name in LENGTH_NAMES)


def signature_problem(
    positional: list[str], required_keyword_only: list[str], variadic: bool
) -> tuple[str | None, str | None]:
    """(error, warning) for a ``loss`` signature: five positional contract parameters (any names: they are passed
    positionally), optionally followed by ``chosen_lengths`` and ``rejected_lengths`` (positional or keyword-only,
    under exactly these names: they are passed by name); no ``*args``/``**kwargs``, no other required
    keyword-only parameter."""
    core = [name for name in positional if name not in LENGTH_NAMES]
    lengths = [name for name in (*positional, *required_keyword_only) if name in LENGTH_NAMES]
    expected = f"loss({', '.join(CONTRACT_PARAMETERS)}), optionally followed by {', '.join(LENGTH_NAMES)}"
    if len(core) != len(CONTRACT_PARAMETERS) or variadic or positional[: len(core)] != core:
        return f"`loss` takes {len(positional)} positional parameters; the contract is {expected}.", None
    if lengths and sorted(lengths) != sorted(LENGTH_NAMES):
        return f"`loss` names {lengths[0]} alone; a length-aware loss takes both {' and '.join(LENGTH_NAMES)}.", None
    extra = [name for name in required_keyword_only if name not in LENGTH_NAMES]
    if extra:
        return (
            f"keyword-only parameter `{extra[0]}` of `loss` needs a default; the trainer passes only {expected}.",
            None,
        )
    if tuple(core) != CONTRACT_PARAMETERS:
        order = ", ".join(CONTRACT_PARAMETERS)
        return (
            None,
            f"`loss` parameters are named ({', '.join(core)}); they are passed positionally in the order ({order}).",
        )
    return None, None


def compile_loss(source: str) -> LossFn:
    """Execute a candidate module in a fresh namespace and return its ``loss``.

    Untrusted source is compiled only inside an isolated child, after the runtime protections are on.
    Raises ``CandidateError`` when the module body raises (anything, ``SystemExit`` included) or defines no
    callable ``loss``.
    """
    namespace: dict[str, Any] = {"__name__": CANDIDATE_MODULE, "__builtins__": builtins}
    try:
        exec(compile(source, f"<{CANDIDATE_MODULE}>", "exec"), namespace)  # noqa: S102 - the contract's one exec
    except BaseException as exc:  # noqa: BLE001 - hostile module bodies may raise anything
        raise CandidateError(
            f"executing the module raised {describe_error(exc)}; module level may only hold imports, constants "
            "and function definitions."
        ) from None
    fn = namespace.get("loss")
    if not callable(fn):
        raise CandidateError(NO_LOSS)
    return fn  # type: ignore[no-any-return]


def output_problem(output: object, size: int, where: str = "") -> str | None:
    """What is wrong with a call's result for a batch of ``size`` pairs, or None. A sentence without its
    subject (callers prefix "loss"); ``where`` (" on a float32 batch of 8 pairs") follows the verb."""
    import torch

    if not isinstance(output, torch.Tensor):
        return shape_problem(type(output).__name__, (), "", False, size, where)
    dtype = str(output.dtype).removeprefix("torch.")
    return shape_problem("Tensor", tuple(output.shape), dtype, output.is_floating_point(), size, where)


def shape_problem(
    returned: str, shape: tuple[int, ...], dtype: str, floating: bool, size: int, where: str = ""
) -> str | None:
    """``output_problem`` for a result described by its type name, shape and dtype (the checker's parent
    reads a description, not the object, which lives in the candidate's process)."""
    if returned != "Tensor":
        return f"returned a {returned}{where}; return a torch.Tensor of shape ({size},)"
    if shape != (size,):
        numel = 1
        for n in shape:
            numel *= n
        hint = "; return one loss per pair, not their mean or sum" if len(shape) == 0 or numel == 1 else ""
        return f"returned shape {shape}{where}, expected ({size},){hint}"
    if not floating:
        return f"returned dtype torch.{dtype}{where}; return floating-point per-pair losses"
    return None


def call_loss(fn: LossFn, batch: LogpBatch, beta: float, where: str = "") -> torch.Tensor:
    """``fn(*batch, beta)``, refused with ``CandidateError`` unless it is a floating-point ``(B,)`` tensor.

    Exceptions raised by ``fn`` itself propagate unchanged: each caller words them for its own reader (the
    checker for the LLM, the trainer for the run's error).
    """
    lengths = batch.length_arguments() if takes_lengths(fn) else {}
    output = fn(*batch.tensors(), beta, **lengths)
    problem = output_problem(output, batch.size, where)
    if problem is not None:
        raise CandidateError(f"loss {problem}.")
    return output  # type: ignore[no-any-return]


def policy_gradients(losses: torch.Tensor, batch: LogpBatch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """d sum(losses) / d policy_chosen and d policy_rejected, each (B,) or None where ``losses`` does not depend
    on that input. For a loss that does not couple pairs, entry i is pair i's own derivative."""
    import torch

    chosen, rejected = torch.autograd.grad(
        losses.sum(), (batch.policy_chosen, batch.policy_rejected), allow_unused=True
    )  # (B,), (B,)
    return chosen, rejected


def margin_push(grad_chosen: torch.Tensor, grad_rejected: torch.Tensor) -> torch.Tensor:
    """(B,) how much one gradient-descent step raises each pair's margin rho = (pc - rc) - (pr - rr).

    A step moves pc by -dL/dpc and pr by -dL/dpr, so rho changes by dL/dpr - dL/dpc: positive is a learning
    signal in the right direction (the checker's rule at policy == reference).
    """
    return grad_rejected - grad_chosen


__all__ = [
    "CANDIDATE_MODULE",
    "CONTRACT_PARAMETERS",
    "INPUT_NAMES",
    "LENGTH_AWARE_PARAMETERS",
    "LENGTH_NAMES",
    "NO_LOSS",
    "CandidateError",
    "LogpBatch",
    "call_loss",
    "compile_loss",
    "describe_error",
    "margin_push",
    "output_problem",
    "policy_gradients",
    "shape_problem",
    "signature_problem",
    "takes_lengths",
]
